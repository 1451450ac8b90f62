"""One network, two threads: every call that reads or writes a network's
parameters, optimizer or workspace runs alone or raises the RuntimeError of
a concurrent fit; and the per-layer path checks each backward call against
the forward it follows."""

import _thread
import copy
import pickle
import signal
import threading

import numpy as np
import pytest

import backprop as bp
from backprop._codes import ActivationCode, LossCode, OptimizerKind
from backprop.callbacks import Callback

IN_USE = "in use by another thread"


def small_net(seed=0, dtype="float64"):
    return bp.Sequential(
        bp.Dense(4, 8, activation="tanh"),
        bp.Dense(8, 3, activation="softmax"),
        loss="cross_entropy",
        dtype=dtype,
        seed=seed,
    )


def data(rows=64, seed=1):
    rng = np.random.default_rng(seed)
    return rng.normal(size=(rows, 4)), rng.integers(0, 3, rows)


class FromAnotherThread(Callback):
    """At the end of epoch `at`, run `call(net)` in a second thread (while fit
    holds the network, for certain) and keep what it raised."""

    def __init__(self, call, at=1):
        self.call, self.at, self.raised, self.returned = call, at, None, None

    def on_epoch_end(self, net, epoch, logs):
        if epoch != self.at:
            return

        def run():
            try:
                self.returned = self.call(net)
            except BaseException as exc:  # noqa: BLE001 (kept for the test)
                self.raised = exc

        t = threading.Thread(target=run)
        t.start()
        t.join()


X, y = data()

# Every public call that touches the network's parameters, optimizer or
# workspace, as a second thread would make it.
CALLS = {
    "fit": lambda net: net.fit(X, y, epochs=1),
    "fit(optimizer='adam')": lambda net: net.fit(X, y, epochs=1, optimizer="adam"),
    "partial_fit": lambda net: net.partial_fit(X, y),
    "train_step": lambda net: net.train_step(X[:8], y[:8]),
    "train_step (checked path)": lambda net: net.train_step(X[:8].tolist(), y[:8].tolist()),
    "loss_and_grad": lambda net: net.loss_and_grad(X[:8], y[:8]),
    "apply_gradients": lambda net: net.apply_gradients(),
    "step": lambda net: net.step(0.1),
    "forward": lambda net: net.forward(X[:3]),
    "backward": lambda net: net.backward(y[:3]),
    "explain": lambda net: net.explain(X[0], y[0]),
    "predict one row": lambda net: net.predict(X[0]),
    "predict": lambda net: net.predict(X),
    "predict_proba": lambda net: net.predict_proba(X.tolist()),
    "evaluate": lambda net: net.evaluate(X, y),
    "save": lambda net: net.save(_tmp_path[0] / "m.npz"),
    "copy": lambda net: net.copy(),
    "copy.deepcopy": lambda net: copy.deepcopy(net),
    "pickle.dumps": lambda net: pickle.dumps(net),
    "optimizer = Adam()": lambda net: setattr(net, "optimizer", bp.Adam()),
    "optimizer = 'sgd'": lambda net: setattr(net, "optimizer", "sgd"),
    "optimizer.momentum = …": lambda net: setattr(net.optimizer, "momentum", 0.5),
    "params = …": lambda net: setattr(net, "params", np.zeros(net.params.size)),
    "grads = …": lambda net: setattr(net, "grads", np.zeros(net.grads.size)),
    "layers[0].W = …": lambda net: setattr(net.layers[0], "W", np.zeros((4, 8))),
    "layers[0].b = …": lambda net: setattr(net.layers[0], "b", np.zeros(8)),
    "layers[0].forward": lambda net: net.layers[0].forward(X[:3]),
    "layers[1].backward": lambda net: net.layers[1].backward(np.ones(3)),
    "layers[1].backward_delta": lambda net: net.layers[1].backward_delta(np.ones((3, 3))),
    "layers[0].reset_parameters": lambda net: net.layers[0].reset_parameters(
        np.random.default_rng(0)
    ),
    "layers[0].copy": lambda net: net.layers[0].copy(),
    "with exclusive()": lambda net: net.exclusive().__enter__(),
    "gradcheck": lambda net: bp.gradcheck(net, X[:4], y[:4]),
}
_tmp_path = [None]


@pytest.fixture(autouse=True)
def _remember_tmp_path(tmp_path):
    _tmp_path[0] = tmp_path


@pytest.mark.parametrize("name", sorted(CALLS))
def test_a_call_from_another_thread_during_fit_raises_and_changes_nothing(name):
    reference = small_net()
    reference.fit(X, y, epochs=3)
    net = small_net()
    probe = FromAnotherThread(CALLS[name])
    net.fit(X, y, epochs=3, callbacks=[probe])
    assert isinstance(probe.raised, RuntimeError), (name, probe.raised)
    assert IN_USE in str(probe.raised)
    assert net.optimizer.settings() == reference.optimizer.settings()  # (undone)
    # fit went on undisturbed: the same weights as without the other thread
    np.testing.assert_array_equal(net.params, reference.params)
    assert not net.exclusive().held


def test_the_same_calls_from_fits_own_thread_work():
    # callbacks run in fit's thread: they may save, predict, copy …
    net = small_net()
    seen = {}

    class Uses(Callback):
        def on_epoch_end(self, net, epoch, logs):
            seen["proba"] = net.predict_proba(X[:2])
            seen["copy"] = net.copy()
            seen["pickle"] = pickle.loads(pickle.dumps(net))

    net.fit(X, y, epochs=2, callbacks=[Uses()])
    assert seen["proba"].shape == (2, 3)
    assert isinstance(seen["copy"], bp.Sequential)
    np.testing.assert_array_equal(seen["pickle"].predict_proba(X), seen["copy"].predict_proba(X))


def test_a_second_thread_may_use_the_network_after_fit():
    net = small_net()
    net.fit(X, y, epochs=1)
    out = {}
    t = threading.Thread(target=lambda: out.setdefault("p", net.predict(X)))
    t.start()
    t.join()
    assert out["p"].shape == (64,)


class Began(Callback):
    """Tells another thread that fit has begun: the network is fit's from
    then on (a call made before could claim it first and have fit refused)."""

    def __init__(self):
        self.event = threading.Event()

    def on_train_begin(self, net, logs):
        self.event.set()


def fit_in_a_thread(net, *args, **kwargs):
    """(thread, exceptions raised in it): fit runs in the thread, which is
    started and returned once fit holds the network."""
    began, errors = Began(), []

    def train():
        try:
            net.fit(*args, callbacks=[began], **kwargs)
        except BaseException as exc:  # noqa: BLE001 (kept for the test)
            errors.append(exc)
        finally:
            began.event.set()  # (fit refused or failed: nothing to wait for)

    t = threading.Thread(target=train)
    t.start()
    assert began.event.wait(300), "fit did not begin"
    assert errors == []
    return t, errors


def test_swapping_the_optimizer_during_fit_never_crashes():
    # the reproducer of a segfault: the optimizer set from the main thread
    # while fit runs one-row batches in another
    net = small_net(dtype="float32")
    Xb, yb = data(2000)
    t, errors = fit_in_a_thread(net, Xb, yb, epochs=20, batch_size=1, lr=1e-3)
    refused = 0
    while t.is_alive():
        for opt in (bp.Adam(), bp.SGD(1e-3)):
            try:
                net.optimizer = opt
            except RuntimeError as exc:
                assert IN_USE in str(exc)
                refused += 1
    t.join()
    assert errors == []
    assert refused > 0
    assert np.isfinite(net.params).all()


def test_a_save_during_fit_is_refused_not_torn(tmp_path):
    net = bp.Sequential(bp.Dense(1, 200_000), loss="mse", seed=0)
    Xb = np.ones((512, 1))
    Yb = np.ones((512, 200_000), np.float64) * 0
    t, errors = fit_in_a_thread(net, Xb[:64], Yb[:64], epochs=50, batch_size=1, lr=1e-3)
    outcomes = set()
    while t.is_alive():
        try:
            net.save(tmp_path / "m.npz")
            outcomes.add("saved")
        except RuntimeError as exc:
            assert IN_USE in str(exc)
            outcomes.add("refused")
    t.join()
    assert errors == []
    assert "refused" in outcomes
    net.save(tmp_path / "m.npz")
    np.testing.assert_array_equal(bp.load(tmp_path / "m.npz").params, net.params)


# -- one layer, one network ---------------------------------------------------
def test_a_layer_belongs_to_one_network_at_a_time():
    layer = bp.Dense(4, 3, activation="softmax", seed=0)
    first = bp.Sequential(layer, loss="cross_entropy")
    with pytest.raises(ValueError, match=r"layers\[0\] already belongs to another Sequential"):
        bp.Sequential(layer, loss="cross_entropy")
    # the first network is intact: its layer still is its view
    np.testing.assert_array_equal(first.forward(X[:5]), first.predict_proba(X[:5]))
    assert np.shares_memory(first.layers[0].W, first.params)
    # a copy may join another network
    second = bp.Sequential(layer.copy(), loss="cross_entropy")
    second.layers[0].W = np.zeros((4, 3))
    assert np.abs(first.layers[0].W).sum() > 0


def test_a_layer_of_a_network_that_is_gone_may_join_another():
    layer = bp.Dense(4, 3, seed=0)
    W = layer.W.copy()
    net = bp.Sequential(layer)
    del net
    import gc

    gc.collect()
    again = bp.Sequential(layer)
    np.testing.assert_array_equal(again.layers[0].W, W)


# -- assignments after construction --------------------------------------------
@pytest.mark.parametrize("how", ["pickle", "deepcopy", "copy"])
def test_a_copied_layer_is_independent_and_free(how):
    # Taken inside fit (a callback keeping the best layer, say): the copy is a
    # standalone layer with its own weights, free for any thread or network.
    net = small_net()
    layer = net.layers[0]
    make = {
        "pickle": lambda: pickle.loads(pickle.dumps(layer)),
        "deepcopy": lambda: copy.deepcopy(layer),
        "copy": lambda: copy.copy(layer),
    }[how]
    with net.exclusive():
        twin = make()
    assert not twin._guard.held
    assert not np.shares_memory(twin.W, net.params)
    np.testing.assert_array_equal(twin.W, layer.W)
    np.testing.assert_array_equal(twin.b, layer.b)
    assert (twin.n_in, twin.n_out, twin.activation, twin.init, twin.dtype) == (
        layer.n_in,
        layer.n_out,
        layer.activation,
        layer.init,
        layer.dtype,
    )
    outputs = []
    other = threading.Thread(target=lambda: outputs.append(twin.forward(np.ones(4))))
    other.start()
    other.join()
    assert len(outputs) == 1  # (a refused call would leave it empty)
    bp.Sequential(twin, bp.Dense(8, 3, activation="softmax"), loss="cross_entropy")


def test_assigning_params_copies_into_the_buffer(tmp_path):
    net = small_net()
    new = np.random.default_rng(5).normal(size=net.params.size)
    buffer = net.params
    net.params = new
    assert net.params is buffer
    np.testing.assert_array_equal(net.params, new)
    # predict, the per-layer path and the file all see the new values
    W0 = new[:32].reshape(4, 8)
    np.testing.assert_array_equal(net.layers[0].W, W0)
    np.testing.assert_allclose(net.predict_proba(X[:4]), net.forward(X[:4]), rtol=1e-12)
    net.fit(X, y, epochs=1)
    net.save(tmp_path / "m.npz")
    np.testing.assert_array_equal(bp.load(tmp_path / "m.npz").params, net.params)


@pytest.mark.parametrize(
    "value, error",
    [
        (np.zeros(3), ValueError),
        (np.zeros((67, 1)), ValueError),
        ("abc", TypeError),
        (np.full(67, np.nan), ValueError),
        (None, TypeError),
    ],
)
def test_assigning_bad_params_is_refused_and_changes_nothing(value, error):
    net = small_net()
    before = net.params.copy()
    with pytest.raises(error, match="params"):
        net.params = value
    np.testing.assert_array_equal(net.params, before)


@pytest.mark.parametrize("name", ["layers", "loss", "dtype", "seed"])
def test_what_a_network_is_built_of_cannot_be_reassigned(name):
    net = small_net()
    with pytest.raises(AttributeError, match=name):
        setattr(net, name, getattr(net, name))


@pytest.mark.parametrize("name", ["n_in", "n_out", "activation", "init", "dtype", "dW", "db"])
def test_what_a_layer_is_built_of_cannot_be_reassigned(name):
    layer = small_net().layers[0]
    with pytest.raises(AttributeError, match=name):
        setattr(layer, name, getattr(layer, name))


@pytest.mark.parametrize("name", ["name", "code", "default_init", "negative_slope"])
def test_an_activation_cannot_be_changed_after_construction(name):
    # The engine keeps the slope and code it was built with: a change would
    # reach forward and the model file but not predict, and, on the shared
    # built-in activations, every layer of that kind.
    net = bp.Sequential(
        bp.Dense(2, 3, activation=bp.activations.LeakyReLU(0.1)), bp.Dense(3, 1), seed=0
    )
    X = np.array([[-1.0, -2.0]])
    for act in (net.layers[0].activation, bp.activations.get("relu")):
        value = getattr(act, name)
        with pytest.raises(AttributeError, match=name):
            setattr(act, name, 0.9 if name == "negative_slope" else value)
        with pytest.raises(AttributeError, match=name):
            delattr(act, name)
        assert getattr(act, name) == value
    np.testing.assert_array_equal(net.forward(X)[0], net.predict_proba(X)[0])


@pytest.mark.parametrize("name", ["name", "code", "output"])
def test_a_loss_cannot_be_changed_after_construction(name):
    net = small_net()
    value = getattr(net.loss, name)
    with pytest.raises(AttributeError, match=name):
        setattr(net.loss, name, "mse" if name == "name" else 0)
    assert getattr(net.loss, name) == value
    assert bp.losses.get("cross_entropy").code == bp.losses.CROSS_ENTROPY


def test_layers_is_a_tuple():
    net = small_net()
    with pytest.raises(AttributeError):
        net.layers.append(bp.Dense(3, 3))


@pytest.mark.parametrize(
    "value, error",
    [
        (["a", "b"], ValueError),
        (["a", "a", "b"], ValueError),
        ("abc", TypeError),
        (5, TypeError),
        ([["a"], "b", "c"], TypeError),
    ],
)
def test_class_names_must_fit_the_outputs(value, error):
    net = small_net()
    with pytest.raises(error, match="classes"):
        net.classes = value
    assert net.classes is None
    net.classes = ["a", "b", 3]
    assert net.classes == ["a", "b", "3"]


def test_class_names_of_one_sigmoid_output_and_of_mse_outputs():
    net = bp.Sequential(bp.Dense(4, 1, activation="sigmoid"), loss="binary_cross_entropy")
    net.classes = ["no", "yes"]
    assert net.classes == ["no", "yes"]
    with pytest.raises(ValueError, match="classes must name 2 classes"):
        net.classes = ["yes"]
    mse = bp.Sequential(bp.Dense(4, 3, activation="sigmoid"))  # one-hot targets
    mse.classes = ["a", "b", "c"]
    with pytest.raises(ValueError, match="classes must name 1 class"):
        bp.Sequential(bp.Dense(4, 1)).classes = ["a", "b"]


def test_seed_must_be_a_whole_number():
    for bad, error in (("3", TypeError), (-1, ValueError), (1.5, TypeError)):
        with pytest.raises(error, match="seed"):
            bp.Sequential(bp.Dense(2, 1), seed=bad)


# -- a backward call against its forward -----------------------------------------
def test_backward_delta_is_checked_against_the_last_forward():
    layer = bp.Dense(4, 3)
    layer.forward(np.ones((5000, 4)))
    with pytest.raises(
        ValueError,
        match=r"delta must have the shape of the last forward's "
        r"output \(5000, 3\)",
    ):
        layer.backward_delta(np.ones((1, 3)))
    with pytest.raises(ValueError, match="delta"):
        layer.backward_delta(np.ones((5000, 2)))  # a wrong width
    with pytest.raises(RuntimeError, match="forward"):
        bp.Dense(4, 3).backward_delta(np.ones((1, 3)))


def test_backward_delta_gives_the_gradients_of_the_numpy_formula():
    rng = np.random.default_rng(0)
    layer = bp.Dense(4, 3, seed=0)
    x, delta = rng.normal(size=(6, 4)), rng.normal(size=(6, 3))
    layer.forward(x)
    dx = layer.backward_delta(delta)
    np.testing.assert_allclose(layer.dW, x.T @ delta, rtol=1e-12)
    np.testing.assert_allclose(layer.db, delta.sum(0), rtol=1e-12)
    np.testing.assert_allclose(dx, delta @ layer.W.T, rtol=1e-12)


def test_network_backward_refuses_layer_caches_from_another_forward():
    net = bp.Sequential(bp.Dense(4, 3, activation="tanh"), bp.Dense(3, 1), seed=0)
    net.forward(np.ones((1, 4)))
    net.layers[0].forward(np.ones((20_000, 4)))
    with pytest.raises(RuntimeError, match="call net.forward"):
        net.backward(np.ones(1))
    net.forward(np.ones((2, 4)))
    assert net.backward(np.ones(2)) is net.grads


def test_network_backward_before_forward():
    with pytest.raises(RuntimeError, match="forward"):
        small_net().backward(y[:3])


# -- validation data read in chunks is checked before training -----------------
def test_a_bad_memory_mapped_validation_set_is_refused_before_training(tmp_path):
    net = small_net()
    before = net.params.copy()
    Xv = np.lib.format.open_memmap(tmp_path / "xv.npy", "w+", np.float64, (10, 4))
    Xv[:] = 1
    Xv[7, 2] = np.nan
    Xv.flush()
    Xv = np.load(tmp_path / "xv.npy", mmap_mode="r")
    with pytest.raises(ValueError, match=r"validation_data\[0\] rows 0:10 contains NaN"):
        net.fit(X, y, epochs=2, validation_data=(Xv, np.zeros(10, np.int64)))
    np.testing.assert_array_equal(net.params, before)
    assert net.optimizer_steps == 0
    with pytest.raises(ValueError, match=r"validation_data\[1\]"):
        net.fit(
            X,
            y,
            epochs=2,
            validation_data=(np.load(tmp_path / "xv.npy", mmap_mode="r")[:7], np.full(7, 5)),
        )
    np.testing.assert_array_equal(net.params, before)


# -- Ctrl-C between the stretches of a large predict or evaluate ------------------
class CountingEngine:
    """Stands in for a network's engine: passes calls on, counts them, and
    sends Ctrl-C to the main thread during the first."""

    def __init__(self, engine):
        self._engine, self.calls = engine, 0

    def __getattr__(self, name):
        return getattr(self._engine, name)

    def _call(self, name, *args):
        self.calls += 1
        if self.calls == 1:
            _thread.interrupt_main()
        return getattr(self._engine, name)(*args)

    def forward(self, *args):
        return self._call("forward", *args)

    def evaluate(self, *args):
        return self._call("evaluate", *args)


@pytest.mark.parametrize("call", ["predict", "predict_proba", "evaluate"])
def test_ctrl_c_lands_between_the_stretches_of_a_large_inference(call, monkeypatch):
    net = bp.Sequential(
        bp.Dense(64, 256, activation="relu"),
        bp.Dense(256, 10, activation="softmax"),
        loss="cross_entropy",
        seed=0,
    )
    rows = 40_000  # about 1.4 GFLOP: several stretches
    monkeypatch.setattr(bp.training, "STRETCH_FLOPS", 1e8)
    Xb = np.random.default_rng(0).normal(size=(rows, 64))
    assert len(net._stretches(rows)) > 3
    counting = CountingEngine(net._engine)
    monkeypatch.setattr(net, "_engine", counting)
    args = (Xb, np.zeros(rows, np.int64)) if call == "evaluate" else (Xb,)
    # Python's own Ctrl-C handler, whatever an earlier test left (interrupt_main
    # does nothing while SIGINT is ignored or at its default)
    before = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        with pytest.raises(KeyboardInterrupt):
            getattr(net, call)(*args)
    finally:
        signal.signal(signal.SIGINT, before)
    assert counting.calls == 1  # stopped after the stretch it was in
    monkeypatch.undo()
    assert not net.exclusive().held  # and the network is free again
    assert net.predict(Xb[:3]).shape == (3,)


def test_inference_in_stretches_equals_one_pass(monkeypatch):
    net = small_net()
    Xb, yb = data(10_000)
    whole_p, whole_e = net.predict_proba(Xb), net.evaluate(Xb, yb)
    monkeypatch.setattr(bp.training, "STRETCH_FLOPS", 1e3)
    assert len(net._stretches(10_000)) > 1
    np.testing.assert_allclose(net.predict_proba(Xb), whole_p, rtol=1e-12)
    parts = net.evaluate(Xb, yb)
    assert parts["accuracy"] == whole_e["accuracy"]
    assert parts["loss"] == pytest.approx(whole_e["loss"], rel=1e-12)


# -- Ctrl-C at any point of a call that changes the engine's plan -----------------
def interrupted_at(k, call):
    """Run call() with Ctrl-C (KeyboardInterrupt) raised at the k-th call of
    a Python function inside it; False once call() makes fewer than k."""
    import sys

    seen = [0]

    def tracer(frame, event, arg):
        if event == "call":
            seen[0] += 1
            if seen[0] == k:
                sys.settrace(None)
                raise KeyboardInterrupt
        return None

    sys.settrace(tracer)
    try:
        call()
    except KeyboardInterrupt:
        pass
    finally:
        sys.settrace(None)
    return seen[0] >= k  # (one that lands in a weakref callback is swallowed)


@pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")
def test_ctrl_c_anywhere_in_an_optimizer_swap_leaves_the_network_whole():
    Xb, yb = data(8)
    for k in range(1, 10_000):
        net = small_net()
        if not interrupted_at(k, lambda: setattr(net, "optimizer", bp.RMSProp())):  # noqa: B023  (called now)
            break
        assert not net.exclusive().held, k
        net.optimizer = bp.Adam()  # and the rule it takes from here on is whole
        assert np.isfinite(net.train_step(Xb, yb))
        assert np.isfinite(net.params).all()


@pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")
def test_ctrl_c_anywhere_in_a_workspace_growth_leaves_no_pointer_into_freed_memory():
    # A plan left pointing into arrays freed after an interrupted growth would
    # write the next small prediction into whatever the allocator put there:
    # here, the arrays of sevens made right after, of the same size.
    rows, width = 3000, 300
    Xb = np.random.default_rng(0).normal(size=(rows, 4))
    for k in range(1, 10_000):
        net = bp.Sequential(
            bp.Dense(4, width, activation="tanh"),
            bp.Dense(width, width, activation="tanh"),
            bp.Dense(width, 2),
            seed=0,
        )
        before = net.predict(Xb[:3])
        done = not interrupted_at(k, lambda: net.predict(Xb))  # noqa: B023  (called now)
        sevens = [np.full((rows, width), 7.0) for _ in range(4)]
        np.testing.assert_array_equal(net.predict(Xb[:3]), before)
        assert all((s == 7.0).all() for s in sevens), k
        if done:
            break


def test_a_copy_of_a_held_guard_is_free():
    net = small_net()
    with net.exclusive():
        twin = copy.deepcopy(net.exclusive())
        assert net.exclusive().held and not twin.held
    assert not pickle.loads(pickle.dumps(net.exclusive())).held


@pytest.mark.parametrize(
    "call",
    [
        lambda: bp._ops.act_forward(np.ones((2, 2)), len(ActivationCode)),
        lambda: bp._ops.act_backward(np.ones((2, 2)), np.ones((2, 2)), np.ones((2, 2)), -1),
        lambda: bp._ops.loss_value(len(LossCode), np.ones((2, 2)), np.ones((2, 2)), 1e-12),
        lambda: bp._ops.dense_forward(
            np.ones((2, 3)), np.ones((2, 2)), np.ones((2, 3)), np.ones(3), len(ActivationCode)
        ),
        lambda: bp._ops.optimizer_update(*[np.ones(3)] * 4, kind=len(OptimizerKind), lr=0.1),
    ],
)
def test_the_kernels_refuse_codes_the_core_does_not_have(call):
    with pytest.raises(ValueError, match="unknown .* code"):
        call()
