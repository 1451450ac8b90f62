# cython: language_level=3, boundscheck=False, wraparound=False
# cython: initializedcheck=False, cdivision=True
#
# backprop._engine: a whole network in compiled code.  An Engine holds the
# plan of a Sequential network (layer sizes, activations, where each W and b
# lives in the flat parameter buffer) and a workspace allocated once, sized by
# the largest batch it will see.  A forward pass, a training step (forward,
# loss, backward, update) and a whole epoch (gather shuffled rows, step, step,
# ...) are each one call that releases the GIL and allocates nothing.

from libc.stdlib cimport malloc, free
from libc.string cimport memcpy

import numpy as np

from kernels cimport (
    real, IDENTITY, dense_forward, dense_backward, act_backward,
    loss_forward_backward, sgd_update,
)


cdef struct Plan:
    int n_layers
    int loss
    Py_ssize_t capacity        # rows the workspace holds
    Py_ssize_t n_params
    Py_ssize_t* size           # (n_layers + 1,): size[l] → layer l → size[l + 1]
    int* act                   # (n_layers,)
    double* slope              # (n_layers,) leaky_relu's negative slope
    Py_ssize_t* w_off          # (n_layers,) W of layer l: params[w_off[l]:], (size[l], size[l + 1])
    Py_ssize_t* b_off          # (n_layers,) b of layer l: params[b_off[l]:], (size[l + 1],)
    char* params               # (n_params,) the flat parameter buffer
    char* grads                # (n_params,) its gradient, laid out the same way
    char** out                 # (n_layers,) each (capacity, size[l + 1]): a = f(z)
    char** delta               # (n_layers,) each (capacity, size[l + 1]): ∂L/∂z
    char* xbuf                 # (capacity, size[0]): the gathered input batch
    char* ybuf                 # (capacity, size[n_layers]): the gathered targets


cdef void forward_rows(const real* x, Plan* p, Py_ssize_t rows, real* last,
                       bint logits) noexcept nogil:
    # x (rows, size[0]) → out[l] = f(out[l − 1] @ W + b) for every layer.
    # The last layer writes into `last` when it is not NULL, and stops at
    # z (no activation) when `logits` is set, for the fused loss to finish.
    cdef int l, L = p.n_layers - 1
    cdef const real* inp = x
    cdef real* out
    cdef real* w = <real*>p.params
    for l in range(p.n_layers):
        out = last if (l == L and last != NULL) else <real*>p.out[l]
        dense_forward(out, inp, w + p.w_off[l], w + p.b_off[l], rows,
                      p.size[l], p.size[l + 1],
                      IDENTITY if (l == L and logits) else p.act[l],
                      <real>p.slope[l])
        inp = out


cdef double loss_and_grad(const real* x, const real* y, Plan* p,
                          Py_ssize_t rows, real* last) noexcept nogil:
    # IN x (rows, size[0]), y (rows, size[L + 1]); OUT grads; returns mean loss.
    # The output activations land in `last` (or the workspace when NULL).
    cdef int l, L = p.n_layers - 1
    cdef real* w = <real*>p.params
    cdef real* g = <real*>p.grads
    cdef real* top = last if last != NULL else <real*>p.out[L]
    cdef double value
    forward_rows(x, p, rows, last, True)
    value = loss_forward_backward(p.loss, p.act[L], <real>p.slope[L], top,
                                  <real*>p.delta[L], y, rows, p.size[L + 1])
    for l in range(L, -1, -1):
        # δ_{l−1} = (δ_l @ W_lᵀ) ⊙ f′(z_{l−1}); the first layer needs no dx.
        dense_backward(NULL if l == 0 else <real*>p.delta[l - 1],
                       g + p.w_off[l], g + p.b_off[l], <real*>p.delta[l],
                       x if l == 0 else <real*>p.out[l - 1], w + p.w_off[l],
                       rows, p.size[l], p.size[l + 1])
        if l > 0:
            act_backward(<real*>p.delta[l - 1], <real*>p.delta[l - 1],
                         <real*>p.out[l - 1], rows, p.size[l], p.act[l - 1],
                         <real>p.slope[l - 1])
    return value


cdef double run_epoch(const real* X, const real* Y, const Py_ssize_t* perm,
                      Py_ssize_t n, Py_ssize_t batch, real lr,
                      Plan* p) noexcept nogil:
    # One epoch of mini-batch gradient descent over X (n, size[0]) and
    # Y (n, size[L + 1]), rows taken in the order perm (or as stored when
    # perm is NULL).  Returns the mean training loss over the epoch.
    cdef Py_ssize_t k, start, i, rows
    cdef Py_ssize_t n_in = p.size[0], n_out = p.size[p.n_layers]
    cdef const real* xb
    cdef const real* yb
    cdef double total = 0
    for k in range((n + batch - 1) // batch):
        start = k * batch
        rows = min(batch, n - start)
        if perm == NULL:
            xb = X + start * n_in
            yb = Y + start * n_out
        else:
            for i in range(rows):
                memcpy(<real*>p.xbuf + i * n_in, X + perm[start + i] * n_in,
                       n_in * sizeof(real))
                memcpy(<real*>p.ybuf + i * n_out, Y + perm[start + i] * n_out,
                       n_out * sizeof(real))
            xb = <real*>p.xbuf
            yb = <real*>p.ybuf
        total += loss_and_grad(xb, yb, p, rows, NULL) * rows
        sgd_update(<real*>p.params, <real*>p.grads, p.n_params, lr)
    return total / n


cdef class Engine:
    """The compiled plan and workspace of one network.

    Engine(sizes, acts, slopes, loss, params, grads, capacity): sizes has one
    entry more than acts and slopes; params and grads are the network's flat
    float32 or float64 buffers, W of layer l at w_off[l] (row-major) followed
    by b, layer after layer.  Methods take C-contiguous arrays of that dtype;
    the Python layer validates everything first, and the engine re-checks
    shapes so that nothing can read past a buffer.
    """
    cdef Plan plan
    cdef readonly object dtype
    cdef readonly object params
    cdef readonly object grads
    cdef list _work                # the workspace arrays the plan points into

    def __cinit__(self):
        self.plan.size = NULL
        self.plan.act = NULL
        self.plan.slope = NULL
        self.plan.w_off = NULL
        self.plan.b_off = NULL
        self.plan.out = NULL
        self.plan.delta = NULL

    def __init__(self, sizes, acts, slopes, int loss, params, grads,
                 Py_ssize_t capacity=256):
        cdef int l, L = len(acts)
        cdef Py_ssize_t off = 0
        if L < 1 or len(sizes) != L + 1 or len(slopes) != L:
            raise ValueError("sizes must have one entry more than acts and slopes")
        self.dtype = np.dtype(params.dtype)
        if self.dtype not in (np.float32, np.float64) or grads.dtype != self.dtype:
            raise TypeError("params and grads must share a float32 or float64 dtype")
        self.plan.n_layers = L
        self.plan.loss = loss
        self.plan.size = <Py_ssize_t*>malloc((L + 1) * sizeof(Py_ssize_t))
        self.plan.act = <int*>malloc(L * sizeof(int))
        self.plan.slope = <double*>malloc(L * sizeof(double))
        self.plan.w_off = <Py_ssize_t*>malloc(L * sizeof(Py_ssize_t))
        self.plan.b_off = <Py_ssize_t*>malloc(L * sizeof(Py_ssize_t))
        self.plan.out = <char**>malloc(L * sizeof(char*))
        self.plan.delta = <char**>malloc(L * sizeof(char*))
        if (self.plan.size == NULL or self.plan.act == NULL or self.plan.slope == NULL
                or self.plan.w_off == NULL or self.plan.b_off == NULL
                or self.plan.out == NULL or self.plan.delta == NULL):
            raise MemoryError()
        for l in range(L + 1):
            self.plan.size[l] = sizes[l]
            if sizes[l] < 1:
                raise ValueError("every layer size must be at least 1")
        for l in range(L):
            self.plan.act[l] = acts[l]
            self.plan.slope[l] = slopes[l]
            self.plan.w_off[l] = off
            off += sizes[l] * sizes[l + 1]
            self.plan.b_off[l] = off
            off += sizes[l + 1]
        if params.shape != (off,) or grads.shape != (off,):
            raise ValueError(f"params and grads must have shape ({off},)")
        if not (params.flags.c_contiguous and grads.flags.c_contiguous
                and params.flags.writeable and grads.flags.writeable):
            raise ValueError("params and grads must be contiguous and writeable")
        self.plan.n_params = off
        self.params = params
        self.grads = grads
        self.plan.params = <char*><Py_ssize_t>params.ctypes.data
        self.plan.grads = <char*><Py_ssize_t>grads.ctypes.data
        self.plan.capacity = 0
        self.reserve(capacity)

    def __dealloc__(self):
        free(self.plan.size)
        free(self.plan.act)
        free(self.plan.slope)
        free(self.plan.w_off)
        free(self.plan.b_off)
        free(self.plan.out)
        free(self.plan.delta)

    @property
    def capacity(self):
        """Rows the workspace holds: the largest batch a step can take."""
        return self.plan.capacity

    def reserve(self, Py_ssize_t capacity):
        """Grow the workspace to hold `capacity` rows (never shrinks)."""
        cdef int l, L = self.plan.n_layers
        if capacity < 1:
            raise ValueError(f"capacity must be at least 1, got {capacity}")
        if capacity <= self.plan.capacity:
            return
        work = []
        for l in range(L):
            out = np.zeros((capacity, self.plan.size[l + 1]), self.dtype)
            delta = np.zeros((capacity, self.plan.size[l + 1]), self.dtype)
            self.plan.out[l] = <char*><Py_ssize_t>out.ctypes.data
            self.plan.delta[l] = <char*><Py_ssize_t>delta.ctypes.data
            work += [out, delta]
        xbuf = np.zeros((capacity, self.plan.size[0]), self.dtype)
        ybuf = np.zeros((capacity, self.plan.size[L]), self.dtype)
        self.plan.xbuf = <char*><Py_ssize_t>xbuf.ctypes.data
        self.plan.ybuf = <char*><Py_ssize_t>ybuf.ctypes.data
        self._work = work + [xbuf, ybuf]
        self.plan.capacity = capacity

    def output(self, int layer):
        """The workspace's activations of `layer` (a view; for inspection)."""
        return self._work[2 * layer]

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
        cdef Py_ssize_t k, start, rows, n = X.shape[0], cap = self.plan.capacity
        cdef Py_ssize_t n_in = self.plan.size[0], n_out = out.shape[1]
        self._check(X, out, real is double, False)
        with nogil:
            for k in range((n + cap - 1) // cap):
                start = k * cap
                rows = min(cap, n - start)
                forward_rows(&X[0, 0] + start * n_in, &self.plan, rows,
                             &out[0, 0] + start * n_out, False)

    def evaluate(self, const real[:, ::1] X, const real[:, ::1] Y,
                 real[:, ::1] out):
        """out ← outputs for X; returns the mean loss against Y."""
        cdef Py_ssize_t k, start, rows, n = X.shape[0], cap = self.plan.capacity
        cdef Py_ssize_t n_in = self.plan.size[0], n_out = Y.shape[1]
        cdef int L = self.plan.n_layers - 1
        cdef double total = 0
        self._check(X, Y, real is double, False)
        if out.shape[0] != n or out.shape[1] != n_out:
            raise ValueError("out must have the shape of Y")
        with nogil:
            for k in range((n + cap - 1) // cap):
                start = k * cap
                rows = min(cap, n - start)
                forward_rows(&X[0, 0] + start * n_in, &self.plan, rows,
                             &out[0, 0] + start * n_out, True)
                total += rows * loss_forward_backward(
                    self.plan.loss, self.plan.act[L], <real>self.plan.slope[L],
                    &out[0, 0] + start * n_out, <real*>self.plan.delta[L],
                    &Y[0, 0] + start * n_out, rows, n_out)
        return total / n

    def loss_and_grad(self, const real[:, ::1] X, const real[:, ::1] Y):
        """grads ← ∂L/∂params for the batch (X, Y); returns the mean loss."""
        cdef double value
        self._check(X, Y, real is double, True)
        with nogil:
            value = loss_and_grad(&X[0, 0], &Y[0, 0], &self.plan, X.shape[0],
                                  <real*>NULL)
        return value

    def train_step(self, const real[:, ::1] X, const real[:, ::1] Y, double lr):
        """One step of gradient descent on the batch; returns its mean loss."""
        cdef double value
        self._check(X, Y, real is double, True)
        with nogil:
            value = loss_and_grad(&X[0, 0], &Y[0, 0], &self.plan, X.shape[0],
                                  <real*>NULL)
            sgd_update(<real*>self.plan.params, <real*>self.plan.grads,
                       self.plan.n_params, <real>lr)
        return value

    def train_epoch(self, const real[:, ::1] X, const real[:, ::1] Y,
                    const Py_ssize_t[::1] perm, Py_ssize_t batch_size, double lr):
        """One epoch of mini-batch SGD; rows in the order perm (None: as
        stored).  Returns the mean training loss of the epoch."""
        cdef double value
        cdef const Py_ssize_t* order = NULL
        cdef Py_ssize_t i, n = X.shape[0]
        self._check(X, Y, real is double, False)
        if batch_size < 1 or batch_size > self.plan.capacity:
            raise ValueError(f"batch_size must lie in [1, {self.plan.capacity}]")
        if perm is not None:
            if perm.shape[0] != n:
                raise ValueError("perm must have one entry per row of X")
            for i in range(n):
                if perm[i] < 0 or perm[i] >= n:
                    raise ValueError("perm must index rows of X")
            order = &perm[0]
        with nogil:
            value = run_epoch(&X[0, 0], &Y[0, 0], order, n, batch_size,
                              <real>lr, &self.plan)
        return value
