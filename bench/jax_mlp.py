"""A multilayer perceptron in JAX, written the way a JAX user gets the most from it.

The same networks and math as the other peers (ReLU or tanh hidden layers;
softmax + cross-entropy output, or sigmoid + MSE C = 1/(2n) Σ‖y − a‖²),
trained by plain SGD or by Adam written out in jax.numpy (the update of
torch.optim.Adam: p ← p − η/(1 − β₁ᵗ) · m / (√v / √(1 − β₂ᵗ) + ε)), and
the habits that make JAX fast:

- `JaxMLP.epoch`: the whole epoch is one jitted call: a jax.random
  permutation of the rows, the batches gathered on the device from the
  training data (which stays there), and a `jax.lax.scan` of the training
  step over them; the parameters and optimizer state are donated, so XLA
  may update them in place;
- `JaxMLP.step`: one jitted training step per batch called from Python (as
  most JAX training loops are written), over pre-sliced device batches;
- every call blocks on its result before returning (JAX dispatches
  asynchronously: without it a clock would time only the dispatch);
- the first call of each compiles it for the model's shapes: the bench
  makes that call before timing, so compile time is never timed.

64-bit floats are enabled once (`jax_enable_x64`) so that the float64
workloads run in float64; every array here has an explicit dtype, so the
float32 workloads stay float32.  The epoch needs whole batches (the bench's
training data is a whole number of them).
"""

from __future__ import annotations

import functools

import numpy as np

from .workloads import batches

__all__ = ["JaxMLP"]


@functools.cache
def _jax():
    """jax, with 64-bit floats enabled (once, before any array is made)."""
    import jax

    jax.config.update("jax_enable_x64", True)
    return jax


def _forward(params, x, hidden):
    """The output layer's pre-activation z for the rows x."""
    jnp = _jax().numpy
    act = jnp.tanh if hidden == "tanh" else _jax().nn.relu
    for W, b in params[:-1]:
        x = act(x @ W + b)
    W, b = params[-1]
    return x @ W + b


def _loss(params, x, y, hidden, output):
    """Mean cross-entropy of softmax(z) for labels y, or 1/(2n) Σ (σ(z) − y)²."""
    jax = _jax()
    z = _forward(params, x, hidden)
    if output == "sigmoid":
        return 0.5 * jax.numpy.sum((jax.nn.sigmoid(z[:, 0]) - y) ** 2) / x.shape[0]
    logp = jax.nn.log_softmax(z)
    return -jax.numpy.mean(jax.numpy.take_along_axis(logp, y[:, None], axis=1))


def _sgd(params, grads, state, lr):
    tree = _jax().tree_util
    return tree.tree_map(lambda p, g: p - lr * g, params, grads), state


def _adam(params, grads, state, lr, betas, eps):
    jax = _jax()
    jnp, tree = jax.numpy, jax.tree_util
    b1, b2 = betas
    m, v, t = state
    t = t + 1
    m = tree.tree_map(lambda m, g: b1 * m + (1 - b1) * g, m, grads)
    v = tree.tree_map(lambda v, g: b2 * v + (1 - b2) * g * g, v, grads)
    step = lr / (1 - b1**t)
    root = jnp.sqrt(1 - b2**t)
    params = tree.tree_map(
        lambda p, m, v: p - (step * m / (jnp.sqrt(v) / root + eps)).astype(p.dtype), params, m, v
    )
    return params, (m, v, t)


class JaxMLP:
    """sizes (n_in, hidden…, n_out); hidden 'relu' or 'tanh'; output
    'softmax' (y class labels) or 'sigmoid' (y values, MSE); starting
    weights `params` [(W, b), …]; optimizer 'sgd' (lr) or 'adam' (lr, betas,
    eps); X, y: the training data, put on the device once."""

    def __init__(
        self, sizes, hidden, output, params, X, y, batch, optimizer="sgd", lr=0.01, **adam
    ):
        jax = _jax()
        jnp = jax.numpy
        if X.shape[0] % batch:
            raise ValueError(f"X: {X.shape[0]} rows are not a whole number of batches of {batch}")
        self.params = [(jnp.asarray(W), jnp.asarray(b)) for W, b in params]
        if optimizer == "adam":
            m, v = (jax.tree_util.tree_map(jnp.zeros_like, self.params) for _ in range(2))
            self.state = (m, v, jnp.zeros((), X.dtype))
            update = functools.partial(_adam, lr=lr, **adam)
        elif optimizer == "sgd":
            self.state, update = (), functools.partial(_sgd, lr=lr)
        else:
            raise ValueError(f"optimizer must be 'sgd' or 'adam', got {optimizer!r}")
        self.X, self.y = jnp.asarray(X), jnp.asarray(y)
        self.batch, self.key = batch, jax.random.key(0)
        self.batches = batches(self.X, self.y, batch)
        loss = functools.partial(_loss, hidden=hidden, output=output)
        step = self._make_step(loss, update)
        self._epoch = jax.jit(self._make_epoch(step), donate_argnums=(0, 1))
        self._step_jit = jax.jit(step, donate_argnums=(0, 1))
        self.hidden, self.output = hidden, output

    @staticmethod
    def _make_step(loss, update):
        grad = _jax().value_and_grad(loss)

        def step(params, state, x, y):
            value, grads = grad(params, x, y)
            params, state = update(params, grads, state)
            return params, state, value

        return step

    def _make_epoch(self, step):
        jax = _jax()
        n, batch = self.X.shape[0], self.batch

        def epoch(params, state, key, X, y):
            key, sub = jax.random.split(key)
            order = jax.random.permutation(sub, n)
            Xb = X[order].reshape(n // batch, batch, *X.shape[1:])
            yb = y[order].reshape(n // batch, batch, *y.shape[1:])

            def body(carry, xy):
                params, state, value = step(*carry, *xy)
                return (params, state), value

            (params, state), values = jax.lax.scan(body, (params, state), (Xb, yb))
            return params, state, key, values.mean()

        return epoch

    def epoch(self) -> float:
        """One shuffled epoch as one jitted call; returns the mean loss."""
        self.params, self.state, self.key, loss = self._epoch(
            self.params, self.state, self.key, self.X, self.y
        )
        return float(loss)  # (blocks until the epoch is done)

    def step_epoch(self) -> None:
        """One pass over the pre-sliced batches, a jitted step call each."""
        params, state = self.params, self.state
        for x, y in self.batches:
            params, state, _ = self._step_jit(params, state, x, y)
        self.params, self.state = _jax().block_until_ready((params, state))

    def predict(self, X) -> np.ndarray:
        """Class labels (argmax; sigmoid ≥ 0.5) for the rows of X."""
        z = np.asarray(_forward(self.params, _jax().numpy.asarray(X), self.hidden))
        return (z[:, 0] >= 0).astype(np.int64) if self.output == "sigmoid" else z.argmax(1)
