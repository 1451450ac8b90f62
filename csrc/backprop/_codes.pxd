# The compiled core's codes, defined here once.  The kernels and the engine
# cimport them as C constants; backprop._codes (csrc/_codes.pyx) exposes each
# set to Python as an IntEnum of the same name.  The kernels and the engine
# refuse a code outside 0 … the last member of its set.

cpdef enum ActivationCode:
    IDENTITY
    SIGMOID
    TANH
    RELU
    LEAKY_RELU
    SOFTMAX
    STEP
    EXP
    GELU
    GELU_TANH
    SILU
    SOFTPLUS
    ELU
    SELU

cpdef enum LossCode:
    MSE
    BINARY_CROSS_ENTROPY
    CROSS_ENTROPY
    POISSON
    MAE
    HUBER

cpdef enum OptimizerKind:
    SGD
    ADAM
    RMSPROP
    ADAGRAD

# What Engine.predict_row returns for one row.
cpdef enum PredictMode:
    OUTPUTS             # the output layer's values, as a new array
    ARGMAX              # the index of the largest output
    THRESHOLD           # 1 if the single output is ≥ 0.5, else 0
    VALUE               # the single output's value
