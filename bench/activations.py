"""What a hidden activation costs in a training step.  `python -m bench.activations`

One epoch of `fit` (plain SGD, shuffled) of the W3 network (784-256-10, batch
128, float32 by default, one BLAS thread) with each hidden activation, timed
per step and set against relu's: the extra time is the activation's forward
and backward passes over the 128 × 256 hidden values (gelu, gelu_tanh and
silu also keep z, and read it back).  Beside it, when installed, PyTorch's
eager step of the same network and activation (torch.nn.functional, SGD),
interleaved with it (timing.interleave).
"""

from __future__ import annotations

import argparse

import numpy as np

import backprop as bp

from .machine import optional, set_threads
from .report import table
from .timing import fmt_time, interleave, per_unit

SIZES, BATCH, STEPS = (784, 256, 10), 128, 50
ACTIVATIONS = ("relu", "tanh", "sigmoid", "gelu", "gelu_tanh", "silu", "softplus", "elu", "selu")


def data(dtype, steps: int):
    rng = np.random.default_rng(0)
    X = rng.standard_normal((BATCH * steps, SIZES[0])).astype(dtype)
    return X, rng.integers(0, SIZES[-1], BATCH * steps)


def backprop_epoch(activation: str, X, y, dtype):
    net = bp.Sequential(
        bp.Dense(SIZES[0], SIZES[1], activation),
        bp.Dense(SIZES[1], SIZES[2], "softmax"),
        loss="cross_entropy",
        dtype=dtype,
        seed=0,
    )
    net.fit(X[:BATCH], y[:BATCH], epochs=1, batch_size=BATCH, lr=0.01)  # (the workspace)
    return per_unit(lambda: net.fit(X, y, epochs=1, batch_size=BATCH, lr=0.01), len(X) // BATCH)


def torch_epoch(activation: str, X, y, dtype):
    torch = optional("torch")
    if torch is None:
        return None
    F = torch.nn.functional
    unit = {
        "relu": F.relu,
        "tanh": torch.tanh,
        "sigmoid": torch.sigmoid,
        "gelu": F.gelu,
        "gelu_tanh": lambda t: F.gelu(t, approximate="tanh"),
        "silu": F.silu,
        "softplus": F.softplus,
        "elu": F.elu,
        "selu": F.selu,
    }[activation]
    torch.manual_seed(0)
    first = torch.nn.Linear(SIZES[0], SIZES[1]).to(getattr(torch, dtype))
    second = torch.nn.Linear(SIZES[1], SIZES[2]).to(getattr(torch, dtype))
    opt = torch.optim.SGD([*first.parameters(), *second.parameters()], lr=0.01)
    Xt, yt = torch.from_numpy(X), torch.from_numpy(y)
    gen = torch.Generator().manual_seed(0)

    def epoch():
        order = torch.randperm(len(Xt), generator=gen)
        for start in range(0, len(Xt), BATCH):
            rows = order[start : start + BATCH]
            opt.zero_grad()
            F.cross_entropy(second(unit(first(Xt[rows]))), yt[rows]).backward()
            opt.step()

    return per_unit(epoch, len(X) // BATCH)


def main(argv=None) -> None:
    p = argparse.ArgumentParser(
        prog="python -m bench.activations", description=__doc__.split("\n")[0]
    )
    p.add_argument("--reps", type=int, default=7, help="measured repetitions (default 7)")
    p.add_argument("--threads", type=int, default=1, help="BLAS threads (default 1)")
    p.add_argument("--dtype", default="float32", choices=("float32", "float64"))
    p.add_argument("--activations", default=",".join(ACTIVATIONS))
    p.add_argument("--quick", action="store_true", help="5 steps an epoch, one repetition")
    args = p.parse_args(argv)
    set_threads(args.threads)
    X, y = data(args.dtype, 5 if args.quick else STEPS)
    reps = 1 if args.quick else args.reps
    names = args.activations.split(",")
    samplers = {name: backprop_epoch(name, X, y, args.dtype) for name in names}
    peers = {f"torch {name}": torch_epoch(name, X, y, args.dtype) for name in names}
    samplers |= {key: sampler for key, sampler in peers.items() if sampler is not None}
    stats = interleave(samplers, reps, settle=0.1)
    relu = stats["relu"].median if "relu" in stats else None
    rows = []
    for name in names:
        mine, theirs = stats[name], stats.get(f"torch {name}")
        rows.append(
            [
                name,
                fmt_time(mine.median, mine.spread),
                "–" if relu is None else f"{mine.median / relu:.2f}×",
                "–" if relu is None else fmt_time(mine.median - relu),
                "–" if theirs is None else fmt_time(theirs.median, theirs.spread),
                "–" if theirs is None else f"{theirs.median / mine.median:.2f}×",
            ]
        )
    table(
        f"One training step of {'-'.join(map(str, SIZES))} (batch {BATCH}, {args.dtype}, "
        f"{args.threads} thread{'s' if args.threads > 1 else ''}) by hidden activation "
        f"(median ±½IQR of {reps} epochs)",
        ["activation", "backprop", "× relu", "+ over relu", "torch", "torch / backprop"],
        rows,
        [
            "backprop: fit, plain SGD; torch: the same network and unit, eager, SGD",
            "(+ over relu: the activation's forward and backward passes, and z kept for",
            "gelu, gelu_tanh and silu)",
        ],
    )


if __name__ == "__main__":
    main()
