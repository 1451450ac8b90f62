# Dropout in the engine's training passes: after layer l's activation, with
# rate p.drop_rate[l] > 0, the next layer takes d = a ⊙ m / (1 − rate)
# (p.dropped[l]) instead of a (p.out[l], which keeps a for the derivative);
# the mask m (p.mask[l]) is drawn for the pass and read again by the
# backward pass.  Inference (infer, the one-row path) never comes here.
# Each training pass (loss_and_grad) draws the masks of pass number
# p.drop_steps and then counts itself.  Included into _engine.pyx before
# epoch.pxi (see there).

from kernels cimport real, dropout_forward, dropout_backward
from plan cimport Plan
from shuffle cimport dropout_mask


cdef inline const real* layer_input(const real* x, const Plan* p, int l,
                                    bint train) noexcept nogil:
    # What layer l takes: x for the first; else layer l − 1's output, after
    # its dropout in a training pass.
    if l == 0:
        return x
    if train and p.drop_rate[l - 1] > 0:
        return <const real*>p.dropped[l - 1]
    return <const real*>p.out[l - 1]


cdef inline const real* drop_forward(Plan* p, int l, Py_ssize_t rows,
                                     const real* a) noexcept nogil:
    # Layer l's dropout in a training pass, on its output a (rows, size[l + 1]):
    # the pass's mask, then d; returns what the next layer takes (a itself
    # for a rate of 0).
    if p.drop_rate[l] <= 0:
        return a
    dropout_mask(p.mask[l], rows, p.size[l + 1], p.drop_seed, p.drop_steps, l,
                 p.mask_row, p.drop_rate[l])
    dropout_forward(<real*>p.dropped[l], a, p.mask[l], rows * p.size[l + 1],
                    p.drop_rate[l])
    return <const real*>p.dropped[l]


cdef inline void drop_backward(const Plan* p, int l, Py_ssize_t rows, real* g,
                               Py_ssize_t at=0, Py_ssize_t width=-1) noexcept nogil:
    # g (rows, size[l + 1]): ∂L/∂d of layer l's dropout → ∂L/∂a in place, by
    # the forward's mask; with a width (≥ 0), g is the `width` entries of the
    # layer's output from entry `at` on (a row's part, rows = 1).  Nothing
    # for a rate of 0.
    if p.drop_rate[l] > 0:
        dropout_backward(g, g, p.mask[l] + at, width if width >= 0 else rows * p.size[l + 1],
                         p.drop_rate[l])


cdef inline void count_pass(Plan* p) noexcept nogil:
    # A training pass is over: the next draws the next masks.
    if p.dropout:
        p.drop_steps += 1
