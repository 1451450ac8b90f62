"""The systems compared, each behind the same small interface.

A system builds a model for a workload from the shared starting weights and
data (`build`), trains it one epoch of shuffled mini-batch SGD (`epoch`),
and predicts class labels for a batch or one row.  `step_sampler` turns that
into a sampler for `timing.interleave`: seconds per training step, taken as
the time of back-to-back epochs (as many as take 50 ms: one for the large
workloads) divided by their number of batches.

- backprop fit:   `net.fit(X, y, epochs=1, batch_size=B, lr=…, shuffle=True)`.
- backprop step:  `net.train_step(Xb, yb, lr)` once per batch over
                  pre-sliced contiguous batches (no shuffling: it measures the
                  per-call cost of the compiled step and its input checks).
- numpy:          bench/numpy_mlp.py, the same math in careful numpy.
- torch:          eager nn.Sequential on the CPU, SGD(lr, momentum=0),
                  zero_grad / forward / loss / backward / step per batch,
                  batches gathered from a torch.randperm.
- sklearn:        MLPClassifier (MLPRegressor for W0: identity output, since
                  scikit-learn has no sigmoid + MSE) with solver='sgd',
                  momentum=0, alpha=0, constant rate; it cannot be timed per
                  epoch from outside, so its step time is the marginal cost
                  of more epochs, (t(max_iter=k2) − t(max_iter=k1)) /
                  ((k2 − k1)·batches), fresh fits each.
- jax:            bench/jax_mlp.py: the whole epoch one jitted call (a
                  jax.random permutation, the batches gathered on the
                  device, a lax.scan of the step), compiled before timing.
- jax step:       the same model, one jitted step per pre-sliced batch
                  called from Python.

A workload's `optimizer` is 'sgd' or 'adam' (workloads.ADAM's settings);
`optimizers` says which a system trains with (backprop fit: fit's
optimizer=bp.optimizers.Adam(…); torch: torch.optim.Adam(…, fused=True);
jax: Adam in jax.numpy).  Systems with `inference = False` take part in the
training sections only.
"""

from __future__ import annotations

import warnings
from types import SimpleNamespace

import numpy as np

from . import workloads as W
from .machine import optional
from .numpy_mlp import NumpyMLP
from .timing import autorange, per_unit, repeat, timed

__all__ = ["System", "ALL_SYSTEMS", "available_systems"]


class System:
    """Base: back-to-back epochs timed per sample; override what differs."""

    name = ""  # key in results and JSON
    title = ""  # column title
    requires: str | None = None  # importable module needed, if any
    optimizers: tuple = ("sgd",)  # the workload optimizers it trains with
    inference = True  # takes part in the prediction sections (and digits, memory)

    def missing(self) -> str | None:
        """Why this system cannot run here, or None."""
        if self.requires and optional(self.requires) is None:
            return f"{self.title}: {self.requires} is not installed, skipped"
        return None

    def build(self, wl, X, y, params, lr=None):
        raise NotImplementedError

    def epoch(self, model) -> None:
        raise NotImplementedError

    def predict(self, model, X) -> np.ndarray:
        raise NotImplementedError

    def predict_one(self, model, x):
        raise NotImplementedError

    def train(self, wl, X, y, params, epochs: int, lr: float):
        """A new model trained for `epochs` epochs (for end-to-end runs)."""
        model = self.build(wl, X, y, params, lr)
        for _ in range(epochs):
            self.epoch(model)
        return model

    def step_sampler(self, wl, X, y, params, min_time=0.05, **options):
        """A sampler of seconds per training step on (X, y): as many
        back-to-back epochs as take min_time, divided by their batches."""
        model = self.build(wl, X, y, params)
        n_batches = -(-X.shape[0] // wl.batch)
        epochs = autorange(lambda: self.epoch(model), min_time)
        return per_unit(repeat(lambda: self.epoch(model), epochs), epochs * n_batches)

    def inference_model(self, wl, X, y, params):
        """A model ready to predict, with the weights `params`."""
        return self.build(wl, X, y, params)


# -- backprop ------------------------------------------------------------------


class BackpropFit(System):
    name, title = "backprop_fit", "backprop fit"
    optimizers = ("sgd", "adam")

    def build(self, wl, X, y, params, lr=None):
        import backprop as bp

        acts = [wl.hidden] * (len(wl.sizes) - 2) + [wl.output]
        layers = [
            bp.Dense(n_in, n_out, activation=act, dtype=wl.dtype)
            for (n_in, n_out), act in zip(wl.layers, acts)
        ]
        net = bp.Sequential(
            *layers, dtype=wl.dtype, seed=0, loss="cross_entropy" if wl.is_classifier else "mse"
        )
        for layer, (Wt, b) in zip(net.layers, params):
            layer.W, layer.b = Wt, b
        lr = wl.lr if lr is None else lr
        # fit's optimizer: a plain lr= is SGD; Adam the same instance every
        # epoch, so that its moments and step count carry on
        how = (
            {"lr": lr} if wl.optimizer == "sgd" else {"optimizer": bp.optimizers.Adam(lr, **W.ADAM)}
        )
        return SimpleNamespace(
            net=net, X=X, y=y, batch=wl.batch, lr=lr, how=how, batches=W.batches(X, y, wl.batch)
        )

    def epoch(self, m) -> None:
        m.net.fit(m.X, m.y, epochs=1, batch_size=m.batch, shuffle=True, **m.how)

    def train(self, wl, X, y, params, epochs, lr):
        m = self.build(wl, X, y, params, lr)
        m.net.fit(m.X, m.y, epochs=epochs, batch_size=m.batch, shuffle=True, **m.how)
        return m

    def inference_model(self, wl, X, y, params):
        """Trained one epoch, as a user's network is when it predicts (its
        workspace then holds a training batch: predict runs in chunks of
        that many rows)."""
        return self.train(wl, X, y, params, 1, wl.lr)

    @staticmethod
    def weights(m):
        """[(W, b), …]: copies of the network's current weights."""
        return [(layer.W.copy(), layer.b.copy()) for layer in m.net.layers]

    def predict(self, m, X):
        return m.net.predict(X)

    def predict_one(self, m, x):
        return m.net.predict(x)


class BackpropStep(BackpropFit):
    name, title = "backprop_step", "backprop train_step"
    optimizers, inference = ("sgd",), False  # (fit's model: fit's optimizers)

    def epoch(self, m) -> None:
        for xb, yb in m.batches:
            m.net.train_step(xb, yb, m.lr)


# -- numpy -----------------------------------------------------------------------


class Numpy(System):
    name, title = "numpy", "numpy"

    def build(self, wl, X, y, params, lr=None):
        mlp = NumpyMLP(wl.sizes, wl.hidden, wl.output, wl.dtype, params=params)
        return SimpleNamespace(
            mlp=mlp, X=X, Y=mlp.targets(y), batch=wl.batch, lr=wl.lr if lr is None else lr
        )

    def epoch(self, m) -> None:
        m.mlp.train_epoch(m.X, m.Y, m.batch, m.lr)

    def predict(self, m, X):
        return m.mlp.predict(X)

    def predict_one(self, m, x):
        return m.mlp.predict(x[None, :])[0]


# -- PyTorch -----------------------------------------------------------------------


class Torch(System):
    name, title, requires = "torch", "torch", "torch"
    optimizers = ("sgd", "adam")

    def build(self, wl, X, y, params, lr=None):
        import torch
        from torch import nn

        torch.manual_seed(0)
        dtype = getattr(torch, wl.dtype)
        hidden = nn.ReLU if wl.hidden == "relu" else nn.Tanh
        mods = []
        for i, (Wt, b) in enumerate(params):
            lin = nn.Linear(*Wt.shape, dtype=dtype)
            with torch.no_grad():
                lin.weight.copy_(torch.from_numpy(np.ascontiguousarray(Wt.T)))
                lin.bias.copy_(torch.from_numpy(b))
            mods += [lin, hidden()] if i < len(params) - 1 else [lin]
        if wl.is_classifier:
            loss_fn = nn.CrossEntropyLoss()  # softmax + cross-entropy on logits
            yt = torch.from_numpy(y)
        else:
            mods.append(nn.Sigmoid())  # C = 1/(2n) Σ‖y − a‖²

            def loss_fn(out, target):
                return nn.functional.mse_loss(out, target, reduction="sum") * (0.5 / out.shape[0])

            yt = torch.from_numpy(np.ascontiguousarray(y.reshape(-1, 1), wl.dtype))
        model = nn.Sequential(*mods)
        lr = wl.lr if lr is None else lr
        if wl.optimizer == "adam":
            opt = torch.optim.Adam(model.parameters(), lr, **W.ADAM, fused=True)
        else:
            opt = torch.optim.SGD(model.parameters(), lr=lr, momentum=0)
        return SimpleNamespace(
            model=model,
            opt=opt,
            loss_fn=loss_fn,
            torch=torch,
            X=torch.from_numpy(X),
            y=yt,
            batch=wl.batch,
            gen=torch.Generator().manual_seed(0),
        )

    def epoch(self, m) -> None:
        n, total = m.X.shape[0], 0.0
        order = m.torch.randperm(n, generator=m.gen)
        for start in range(0, n, m.batch):
            idx = order[start : start + m.batch]
            m.opt.zero_grad()
            loss = m.loss_fn(m.model(m.X[idx]), m.y[idx])
            loss.backward()
            m.opt.step()
            total += loss.item() * idx.shape[0]

    def _labels(self, m, out):
        return out.argmax(1) if out.shape[1] > 1 else (out[:, 0] >= 0.5).long()

    def predict(self, m, X):
        with m.torch.no_grad():
            return self._labels(m, m.model(m.torch.from_numpy(X))).numpy()

    def predict_one(self, m, x):
        with m.torch.no_grad():
            return self._labels(m, m.model(m.torch.from_numpy(x).unsqueeze(0))).item()


# -- scikit-learn --------------------------------------------------------------------


class Sklearn(System):
    name, title, requires = "sklearn", "sklearn", "sklearn"

    def _estimator(self, wl, max_iter, lr):
        from sklearn.neural_network import MLPClassifier, MLPRegressor

        cls = MLPClassifier if wl.is_classifier else MLPRegressor
        return cls(
            hidden_layer_sizes=wl.sizes[1:-1],
            activation=wl.hidden,
            solver="sgd",
            alpha=0.0,
            batch_size=wl.batch,
            learning_rate="constant",
            learning_rate_init=lr,
            momentum=0.0,
            nesterovs_momentum=False,
            shuffle=True,
            tol=0.0,
            n_iter_no_change=10**9,
            max_iter=max_iter,
            random_state=0,
        )

    def _fit(self, wl, X, y, max_iter, lr):
        from sklearn.exceptions import ConvergenceWarning

        est = self._estimator(wl, max_iter, lr)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)
            est.fit(X, y)
        return est

    def build(self, wl, X, y, params, lr=None):
        return self._fit(wl, X, y, 1, wl.lr if lr is None else lr)

    def train(self, wl, X, y, params, epochs, lr):
        return self._fit(wl, X, y, epochs, lr)

    def inference_model(self, wl, X, y, params):
        return self._fit(wl, X, y, 1, wl.lr)  # its own weights: it must fit

    def step_sampler(self, wl, X, y, params, k1=1, k2=3, **options):
        n_batches = -(-X.shape[0] // wl.batch)

        def sample():
            short = timed(self._fit, wl, X, y, k1, wl.lr)
            long = timed(self._fit, wl, X, y, k2, wl.lr)
            return (long - short) / ((k2 - k1) * n_batches)

        return sample

    def predict(self, est, X):
        out = est.predict(X)
        return out if out.dtype.kind in "iu" else (out >= 0.5).astype(np.int64)

    def predict_one(self, est, x):
        return est.predict(x.reshape(1, -1))[0]


# -- JAX ------------------------------------------------------------------------------


class Jax(System):
    name, title, requires = "jax", "jax", "jax"
    optimizers, inference = ("sgd", "adam"), False

    def build(self, wl, X, y, params, lr=None):
        from .jax_mlp import JaxMLP

        adam = W.ADAM if wl.optimizer == "adam" else {}
        lr = wl.lr if lr is None else lr
        model = JaxMLP(
            wl.sizes, wl.hidden, wl.output, params, X, y, wl.batch, wl.optimizer, lr, **adam
        )
        self.epoch(model)  # (its first call compiles: never timed)
        return model

    def epoch(self, model) -> None:
        model.epoch()

    def predict(self, model, X):
        return model.predict(X)


class JaxStep(Jax):
    name, title = "jax_step", "jax step"

    def epoch(self, model) -> None:
        model.step_epoch()


ALL_SYSTEMS = [BackpropFit(), BackpropStep(), Numpy(), Torch(), Sklearn(), Jax(), JaxStep()]


def available_systems(notes: list[str]) -> list[System]:
    """The systems that can run here; a one-line note for each that cannot."""
    found = []
    for system in ALL_SYSTEMS:
        reason = system.missing()
        if reason:
            notes.append(reason)
        else:
            found.append(system)
    return found
