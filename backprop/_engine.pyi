# The compiled engine (csrc/_engine.pyx); see that file.
from typing import Any

Engine: Any
Guard: Any
IN_USE: str

def set_blas_thread_functions(get_address: int, set_address: int) -> None: ...
def shuffled(perm: Any, seed: int) -> None: ...
def csr_rows(out: Any, data: Any, indices: Any, indptr: Any, first: int = 0) -> None: ...
