# The compiled kernels (csrc/_ops.pyx), one call each; see that file.
from typing import Any

def __getattr__(name: str) -> Any: ...
