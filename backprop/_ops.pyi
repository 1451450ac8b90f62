# The compiled kernels (csrc/_ops.pyx), one call each; see that file.
from typing import Any

import numpy as np

# The label rule of a classifier for outputs or targets A (rows, k), int64:
# cross-entropy's row argmax, (rows,); binary cross-entropy's [a ≥ ½] per
# output, (rows, k), or (rows,) for k = 1.
def labels(loss: int, A: np.ndarray) -> np.ndarray: ...
def __getattr__(name: str) -> Any: ...
