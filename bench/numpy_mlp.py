"""A multilayer perceptron in numpy, written as well as a careful user would.

The peer that shows what plain numpy can do on the same job as backprop:
the same math (ReLU or tanh hidden layers; softmax + cross-entropy output
with δ = (p − y)/n, or sigmoid + MSE C = 1/(2n) Σ‖y − a‖²), plain SGD, and
the habits that make numpy fast:

- all parameters in one flat array and all gradients in another (each W and
  b a view), so the update is two in-place passes over one buffer;
- every intermediate (activations, deltas, masks, the gathered batch) is
  allocated once, for the largest batch seen, and reused through views;
- matrix products with `np.matmul(..., out=)` (transposes are views, BLAS
  handles them), elementwise work with ufuncs writing `out=` in place;
- the shuffled batch gathered with `np.take(..., out=)` into its buffer.

`check_gradients()` compares the analytic gradients with central finite
differences in float64 and returns the largest relative error (the test
suite can call it).
"""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np

__all__ = ["NumpyMLP", "check_gradients"]


class NumpyMLP:
    """sizes (n_in, hidden…, n_out); hidden 'relu' or 'tanh'; output
    'softmax' (cross-entropy, targets one-hot) or 'sigmoid' (MSE).
    `params`: optional starting [(W, b), …]; otherwise small random weights."""

    def __init__(
        self, sizes, hidden="relu", output="softmax", dtype="float32", params=None, seed=0
    ):
        if hidden not in ("relu", "tanh") or output not in ("softmax", "sigmoid"):
            raise ValueError("hidden must be relu/tanh, output softmax/sigmoid")
        self.sizes, self.hidden, self.output = tuple(sizes), hidden, output
        self.dtype = np.dtype(dtype)
        self._rng = np.random.default_rng(seed)
        shapes = list(zip(self.sizes[:-1], self.sizes[1:]))
        n = sum(a * b + b for a, b in shapes)
        self.params = np.zeros(n, self.dtype)
        self.grads = np.zeros(n, self.dtype)
        self.W, self.b, self.dW, self.db = [], [], [], []
        off = 0
        for n_in, n_out in shapes:
            for flat, Ws, bs in ((self.params, self.W, self.b), (self.grads, self.dW, self.db)):
                Ws.append(flat[off : off + n_in * n_out].reshape(n_in, n_out))
                bs.append(flat[off + n_in * n_out : off + n_in * n_out + n_out])
            off += n_in * n_out + n_out
        if params is None:
            params = [(self._rng.normal(0, np.sqrt(2 / a), (a, b)), np.zeros(b)) for a, b in shapes]
        for l, (W, b) in enumerate(params):
            self.W[l][...] = W
            self.b[l][...] = b
        self._capacity = 0
        self._views: dict[int, SimpleNamespace] = {}

    # -- workspace ---------------------------------------------------------
    def _buffers(self, rows: int) -> SimpleNamespace:
        """Views of the workspace for a batch of `rows` (allocated once for
        the largest batch, the views cached per batch size)."""
        if rows > self._capacity:
            cap, dt, outs = rows, self.dtype, self.sizes[1:]
            self._work = SimpleNamespace(
                a=[np.empty((cap, k), dt) for k in outs],  # activations
                d=[np.empty((cap, k), dt) for k in outs],  # ∂L/∂z
                m=[
                    np.empty((cap, k), bool if self.hidden == "relu" else dt) for k in outs[:-1]
                ],  # f′ of hidden layers
                x=np.empty((cap, self.sizes[0]), dt),  # gathered batch
                y=np.empty((cap, self.sizes[-1]), dt),
                tmp=np.empty((cap, self.sizes[-1]), dt),
                col=np.empty((cap, 1), dt),
                col2=np.empty((cap, 1), dt),
            )
            self._capacity, self._views = cap, {}
        if rows not in self._views:
            w = self._work
            self._views[rows] = SimpleNamespace(
                a=[v[:rows] for v in w.a],
                d=[v[:rows] for v in w.d],
                m=[v[:rows] for v in w.m],
                x=w.x[:rows],
                y=w.y[:rows],
                tmp=w.tmp[:rows],
                col=w.col[:rows],
                col2=w.col2[:rows],
            )
        return self._views[rows]

    def targets(self, y) -> np.ndarray:
        """Labels → one-hot rows (softmax); values → a column (sigmoid)."""
        y = np.asarray(y)
        if self.output == "sigmoid":
            return np.ascontiguousarray(y.reshape(len(y), -1), dtype=self.dtype)
        Y = np.zeros((len(y), self.sizes[-1]), self.dtype)
        Y[np.arange(len(y)), y] = 1
        return Y

    # -- forward, loss and backward ------------------------------------------
    def _forward(self, x, buf, Y=None) -> float:
        """buf.a[l] ← layer outputs for x; with targets Y, returns the mean
        loss (computed stably from the logits for softmax)."""
        last = len(self.W) - 1
        inp = x
        for l, (W, b) in enumerate(zip(self.W, self.b)):
            z = buf.a[l]
            np.matmul(inp, W, out=z)
            z += b
            if l < last:
                if self.hidden == "relu":
                    np.maximum(z, 0, out=z)
                else:
                    np.tanh(z, out=z)
            inp = z
        z, rows = buf.a[last], x.shape[0]
        if self.output == "sigmoid":  # a = 1 / (1 + e^−z)
            np.negative(z, out=z)
            np.exp(z, out=z)
            z += 1
            np.reciprocal(z, out=z)
            if Y is None:
                return 0.0
            np.subtract(z, Y, out=buf.tmp)
            return 0.5 * float(np.vdot(buf.tmp, buf.tmp)) / rows
        np.max(z, axis=1, keepdims=True, out=buf.col)  # s = z − max z
        z -= buf.col
        if Y is not None:  # s_y (one-hot Y)
            np.multiply(z, Y, out=buf.tmp)
            np.sum(buf.tmp, axis=1, keepdims=True, out=buf.col2)
        np.exp(z, out=z)
        np.sum(z, axis=1, keepdims=True, out=buf.col)
        z /= buf.col  # p = e^s / Σ e^s
        if Y is None:
            return 0.0
        np.log(buf.col, out=buf.col)  # −log p_y = log Σ e^s − s_y
        return float(buf.col.sum() - buf.col2.sum()) / rows

    def loss_and_grad(self, x, Y, buf=None) -> float:
        """grads ← ∂L/∂params on the batch (x, Y one-hot/column); returns
        the mean loss."""
        rows = x.shape[0]
        buf = buf or self._buffers(rows)
        loss = self._forward(x, buf, Y)
        last = len(self.W) - 1
        a, d = buf.a[last], buf.d[last]
        np.subtract(a, Y, out=d)  # softmax + CE: δ = (p − y)/n
        if self.output == "sigmoid":  # sigmoid + MSE: δ = (a − y)·a(1 − a)/n
            np.subtract(1, a, out=buf.tmp)
            buf.tmp *= a
            d *= buf.tmp
        d *= 1.0 / rows
        for l in range(last, -1, -1):
            inp = x if l == 0 else buf.a[l - 1]
            np.matmul(inp.T, buf.d[l], out=self.dW[l])  # dW = a_prevᵀ δ
            np.sum(buf.d[l], axis=0, out=self.db[l])  # db = Σ δ
            if l > 0:  # δ_prev = (δ Wᵀ) ⊙ f′
                prev, m = buf.d[l - 1], buf.m[l - 1]
                np.matmul(buf.d[l], self.W[l].T, out=prev)
                if self.hidden == "relu":
                    np.greater(buf.a[l - 1], 0, out=m)
                else:
                    np.multiply(buf.a[l - 1], buf.a[l - 1], out=m)
                    np.subtract(1, m, out=m)
                np.multiply(prev, m, out=prev)
        return loss

    def step(self, lr: float) -> None:
        """params ← params − lr · grads, in place."""
        np.multiply(self.grads, -lr, out=self.grads)
        self.params += self.grads

    def train_step(self, x, Y, lr: float) -> float:
        loss = self.loss_and_grad(x, Y)
        self.step(lr)
        return loss

    def train_epoch(self, X, Y, batch_size: int, lr: float) -> float:
        """One epoch of shuffled mini-batch SGD over X and prepared targets
        Y (see `targets`); returns the mean training loss."""
        n = X.shape[0]
        order = self._rng.permutation(n)
        total = 0.0
        for start in range(0, n, batch_size):
            idx = order[start : start + batch_size]
            buf = self._buffers(idx.shape[0])
            np.take(X, idx, axis=0, out=buf.x)
            np.take(Y, idx, axis=0, out=buf.y)
            total += self.loss_and_grad(buf.x, buf.y, buf) * idx.shape[0]
            self.step(lr)
        return total / n

    # -- inference --------------------------------------------------------------
    def predict_proba(self, X) -> np.ndarray:
        """The output layer for X (rows, n_in): a view of the workspace."""
        buf = self._buffers(X.shape[0])
        self._forward(X, buf)
        return buf.a[-1]

    def predict(self, X) -> np.ndarray:
        """Class labels (argmax; sigmoid ≥ 0.5) for the rows of X."""
        out = self.predict_proba(X)
        if self.output == "sigmoid":
            return (out[:, 0] >= 0.5).astype(np.int64)
        return np.argmax(out, axis=1)


def check_gradients(h: float = 1e-5, atol: float = 1e-8, seed: int = 0) -> float:
    """Max relative error |g − ĝ| / max(|g|, |ĝ|, atol) between the analytic
    gradients g of NumpyMLP and central finite differences ĝ = (L(w + h) −
    L(w − h)) / 2h, in float64, over every parameter of a ReLU/softmax
    network and a tanh/sigmoid/MSE one.  The floor atol keeps gradients that
    are zero up to rounding (dead ReLU units) from counting as large errors.
    A correct gradient gives about 1e-9 or less."""
    rng = np.random.default_rng(seed)
    worst = 0.0
    for sizes, hidden, output in (
        ((5, 6, 4, 3), "relu", "softmax"),
        ((2, 4, 1), "tanh", "sigmoid"),
    ):
        net = NumpyMLP(sizes, hidden, output, "float64", seed=seed)
        for b in net.b:  # non-zero biases keep every ReLU input off its kink at 0
            b[...] = rng.normal(0, 0.1, b.shape)
        x = rng.standard_normal((7, sizes[0]))
        y = rng.integers(0, sizes[-1], 7) if output == "softmax" else rng.uniform(0, 1, 7)
        Y = net.targets(y)
        net.loss_and_grad(x, Y)
        analytic = net.grads.copy()
        numeric = np.empty_like(analytic)
        for i in range(net.params.size):
            keep = net.params[i]
            net.params[i] = keep + h
            up = net.loss_and_grad(x, Y)
            net.params[i] = keep - h
            down = net.loss_and_grad(x, Y)
            net.params[i] = keep
            numeric[i] = (up - down) / (2 * h)
        denom = np.maximum(np.maximum(np.abs(analytic), np.abs(numeric)), atol)
        worst = max(worst, float(np.max(np.abs(analytic - numeric) / denom)))
    return worst


if __name__ == "__main__":
    print(f"max relative gradient error: {check_gradients():.2e}")
