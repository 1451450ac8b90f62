# A network's passes over a Plan, built from the kernels: the forward pass
# (forward_rows), the loss and its gradient (loss_and_grad), the optimizer's
# update (update), a training step (train_rows), an epoch of mini-batches
# (run_epoch) and chunked inference (infer).  All run without the GIL and
# allocate nothing; the caller brackets them with enter_threads and
# leave_threads.  Included into _engine.pyx (see there).
#
# The input of a step is a dense batch x, or the rows sx of a CSR matrix:
# then the first layer's products take only its nonzeros (sparse_forward,
# sparse_backward), and every other layer is as for a dense batch.

from backprop._codes cimport IDENTITY, RELU, SOFTMAX, SGD
from kernels cimport (
    real, dense_forward, input_gradient, act_backward,
    loss_forward_backward, optimizer_update, optimizer_update_stretch, count_correct,
    CsrBatch, sparse_forward, sparse_backward, sparse_backward_sgd,
    dense_gradient_part, dense_sgd_part, bp_team_run, bp_team_hold, bp_team_release,
    bp_small_gemm_takes, BP_GEMM_NN, BP_GEMM_TN, BP_GEMM_NT,
)
from plan cimport Plan
from libc.string cimport memset
from shuffle cimport gather_rows, gather_csr_rows, prefetch_rows
from threads cimport product_threads, pass_threads, enter_shares, leave_shares


# A thread's share of a step split across threads (split_step): its rows
# are the batch's from `first`, of n.
cdef struct Share:
    int index, count           # this share, of count
    Py_ssize_t first, n        # its first row in the batch, of n


cdef void forward_rows(const real* x, Plan* p, Py_ssize_t rows, real* last,
                       bint logits, const CsrBatch* sx=NULL,
                       bint train=False, bint cut=False) noexcept nogil:
    # x (rows, size[0]) → out[l] = f(out[l − 1] @ W + b) for every layer.
    # The last layer writes into `last` when it is not NULL, and stops at
    # z (no activation) when `logits` is set, for the fused loss to finish.
    # With sx (not NULL) the input is those CSR rows, and x goes unread.
    # A training pass (`train`) applies dropout between the layers.
    # With `logits` (a loss follows: a step, or evaluate's chunks of at most
    # capacity rows) the hidden layers that keep z (p.z[l]) write it there.
    # With `cut` (a held team: cut steps, below), a large layer's product is
    # cut between the team's two threads.
    cdef int l, L = p.n_layers - 1
    cdef const real* inp = x
    cdef real* out
    cdef real* z
    cdef real* w = <real*>p.params
    cdef int act
    for l in range(p.n_layers):
        out = last if (l == L and last != NULL) else <real*>p.out[l]
        act = IDENTITY if (l == L and logits) else p.act[l]
        z = <real*>p.z[l] if (logits and l < L) else NULL
        if l == 0 and sx != NULL:
            sparse_forward(out, sx, w + p.w_off[0], w + p.b_off[0], rows, p.size[1],
                           act, <real>p.slope[0], z)
        elif cut and logits and cut_forward(p, l, rows):
            cut_run(p, l, rows, inp, out, act, z, 0, 0)
        else:
            product_threads(2.0 * rows * p.size[l] * p.size[l + 1])
            dense_forward(out, inp, w + p.w_off[l], w + p.b_off[l], rows,
                          p.size[l], p.size[l + 1], act, <real>p.slope[l], z)
        inp = drop_forward(p, l, rows, out) if train else out


cdef double loss_and_grad(const real* x, const real* y, const real* sw, Plan* p,
                          Py_ssize_t rows, real* last, real sgd_lr=0,
                          const CsrBatch* sx=NULL, bint step_layers=False,
                          bint cut=False) noexcept nogil:
    # IN x (rows, size[0]) or the CSR rows sx (see forward_rows),
    # y (rows, size[L + 1]), sw (rows,) sample weights or NULL;
    # OUT grads; returns the mean (weighted) loss.
    # The output activations land in `last` (or the workspace when NULL).
    # With sgd_lr > 0 each layer instead takes its plain SGD step at that
    # rate as its gradient is found (dense_sgd_part; grads then holds
    # only the bias gradients), which update must then count.  With
    # step_layers, each layer takes the optimizer's step (unclipped, counted
    # by the caller) as soon as its gradient is in grads: step_layer, which
    # leaves grads 0 for the next step's products to add into (grads must
    # be 0 when the first such step begins: run_epoch).
    # The passes are forward_and_loss, then for each layer from the top its
    # input_phase and param_phase, which split_step runs on two threads.
    # With `cut` (a held team: cut steps, below), a large layer's phases run
    # in parts on its two threads.
    cdef int l, L = p.n_layers - 1
    cdef real* w = <real*>p.params
    cdef real* g = <real*>p.grads
    cdef double value = forward_and_loss(x, y, sw, p, rows, last, sx, 0, cut)
    for l in range(L, -1, -1):
        if l == 0 and sx != NULL:
            if sgd_lr > 0:
                sparse_backward_sgd(w + p.w_off[0], w + p.b_off[0], g + p.b_off[0],
                                    <real*>p.delta[0], sx, rows, p.size[1], sgd_lr)
            else:
                sparse_backward(g + p.w_off[0], g + p.b_off[0], <real*>p.delta[0], sx,
                                rows, p.size[0], p.size[1])
                if step_layers:
                    step_layer(p, 0, w, g, 0, p.size[0], 0, p.size[1])
            continue
        if cut and cut_backward(p, l, rows):
            cut_run(p, l, rows, x, NULL, 0, NULL, sgd_lr, step_layers)
            continue
        if l > 0:
            input_phase(p, w, l, rows)
        param_phase(x, p, l, rows, sgd_lr, step_layers, NULL)
    count_pass(p)
    return value


cdef inline double forward_and_loss(const real* x, const real* y, const real* sw, Plan* p,
                                    Py_ssize_t rows, real* last, const CsrBatch* sx,
                                    Py_ssize_t n=0, bint cut=False) noexcept nogil:
    # A training pass's forward pass and loss: returns the rows' mean loss,
    # with δ of the output layer in p.delta[L]; n > 0: the rows are a share
    # of a batch of n rows, whose mean the gradient is of.
    cdef int L = p.n_layers - 1
    forward_rows(x, p, rows, last, True, sx, True, cut)
    return loss_forward_backward(p.loss, p.huber_delta, p.act[L], <real>p.slope[L],
                                 last if last != NULL else <real*>p.out[L],
                                 <real*>p.z[L], <real*>p.delta[L], y, sw, rows,
                                 p.size[L + 1], n)


cdef inline void input_phase(Plan* p, const real* w, int l, Py_ssize_t rows,
                             int part=0, int parts=1) noexcept nogil:
    # δ_{l−1} = (δ_l @ W_lᵀ) ⊙ f′(z_{l−1}) for the rows, w the parameters
    # (p.params) (layer l ≥ 1; the first layer needs no dx); of parts > 1,
    # only the part-th part of δ_{l−1}'s columns (a cut step's, from the same
    # rows of W_l), for an f of one unit at a time (not softmax).  A ReLU's
    # f′ = [a > 0] is taken with the product (input_gradient), before
    # dropout's mask rather than after: the two commute exactly, as each
    # makes an entry 0 or leaves it (dropout: scaled).
    cdef Py_ssize_t n_in = p.size[l], n_out = p.size[l + 1], i, r0, r1
    cdef const real* relu_of = <real*>p.out[l - 1] if p.act[l - 1] == RELU else NULL
    cdef real* d = <real*>p.delta[l - 1]
    cdef real* z = <real*>p.z[l - 1]
    r0, r1 = part_of(n_in, part, parts)
    if r1 == r0:                # (an empty part: a layer below of one unit)
        return
    product_threads(2.0 * rows * (r1 - r0) * n_out)
    input_gradient(d, <real*>p.delta[l], w + p.w_off[l], rows, n_in, n_out, relu_of, r0, r1,
                   parts > 1)
    if parts == 1:
        drop_backward(p, l - 1, rows, d)
        if relu_of == NULL:
            act_backward(d, d, <real*>p.out[l - 1], z, rows, n_in, p.act[l - 1],
                         <real>p.slope[l - 1])
        return
    for i in range(rows):     # (each row's part of δ_{l−1})
        drop_backward(p, l - 1, 1, d + i * n_in + r0, i * n_in + r0, r1 - r0)
        if relu_of == NULL:
            act_backward(d + i * n_in + r0, d + i * n_in + r0,
                         <real*>p.out[l - 1] + i * n_in + r0,
                         NULL if z == NULL else z + i * n_in + r0, 1, r1 - r0,
                         p.act[l - 1], <real>p.slope[l - 1])


cdef inline void param_phase(const real* x, Plan* p, int l, Py_ssize_t rows, real sgd_lr,
                             bint step_layers, const Share* share) noexcept nogil:
    # The gradient of W_l and b_l (or the step along it: loss_and_grad's
    # sgd_lr and step_layers), from δ_l and the layer's input x (layer 0) or
    # the layer below's output.  With a share (split_step), the rows are the
    # share's, and this is its part of the layer over the whole batch.
    cdef Py_ssize_t n_in = p.size[l], n_out = p.size[l + 1]
    cdef Py_ssize_t r0 = 0, r1 = n_in, j0 = 0, j1 = n_out
    cdef real* w = <real*>p.params
    cdef real* g = <real*>p.grads
    cdef const real* inp = layer_input(x, p, l, True)
    cdef const real* delta = <real*>p.delta[l]
    if share != NULL:
        inp -= share.first * n_in
        delta -= share.first * n_out
        rows = share.n
        r0, r1 = part_of(n_in, share.index, share.count)
        j0, j1 = part_of(n_out, share.index, share.count)
    product_threads(2.0 * rows * (r1 - r0) * n_out)
    if sgd_lr > 0:
        dense_sgd_part(w + p.w_off[l], w + p.b_off[l], g + p.b_off[l], delta, inp, rows,
                       n_in, n_out, sgd_lr, r0, r1, j0, j1)
    else:
        dense_gradient_part(g + p.w_off[l], g + p.b_off[l], delta, inp, rows, n_in, n_out,
                            step_layers, r0, r1, j0, j1)
        if step_layers:
            step_layer(p, l, w, g, r0, r1, j0, j1)


cdef inline (Py_ssize_t, Py_ssize_t) part_of(Py_ssize_t n, int c, int count) noexcept nogil:
    # Part c of `count` of n things: [n·c/count, n·(c + 1)/count).
    return n * c // count, n * (c + 1) // count


cdef inline void step_layer(Plan* p, int l, real* w, real* g, Py_ssize_t r0,
                            Py_ssize_t r1, Py_ssize_t j0, Py_ssize_t j1) noexcept nogil:
    # Layer l's share of the optimizer's step on the parameters w (p.params)
    # from g (p.grads): the rows r0 … r1 of its W, then the entries j0 … j1
    # of its b (all of them, but for a split step's part), taken while
    # their gradient is still in cache from the product that wrote it (once
    # the layer's products are done: W is not read again in the step); their
    # gradients are left 0.
    cdef Py_ssize_t n_out = p.size[l + 1]
    optimizer_update_stretch(&p.opt, w, g, <real*>p.state1, <real*>p.state2,
                             p.w_off[l] + r0 * n_out, p.w_off[l] + r1 * n_out, False)
    optimizer_update_stretch(&p.opt, w, g, <real*>p.state1, <real*>p.state2,
                             p.b_off[l] + j0, p.b_off[l] + j1, True)


cdef inline bint plain_sgd(const Plan* p) noexcept nogil:
    # SGD without momentum, L2, decay or clipping (so decay_biases changes
    # nothing): its step can run inside the backward pass
    # (dense_sgd_part, the fast twin of dense_gradient_part then
    # optimizer_update), which saves a pass over the weights and one over
    # their gradient.
    return (p.opt.kind == SGD and p.opt.momentum == 0 and p.opt.l2 == 0
            and p.opt.weight_decay == 0 and p.opt.clip_norm <= 0)


cdef inline void update(Plan* p, real lr, bint fused=False) noexcept nogil:
    # The optimizer's step on the flat parameters, from the flat gradient;
    # with `fused`, the plain SGD step loss_and_grad already took at rate lr.
    # Either way the step is counted once (opt.t).
    p.opt.lr = lr
    if fused:
        p.opt.t += 1
        return
    # (layer l's bias, p.size[l + 1] long, lies at p.b_off[l])
    p.opt.threads = pass_threads()
    optimizer_update(&p.opt, <real*>p.params, <real*>p.grads, <real*>p.state1,
                     <real*>p.state2, p.n_params, p.b_off, p.size + 1, p.n_layers)


cdef inline bint steps_by_layer(const Plan* p, real lr) noexcept nogil:
    # Whether train_rows takes the optimizer's step layer by layer inside
    # loss_and_grad (step_layers): every rule but the fused plain SGD, unless
    # gradients are clipped (the norm needs the whole gradient first).
    return not (plain_sgd(p) and lr > 0) and p.opt.clip_norm <= 0


# How train_rows takes the optimizer's step (step_kind): fused into the
# backward pass for plain SGD (grads then keeps no weight gradients, which is
# why train_step, whose grads users read, does not fuse); layer by layer
# inside loss_and_grad for every other rule but clipping; after the whole
# gradient for clipping (whose norm needs all of it first).
cdef enum:
    STEP_FUSED_SGD, STEP_BY_LAYER, STEP_AFTER


cdef inline int step_kind(const Plan* p, real lr) noexcept nogil:
    if plain_sgd(p) and lr > 0:
        return STEP_FUSED_SGD
    return STEP_BY_LAYER if steps_by_layer(p, lr) else STEP_AFTER


cdef inline void begin_step(Plan* p, real lr, int kind) noexcept nogil:
    # Before a step's loss_and_grad: a step taken layer by layer is counted
    # first (its rate and threads set).
    if kind == STEP_BY_LAYER:
        p.opt.lr = lr
        p.opt.t += 1
        p.opt.threads = pass_threads()


cdef inline void end_step(Plan* p, real lr, int kind) noexcept nogil:
    # After it: the fused step counted, or the whole step taken.
    if kind == STEP_FUSED_SGD:
        update(p, lr, True)
    elif kind == STEP_AFTER:
        update(p, lr)


cdef inline double train_rows(const real* x, const real* y, const real* sw, Plan* p,
                              Py_ssize_t rows, real lr, const CsrBatch* sx=NULL,
                              bint cut=False) noexcept nogil:
    # One training step inside an epoch: loss_and_grad and the optimizer's
    # update, taken as step_kind says; with `cut`, a cut step (below).
    # Returns the batch's mean loss.
    cdef int kind = step_kind(p, lr)
    cdef double value
    begin_step(p, lr, kind)
    if cut:
        p.opt.threads = 1           # (each part's step on its own thread)
    value = loss_and_grad(x, y, sw, p, rows, NULL, lr if kind == STEP_FUSED_SGD else 0,
                          sx, kind == STEP_BY_LAYER, cut)
    end_step(p, lr, kind)
    return value


# -------------------------------------------------------------- cut steps ---
# fit's steps on two threads for a network with large layers: each large
# layer's products are cut between the two threads of the team (held for
# the epoch) by the columns of their result, and each thread runs its part
# on one thread of BLAS (or in the small kernels):
#   forward   out[:, J_c] = f(x @ W[:, J_c] + b[J_c])           (dense_forward)
#   backward  δ_{l−1}[:, R_c] from the rows R_c of W (input_phase), then
#             the gradient of, or the step on, those rows and b[J_c]
#             (param_phase)
# for the parts c = 0, 1 of J (W's columns) and R (its rows): a chunk reads
# and writes no row of W that the other chunk's step writes, and takes its
# step while its part of the gradient is in cache.  BLAS's own threads cut
# such a product too, but each call wakes them and both pack the shared
# operand in turns; at a batch of 32, OpenBLAS's two-thread weight gradient
# ran slower than its one thread (docs/performance.md, Cut steps).  Layers
# too small or too narrow to gain (CUT_MIN_FLOPS, CUT_MIN_WIDTH) run whole
# on the calling thread, on one thread of BLAS, as does the softmax of the
# loss.  The work of each chunk is fixed, so the result
# does not depend on which thread takes it.

# a layer's product of fewer floating-point operations runs whole
cdef double CUT_MIN_FLOPS = 4e6
cdef enum:
    CUT_MIN_WIDTH = 32      # the columns each part has at least

# "rule" (the default: the layers CUT_MIN_FLOPS and CUT_MIN_WIDTH say),
# "never" (every product to BLAS's threads, for comparison), "always" (every
# layer whose passes can be cut, for tests)
cdef enum:
    CUT_RULE, CUT_NEVER, CUT_ALWAYS
cdef int cut_mode = CUT_RULE


cdef struct CutRun:
    Plan* p
    int layer
    Py_ssize_t rows
    const char* inp            # the layer's input (forward), or the step's x
    char* out                  # the forward's output, or NULL: the backward
    int act                    # (the forward's)
    char* z                    # … and its z, or NULL
    double sgd_lr              # (the backward's: param_phase)
    bint step_layers
    bint is_double


cdef inline bint cut_large(const Plan* p, int l, Py_ssize_t rows, Py_ssize_t width) noexcept nogil:
    # Whether layer l's products, cut along a dimension of `width`, are large
    # enough to cut in the mode in force.
    return cut_mode == CUT_ALWAYS or (
        cut_mode == CUT_RULE and width >= 2 * CUT_MIN_WIDTH
        and 2.0 * rows * p.size[l] * p.size[l + 1] >= CUT_MIN_FLOPS)


cdef inline bint cut_forward(const Plan* p, int l, Py_ssize_t rows) noexcept nogil:
    # Whether a cut step cuts layer l's forward product (a step's last layer
    # stops at its logits, so only a hidden softmax would stay whole).
    return ((l == p.n_layers - 1 or p.act[l] != SOFTMAX)
            and cut_large(p, l, rows, p.size[l + 1]))


cdef inline bint cut_backward(const Plan* p, int l, Py_ssize_t rows) noexcept nogil:
    # … and its backward pass (the rows of W; the layer below is never a
    # softmax, which Sequential allows only at the output).
    return cut_large(p, l, rows, p.size[l])


cdef inline bint cut_rule(const Plan* p, Py_ssize_t batch) noexcept nogil:
    # Whether run_epoch, on two threads and dense input, takes cut steps for
    # batches of `batch` rows: when it would cut a layer.
    cdef int l
    for l in range(p.n_layers):
        if cut_forward(p, l, batch) or cut_backward(p, l, batch):
            return True
    return False


cdef inline bint layer_takes_blas(const Plan* p, int l, Py_ssize_t m, Py_ssize_t cols,
                                  Py_ssize_t w_rows, Py_ssize_t in_cols, Py_ssize_t batch,
                                  bint forward_alone, bint input_alone,
                                  real kind) noexcept nogil:
    # Whether one thread's products of layer l call BLAS rather than the small
    # kernels: the forward product of m rows into `cols` columns, the
    # gradient of `w_rows` rows of W over the batch, and (above the first
    # layer) the input gradient of m rows into `in_cols` columns; the first
    # and last `alone` as dense_forward and input_gradient take them.
    cdef Py_ssize_t n_in = p.size[l], n_out = p.size[l + 1]
    cdef bint f32 = real is float
    return (not bp_small_gemm_takes(f32, BP_GEMM_NN, m, cols, n_in, forward_alone)
            or not bp_small_gemm_takes(f32, BP_GEMM_TN, w_rows, n_out, batch, False)
            or (l > 0 and not bp_small_gemm_takes(f32, BP_GEMM_NT, m, in_cols, n_out,
                                                  input_alone)))


cdef inline bint cuts_take_blas(const Plan* p, Py_ssize_t batch, real kind) noexcept nogil:
    # Whether a cut step of `batch` rows calls BLAS for any product (else
    # they all take the small kernels, and run_epoch leaves BLAS's thread
    # control alone: see enter_shares): either part of each layer, or the
    # whole of an uncut layer.  (Both parts: a build's narrowest result can
    # send the smaller part to BLAS and not the larger.)
    cdef int l, c
    cdef Py_ssize_t j0, j1, r0, r1
    cdef bint forward, backward
    for l in range(p.n_layers):
        forward, backward = cut_forward(p, l, batch), cut_backward(p, l, batch)
        for c in range(2):
            j0, j1 = part_of(p.size[l + 1], c if forward else 0, 2 if forward else 1)
            r0, r1 = part_of(p.size[l], c if backward else 0, 2 if backward else 1)
            if layer_takes_blas(p, l, batch, j1 - j0, r1 - r0, r1 - r0, batch, forward,
                                backward, kind):
                return True
    return False


cdef inline void cut_chunk(CutRun* r, int c, real kind) noexcept nogil:
    # Part c of the run r (`kind` picks the element type).
    cdef Plan* p = r.p
    cdef int l = r.layer
    cdef real* w = <real*>p.params
    cdef Py_ssize_t j0, j1
    cdef Share part
    if r.out != NULL:
        j0, j1 = part_of(p.size[l + 1], c, 2)
        dense_forward(<real*>r.out, <const real*>r.inp, w + p.w_off[l], w + p.b_off[l],
                      r.rows, p.size[l], p.size[l + 1], r.act, <real>p.slope[l],
                      <real*>r.z, j0, j1, True)
        return
    if l > 0:
        input_phase(p, w, l, r.rows, c, 2)
    part.index, part.count, part.first, part.n = c, 2, 0, r.rows
    param_phase(<const real*>r.inp, p, l, r.rows, <real>r.sgd_lr, r.step_layers, &part)


cdef void cut_task(void* arg, int c, int chunks) noexcept nogil:
    cdef CutRun* r = <CutRun*>arg
    if r.is_double:
        cut_chunk(r, c, <double>0)
    else:
        cut_chunk(r, c, <float>0)


cdef inline void cut_run(Plan* p, int l, Py_ssize_t rows, const real* inp, real* out,
                         int act, real* z, real sgd_lr, bint step_layers) noexcept nogil:
    # Layer l's forward product into out (not NULL: inp its input, act and z
    # as forward_rows has them), or its backward pass (inp the step's x,
    # sgd_lr and step_layers as param_phase takes them), in two parts on the
    # held team.
    cdef CutRun r
    r.p, r.layer, r.rows = p, l, rows
    r.inp, r.out, r.act, r.z = <const char*>inp, <char*>out, act, <char*>z
    r.sgd_lr, r.step_layers, r.is_double = sgd_lr, step_layers, real is double
    bp_team_run(cut_task, &r, 2, 2)


cdef struct GatherRun:
    const char* X              # the epoch's rows (n, n_in), targets (n, n_out)
    const char* Y              # … and sample weights (n,) or NULL
    const char* W
    char* xb                   # the batch buffers (p.xbuf, p.ybuf, p.wbuf)
    char* yb
    char* wb
    const Py_ssize_t* order    # the batch's rows in X (its stretch of perm)
    Py_ssize_t rows, next      # the batch's rows, and the next batch's (or 0)
    Py_ssize_t n_in, n_out
    bint is_double


cdef inline void gather_half(real* xb, real* yb, real* wb, const real* X, const real* Y,
                             const real* W, const Py_ssize_t* order, Py_ssize_t rows,
                             Py_ssize_t next, Py_ssize_t n_in, Py_ssize_t n_out,
                             int c) noexcept nogil:
    # Half c of a batch's gather, by one of two threads (cut and split
    # steps): the rows part_of(rows, c, 2) of the `rows` that `order` lists,
    # of X, Y and W (or NULL), into the same rows of the batch's buffers xb,
    # yb and wb (touched first in the cache of the core that gathers them);
    # then half c of the next batch's `next` rows (listed after them) asked
    # for.
    cdef Py_ssize_t r0, r1, n0, n1
    r0, r1 = part_of(rows, c, 2)
    gather_rows(xb + r0 * n_in, X, order + r0, r1 - r0, n_in)
    gather_rows(yb + r0 * n_out, Y, order + r0, r1 - r0, n_out)
    if W != NULL:
        gather_rows(wb + r0, W, order + r0, r1 - r0, 1)
    if next > 0:
        n0, n1 = part_of(next, c, 2)
        prefetch_rows(<const char*>X, order + rows + n0, n1 - n0, n_in * sizeof(real))


cdef inline void gather_chunk(GatherRun* g, int c, real kind) noexcept nogil:
    # Part c of a cut step's gather (`kind` picks the element type).
    gather_half(<real*>g.xb, <real*>g.yb, <real*>g.wb, <const real*>g.X, <const real*>g.Y,
                <const real*>g.W, g.order, g.rows, g.next, g.n_in, g.n_out, c)


cdef void gather_task(void* arg, int c, int chunks) noexcept nogil:
    cdef GatherRun* g = <GatherRun*>arg
    if g.is_double:
        gather_chunk(g, c, <double>0)
    else:
        gather_chunk(g, c, <float>0)


cdef inline void cut_gather(const real* X, const real* Y, const real* W,
                            const Py_ssize_t* order, Py_ssize_t rows, Py_ssize_t next,
                            Plan* p) noexcept nogil:
    # A cut step's batch, the rows `order` lists of X, Y and W (or NULL),
    # gathered into p.xbuf, p.ybuf and p.wbuf by both threads of the held
    # team, half the rows each; each also asks for its half of the next
    # batch's `next` rows.  Shuffled rows lie far apart in memory, and one
    # thread's gather is bound by how many cache lines it can have in flight
    # (W3's 128 rows of 784 floats: about a tenth of its step), so two
    # threads take about half the time.
    cdef GatherRun g
    g.X, g.Y, g.W = <const char*>X, <const char*>Y, <const char*>W
    g.xb, g.yb, g.wb = p.xbuf, p.ybuf, p.wbuf
    g.order, g.rows, g.next = order, rows, next
    g.n_in, g.n_out, g.is_double = p.size[0], p.size[p.n_layers], real is double
    bp_team_run(gather_task, &g, 2, 2)


# ------------------------------------------------------------ split steps ---
# A step on two threads: the batch's rows cut into two shares, each with its
# own rows of the workspace and one-thread products.  A share's forward pass,
# loss and input gradients are its rows' own; each layer's parameter
# gradient (or step) is cut into two parts instead (dense_gradient_part),
# each over the whole batch.  The step is a series of team runs, each of two
# chunks, one per share, that either thread may take (both, if the other
# is slow to come):
#   first   share c: its rows gathered, forward_and_loss, input_phase(L)
#   layer l share c: param_phase(l), its part c, once every share has δ_l
#           and has read W_l (the run before); then input_phase(l − 1)
# for l = L … 0.  So no gradient is summed across threads, plain SGD's step
# stays fused into the product, and the work of each chunk is fixed, which
# makes the result the same whichever thread runs it.  Dropout's masks are
# drawn by row (mask_row) and δ takes the whole batch's 1/n: a split step
# computes the unsplit one's formulas, the products' sums cut differently.
# The threads are the team's, held for the epoch (run_epoch): the worker
# spins between the runs.

cdef enum:
    SPLIT_MIN_ROWS = 8      # the rows each share takes at least
# in the mode "rule", a step whose largest forward product takes more
# floating-point operations than the first bound is left to BLAS's threads,
# and one whose largest takes fewer than the second runs on one thread
# (docs/performance.md, Split steps: above the first, splitting never
# gained; below the second, W1's and 64-64-10's at a batch of 64, it lost)
cdef double SPLIT_MAX_FLOPS = 2.2e6
cdef double SPLIT_MIN_FLOPS = 1e6

# "rule" (split where split_rule's bounds say), "never" (the default),
# "always" (tests)
cdef enum:
    SPLIT_RULE, SPLIT_NEVER, SPLIT_ALWAYS
cdef int split_mode = SPLIT_NEVER


cdef struct SplitStep:
    Plan* plan[2]              # the plan each share runs on
    Share share[2]
    const char* x[2]           # each share's input rows (set by the first run)
    const char* X              # the epoch's rows (n, size[0]), …
    const char* Y              # … targets (n, size[L + 1]) …
    const char* W              # … and sample weights (n,) or NULL
    const Py_ssize_t* order    # the batch's rows in X (its stretch of perm), or NULL:
    Py_ssize_t start           # … the rows from `start` on, as stored
    Py_ssize_t rows[2]         # each share's rows
    Py_ssize_t next            # the next batch's rows (prefetched), or 0
    double lr
    int kind                   # step_kind
    int layer                  # the layer of the run (split_layer)
    double value[2]            # each share's summed loss
    Py_ssize_t correct[2]      # … and its right predictions (count_correct)
    bint is_double


cdef inline bint split_rule(const Py_ssize_t* size, int n_layers,
                            Py_ssize_t batch) noexcept nogil:
    # Whether run_epoch splits the steps of batches of `batch` rows of a
    # network of these layer sizes across two threads (when the call may use
    # two and the input is dense).  In the mode "rule", the steps whose
    # largest forward product lies between the SPLIT bounds; the default
    # mode is "never" (backprop's BACKPROP_SPLIT_STEPS sets it): on the
    # shared hosts where python -m bench.split measured them, split steps
    # ran up to 1.45× faster in some runs or processes and up to 2× slower
    # in others (docs/performance.md, Split steps).
    cdef int l
    cdef double largest = 0
    if split_mode == SPLIT_NEVER or batch < 2 * SPLIT_MIN_ROWS:
        return False
    if split_mode == SPLIT_ALWAYS:
        return True
    for l in range(n_layers):
        largest = max(largest, 2.0 * batch * size[l] * size[l + 1])
    return SPLIT_MIN_FLOPS <= largest <= SPLIT_MAX_FLOPS


cdef inline bint shares_take_blas(const Plan* p, Py_ssize_t batch, real kind) noexcept nogil:
    # Whether a split step of `batch` rows calls BLAS for any product (else
    # they all take the small kernels): the larger share and part of each.
    cdef int l
    cdef Py_ssize_t rows = batch - batch // 2
    for l in range(p.n_layers):
        if layer_takes_blas(p, l, rows, p.size[l + 1], p.size[l] - p.size[l] // 2, p.size[l],
                            batch, False, False, kind):
            return True
    return False


cdef inline void share_first(SplitStep* s, int c, real kind) noexcept nogil:
    # The first run's chunk c (`kind` picks the element type): the share's
    # rows gathered into its rows of the batch buffers (touched first in the
    # cache of the core that computes with them), its part of the next
    # batch's rows asked for, then forward_and_loss, count_correct and the top
    # layer's input_phase.
    cdef Plan* p = s.plan[c]
    cdef int L = p.n_layers - 1
    cdef Py_ssize_t f = s.share[c].first, rows = s.rows[c]
    cdef Py_ssize_t n_in = p.size[0], n_out = p.size[L + 1]
    cdef Plan* whole = s.plan[0]      # (its buffers: the whole batch's)
    cdef const real* x
    cdef const real* y
    cdef const real* sw = NULL
    if s.order == NULL:
        x = <const real*>s.X + (s.start + f) * n_in
        y = <const real*>s.Y + (s.start + f) * n_out
        if s.W != NULL:
            sw = <const real*>s.W + s.start + f
    else:
        gather_half(<real*>whole.xbuf, <real*>whole.ybuf, <real*>whole.wbuf,
                    <const real*>s.X, <const real*>s.Y, <const real*>s.W, s.order,
                    s.share[c].n, s.next, n_in, n_out, c)
        x, y = <const real*>p.xbuf, <const real*>p.ybuf
        if s.W != NULL:
            sw = <const real*>p.wbuf
    s.x[c] = <const char*>x
    s.value[c] = rows * forward_and_loss(x, y, sw, p, rows, <real*>NULL, <CsrBatch*>NULL,
                                         s.share[c].n)
    s.correct[c] = count_correct(p.loss, <real*>p.out[L], y, rows, n_out)
    if L > 0:
        input_phase(p, <real*>p.params, L, rows)


cdef inline void share_layer(SplitStep* s, int c, real kind) noexcept nogil:
    # Layer s.layer's run, chunk c: its param_phase part, then the layer
    # below's input_phase for share c's rows.
    cdef int l = s.layer
    cdef Plan* p = s.plan[c]
    param_phase(<const real*>s.x[c], p, l, s.rows[c],
                <real>s.lr if s.kind == STEP_FUSED_SGD else 0, s.kind == STEP_BY_LAYER,
                &s.share[c])
    if l > 1:
        input_phase(p, <real*>p.params, l - 1, s.rows[c])


cdef void split_first(void* arg, int c, int chunks) noexcept nogil:
    cdef SplitStep* s = <SplitStep*>arg
    if s.is_double:
        share_first(s, c, <double>0)
    else:
        share_first(s, c, <float>0)


cdef void split_layer(void* arg, int c, int chunks) noexcept nogil:
    cdef SplitStep* s = <SplitStep*>arg
    if s.is_double:
        share_layer(s, c, <double>0)
    else:
        share_layer(s, c, <float>0)


cdef double split_step(const real* X, const real* Y, const real* W,
                       const Py_ssize_t* order, Py_ssize_t start, Py_ssize_t rows,
                       Py_ssize_t next, real lr, Plan* p) noexcept nogil:
    # train_rows on two threads (see above), for a held team, on the batch
    # of `rows` ≥ 2 · SPLIT_MIN_ROWS rows of the dense X (and Y, and W or
    # NULL) that `order` lists (NULL: those from `start` on), the next batch
    # having `next` rows; adds the right predictions to p.correct.  Returns
    # the batch's mean loss.
    cdef int c, l, L = p.n_layers
    cdef Py_ssize_t h = rows // 2, at
    cdef Plan second
    cdef SplitStep s
    cdef char** v = p.share_views
    s.lr, s.kind, s.is_double = lr, step_kind(p, lr), real is double
    begin_step(p, lr, s.kind)
    p.opt.threads = 1               # (each part's step on its own thread)
    second = p[0]                   # (its optimizer as counted)
    second.out, second.delta, second.z, second.dropped = v, v + L, v + 2 * L, v + 3 * L
    second.mask = <unsigned char**>(v + 4 * L)
    for l in range(L):              # the second share's rows of the workspace
        at = h * p.size[l + 1] * sizeof(real)
        second.out[l] = p.out[l] + at
        second.delta[l] = p.delta[l] + at
        second.z[l] = NULL if p.z[l] == NULL else p.z[l] + at
        second.dropped[l] = NULL if p.dropped[l] == NULL else p.dropped[l] + at
        second.mask[l] = NULL if p.mask[l] == NULL else p.mask[l] + h * p.size[l + 1]
    second.xbuf = p.xbuf + h * p.size[0] * sizeof(real)
    second.ybuf = p.ybuf + h * p.size[L] * sizeof(real)
    second.wbuf = p.wbuf + h * sizeof(real)
    second.mask_row = p.mask_row + h
    s.plan[0], s.plan[1] = p, &second
    for c in range(2):
        s.share[c].index, s.share[c].count = c, 2
        s.share[c].first, s.share[c].n = h * c, rows
    s.rows[0], s.rows[1] = h, rows - h
    s.X, s.Y, s.W = <const char*>X, <const char*>Y, <const char*>W
    s.order, s.start, s.next = order, start, next
    bp_team_run(split_first, &s, 2, 2)
    for l in range(L - 1, -1, -1):
        s.layer = l
        bp_team_run(split_layer, &s, 2, 2)
    count_pass(p)
    end_step(p, lr, s.kind)
    p.correct += s.correct[0] + s.correct[1]
    return (s.value[0] + s.value[1]) / rows


cdef double run_epoch(const real* X, const real* Y, const real* W,
                      const Py_ssize_t* perm, Py_ssize_t first, Py_ssize_t count,
                      Py_ssize_t batch, real lr, Plan* p, CsrBatch* S=NULL,
                      bint gather=False) noexcept nogil:
    # Mini-batch gradient descent over the rows first … first + count of an
    # epoch (all of it, or one stretch: fit hands the epoch over in stretches
    # so that Ctrl-C is seen between them) of X (n, size[0]) and
    # Y (n, size[L + 1]), with sample weights W (n,) or NULL, rows taken in
    # the order perm (or as stored when perm is NULL).  Returns the mean
    # training loss over those rows.
    # With S (not NULL), X is the CSR matrix S (its order and first unset;
    # X goes unread): each batch is its rows, gathered dense when `gather`,
    # else taken by the first layer's sparse products.
    cdef Py_ssize_t k, start, i, rows
    cdef Py_ssize_t n_in = p.size[0], n_out = p.size[p.n_layers]
    cdef const real* xb
    cdef const real* yb
    cdef const real* wb = NULL
    cdef const CsrBatch* sx = NULL
    cdef double total = 0
    cdef Py_ssize_t end = first + count
    cdef bint split = (S == NULL and pass_threads() > 1 and p.share_views != NULL
                       and split_rule(p.size, p.n_layers, batch))
    cdef bint cut = not split and S == NULL and pass_threads() > 1 and cut_rule(p, batch)
    cdef bint products_before
    p.correct = 0
    if step_kind(p, lr) == STEP_BY_LAYER:  # the first step's products add into grads
        memset(p.grads, 0, p.n_params * sizeof(real))
    if (split or cut) and bp_team_hold(2) > 1:
        products_before = enter_shares(shares_take_blas(p, batch, <real>0) if split
                                       else cuts_take_blas(p, batch, <real>0))
    else:
        split = cut = False
    for k in range((count + batch - 1) // batch):
        start = first + k * batch
        rows = min(batch, end - start)
        if split and rows >= 2 * SPLIT_MIN_ROWS:
            total += split_step(X, Y, W, NULL if perm == NULL else perm + start, start,
                                rows, min(batch, end - start - rows), lr, p) * rows
            continue
        if cut and perm != NULL:    # (both threads gather)
            cut_gather(X, Y, W, perm + start, rows, min(batch, end - start - rows), p)
            xb, yb = <real*>p.xbuf, <real*>p.ybuf
            if W != NULL:
                wb = <real*>p.wbuf
        else:
            if perm == NULL:
                yb = Y + start * n_out
                if W != NULL:
                    wb = W + start
            else:
                gather_rows(<real*>p.ybuf, Y, perm + start, rows, n_out)
                yb = <real*>p.ybuf
                if W != NULL:
                    gather_rows(<real*>p.wbuf, W, perm + start, rows, 1)
                    wb = <real*>p.wbuf
            if S != NULL:
                S.order = perm + start if perm != NULL else NULL
                S.first = start
                xb = <real*>p.xbuf
                if gather:
                    gather_csr_rows(<real*>p.xbuf, S, rows, n_in)
                else:
                    sx = S
            elif perm == NULL:
                xb = X + start * n_in
            else:
                gather_rows(<real*>p.xbuf, X, perm + start, rows, n_in)
                xb = <real*>p.xbuf
                if start + rows < end:
                    prefetch_rows(<const char*>X, perm + start + rows,
                                  min(batch, end - start - rows), n_in * sizeof(real))
        total += train_rows(xb, yb, wb, p, rows, lr, sx, cut) * rows
        p.correct += count_correct(p.loss, <real*>p.out[p.n_layers - 1], yb, rows, n_out)
    if split or cut:
        leave_shares(products_before)
        bp_team_release()
    return total / count


cdef double infer(const real* X, const real* Y, real* out, Py_ssize_t n,
                  Plan* p) noexcept nogil:
    # out (n, size[L + 1]) ← the outputs for X (n, size[0]), in chunks of
    # out_rows rows.  With targets Y (not NULL) the last layer goes through
    # the fused loss (its δ lands in the training workspace, which then must
    # hold out_rows rows too), and the mean loss is returned (else 0).
    cdef Py_ssize_t k, start, rows, cap = p.capacity if Y != NULL else p.out_rows
    cdef Py_ssize_t n_in = p.size[0], n_out = p.size[p.n_layers]
    cdef int L = p.n_layers - 1
    cdef double total = 0
    for k in range((n + cap - 1) // cap):
        start = k * cap
        rows = min(cap, n - start)
        forward_rows(X + start * n_in, p, rows, out + start * n_out, Y != NULL)
        if Y != NULL:
            total += rows * loss_forward_backward(
                p.loss, p.huber_delta, p.act[L], <real>p.slope[L], out + start * n_out,
                <real*>p.z[L], <real*>p.delta[L], Y + start * n_out, <real*>NULL, rows,
                n_out)
    return total / n
