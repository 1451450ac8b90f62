"""Benchmarks of backprop against other ways of training the same networks.

    python -m bench [--quick] [--workloads W1,W3] [--threads N] [--json PATH]
    python -m bench --mode both         also each system alone in a fresh process
    python -m bench --sections parity   backprop.sklearn vs scikit-learn's MLP
    python -m bench --sections onnx     the digits network in ONNX Runtime vs backprop
    python -m bench.memory      no allocation inside training steps
    python -m bench.threads     two trainings in two Python threads (GIL release)
    python -m bench.activations a training step by hidden activation (relu, gelu …)
    python -m bench.distributed W3 and W4 on 1 and 2 MPI ranks (needs the mpi extra)

Modules: timing (the one timing helper and its statistics), workloads (sizes,
data, FLOPs), machine (machine facts, threads, GEMM peak), numpy_mlp (the
numpy peer and its gradient check), jax_mlp (the JAX peer), systems
(backprop, numpy, torch, scikit-learn and JAX behind one interface), suite
(the measurements, interleaved or solo), parity (the scikit-learn estimators
cross-validated against scikit-learn's), deploy (the digits network exported
to ONNX Runtime), report (the tables).
"""

import importlib.machinery as _machinery
import os as _os
import sys as _sys

# `python -m bench` from the repository root puts the root first on sys.path,
# where `backprop` is the source folder.  Unless its compiled modules were
# built there (python setup.py build_ext --inplace), take the root off the
# path so that `import backprop` finds the installed package.
_root = _os.path.dirname(_os.path.dirname(_os.path.abspath(__file__)))
_built = {"_engine" + suffix for suffix in _machinery.EXTENSION_SUFFIXES}
if not _built & set(_os.listdir(_os.path.join(_root, "backprop"))):
    _sys.path[:] = [p for p in _sys.path if _os.path.abspath(p or _os.curdir) != _root]
