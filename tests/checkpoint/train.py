"""A training script that keeps its run in a checkpoint: tests/test_checkpoint.py
kills it at random moments and starts it again, and the final model must
equal an uninterrupted run's.

    python train.py CHECKPOINT RESULT LOG [--slow-save SECONDS] [--every BATCHES] [--mpi]

Each epoch takes a few milliseconds more than its training (a sleep), so that
kills land anywhere; with --slow-save, each save pauses after writing its
temporary file and before renaming it over the checkpoint, so that kills also
land in the middle of a save.  LOG receives a line as each save begins and
ends, and when the run is done; stdout a line "training" as training begins
(after the imports, which a busy machine can make take seconds).
"""

import sys
import time

import numpy as np

import backprop as bp
from backprop import _format

path, result, log = sys.argv[1:4]
slow = float(sys.argv[sys.argv.index("--slow-save") + 1]) if "--slow-save" in sys.argv else 0.0
every = int(sys.argv[sys.argv.index("--every") + 1]) if "--every" in sys.argv else None
mpi = "--mpi" in sys.argv  # under mpiexec: distributed.fit, rank 0 writing the checkpoint
if mpi:
    from backprop import distributed

    if distributed.rank() != 0:
        log = result = None  # (rank 0 keeps the journal and writes the result)
journal = open(log if log else "/dev/null", "a", buffering=1)
write = _format.write


def logged_write(target, arrays):
    journal.write(f"save-begin {time.monotonic()}\n")
    if slow:
        real_replace = _format.os.replace

        def slow_replace(src, dst):
            time.sleep(slow)  # the temporary file is written, the target not yet replaced
            real_replace(src, dst)

        _format.os.replace = slow_replace
        try:
            out = write(target, arrays)
        finally:
            _format.os.replace = real_replace
    else:
        out = write(target, arrays)
    journal.write(f"save-end {time.monotonic()}\n")
    return out


_format.write = logged_write


class Pace(bp.callbacks.Callback):
    def on_train_begin(self, net, logs):
        print("training", flush=True)  # (the test times its kills from here)

    def on_epoch_end(self, net, epoch, logs):
        time.sleep(0.01)


X, y = bp.datasets.load_digits(return_split=False)
net = bp.Sequential(
    bp.Dense(64, 32, activation="relu"),
    bp.Dense(32, 10, activation="softmax"),
    loss="cross_entropy",
    dtype="float32",
    seed=0,
)
settings = dict(
    epochs=40,
    batch_size=32,
    optimizer=bp.Adam(1e-3),
    callbacks=[bp.callbacks.CosineDecay(40), Pace()],
    checkpoint=path,
)
if mpi:
    history = distributed.fit(net, X, y, **settings)
else:
    history = net.fit(X, y, checkpoint_every=every, **settings)
if result:
    np.save(result, net.params)
journal.write(f"done {len(history.epoch)}\n")
