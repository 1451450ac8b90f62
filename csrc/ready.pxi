# Ready-made input: the fast path of a single train_step or one-row predict.
# The checked path (the Python layer) converts and validates anything a user
# passes.  Inputs that are already exactly what the core takes skip it: the
# functions below only say yes or no (NULL, False or None), and on no the
# checked path runs and explains.  Included into _engine.pyx (see there).

from libc.math cimport isfinite
from libc.string cimport memcpy

cimport numpy as cnp

from backprop._codes cimport (
    BINARY_CROSS_ENTROPY, CROSS_ENTROPY, POISSON, ARGMAX, THRESHOLD, VALUE,
)
from kernels cimport real, all_finite, row_argmax, threshold_label
from plan cimport Plan
from threads cimport enter_threads, leave_threads


cdef const char* ready(object arr, int ndim, Py_ssize_t cols, int typenum):
    # The data of `arr` if it is an aligned, C-contiguous ndarray of
    # `typenum`, `ndim`-D with `cols` columns (length, for 1-D) and at
    # least one row; else NULL.
    cdef cnp.ndarray a
    if not cnp.PyArray_Check(arr):
        return NULL
    a = <cnp.ndarray>arr
    if (cnp.PyArray_TYPE(a) != typenum or cnp.PyArray_NDIM(a) != ndim
            or not cnp.PyArray_IS_C_CONTIGUOUS(a) or not cnp.PyArray_ISALIGNED(a)
            or cnp.PyArray_DIMS(a)[ndim - 1] != cols or cnp.PyArray_DIMS(a)[0] < 1):
        return NULL
    return <const char*>cnp.PyArray_DATA(a)


cdef bint copy_targets(real* out, const real* y, Py_ssize_t n,
                       bint at_least_0, bint at_most_1) noexcept nogil:
    # out ← y, if every value is finite (and ≥ 0, ≤ 1 as asked).
    cdef Py_ssize_t i
    for i in range(n):
        if not isfinite(y[i]) or (at_least_0 and y[i] < 0) or (at_most_1 and y[i] > 1):
            return False
        out[i] = y[i]
    return True


cdef bint labels_to_targets(real* out, const long long* labels, Py_ssize_t rows,
                            Py_ssize_t k, bint one_hot) noexcept nogil:
    # out (rows, k) ← one-hot rows of the class labels (one_hot), or the 0/1
    # labels themselves (k = 1); False if a label is out of range.
    cdef Py_ssize_t i, j
    for i in range(rows):
        if labels[i] < 0 or labels[i] >= (k if one_hot else 2):
            return False
        if one_hot:
            for j in range(k):
                out[i * k + j] = 0
            out[i * k + labels[i]] = 1
        else:
            out[i] = <real>labels[i]
    return True


cdef bint targets_ready(Plan* p, int typenum, object y, Py_ssize_t rows):
    # Fill the workspace's targets (p.ybuf) from y if y is ready-made: class
    # labels (int64, (rows,)) for cross-entropy or 0/1 labels for one sigmoid
    # output, or finite floats of `typenum`, (rows, k) or (rows,) for k = 1,
    # within [0, 1] for binary cross-entropy, ≥ 0 for poisson.  The fast twin of the checked
    # path's rule (losses.targets): it takes only targets that rule takes,
    # and gives the same (tests/test_fast_paths.py).
    cdef Py_ssize_t k = p.size[p.n_layers]
    cdef const char* data
    cdef int loss = p.loss
    cdef bint is_double = typenum == cnp.NPY_DOUBLE
    cdef bint at_least_0 = loss == BINARY_CROSS_ENTROPY or loss == POISSON
    if loss == CROSS_ENTROPY or (loss == BINARY_CROSS_ENTROPY and k == 1):
        data = ready(y, 1, rows, cnp.NPY_INT64)
        if data != NULL:
            if is_double:
                return labels_to_targets(<double*>p.ybuf, <const long long*>data, rows, k,
                                         loss == CROSS_ENTROPY)
            return labels_to_targets(<float*>p.ybuf, <const long long*>data, rows, k,
                                     loss == CROSS_ENTROPY)
        if loss == CROSS_ENTROPY:
            return False
    data = ready(y, 2, k, typenum)
    if data == NULL and k == 1:
        data = ready(y, 1, rows, typenum)
    elif data != NULL and (<cnp.ndarray>y).shape[0] != rows:
        data = NULL
    if data == NULL:
        return False
    if is_double:
        return copy_targets(<double*>p.ybuf, <const double*>data, rows * k,
                            at_least_0, loss == BINARY_CROSS_ENTROPY)
    return copy_targets(<float*>p.ybuf, <const float*>data, rows * k,
                        at_least_0, loss == BINARY_CROSS_ENTROPY)


cdef double step_rows(const real* x, Plan* p, Py_ssize_t rows, real lr,
                      bint do_update, int threads) noexcept nogil:
    # loss_and_grad on x (rows, size[0]) and the targets in p.ybuf, then the update.
    enter_threads(threads)
    cdef double value = loss_and_grad(x, <real*>p.ybuf, <real*>NULL, p, rows, NULL)
    if do_update:
        update(p, lr)
    leave_threads()
    return value


cdef object predict_one(const real* x, Plan* p, int mode, int typenum,
                        int threads):
    # The prediction for one row x (size[0],) in a PredictMode.
    cdef Py_ssize_t k = p.size[p.n_layers]
    cdef const real* out = <real*>p.out[p.n_layers - 1]
    cdef cnp.npy_intp dim = k
    if not all_finite(x, p.size[0]):
        return None
    with nogil:
        enter_threads(threads)
        forward_rows(x, p, 1, <real*>NULL, False)
        leave_threads()
    if not all_finite(out, k):          # finite inputs that overflow: the checked path explains
        return None
    if mode == ARGMAX:
        return row_argmax(out, k)
    if mode == THRESHOLD:
        return threshold_label(out[0])
    if mode == VALUE:
        return out[0]
    result = cnp.PyArray_SimpleNew(1, &dim, typenum)
    memcpy(cnp.PyArray_DATA(result), out, k * sizeof(real))
    return result
