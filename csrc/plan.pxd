# cython: language_level=3, boundscheck=False, wraparound=False
# cython: initializedcheck=False, cdivision=True
#
# The plan of a network and its workspace, as the engine's C code sees them:
# layer sizes and activations, where each W and b lives in the flat
# parameter buffer, and raw pointers into buffers allocated once by the
# Engine (Engine.reserve grows them, never during a call).  Every step,
# epoch and prediction reads and writes only what a Plan points to.

from kernels cimport Optimizer


cdef struct Plan:
    int n_layers
    int loss
    double huber_delta         # the loss's parameter: huber's δ
    Py_ssize_t capacity        # rows a training step can take
    Py_ssize_t out_rows        # rows the activations hold (≥ capacity): an inference chunk
    Py_ssize_t n_params
    Py_ssize_t* size           # (n_layers + 1,): size[l] → layer l → size[l + 1]
    int* act                   # (n_layers,)
    double* slope              # (n_layers,) leaky_relu's negative slope
    Py_ssize_t* w_off          # (n_layers,) W of layer l: params[w_off[l]:], (size[l], size[l + 1])
    Py_ssize_t* b_off          # (n_layers,) b of layer l: params[b_off[l]:], (size[l + 1],)
    char* params               # (n_params,) the flat parameter buffer
    char* grads                # (n_params,) its gradient, laid out the same way
    char** share_views         # (5 · n_layers,) room for a split step's second share's
    #                            out, delta, z, dropped and mask (epoch.pxi, split_step)
    char** out                 # (n_layers,) each (out_rows, size[l + 1]): a = f(z)
    char** delta               # (n_layers,) each (capacity, size[l + 1]): ∂L/∂z
    # The pre-activations z = a_prev @ W + b of the layers whose f′ needs
    # them (gelu, gelu_tanh, silu: kernels.pxd, act_keeps_z), kept by the
    # forward pass of a step for its backward pass; NULL for every other
    # layer, which takes f′ from its outputs: a network of those keeps no z.
    char** z                   # (n_layers,) each (capacity, size[l + 1]) or NULL
    Optimizer opt              # the update rule and its settings (lr set per call)
    Py_ssize_t correct         # right predictions in the last epoch (see count_correct)
    char* state1               # (n_params,) or NULL: the optimizer's state,
    char* state2               # … laid out like params
    char* xbuf                 # (capacity, size[0]): the gathered input batch
    char* ybuf                 # (capacity, size[n_layers]): the gathered targets
    char* wbuf                 # (capacity,): the gathered sample weights
    # dropout after a layer's activation, in training passes (see dropout.pxi)
    bint dropout               # whether any layer drops
    double* drop_rate          # (n_layers,) the rate after layer l (0: none; the output's is 0)
    char** dropped             # (n_layers,) where rate > 0 (else NULL), (capacity, size[l + 1]):
    #                            d = a ⊙ m / (1 − rate), the input of layer l + 1
    unsigned char** mask       # (n_layers,) likewise: the mask m of the last training pass
    unsigned long long drop_seed   # the masks' stream (shuffle.pxd, dropout_mask)
    unsigned long long drop_steps  # training passes so far: the next draws mask number drop_steps
    Py_ssize_t mask_row        # the call's first row in its pass's masks (a rank's share)
