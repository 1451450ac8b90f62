"""The benchmark suite runs, as a user runs it, and its numpy peer is right.
(Speed is shown by bench/, never asserted here.)"""

import json
import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_numpy_peer_gradients_match_finite_differences():
    sys.path.insert(0, ROOT)
    try:
        from bench.numpy_mlp import check_gradients
    finally:
        if ROOT in sys.path:  # (bench takes the root off the path itself when
            sys.path.remove(ROOT)  # backprop there is an unbuilt source folder)
    assert check_gradients() < 1e-6


@pytest.mark.skipif(not os.path.isdir(os.path.join(ROOT, "bench")), reason="no bench/ here")
def test_quick_bench_runs_and_writes_json(tmp_path):
    out = tmp_path / "bench.json"
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "bench",
            "--quick",
            "--sections",
            "training,latency,digits",
            "--workloads",
            "W0,W1",
            "--json",
            str(out),
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert "Training: time per step" in result.stdout
    data = json.loads(out.read_text())
    assert set(data["training"]) == {"W0", "W1"}
    for workload in data["training"].values():
        for system in ("backprop_fit", "backprop_step", "numpy"):
            timing = workload["systems"][system]
            assert 0 < timing["min"] <= timing["median"] <= timing["max"]
    digits = data["digits"]["systems"]
    assert digits["backprop_fit"]["test_accuracy"] > 0.85  # 3 epochs in a quick run
    assert digits["numpy"]["test_accuracy"] > 0.85


@pytest.mark.skipif(not os.path.isdir(os.path.join(ROOT, "bench")), reason="no bench/ here")
def test_distributed_bench_runs_at_one_and_two_ranks(tmp_path):
    pytest.importorskip("mpi4py")
    out = tmp_path / "distributed.json"
    result = subprocess.run(
        [sys.executable, "-m", "bench.distributed", "--quick", "--json", str(out)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert "Projection to more hosts" in result.stdout
    data = json.loads(out.read_text())
    assert set(data["runs"]) == {"1", "2"}
    for name in ("W3", "W4"):
        for ranks in (1, 2):
            entry = data["summary"][f"{name} strong {ranks}"]
            assert entry["step"] > 0
            assert (entry["allreduce"] > 0) == (entry["allreduce_apart"] > 0) == (ranks == 2)
    assert data["summary"]["probe"] > 0
