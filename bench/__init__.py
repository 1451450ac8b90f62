"""Benchmarks of backprop against other ways of training the same networks.

    python -m bench [--quick] [--workloads W1,W3] [--threads N] [--json PATH]
    python -m bench.memory      no allocation inside training steps
    python -m bench.threads     two trainings in two Python threads (GIL release)

Modules: timing (the one timing helper and its statistics), workloads (sizes,
data, FLOPs), machine (machine facts, threads, GEMM peak), numpy_mlp (the
numpy peer and its gradient check), systems (backprop, numpy, torch and
scikit-learn behind one interface), suite (the measurements), report (the
tables).
"""
