"""Model files: round trips, exact resumption, atomic writes, file modes,
hostile files."""
import json
import os

import numpy as np
import pytest

import backprop as bp
from backprop import io


def trained(optimizer, epochs=3, seed=0):
    X, y = bp.datasets.load_digits()
    net = bp.Sequential(bp.Dense(64, 16, activation=bp.activations.LeakyReLU(0.1)),
                        bp.Dense(16, 10, activation="softmax"), loss="cross_entropy",
                        dtype="float32", seed=seed)
    net.fit(X, y, epochs=epochs, batch_size=32, optimizer=optimizer)
    return net, X, y


@pytest.mark.parametrize("optimizer", [lambda: bp.SGD(0.05), lambda: bp.SGD(0.05, momentum=0.9),
                                       lambda: bp.Adam(1e-3, clip_norm=5.0), lambda: bp.AdamW(1e-3),
                                       lambda: bp.RMSProp(1e-3), lambda: bp.AdaGrad(0.05)])
def test_resuming_from_a_file_is_bit_identical(tmp_path, optimizer):
    a, X, y = trained(optimizer())
    a.fit(X, y, epochs=3, batch_size=32)                       # uninterrupted
    b, _, _ = trained(optimizer())
    path = b.save(tmp_path / "model")
    assert path.endswith("model.npz")
    c = bp.load(path)
    c.fit(X, y, epochs=3, batch_size=32)                       # resumed from the file
    np.testing.assert_array_equal(c.params, a.params)
    assert c.optimizer_steps == a.optimizer_steps == 6 * 57
    assert type(c.optimizer) is type(a.optimizer) and vars(c.optimizer) == vars(a.optimizer)


def test_a_loaded_model_predicts_the_same(tmp_path):
    net, X, y = trained(bp.Adam(1e-3))
    net.save(tmp_path / "m.npz")
    back = bp.load(tmp_path / "m.npz")
    assert back.dtype == np.float32 and back.layers[0].activation.negative_slope == pytest.approx(0.1)
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
    assert path.read_bytes() == before                         # the old file is whole
    assert os.listdir(tmp_path) == ["model.npz"]               # and no temporary is left


@pytest.fixture
def umask():
    """Sets the process's umask for the test; the old one is restored after."""
    old = os.umask(0o022)
    yield os.umask
    os.umask(old)


@pytest.mark.parametrize("mask,mode", [(0o022, 0o644), (0o027, 0o640), (0o077, 0o600),
                                       (0o002, 0o664)])
def test_a_saved_file_follows_the_umask(tmp_path, umask, mask, mode):
    net, _, _ = trained(bp.SGD(0.1), epochs=1)
    umask(mask)
    path = tmp_path / "model.npz"
    net.save(path)
    assert os.stat(path).st_mode & 0o777 == mode
    os.chmod(path, 0o666)                          # overwriting sets the mode afresh
    net.save(path)
    assert os.stat(path).st_mode & 0o777 == mode
    assert umask(0o022) == mask                    # saving left the umask alone


def test_the_umask_is_read_also_without_proc(tmp_path, umask, monkeypatch):
    def no_proc(*args, **kwargs):
        raise FileNotFoundError("/proc/self/status")
    monkeypatch.setattr(io, "open", no_proc, raising=False)
    umask(0o037)
    net, _, _ = trained(bp.SGD(0.1), epochs=1)
    net.save(tmp_path / "model.npz")
    assert os.stat(tmp_path / "model.npz").st_mode & 0o777 == 0o640
    assert umask(0o022) == 0o037


def write(path, meta=None, **arrays):
    net, _, _ = trained(bp.Adam(1e-3), epochs=1)
    net.save(path)
    with np.load(path) as f:
        data = {k: f[k] for k in f.files}
    m = json.loads(str(data["meta"]))
    if meta:
        meta(m)
    data["meta"] = np.array(json.dumps(m))
    data.update(arrays)
    np.savez(path, **data)


@pytest.mark.parametrize("edit,match", [
    (dict(meta=lambda m: m.update(version=99)), "version 99 is not supported"),
    (dict(meta=lambda m: m.update(format="other")), "no backprop header"),
    (dict(meta=lambda m: m["layers"][0].update(n_out=10**9)), "do not fit layers"),
    (dict(meta=lambda m: m["layers"][1].update(n_in=3)), "does not connect"),
    (dict(meta=lambda m: m["optimizer"].update({"class": "os.system"})), "KeyError"),
    (dict(meta=lambda m: m["optimizer"]["settings"].update(lr=-1)), "lr"),
    (dict(meta=lambda m: m.pop("rng")), "KeyError"),
    (dict(params=np.zeros(5, np.float32)), "do not fit"),
    (dict(params=np.zeros(1210, np.float64)), "dtype"),
    (dict(optimizer_state_0=np.zeros(3, np.float32)), "state does not fit"),
    (dict(meta=None, params=np.array([object()], dtype=object)), "not .*npz|pickle"),
])
def test_hostile_or_damaged_files_are_refused(tmp_path, edit, match):
    path = tmp_path / "bad.npz"
    write(path, **edit)
    with pytest.raises(ValueError, match=match):
        bp.load(path)


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
