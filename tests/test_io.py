"""Model files: round trips, exact resumption, atomic writes, file modes,
hostile metadata."""

import ast
import functools
import inspect
import json
import os
import pickle
import re

import numpy as np
import pytest

import backprop as bp
import backprop.cli
from backprop import _format, io


def trained(optimizer, epochs=3, seed=0):
    X, y = bp.datasets.load_digits()
    net = bp.Sequential(
        bp.Dense(64, 16, activation=bp.activations.LeakyReLU(0.1)),
        bp.Dense(16, 10, activation="softmax"),
        loss="cross_entropy",
        dtype="float32",
        seed=seed,
    )
    net.fit(X, y, epochs=epochs, batch_size=32, optimizer=optimizer)
    return net, X, y


@pytest.mark.parametrize(
    "optimizer",
    [
        lambda: bp.SGD(0.05),
        lambda: bp.SGD(0.05, momentum=0.9),
        lambda: bp.Adam(1e-3, clip_norm=5.0),
        lambda: bp.AdamW(1e-3),
        lambda: bp.RMSProp(1e-3),
        lambda: bp.AdaGrad(0.05),
    ],
)
def test_resuming_from_a_file_is_bit_identical(tmp_path, optimizer):
    a, X, y = trained(optimizer())
    a.fit(X, y, epochs=3, batch_size=32)  # uninterrupted
    b, _, _ = trained(optimizer())
    path = b.save(tmp_path / "model")
    assert path.endswith("model.npz")
    c = bp.load(path)
    c.fit(X, y, epochs=3, batch_size=32)  # resumed from the file
    np.testing.assert_array_equal(c.params, a.params)
    assert c.optimizer_steps == a.optimizer_steps == 6 * 57
    assert type(c.optimizer) is type(a.optimizer) and vars(c.optimizer) == vars(a.optimizer)


def test_a_loaded_model_predicts_the_same(tmp_path):
    net, X, y = trained(bp.Adam(1e-3))
    net.save(tmp_path / "m.npz")
    back = bp.load(tmp_path / "m.npz")
    assert back.dtype == np.float32
    assert back.layers[0].activation.negative_slope == pytest.approx(0.1)
    np.testing.assert_array_equal(back.predict_proba(X), net.predict_proba(X))
    assert back.evaluate(X, y) == net.evaluate(X, y)


def test_saving_is_atomic(tmp_path, monkeypatch):
    net, _, _ = trained(bp.SGD(0.1), epochs=1)
    path = tmp_path / "model.npz"
    net.save(path)
    before = path.read_bytes()

    def crash(fh, **arrays):
        fh.write(b"half a file")
        raise OSError("disk full")

    monkeypatch.setattr(io.np, "savez", crash)
    with pytest.raises(OSError, match="disk full"):
        net.save(path)
    assert path.read_bytes() == before  # the old file is whole
    assert os.listdir(tmp_path) == ["model.npz"]  # and no temporary is left


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    """The arrays of a saved model file per optimizer (trained one epoch)."""
    made = {}

    def arrays(optimizer="adam"):
        if optimizer not in made:
            net, _, _ = trained(bp.optimizers.get(optimizer), epochs=1)
            path = net.save(tmp_path_factory.mktemp("saved") / "model")
            with np.load(path) as f:
                made[optimizer] = {k: f[k] for k in f.files}
        return {k: v.copy() for k, v in made[optimizer].items()}

    return arrays


@pytest.fixture
def umask():
    """Sets the process's umask for the test; the old one is restored after."""
    old = os.umask(0o022)
    yield os.umask
    os.umask(old)


@pytest.mark.parametrize(
    "mask,mode", [(0o022, 0o644), (0o027, 0o640), (0o077, 0o600), (0o002, 0o664)]
)
def test_a_saved_file_follows_the_umask(tmp_path, umask, mask, mode):
    net, _, _ = trained(bp.SGD(0.1), epochs=1)
    umask(mask)
    path = tmp_path / "model.npz"
    net.save(path)
    assert os.stat(path).st_mode & 0o777 == mode
    os.chmod(path, 0o666)  # overwriting sets the mode afresh
    net.save(path)
    assert os.stat(path).st_mode & 0o777 == mode
    assert umask(0o022) == mask  # saving left the umask alone


@pytest.mark.parametrize("mask", [0o022, 0o037, 0o077])
def test_the_atomic_write_reads_the_umask_also_without_proc(tmp_path, umask, monkeypatch, mask):
    # (the write, and so the reading of the umask, is backprop._format's)
    def no_proc(*args, **kwargs):
        raise FileNotFoundError("/proc/self/status")

    monkeypatch.setattr(_format, "open", no_proc, raising=False)
    umask(mask)
    path = _format.write(tmp_path / "arrays", {"a": np.zeros(2)})
    assert path.endswith("arrays.npz") and os.stat(path).st_mode & 0o777 == 0o666 & ~mask
    assert umask(0o022) == mask


def test_pickles_name_the_network_module_and_older_ones_still_load():
    net, X, _ = trained(bp.Adam(1e-3), epochs=1)
    data = pickle.dumps(net)
    assert b"backprop.network" in data and b"backprop.io" not in data
    # A pickle as written before model files moved: it names backprop.io.from_state.
    body = pickle.dumps(io.state_of(net), protocol=2)[2:-1]
    older = b"\x80\x02cbackprop.io\nfrom_state\n" + body + b"\x85R."
    for back in (pickle.loads(data), pickle.loads(older)):
        np.testing.assert_array_equal(back.predict_proba(X), net.predict_proba(X))
        assert str(io.state_of(back)["meta"]) == str(io.state_of(net)["meta"])


def test_the_format_module_knows_no_network():
    tree = ast.parse(inspect.getsource(_format))
    imported = {
        node.module or alias.name
        for node in ast.walk(tree)
        if isinstance(node, ast.ImportFrom) and node.level == 1
        for alias in node.names
    }
    assert imported <= {"_ops", "_validation", "activations", "losses", "optimizers", "layout"}, (
        imported
    )


def write(path, data, meta=None, **arrays):
    """A copy of the model file `data` with its metadata edited by `meta`
    (a function of the parsed JSON, or the JSON text itself) and `arrays`
    replaced (None: removed)."""
    if callable(meta):
        m = json.loads(str(data["meta"]))
        meta(m)
        meta = json.dumps(m)
    if meta is not None:
        data["meta"] = np.array(meta)
    data.update(arrays)
    np.savez(path, **{k: v for k, v in data.items() if v is not None})


def setting(field: str, value):
    """An edit of the metadata that sets `field` ("optimizer.settings.lr",
    "layers.1.n_out" …) to `value`."""
    *path, last = [int(k) if k.isdigit() else k for k in field.split(".")]

    def edit(m):
        for key in path:
            m = m[key]
        m[last] = value

    return edit


def meta(field: str, value) -> dict:
    return dict(meta=setting(field, value))


def nested(depth):
    return functools.reduce(lambda inner, _: [inner], range(depth), 0)


@pytest.mark.parametrize(
    "edit,match",
    [
        (meta("version", 99), "version 99 is not supported"),
        (meta("version", True), "version True is not supported"),
        (meta("format", "other"), "no backprop header"),
        (meta("extra", 1), "meta: unexpected field 'extra'"),
        (dict(meta=lambda m: m.pop("rng")), "missing meta.rng"),
        (meta("layers.1.n_in", 3), r"meta.layers\[1\].n_in is 3: it does not connect"),
        (meta("layers.1.activation", "ReLU"), r"meta.layers\[1\].activation"),
        (meta("layers.0.negative_slope", -1), r"meta.layers\[0\].negative_slope"),
        (meta("layers.1.negative_slope", 0.5), r"meta.layers\[1\].negative_slope"),
        (meta("loss", "binary_cross_entropy"), "meta: loss='binary_cross_entropy' needs"),
        (meta("dtype", "float16"), "meta.dtype must be one of float32, float64"),
        (meta("classes", ["a", "b"]), "meta.classes: classes must name 10 classes"),
        (meta("classes", list(range(10))), "meta.classes"),
        (meta("optimizer.class", "os.system"), "meta.optimizer.class must be one of"),
        (meta("optimizer.settings.lr", -1), "settings: lr must be a finite number > 0"),
        (meta("optimizer.settings.lr", float("nan")), "settings: lr must be a finite"),
        (meta("optimizer.settings.lr", "0.1"), "settings: lr must be a number, got str"),
        (meta("optimizer.settings.eps", None), "settings: eps must be a number"),
        (meta("optimizer.settings.betas", [0.9]), "settings.betas must be a pair"),
        (meta("optimizer.settings.betas", [0.9, True]), r"betas\[1\] must be a number"),
        (meta("optimizer.settings.betas", nested(50)), "settings.betas must be a pair"),
        (meta("optimizer.settings.amsgrad", True), "unexpected field 'amsgrad'"),
        (meta("optimizer.settings.decay_biases", 0), "settings.decay_biases must be true or"),
        (meta("optimizer.settings.decay_biases", None), "settings.decay_biases must be true or"),
        (
            dict(meta=lambda m: m["optimizer"]["settings"].pop("lr")),
            "missing meta.optimizer.settings.lr",
        ),
        (meta("rng.bit_generator", "MT19937"), "meta.rng.bit_generator"),
        (meta("rng.state.state", "12abc"), "meta.rng.state.state must be a decimal"),
        (meta("rng.state.inc", 12), "meta.rng.state.inc must be a decimal"),
        (dict(meta="[" * 100_000 + "]" * 100_000), "meta: nested too deeply"),
        (
            dict(meta='{"format": "backprop model", "version": 1, "layers": ' + "[" * 5000),
            "meta: nested too deeply|meta is not valid JSON",
        ),
        (dict(meta="{'format': 1}"), "meta is not valid JSON"),
        (dict(meta="1" * 5000), "meta is not valid JSON"),
        (
            dict(params=np.zeros(5, np.float32)),
            r"params: shape \(5,\) does not fit the 1210 weights "
            r"of layers of sizes \[64, 16, 10\]",
        ),
        (dict(params=np.zeros(1210, np.float64)), "params: dtype float64 in a float32 model"),
        (dict(params=np.zeros((1210, 1), np.float32)), r"params: shape \(1210, 1\)"),
        (
            dict(optimizer_state_0=np.zeros(3, np.float32)),
            r"optimizer_state_0: shape \(3,\) does not "
            r"fit the 1210 weights of the model",
        ),
        (dict(optimizer_state_1=None), "missing optimizer_state_1: Adam keeps 2 state arrays"),
        (
            dict(optimizer_state_2=np.zeros(1210, np.float32)),
            "unexpected member 'optimizer_state_2'",
        ),
        (dict(notes=np.zeros(1)), "unexpected member 'notes'"),
        (dict(meta=np.array([b"{}"])), "meta must be text"),
        (dict(params=np.array([object()], dtype=object)), "params holds Python objects"),
    ],
)
def test_hostile_or_damaged_files_are_refused(tmp_path, saved, edit, match):
    path = tmp_path / "bad.npz"
    write(path, saved(), **edit)
    with pytest.raises(ValueError, match="^path: .*" + match):
        bp.load(path)


WHOLE_NUMBERS = {
    "layers.1.n_out": ("meta.layers[1].n_out", 1),  # (its name, its least)
    "layers.0.n_in": ("meta.layers[0].n_in", 1),
    "optimizer_steps": ("meta.optimizer_steps", 0),
    "seed": ("meta.seed", 0),
    "n_threads": ("meta.n_threads", 1),
    "rng.has_uint32": ("meta.rng.has_uint32", 0),
    "rng.uinteger": ("meta.rng.uinteger", 0),
}


@pytest.mark.parametrize("field", WHOLE_NUMBERS)
@pytest.mark.parametrize("value", [2.5, 10.0, "3", True, None, [3], {"n": 3}, "least - 1"])
def test_a_whole_number_must_be_a_json_integer_in_range(tmp_path, saved, field, value):
    name, least = WHOLE_NUMBERS[field]
    value = least - 1 if value == "least - 1" else value
    write(tmp_path / "m.npz", saved(), **meta(field, value))
    if value is None and field in ("seed", "n_threads"):  # null: no seed, automatic threads
        assert getattr(bp.load(tmp_path / "m.npz"), field) is None
        return
    with pytest.raises(ValueError, match="^path: .*" + re.escape(name) + " must be an integer"):
        bp.load(tmp_path / "m.npz")


@pytest.mark.parametrize(
    "field,value,named",
    [
        ("optimizer_steps", 2**64, "meta.optimizer_steps"),
        ("optimizer_steps", 10**400, "meta.optimizer_steps"),
        ("n_threads", 2**40, "meta.n_threads"),
        ("n_threads", 2**64, "meta.n_threads"),
        ("rng.uinteger", 2**32, "meta.rng.uinteger"),
        ("seed", -1, "meta.seed"),
        ("rng.state.state", str(2**128), "meta.rng.state.state"),
        ("rng.state.inc", "9" * 4000, "meta.rng.state.inc"),
        ("layers.0.n_in", 10**30, r"params: shape \(1210,\) does not fit"),
    ],
)
def test_out_of_range_integers_are_refused_with_a_value_error(tmp_path, saved, field, value, named):
    write(tmp_path / "bad.npz", saved(), **meta(field, value))
    with pytest.raises(ValueError, match=named) as err:
        bp.load(tmp_path / "bad.npz")
    assert len(str(err.value)) < 400


@pytest.mark.parametrize(
    "name,value",
    [
        ("params", np.nan),
        ("params", np.inf),
        ("params", -np.inf),
        ("optimizer_state_0", np.nan),
        ("optimizer_state_1", np.inf),
    ],
)
def test_weights_and_state_must_be_finite(tmp_path, saved, name, value):
    data = saved()
    data[name][7] = value
    write(tmp_path / "bad.npz", data)
    with pytest.raises(ValueError, match=f"^path: .*{name}.* contain.? NaN or infinity"):
        bp.load(tmp_path / "bad.npz")


@pytest.mark.parametrize(
    "optimizer,name,what",
    [
        ("adam", "optimizer_state_1", "Adam's second moment"),
        ("adamw", "optimizer_state_1", "AdamW's second moment"),
        ("rmsprop", "optimizer_state_0", "RMSProp's mean square"),
        ("adagrad", "optimizer_state_0", "AdaGrad's sum of squares"),
    ],
)
def test_a_sum_of_squares_must_not_be_negative(tmp_path, saved, optimizer, name, what):
    data = saved(optimizer)
    data[name][3] = -1e-3
    write(tmp_path / "bad.npz", data)
    with pytest.raises(ValueError, match=f"{name}, {what}, must be ≥ 0; it holds -0.001"):
        bp.load(tmp_path / "bad.npz")


def test_momentum_and_first_moments_may_be_negative(tmp_path, saved):
    X, _ = bp.datasets.load_digits()
    for optimizer, edit in (("adam", {}), ("sgd", meta("optimizer.settings.momentum", 0.9))):
        data = saved(optimizer)
        data["optimizer_state_0"] = np.full_like(data["params"], -0.5)
        write(tmp_path / "ok.npz", data, **edit)
        net = bp.load(tmp_path / "ok.npz")
        assert (net._opt_state[0] == -0.5).all()
        assert np.isfinite(net.predict_proba(X)).all()


def test_predict_on_a_refused_model_prints_one_line_and_exits_1(tmp_path, saved, capsys):
    rows = tmp_path / "rows.csv"
    rows.write_text("\n".join(",".join(["0"] * 64) for _ in range(3)) + "\n")
    edits = [
        meta("layers.1.n_out", 2.5),
        meta("optimizer_steps", -1),
        meta("n_threads", 2**64),
        dict(meta="[" * 100_000),
        dict(params=np.full(1210, np.nan, np.float32)),
    ]
    for i, edit in enumerate(edits):
        model = tmp_path / f"bad{i}.npz"
        write(model, saved(), **edit)
        assert bp.cli.main(["predict", str(model), str(rows)]) == 1
        out, err = capsys.readouterr()
        assert out == "" and err.count("\n") == 1, err
        assert err.startswith(f"backprop: error: {model}: not a usable backprop model file: ")


def test_truncated_and_foreign_files(tmp_path):
    net, _, _ = trained(bp.SGD(0.1), epochs=1)
    path = tmp_path / "m.npz"
    net.save(path)
    data = path.read_bytes()
    for cut in (10, len(data) // 2, len(data) - 5):
        (tmp_path / "cut.npz").write_bytes(data[:cut])
        with pytest.raises(ValueError, match="not a usable backprop model"):
            bp.load(tmp_path / "cut.npz")
    np.save(tmp_path / "array.npy", np.arange(4))
    with pytest.raises(ValueError, match="not a usable backprop model"):
        bp.load(tmp_path / "array.npy")
    with pytest.raises(ValueError, match="not a usable backprop model"):
        bp.load(tmp_path / "missing.npz")
