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

from backprop._codes cimport IDENTITY, RELU, SGD
from kernels cimport (
    real, dense_forward, dense_backward, dense_backward_sgd, act_backward,
    loss_forward_backward, optimizer_update, optimizer_update_stretch, count_correct,
    CsrBatch, sparse_forward, sparse_backward, sparse_backward_sgd,
)
from plan cimport Plan
from libc.string cimport memset
from shuffle cimport gather_rows, gather_csr_rows, prefetch_rows
from threads cimport product_threads, pass_threads


cdef void forward_rows(const real* x, Plan* p, Py_ssize_t rows, real* last,
                       bint logits, const CsrBatch* sx=NULL,
                       bint train=False) noexcept nogil:
    # x (rows, size[0]) → out[l] = f(out[l − 1] @ W + b) for every layer.
    # The last layer writes into `last` when it is not NULL, and stops at
    # z (no activation) when `logits` is set, for the fused loss to finish.
    # With sx (not NULL) the input is those CSR rows, and x goes unread.
    # A training pass (`train`) applies dropout between the layers.
    # With `logits` (a loss follows: a step, or evaluate's chunks of at most
    # capacity rows) the hidden layers that keep z (p.z[l]) write it there.
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
        else:
            product_threads(2.0 * rows * p.size[l] * p.size[l + 1])
            dense_forward(out, inp, w + p.w_off[l], w + p.b_off[l], rows,
                          p.size[l], p.size[l + 1], act, <real>p.slope[l], z)
        inp = drop_forward(p, l, rows, out) if train else out


cdef double loss_and_grad(const real* x, const real* y, const real* sw, Plan* p,
                          Py_ssize_t rows, real* last, real sgd_lr=0,
                          const CsrBatch* sx=NULL, bint step_layers=False) noexcept nogil:
    # IN x (rows, size[0]) or the CSR rows sx (see forward_rows),
    # y (rows, size[L + 1]), sw (rows,) sample weights or NULL;
    # OUT grads; returns the mean (weighted) loss.
    # The output activations land in `last` (or the workspace when NULL).
    # With sgd_lr > 0 each layer instead takes its plain SGD step at that
    # rate as its gradient is found (dense_backward_sgd; grads then holds
    # only the bias gradients), which update must then count.  With
    # step_layers, each layer takes the optimizer's step (unclipped, counted
    # by the caller) as soon as its gradient is in grads: step_layer, which
    # leaves grads 0 for the next step's products to add into (grads must
    # be 0 when the first such step begins: run_epoch).
    cdef int l, L = p.n_layers - 1
    cdef real* w = <real*>p.params
    cdef real* g = <real*>p.grads
    cdef real* top = last if last != NULL else <real*>p.out[L]
    cdef double value
    forward_rows(x, p, rows, last, True, sx, True)
    value = loss_forward_backward(p.loss, p.huber_delta, p.act[L], <real>p.slope[L], top,
                                  <real*>p.z[L], <real*>p.delta[L], y, sw, rows,
                                  p.size[L + 1])
    cdef const real* relu_of
    for l in range(L, -1, -1):
        # δ_{l−1} = (δ_l @ W_lᵀ) ⊙ f′(z_{l−1}); the first layer needs no dx.
        # A ReLU's f′ = [a > 0] is taken with the product (input_gradient),
        # before dropout's mask rather than after: the two commute exactly,
        # as each makes an entry 0 or leaves it (dropout: scaled).
        if l == 0 and sx != NULL:
            if sgd_lr > 0:
                sparse_backward_sgd(w + p.w_off[0], w + p.b_off[0], g + p.b_off[0],
                                    <real*>p.delta[0], sx, rows, p.size[1], sgd_lr)
            else:
                sparse_backward(g + p.w_off[0], g + p.b_off[0], <real*>p.delta[0], sx,
                                rows, p.size[0], p.size[1])
                if step_layers:
                    step_layer(p, 0, w, g)
            continue
        relu_of = <real*>p.out[l - 1] if l > 0 and p.act[l - 1] == RELU else NULL
        product_threads(2.0 * rows * p.size[l] * p.size[l + 1])
        if sgd_lr > 0:
            dense_backward_sgd(NULL if l == 0 else <real*>p.delta[l - 1],
                               w + p.w_off[l], w + p.b_off[l], g + p.b_off[l],
                               <real*>p.delta[l], layer_input(x, p, l, True),
                               rows, p.size[l], p.size[l + 1], sgd_lr, relu_of)
        else:
            dense_backward(NULL if l == 0 else <real*>p.delta[l - 1],
                           g + p.w_off[l], g + p.b_off[l], <real*>p.delta[l],
                           layer_input(x, p, l, True), w + p.w_off[l],
                           rows, p.size[l], p.size[l + 1], relu_of, step_layers)
        if step_layers:
            step_layer(p, l, w, g)
        if l > 0:
            drop_backward(p, l - 1, rows, <real*>p.delta[l - 1])
            if relu_of == NULL:
                act_backward(<real*>p.delta[l - 1], <real*>p.delta[l - 1],
                             <real*>p.out[l - 1], <real*>p.z[l - 1], rows, p.size[l],
                             p.act[l - 1], <real>p.slope[l - 1])
    count_pass(p)
    return value


cdef inline void step_layer(Plan* p, int l, real* w, real* g) noexcept nogil:
    # Layer l's share of the optimizer's step on the parameters w (p.params)
    # from g (p.grads), its W and then its b, taken while its gradient is
    # still in cache from the product that wrote it (once the layer's
    # products are done: W is not read again in the step); their gradients
    # are left 0.
    cdef Py_ssize_t w_end = p.w_off[l] + p.size[l] * p.size[l + 1]
    cdef Py_ssize_t b_end = p.b_off[l] + p.size[l + 1]
    optimizer_update_stretch(&p.opt, w, g, <real*>p.state1, <real*>p.state2,
                             p.w_off[l], w_end, False)
    optimizer_update_stretch(&p.opt, w, g, <real*>p.state1, <real*>p.state2,
                             p.b_off[l], b_end, True)


cdef inline bint plain_sgd(const Plan* p) noexcept nogil:
    # SGD without momentum, L2, decay or clipping (so decay_biases changes
    # nothing): its step can run inside the backward pass
    # (dense_backward_sgd, the fast twin of dense_backward then
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


cdef inline double train_rows(const real* x, const real* y, const real* sw, Plan* p,
                              Py_ssize_t rows, real lr,
                              const CsrBatch* sx=NULL) noexcept nogil:
    # One training step inside an epoch: loss_and_grad and the optimizer's
    # update, fused for plain SGD (grads then keeps no weight gradients,
    # which is why train_step, whose grads users read, does not fuse), and
    # taken layer by layer inside loss_and_grad for every other rule but
    # clipping (whose norm needs the whole gradient first).
    # Returns the batch's mean loss.
    cdef double value
    if plain_sgd(p) and lr > 0:
        value = loss_and_grad(x, y, sw, p, rows, NULL, lr, sx)
        update(p, lr, True)
        return value
    if steps_by_layer(p, lr):
        p.opt.lr = lr
        p.opt.t += 1
        p.opt.threads = pass_threads()
        return loss_and_grad(x, y, sw, p, rows, NULL, 0, sx, True)
    value = loss_and_grad(x, y, sw, p, rows, NULL, 0, sx)
    update(p, lr)
    return value


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
    p.correct = 0
    if steps_by_layer(p, lr):  # the first step's products add into grads
        memset(p.grads, 0, p.n_params * sizeof(real))
    for k in range((count + batch - 1) // batch):
        start = first + k * batch
        rows = min(batch, end - start)
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
        total += train_rows(xb, yb, wb, p, rows, lr, sx) * rows
        p.correct += count_correct(p.loss, <real*>p.out[p.n_layers - 1], yb, rows, n_out)
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
