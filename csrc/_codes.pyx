# cython: language_level=3
"""The compiled core's codes as IntEnums: ActivationCode, LossCode,
OptimizerKind and PredictMode, declared in csrc/backprop/_codes.pxd."""
