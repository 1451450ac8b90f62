# cython: language_level=3, boundscheck=False, wraparound=False
# cython: initializedcheck=False, cdivision=True
#
# backprop._engine: a whole network in compiled code.  An Engine holds the
# plan of a Sequential network (layer sizes, activations, where each W and b
# lives in the flat parameter buffer) and a workspace allocated once, sized by
# the largest batch it will see.  A forward pass, a training step (forward,
# loss, backward, update) and a whole epoch (gather shuffled rows, step, step,
# ...) are each one call that releases the GIL and allocates nothing.  The
# Guard marks a network as in use by one thread.
#
# This file holds the Engine and the Guard.  The C code they call is all
# compiled into this one module: the .pxd files are inline functions,
# cimported the way kernels.pxd is; the .pxi files are included as text, so
# that their functions compile as if written here.
#
#   threads.pxd   the BLAS pool's thread count during a call
#   shuffle.pxd   the seeded random stream, the epoch's shuffle, the row gather
#   plan.pxd      the Plan: the network's layout and its workspace
#   dropout.pxi   dropout between the layers of a training pass
#   epoch.pxi     forward, loss and gradient, update, step, epoch, inference
#   ready.pxi     the fast path for ready-made input (train_step, one-row predict)
#   choose.pxi    which build of the kernels in csrc/simd/ runs (per CPU)

from libc.math cimport isfinite
from libc.stdlib cimport malloc, free
from cpython.pythread cimport PyThread_get_thread_ident

cimport numpy as cnp

import numpy as np

from backprop.layout import Layout

cnp.import_array()

from backprop._codes cimport (
    SELU, BINARY_CROSS_ENTROPY, CROSS_ENTROPY, HUBER, SGD, ADAM, RMSPROP, ADAGRAD,
)
from kernels cimport real, all_finite, count_correct, CsrBatch, act_keeps_z
from threads cimport set_thread_functions, enter_threads, leave_threads
from shuffle cimport shuffle, gather_csr_rows
from plan cimport Plan

include "dropout.pxi"
include "epoch.pxi"
include "ready.pxi"
include "choose.pxi"


def set_blas_thread_functions(size_t get_address, size_t set_address):
    """Install the C functions that read and set the BLAS thread count."""
    set_thread_functions(get_address, set_address)


_SPLIT_MODES = {"never": SPLIT_NEVER, "rule": SPLIT_RULE, "always": SPLIT_ALWAYS}


def split_steps(str mode=None) -> str:
    """Which epochs split each step across two threads (epoch.pxi,
    split_step): "never" (the default), "rule" (the steps whose largest
    forward product is of 1 to 2.2 MFLOP, split_rule's bounds) or "always"
    (for benchmarks and tests); either way only a call that may use two
    threads, on dense input, splits.  Returns the mode before (None: only
    returns the mode)."""
    global split_mode
    if mode is None:
        return next(k for k, v in _SPLIT_MODES.items() if v == split_mode)
    if mode not in _SPLIT_MODES:
        raise ValueError(f"mode must be one of {', '.join(_SPLIT_MODES)}; got {mode!r}")
    before = next(k for k, v in _SPLIT_MODES.items() if v == split_mode)
    split_mode = _SPLIT_MODES[mode]
    return before


_CUT_MODES = {"never": CUT_NEVER, "rule": CUT_RULE, "always": CUT_ALWAYS}


def cut_steps(str mode=None) -> str:
    """Which epochs cut a large layer's products between two threads
    (epoch.pxi, cut steps): "rule" (the default: the layers large enough to
    gain), "never" (every product to BLAS's threads) or "always" (every
    layer that can be cut, for tests); either way only a call that may use
    two threads, on dense input, cuts, and split steps come first.  Returns
    the mode before (None: only returns the mode)."""
    global cut_mode
    before = next(k for k, v in _CUT_MODES.items() if v == cut_mode)
    if mode is None:
        return before
    if mode not in _CUT_MODES:
        raise ValueError(f"mode must be one of {', '.join(_CUT_MODES)}; got {mode!r}")
    cut_mode = _CUT_MODES[mode]
    return before


def cuts(sizes, Py_ssize_t batch) -> bool:
    """Whether fit, on two threads and dense input, cuts a layer's products
    in the steps of a network of these layer sizes (inputs, hidden…,
    outputs; ReLU hidden layers, a softmax output) at this batch, in the
    cut_steps mode in force (epoch.pxi, cut_rule), when it does not split
    them."""
    cdef Py_ssize_t[::1] size = np.asarray(sizes, dtype=np.intp)
    cdef int[::1] act
    cdef Plan p
    if size.shape[0] < 2:
        raise ValueError("sizes must give at least the inputs and the outputs")
    act = np.full(size.shape[0] - 1, RELU, dtype=np.intc)
    act[act.shape[0] - 1] = SOFTMAX
    p.n_layers, p.size, p.act = <int>size.shape[0] - 1, &size[0], &act[0]
    return cut_rule(&p, batch)


def splits(sizes, Py_ssize_t batch) -> bool:
    """Whether fit, on two threads and dense input, splits the steps of a
    network of these layer sizes (inputs, hidden…, outputs) at this batch,
    in the split_steps mode in force (epoch.pxi, split_rule)."""
    cdef Py_ssize_t[::1] size = np.asarray(sizes, dtype=np.intp)
    if size.shape[0] < 2:
        raise ValueError("sizes must give at least the inputs and the outputs")
    return split_rule(&size[0], <int>size.shape[0] - 1, batch)


def shuffled(Py_ssize_t[::1] perm, unsigned long long seed):
    """Shuffle perm in place as fit does each epoch (for tests and users
    who want the same order)."""
    with nogil:
        shuffle(&perm[0], perm.shape[0], seed)


cdef bint csr_rows_valid(const CsrBatch* S, const Py_ssize_t* order, Py_ssize_t first,
                         Py_ssize_t count, Py_ssize_t nnz, Py_ssize_t cols) noexcept nogil:
    # Whether the rows order[first … first + count) (or first … first + count
    # when order is NULL, each within the matrix) of the CSR matrix S lie
    # within its nnz values, and their columns within [0, cols): the check
    # that lets no gather or product read past a buffer, over the rows a
    # call reads (the Python layer has checked the whole matrix).
    cdef Py_ssize_t i, k, r, start, stop
    for i in range(first, first + count):
        r = order[i] if order != NULL else i
        start, stop = S.indptr[r], S.indptr[r + 1]
        if start < 0 or stop < start or stop > nnz:
            return False
        for k in range(start, stop):
            if S.indices[k] < 0 or S.indices[k] >= cols:
                return False
    return True


cdef CsrBatch csr_batch(const void* data, const Py_ssize_t[::1] indices,
                        const Py_ssize_t[::1] indptr, Py_ssize_t rows):
    # The CsrBatch of a CSR matrix of `rows` rows, its shapes checked.
    cdef CsrBatch S
    if indptr.shape[0] != rows + 1:
        raise ValueError(f"indptr must have {rows + 1} entries (rows + 1), "
                         f"got {indptr.shape[0]}")
    S.data = data
    S.indices = &indices[0] if indices.shape[0] else NULL
    S.indptr = &indptr[0]
    S.order = NULL
    S.first = 0
    return S


def csr_rows(real[:, ::1] out, const real[::1] data, const Py_ssize_t[::1] indices,
             const Py_ssize_t[::1] indptr, Py_ssize_t first=0):
    """out (rows, cols) ← the rows first … first + rows of the CSR matrix
    (data, indices, indptr), dense: exactly scipy's toarray of them."""
    cdef Py_ssize_t rows = out.shape[0], cols = out.shape[1], nnz = data.shape[0]
    if indices.shape[0] != nnz:
        raise ValueError("data and indices must have the same length")
    if first < 0 or rows < 1 or first + rows > indptr.shape[0] - 1:
        raise ValueError(f"first and out must pick rows of the matrix, got {first} and {rows}")
    cdef CsrBatch S = csr_batch(&data[0] if nnz else NULL, indices, indptr,
                                indptr.shape[0] - 1)
    S.first = first
    cdef bint valid
    with nogil:
        valid = csr_rows_valid(&S, NULL, first, rows, nnz, cols)
        if valid:
            gather_csr_rows(&out[0, 0], &S, rows, cols)
    if not valid:
        raise ValueError("indptr and indices must describe rows of nnz values "
                         f"in {cols} columns")


cdef inline char* data_of(cnp.ndarray arr) except? NULL:
    # The data of a numpy array, read in C: unlike arr.ctypes.data, no
    # Python code runs, so nothing (not even Ctrl-C) can interrupt it.
    return <char*>cnp.PyArray_DATA(arr)


IN_USE = ("this network is in use by another thread: use each network from one "
          "thread at a time (net.copy() gives another one)")


cdef class Guard:
    """Who is using a network right now: one thread at a time, any number of
    nested calls within it.

    `with guard:` (or claim/release from Cython) marks the network as this
    thread's until the block ends; meanwhile any other thread's claim raises
    RuntimeError(IN_USE) at once, it never waits.  fit holds its network's
    guard for the whole run, so its callbacks may still save or predict.
    Claims are made with the GIL held and take no Python calls, so the GIL
    makes each one atomic.  Between a claim and its release the engine runs
    no Python code, or releases in a `finally`: an interrupt (Ctrl-C) can
    land in any Python call, and must never leave the guard held.  A copy
    or a pickle of a guard is a free one.
    """
    cdef int depth                 # nested claims by the owner (0: free)
    cdef unsigned long owner       # the owner's thread ident while depth > 0

    cdef int claim(self) except -1:
        cdef unsigned long me = PyThread_get_thread_ident()
        if self.depth > 0 and self.owner != me:
            raise RuntimeError(IN_USE)
        self.owner = me
        self.depth += 1
        return 0

    cdef void release(self) noexcept:
        self.depth -= 1

    @property
    def held(self):
        """True while some thread holds the guard."""
        return self.depth > 0

    def __enter__(self):
        self.claim()
        return self

    def __exit__(self, *exc_info):
        self.release()
        return False

    def __reduce__(self):
        return Guard, ()


cdef class Engine:
    """The compiled plan and workspace of one network.

    Engine(layout, acts, slopes, loss, params, grads, capacity, guard,
    huber_delta):
    layout, the network's backprop.layout.Layout (where each W and b lies in
    the flat buffers), one layer for each entry of acts and slopes (each
    activation's parameter: leaky_relu's negative slope, elu's α, else 0);
    params and grads, the network's flat float32 or float64 buffers of that
    layout; guard, the network's Guard (a new one when None), which every
    call claims; huber_delta, huber's δ (a finite number > 0 for huber; the
    other losses leave it unread).  Methods take
    C-contiguous arrays of that dtype; the Python layer validates everything
    first, and the engine re-checks shapes so that nothing can read past a
    buffer.
    """
    cdef Plan plan
    cdef readonly object dtype
    cdef readonly object params
    cdef readonly object grads
    cdef list _work                # the training workspace arrays the plan points into
    cdef list _outs                # the activation arrays the plan points into
    cdef list _zs                  # the kept pre-activations the plan points into
    cdef list _state               # the optimizer's state arrays the plan points into
    cdef Py_ssize_t _epoch_rows    # rows of the last train_epoch
    cdef int typenum               # numpy's number for the dtype
    cdef public int n_threads      # BLAS threads for this engine's calls; 0: automatic
    cdef readonly Guard guard      # the network's "in use" mark, claimed by every call
    cdef list _drops               # the dropout buffers the plan points into (see dropout.pxi)

    def __cinit__(self):
        self.plan.size = NULL
        self.plan.act = NULL
        self.plan.slope = NULL
        self.plan.w_off = NULL
        self.plan.b_off = NULL
        self.plan.out = NULL
        self.plan.delta = NULL
        self.plan.drop_rate = NULL
        self.plan.dropped = NULL
        self.plan.mask = NULL
        self.plan.z = NULL
        self.plan.share_views = NULL

    def __init__(self, layout, acts, slopes, int loss, params, grads,
                 Py_ssize_t capacity=256, Guard guard=None, double huber_delta=1.0):
        cdef int l, L = len(acts)
        if not isinstance(layout, Layout):
            raise TypeError(f"layout must be a backprop.layout.Layout, got {type(layout).__name__}")
        sizes, w_off, b_off = layout.sizes, layout.w_offsets, layout.b_offsets
        if L != layout.n_layers or len(slopes) != L:
            raise ValueError("acts and slopes must have one entry for each layer of the layout")
        # The C code reads and writes where the layout says: each W and b must
        # lie within the buffers (a Layout's own do; a subclass's might not).
        if (len(sizes) != L + 1 or len(w_off) != L or len(b_off) != L or min(sizes) < 1
                or any(not (0 <= w_off[l] and w_off[l] + sizes[l] * sizes[l + 1] <= layout.n_params
                            and 0 <= b_off[l] and b_off[l] + sizes[l + 1] <= layout.n_params)
                       for l in range(L))):
            raise ValueError("layout: each layer's W and b must lie within its n_params")
        if any(b_off[l] + sizes[l + 1] > b_off[l + 1] for l in range(L - 1)):
            # (the optimizer walks the biases in order: see kernels.pxd, piece)
            raise ValueError("layout: the layers' biases must follow one another, apart")
        self.dtype = np.dtype(params.dtype)
        if self.dtype not in (np.float32, np.float64) or grads.dtype != self.dtype:
            raise TypeError("params and grads must share a float32 or float64 dtype")
        self.guard = Guard() if guard is None else guard
        if not 0 <= loss <= HUBER or any(not 0 <= act <= SELU for act in acts):
            raise ValueError("acts and loss must be the core's codes")
        if loss == HUBER and not (isfinite(huber_delta) and huber_delta > 0):
            raise ValueError(f"huber_delta must be a finite number > 0, got {huber_delta}")
        self.plan.n_layers = L
        self.plan.loss = loss
        self.plan.huber_delta = huber_delta
        self.plan.size = <Py_ssize_t*>malloc((L + 1) * sizeof(Py_ssize_t))
        self.plan.act = <int*>malloc(L * sizeof(int))
        self.plan.slope = <double*>malloc(L * sizeof(double))
        self.plan.w_off = <Py_ssize_t*>malloc(L * sizeof(Py_ssize_t))
        self.plan.b_off = <Py_ssize_t*>malloc(L * sizeof(Py_ssize_t))
        self.plan.out = <char**>malloc(L * sizeof(char*))
        self.plan.delta = <char**>malloc(L * sizeof(char*))
        self.plan.z = <char**>malloc(L * sizeof(char*))
        self.plan.share_views = <char**>malloc(5 * L * sizeof(char*))
        if (self.plan.share_views == NULL or self.plan.size == NULL
                or self.plan.act == NULL or self.plan.slope == NULL
                or self.plan.w_off == NULL or self.plan.b_off == NULL
                or self.plan.out == NULL or self.plan.delta == NULL or self.plan.z == NULL):
            raise MemoryError()
        for l in range(L + 1):
            self.plan.size[l] = sizes[l]
        for l in range(L):
            self.plan.z[l] = NULL
            self.plan.act[l] = acts[l]
            self.plan.slope[l] = slopes[l]
            self.plan.w_off[l] = w_off[l]
            self.plan.b_off[l] = b_off[l]
        if params.shape != (layout.n_params,) or grads.shape != (layout.n_params,):
            raise ValueError(f"params and grads must have shape ({layout.n_params},)")
        if not (params.flags.c_contiguous and grads.flags.c_contiguous
                and params.flags.writeable and grads.flags.writeable):
            raise ValueError("params and grads must be contiguous and writeable")
        self.plan.n_params = layout.n_params
        self.typenum = cnp.NPY_DOUBLE if self.dtype == np.float64 else cnp.NPY_FLOAT
        self.params = params
        self.grads = grads
        self.plan.params = data_of(params)
        self.plan.grads = data_of(grads)
        self.plan.capacity = 0
        self.plan.out_rows = 0
        self._init_dropout()
        self.reserve(capacity)
        self.set_optimizer(SGD)

    def __dealloc__(self):
        free(self.plan.size)
        free(self.plan.act)
        free(self.plan.slope)
        free(self.plan.w_off)
        free(self.plan.b_off)
        free(self.plan.out)
        free(self.plan.delta)
        free(self.plan.drop_rate)
        free(self.plan.dropped)
        free(self.plan.mask)
        free(self.plan.z)
        free(self.plan.share_views)

    @property
    def capacity(self):
        """Rows the workspace holds: the largest batch a step can take."""
        return self.plan.capacity

    def reserve(self, Py_ssize_t capacity, Py_ssize_t out_rows=0):
        """Grow the workspace for training steps of `capacity` rows, and the
        activations for inference chunks of `out_rows` rows (never shrinks)."""
        if capacity < 1:
            raise ValueError(f"capacity must be at least 1, got {capacity}")
        if max(out_rows, capacity) <= self.plan.out_rows and capacity <= self.plan.capacity:
            return
        self.guard.claim()                    # never reallocate under a running call
        try:
            self._grow(capacity, max(out_rows, capacity))
        finally:
            self.guard.release()

    cdef _grow(self, Py_ssize_t capacity, Py_ssize_t out_rows):
        # Every array is made before the plan points into any of them, and
        # the pointers go in without running Python code: an error or Ctrl-C
        # while allocating leaves the plan as it was, never pointing into
        # an array that is then freed.
        cdef int l, L = self.plan.n_layers
        if out_rows > self.plan.out_rows:
            outs = [np.zeros((out_rows, self.plan.size[l + 1]), self.dtype)
                    for l in range(L)]
            for l in range(L):
                self.plan.out[l] = data_of(outs[l])
            self._outs = outs
            self.plan.out_rows = out_rows
        if capacity > self.plan.capacity:
            work = [np.zeros((capacity, self.plan.size[l + 1]), self.dtype)
                    for l in range(L)]
            work += [np.zeros((capacity, self.plan.size[0]), self.dtype),
                     np.zeros((capacity, self.plan.size[L]), self.dtype),
                     np.zeros(capacity, self.dtype)]
            drops = self._dropout_work(capacity)
            zs = self._z_workspace(capacity)
            for l in range(L):
                self.plan.delta[l] = data_of(work[l])
            self._point_dropout(drops)
            self.plan.xbuf = data_of(work[L])
            self.plan.ybuf = data_of(work[L + 1])
            self.plan.wbuf = data_of(work[L + 2])
            for l in range(L):
                self.plan.z[l] = NULL if zs[l] is None else data_of(zs[l])
            self._work = work
            self._zs = zs
            self.plan.capacity = capacity

    cdef list _z_workspace(self, Py_ssize_t capacity):
        # Room for z (capacity, size[l + 1]) for each layer whose activation
        # needs it (act_keeps_z), None for the others: no cost for a
        # network without such layers.
        return [np.zeros((capacity, self.plan.size[l + 1]), self.dtype)
                if act_keeps_z(self.plan.act[l]) else None
                for l in range(self.plan.n_layers)]

    def set_optimizer(self, int kind, double momentum=0, bint nesterov=False,
                      double beta1=0.9, double beta2=0.999, double rho=0.9,
                      double eps=1e-8, double l2=0, double weight_decay=0,
                      double clip_norm=0, bint decay_biases=True, state=(),
                      long long steps=0):
        """The update rule for training calls: kind (SGD, ADAM, RMSPROP,
        ADAGRAD) and its settings (decay_biases False: l2 and weight_decay
        leave the biases alone); `state`, the arrays it keeps (n_params,)
        each: one for SGD with momentum, RMSProp and AdaGrad, two for Adam;
        `steps`, the updates already taken (Adam's bias correction)."""
        cdef int needed = (2 if kind == ADAM else 0 if (kind == SGD and momentum == 0)
                           else 1 if kind in (SGD, RMSPROP, ADAGRAD) else -1)
        if needed < 0:
            raise ValueError(f"unknown optimizer kind {kind}")
        state = list(state)
        if len(state) != needed:
            raise ValueError(f"this optimizer keeps {needed} state arrays, got {len(state)}")
        for arr in state:
            if (not isinstance(arr, np.ndarray) or arr.dtype != self.dtype
                    or arr.shape != (self.plan.n_params,)
                    or not arr.flags.c_contiguous or not arr.flags.writeable):
                raise ValueError(f"state arrays must be writeable, contiguous "
                                 f"{self.dtype} of shape ({self.plan.n_params},)")
        cdef char* state1 = data_of(state[0]) if needed > 0 else NULL
        cdef char* state2 = data_of(state[1]) if needed > 1 else NULL
        # Between claim and release no Python code runs, so no error or
        # Ctrl-C can leave the rule half swapped, or the guard held.
        self.guard.claim()              # never swap the rule under a running call
        self._state = state
        self.plan.opt.kind = kind
        self.plan.opt.momentum = momentum
        self.plan.opt.nesterov = nesterov
        self.plan.opt.beta1 = beta1
        self.plan.opt.beta2 = beta2
        self.plan.opt.rho = rho
        self.plan.opt.eps = eps
        self.plan.opt.l2 = l2
        self.plan.opt.weight_decay = weight_decay
        self.plan.opt.clip_norm = clip_norm
        self.plan.opt.decay_biases = decay_biases
        self.plan.opt.t = steps
        self.plan.state1 = state1
        self.plan.state2 = state2
        self.guard.release()

    @property
    def epoch_accuracy(self):
        """The training accuracy of the last train_epoch, counted on each
        batch's outputs before its update (NaN for mse and poisson)."""
        return self._accuracy(self.plan.correct, self._epoch_rows)

    cdef double _accuracy(self, Py_ssize_t correct, Py_ssize_t rows):
        # The fraction of `rows` rows predicted right, from count_correct's
        # count: of the rows (cross-entropy) or of every output (sigmoid).
        if self.plan.loss == CROSS_ENTROPY:
            return <double>correct / rows
        if self.plan.loss == BINARY_CROSS_ENTROPY:
            return <double>correct / (rows * self.plan.size[self.plan.n_layers])
        return float("nan")

    @property
    def optimizer_steps(self):
        """Updates taken by the current optimizer."""
        return self.plan.opt.t

    def inference_rows(self, Py_ssize_t n):
        """Rows of the inference chunk for n rows: all of them, up to 4,096
        and up to what keeps the activations within 16 MiB: bigger products
        use BLAS better (docs/performance.md)."""
        cdef Py_ssize_t l, width = 0
        for l in range(self.plan.n_layers):
            width += self.plan.size[l + 1]
        cdef Py_ssize_t limit = (16 << 20) // (width * self.dtype.itemsize)
        return max(1, min(n, 4096, limit))

    def step_ready(self, X, y, double lr, bint update):
        """A training step (or, without update, the gradient only) on (X, y)
        if both are ready-made (see `ready`, `targets_ready`); returns the
        mean loss, or None when the checked path must convert or explain."""
        cdef const char* x = ready(X, 2, self.plan.size[0], self.typenum)
        cdef Py_ssize_t rows
        cdef double value
        cdef int threads
        if x == NULL or (update and not (lr > 0 and isfinite(lr))):
            return None
        rows = (<cnp.ndarray>X).shape[0]
        if rows > self.plan.capacity:
            return None
        self.guard.claim()                     # (targets_ready writes to the workspace)
        try:
            if not targets_ready(&self.plan, self.typenum, y, rows):
                return None
            threads = self.n_threads
            if self.typenum == cnp.NPY_DOUBLE:
                if not all_finite(<const double*>x, rows * self.plan.size[0]):
                    return None
                with nogil:
                    value = step_rows(<const double*>x, &self.plan, rows, lr, update, threads)
            else:
                if not all_finite(<const float*>x, rows * self.plan.size[0]):
                    return None
                with nogil:
                    value = step_rows(<const float*>x, &self.plan, rows, <float>lr, update,
                                      threads)
            return value
        finally:
            self.guard.release()

    def predict_row(self, x, int mode):
        """The prediction for one ready-made sample x (n_in,) in a
        PredictMode (backprop._codes): the outputs, the argmax label, the
        label [output ≥ 0.5] or the single output's value; None when x must
        take the checked path."""
        cdef const char* data = ready(x, 1, self.plan.size[0], self.typenum)
        if data == NULL:
            return None
        self.guard.claim()
        try:
            if self.typenum == cnp.NPY_DOUBLE:
                return predict_one(<const double*>data, &self.plan, mode, self.typenum,
                                   self.n_threads)
            return predict_one(<const float*>data, &self.plan, mode, self.typenum,
                               self.n_threads)
        finally:
            self.guard.release()

    cdef const real* _weights(self, const real[::1] weights, Py_ssize_t rows) except? NULL:
        # The sample weights' data, checked to have one entry per row; NULL
        # for none.
        if weights is None:
            return NULL
        if weights.shape[0] != rows:
            raise ValueError(f"weights must have one entry per row ({rows})")
        return &weights[0]

    cdef _check(self, x, y, bint is_double, bint batch):
        # The last line of defence before raw pointers: dtype and shapes.
        if is_double != (self.dtype == np.float64):
            raise TypeError(f"arrays must be {self.dtype}")
        if x.shape[0] < 1:
            raise ValueError("X must have at least one row")
        if x.shape[1] != self.plan.size[0]:
            raise ValueError(f"X must have {self.plan.size[0]} columns")
        if y is not None and (y.shape[0] != x.shape[0]
                              or y.shape[1] != self.plan.size[self.plan.n_layers]):
            raise ValueError("Y must have one row per row of X and "
                             f"{self.plan.size[self.plan.n_layers]} columns")
        if batch and x.shape[0] > self.plan.capacity:
            raise ValueError(f"a batch holds at most {self.plan.capacity} rows")

    def forward(self, const real[:, ::1] X, real[:, ::1] out):
        """out (n, n_out) ← the network's outputs for X (n, n_in)."""
        self._check(X, out, real is double, False)
        self.reserve(self.plan.capacity, self.inference_rows(X.shape[0]))
        cdef int threads = self.n_threads
        self.guard.claim()
        with nogil:
            enter_threads(threads)
            infer(&X[0, 0], <real*>NULL, &out[0, 0], X.shape[0], &self.plan)
            leave_threads()
        self.guard.release()

    def evaluate(self, const real[:, ::1] X, const real[:, ::1] Y,
                 real[:, ::1] out):
        """out ← outputs for X; returns the mean loss against Y."""
        cdef double value
        self._check(X, Y, real is double, False)
        if out.shape[0] != Y.shape[0] or out.shape[1] != Y.shape[1]:
            raise ValueError("out must have the shape of Y")
        cdef Py_ssize_t chunk = self.inference_rows(X.shape[0])
        self.reserve(chunk, chunk)
        cdef int threads = self.n_threads
        self.guard.claim()
        with nogil:
            enter_threads(threads)
            value = infer(&X[0, 0], &Y[0, 0], &out[0, 0], X.shape[0], &self.plan)
            leave_threads()
        self.guard.release()
        return value

    def loss_and_grad(self, X, Y, weights=None, Py_ssize_t mask_row=0):
        """grads ← ∂L/∂params for the batch (X, Y), with optional sample
        weights (rows,); returns the mean (weighted) loss.  mask_row: where
        the batch's rows start in the pass's dropout masks (a share of a
        larger batch: see set_dropout)."""
        return self.train_step(X, Y, 0.0, weights, False, mask_row)

    def apply_update(self, double lr):
        """One optimizer update of params from the current grads: the second
        half of train_step, for gradients computed by loss_and_grad and then
        changed (averaged across processes, for instance)."""
        cdef int threads = self.n_threads
        self.guard.claim()
        with nogil:
            enter_threads(threads)      # (the update's threads: pass_threads)
            if self.typenum == cnp.NPY_DOUBLE:
                update(&self.plan, lr)
            else:
                update(&self.plan, <float>lr)
            leave_threads()
        self.guard.release()

    def batch_accuracy(self, const real[:, ::1] Y):
        """The accuracy (see epoch_accuracy) of the last loss_and_grad or
        train_step, whose targets were Y."""
        cdef Py_ssize_t k = self.plan.size[self.plan.n_layers]
        cdef bint is_double = real is double
        if is_double != (self.dtype == np.float64):
            raise TypeError(f"Y must be {self.dtype}")
        if Y.shape[0] < 1 or Y.shape[0] > self.plan.capacity or Y.shape[1] != k:
            raise ValueError(f"Y must be a batch of at most {self.plan.capacity} rows "
                             f"and {k} columns")
        return self._accuracy(count_correct(self.plan.loss,
                                            <real*>self.plan.out[self.plan.n_layers - 1],
                                            &Y[0, 0], Y.shape[0], k), Y.shape[0])

    def train_step(self, const real[:, ::1] X, const real[:, ::1] Y, double lr,
                   const real[::1] weights=None, bint update_params=True,
                   Py_ssize_t mask_row=0):
        """One training step on the batch (sample weights optional), or the
        gradient alone (update_params False); returns its mean loss."""
        cdef double value
        cdef const real* wp = self._weights(weights, X.shape[0])
        self._check(X, Y, real is double, True)
        if mask_row < 0:
            raise ValueError(f"mask_row must be ≥ 0, got {mask_row}")
        cdef int threads = self.n_threads
        self.guard.claim()
        self.plan.mask_row = mask_row
        with nogil:
            enter_threads(threads)
            value = loss_and_grad(&X[0, 0], &Y[0, 0], wp, &self.plan, X.shape[0],
                                  <real*>NULL)
            if update_params:
                update(&self.plan, <real>lr)
            leave_threads()
        self.plan.mask_row = 0
        self.guard.release()
        return value

    def train_epoch(self, const real[:, ::1] X, const real[:, ::1] Y,
                    Py_ssize_t[::1] perm, Py_ssize_t batch_size, double lr,
                    long long shuffle_seed=-1, const real[::1] weights=None,
                    Py_ssize_t first=0, Py_ssize_t count=-1):
        """One epoch of mini-batch SGD, or the stretch of `count` rows from
        row `first` of it; rows in the order perm (None: as stored), which is
        first shuffled in place when shuffle_seed ≥ 0.  Returns the mean
        training loss over those rows."""
        self._check(X, Y, real is double, False)
        return self._epoch(&X[0, 0], NULL, False, 0, Y, perm, batch_size, lr, shuffle_seed,
                           weights, first, count)

    def train_epoch_csr(self, const real[::1] data, const Py_ssize_t[::1] indices,
                        const Py_ssize_t[::1] indptr, const real[:, ::1] Y,
                        Py_ssize_t[::1] perm, Py_ssize_t batch_size, double lr,
                        long long shuffle_seed=-1, const real[::1] weights=None,
                        Py_ssize_t first=0, Py_ssize_t count=-1, bint gather=False):
        """train_epoch on X given as a CSR matrix of Y.shape[0] rows and n_in
        columns: row r holds the values data[indptr[r]:indptr[r + 1]] at the
        columns indices[indptr[r]:indptr[r + 1]] (any order; repeats add up).
        Each batch's rows are gathered dense when `gather` (the same steps as
        train_epoch on the dense X), else the first layer's products take
        only the nonzeros (the same up to rounding)."""
        cdef bint is_double = real is double
        if is_double != (self.dtype == np.float64):
            raise TypeError(f"arrays must be {self.dtype}")
        if indices.shape[0] != data.shape[0]:
            raise ValueError("data and indices must have the same length")
        if Y.shape[0] < 1 or Y.shape[1] != self.plan.size[self.plan.n_layers]:
            raise ValueError(f"Y must have at least one row and "
                             f"{self.plan.size[self.plan.n_layers]} columns")
        cdef CsrBatch S = csr_batch(&data[0] if data.shape[0] else NULL, indices, indptr,
                                    Y.shape[0])
        return self._epoch(<const real*>NULL, &S, gather, data.shape[0], Y, perm, batch_size,
                           lr, shuffle_seed, weights, first, count)

    cdef double _epoch(self, const real* X, CsrBatch* S, bint gather, Py_ssize_t nnz,
                       const real[:, ::1] Y, Py_ssize_t[::1] perm, Py_ssize_t batch_size,
                       double lr, long long shuffle_seed, const real[::1] weights,
                       Py_ssize_t first, Py_ssize_t count) except? -1:
        # train_epoch of the dense X or (not NULL) the CSR matrix S, of nnz
        # values, both of Y.shape[0] rows and checked by the caller.
        cdef double value
        cdef Py_ssize_t n = Y.shape[0]
        cdef const real* wp = self._weights(weights, n)
        cdef const Py_ssize_t* order = NULL
        cdef Py_ssize_t i
        cdef bint valid = True
        if batch_size < 1 or batch_size > self.plan.capacity:
            raise ValueError(f"batch_size must lie in [1, {self.plan.capacity}]")
        if count < 0:
            count = n - first
        if first < 0 or count < 1 or first + count > n:
            raise ValueError(f"first and count must pick rows of X, got {first} and {count}")
        if perm is not None:
            if perm.shape[0] != n:
                raise ValueError("perm must have one entry per row of X")
            order = &perm[0]
        cdef int threads = self.n_threads
        self.guard.claim()
        self._epoch_rows = count
        with nogil:
            if perm is not None and shuffle_seed >= 0:
                shuffle(&perm[0], n, <unsigned long long>shuffle_seed)
            for i in range(first, first + count):
                if order != NULL and (order[i] < 0 or order[i] >= n):
                    order = NULL            # (checked below, with the GIL)
                    break
            if S != NULL and (perm is None or order != NULL):
                valid = csr_rows_valid(S, order, first, count, nnz, self.plan.size[0])
        if perm is not None and order == NULL:
            self.guard.release()
            raise ValueError("perm must index rows of X")
        if not valid:
            self.guard.release()
            raise ValueError("indptr and indices must describe rows of nnz values "
                             f"in {self.plan.size[0]} columns")
        with nogil:
            enter_threads(threads)
            value = run_epoch(X, &Y[0, 0], wp, order, first, count, batch_size,
                              <real>lr, &self.plan, S, gather)
            leave_threads()
        self.guard.release()
        return value

    # -- dropout (see dropout.pxi) ----------------------------------------------
    cdef _init_dropout(self):
        # No dropout yet: every rate 0, no buffers.
        cdef int l, L = self.plan.n_layers
        self.plan.drop_rate = <double*>malloc(L * sizeof(double))
        self.plan.dropped = <char**>malloc(L * sizeof(char*))
        self.plan.mask = <unsigned char**>malloc(L * sizeof(unsigned char*))
        if self.plan.drop_rate == NULL or self.plan.dropped == NULL or self.plan.mask == NULL:
            raise MemoryError()
        for l in range(L):
            self.plan.drop_rate[l] = 0
            self.plan.dropped[l] = NULL
            self.plan.mask[l] = NULL
        self.plan.dropout = False
        self.plan.drop_seed = 0
        self.plan.drop_steps = 0
        self.plan.mask_row = 0
        self._drops = []

    cdef list _dropout_work(self, Py_ssize_t capacity, rates=None):
        # For each layer, the arrays (d, mask) of its dropout for training
        # passes of `capacity` rows, or None where its rate (of `rates`, or
        # the plan's) is 0.
        cdef int l
        if rates is None:
            rates = [self.plan.drop_rate[l] for l in range(self.plan.n_layers)]
        return [None if rates[l] <= 0 else
                (np.zeros((capacity, self.plan.size[l + 1]), self.dtype),
                 np.zeros((capacity, self.plan.size[l + 1]), np.uint8))
                for l in range(self.plan.n_layers)]

    cdef int _point_dropout(self, list drops) except -1:
        # The plan's dropout buffers ← those of `drops` (see _dropout_work),
        # without running Python code.
        cdef int l
        for l in range(self.plan.n_layers):
            if drops[l] is None:
                self.plan.dropped[l] = NULL
                self.plan.mask[l] = NULL
            else:
                self.plan.dropped[l] = data_of(drops[l][0])
                self.plan.mask[l] = <unsigned char*>data_of(drops[l][1])
        self._drops = drops
        return 0

    def set_dropout(self, rates, unsigned long long seed, unsigned long long steps=0):
        """Dropout in training calls (train_epoch, train_step, loss_and_grad):
        after layer l's activation, rates[l] in [0, 1) of its units dropped
        (0: none; the output layer's must be 0), the kept ones scaled by
        1/(1 − rate).  The masks come from the stream `seed`: training pass
        k (each call of loss_and_grad or train_step, each batch of an epoch)
        draws mask number k, `steps` (dropout_steps) being the passes so far.
        Inference is never dropped."""
        cdef int l, L = self.plan.n_layers
        rates = [float(r) for r in rates]
        if len(rates) != L:
            raise ValueError(f"rates must have one entry for each of the {L} layers")
        if any(not 0 <= r < 1 for r in rates):
            raise ValueError(f"rates must lie in [0, 1), got {rates}")
        if rates[L - 1] != 0:
            raise ValueError("rates: the output layer takes no dropout")
        drops = self._dropout_work(self.plan.capacity, rates)
        # Between claim and release no Python code runs (see set_optimizer).
        self.guard.claim()              # never swap the buffers under a running call
        for l in range(L):
            self.plan.drop_rate[l] = rates[l]
        self._point_dropout(drops)
        self.plan.dropout = any(r > 0 for r in rates)
        self.plan.drop_seed = seed
        self.plan.drop_steps = steps
        self.guard.release()

    @property
    def dropout_rates(self):
        """The rate of dropout after each layer (see set_dropout)."""
        return tuple(self.plan.drop_rate[l] for l in range(self.plan.n_layers))

    @property
    def dropout_seed(self):
        """The seed of the dropout masks' stream (see set_dropout)."""
        return self.plan.drop_seed

    @property
    def dropout_steps(self):
        """Training passes that drew dropout masks so far: the next draws
        mask number dropout_steps."""
        return self.plan.drop_steps

    def set_dropout_stream(self, unsigned long long seed, unsigned long long steps):
        """The masks' stream `seed`, `steps` passes into it: to go on from a
        file, or to draw a pass's masks again."""
        self.guard.claim()
        self.plan.drop_seed = seed
        self.plan.drop_steps = steps
        self.guard.release()
