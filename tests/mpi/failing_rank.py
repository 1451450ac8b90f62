"""A job in which rank 1 fails in the way named by argv[1]: 'nan' (bad rows
inside fit), 'leave' (exits before fit), 'kill' (killed during fit)."""

import os
import signal
import sys

import numpy as np

import backprop as bp
from backprop import distributed as dist

how = sys.argv[1]
X = np.random.default_rng(0).normal(size=(4000, 16))
y = (X[:, 0] > 0).astype(int)
# The ranks meet before fit's time limit starts: on a busy machine one
# rank's imports alone can take seconds longer than another's, and fit's
# first collective would take that for a rank gone.
dist.MPI.COMM_WORLD.Barrier()
if dist.rank() == 1 and how == "nan":
    X[2000:, 5] = np.nan
if dist.rank() == 1 and how == "leave":
    sys.exit(0)


class Kill(bp.callbacks.Callback):
    def on_epoch_end(self, net, epoch, logs):
        if dist.rank() == 1 and how == "kill" and epoch == 2:
            os.kill(os.getpid(), signal.SIGKILL)


net = bp.Sequential(
    bp.Dense(16, 8, activation="relu"),
    bp.Dense(8, 2, activation="softmax"),
    loss="cross_entropy",
    seed=0,
)
dist.fit(net, X, y, epochs=1000, batch_size=16, lr=0.1, timeout=5, callbacks=[Kill()])
