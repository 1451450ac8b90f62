"""ONNX export (backprop.onnx, Sequential.to_onnx, `backprop export`),
checked by running the exported graphs in ONNX Runtime: the same outputs as
net.predict_proba to float tolerance and the same labels as net.predict, for
every activation, output head and dtype, and for networks trained on the
digits.  Skipped without onnx and onnxruntime (the test extra has both)."""

import importlib
import json
import subprocess
import sys

import numpy as np
import pytest

import backprop as bp
import backprop.onnx as bpo
from backprop.activations import Elu, LeakyReLU
from backprop.cli import main


def _installed(name):
    try:
        importlib.import_module(name)
    except ImportError:
        return False
    return True


HAVE_ONNX = _installed("onnx")
HAVE_ORT = HAVE_ONNX and _installed("onnxruntime")
needs_onnx = pytest.mark.skipif(not HAVE_ONNX, reason="needs onnx")
needs_ort = pytest.mark.skipif(not HAVE_ORT, reason="needs onnx and onnxruntime")

# float32: ONNX Runtime's products and exponentials round differently from
# the core's (BLAS kernels, backprop's own expf); float64: to rounding.
TOLERANCE = {"float32": dict(rtol=2e-5, atol=2e-6), "float64": dict(rtol=1e-11, atol=1e-13)}
DTYPES = ("float32", "float64")


def session(model):
    import onnxruntime

    return onnxruntime.InferenceSession(
        model.SerializeToString(), providers=["CPUExecutionProvider"]
    )


def run(model, X):
    """{output name: array} of the model on X, in ONNX Runtime."""
    sess = session(model)
    names = [out.name for out in sess.get_outputs()]
    return dict(zip(names, sess.run(None, {sess.get_inputs()[0].name: X})))


def inputs(n_in, rows=64, dtype="float64", seed=1):
    return np.random.default_rng(seed).normal(size=(rows, n_in)).astype(dtype)


def network(hidden, head, dtype, sizes=(5, 8, 7), n_out=3, seed=0):
    """A seeded network: hidden layers of `hidden` and an output `head`,
    one of the named heads below."""
    output, loss = HEADS[head]
    n_out = 1 if head == "sigmoid_one" else n_out
    layers = [Dense(a, b, hidden) for a, b in zip(sizes, sizes[1:])]
    layers.append(Dense(sizes[-1], n_out, output))
    return bp.Sequential(*layers, loss=loss, dtype=dtype, seed=seed)


Dense = bp.Dense
HEADS = {  # name: (output activation, loss)
    "softmax": ("softmax", "cross_entropy"),
    "sigmoid_one": ("sigmoid", "binary_cross_entropy"),
    "sigmoid_many": ("sigmoid", "binary_cross_entropy"),
    "identity": ("identity", "mse"),
    "tanh_mse": ("tanh", "mse"),
    "exp": ("exp", "poisson"),
}
CLASSIFIERS = ("softmax", "sigmoid_one", "sigmoid_many")
HIDDEN = [
    "identity",
    "sigmoid",
    "tanh",
    "relu",
    LeakyReLU(0.01),
    LeakyReLU(0.3),
    LeakyReLU(2.5),
    "exp",
    "gelu",
    "gelu_tanh",
    "silu",
    "softplus",
    Elu(1.0),
    Elu(0.3),
    "selu",
]


def same_outputs(net, X, got):
    expected = net.predict_proba(X)
    assert got.dtype == net.dtype and got.shape == expected.shape
    np.testing.assert_allclose(got, expected, **TOLERANCE[net.dtype.name])


# -- every activation, head and dtype, in ONNX Runtime ---------------------------------
@needs_ort
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("hidden", HIDDEN, ids=str)
def test_every_hidden_activation_runs_the_same_in_onnx_runtime(hidden, dtype):
    net = network(hidden, "softmax", dtype)
    if hidden == "gelu" and dtype == "float64":  # (ONNX Runtime has no float64 Erf)
        with pytest.raises(ValueError, match="gelu activation needs ONNX's Erf"):
            net.to_onnx()
        net = net.copy("float32")
        X = inputs(5, dtype="float32")
        same_outputs(net, X, run(net.to_onnx(), X)["probabilities"])
        return
    if hidden == "exp":  # e^z of e^z …: small weights keep it finite
        for layer in net.layers:
            layer.W = layer.W * 0.3
    X = inputs(5, dtype=dtype)
    out = run(net.to_onnx(labels=True), X)
    same_outputs(net, X, out["probabilities"])
    assert out["label"].dtype == np.int64
    np.testing.assert_array_equal(out["label"], net.predict(X))


@needs_ort
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("head", HEADS)
def test_every_output_head_runs_the_same_in_onnx_runtime(head, dtype):
    net = network("tanh", head, dtype)
    X = inputs(5, dtype=dtype)
    labels = head in CLASSIFIERS
    out = run(bpo.export(net, labels=labels), X)
    name = "probabilities" if labels else "values"
    same_outputs(net, X, out[name])
    assert list(out) == ([name, "label"] if labels else [name])
    if labels:
        predicted = net.predict(X)
        assert out["label"].shape == predicted.shape  # (rows,), or (rows, outputs)
        np.testing.assert_array_equal(out["label"], predicted)


@needs_ort
@pytest.mark.parametrize("dtype", DTYPES)
def test_step_units_match_the_core_at_zero_and_around_it(dtype):
    """step(z) = 1 for z ≥ 0: weights in quarters and integer inputs make
    every z exact in both runtimes, zeros included."""
    rng = np.random.default_rng(3)
    net = network("step", "softmax", dtype, sizes=(6, 9, 9))
    for layer in net.layers:
        layer.W = rng.integers(-4, 5, layer.W.shape) / 4
        layer.b = rng.integers(-2, 3, layer.b.shape) / 4
    X = rng.integers(-2, 3, (200, 6)).astype(dtype)
    z = X @ net.layers[0].W.astype(np.float64) + net.layers[0].b
    assert (z == 0).any() and (z > 0).any() and (z < 0).any()
    out = run(net.to_onnx(labels=True), X)
    same_outputs(net, X, out["probabilities"])
    np.testing.assert_array_equal(out["label"], net.predict(X))
    # the hidden layer's outputs themselves: [z ≥ 0]
    first = bp.Sequential(net.layers[0].copy(), loss="mse")
    hidden = run(first.to_onnx(), X)["values"]
    np.testing.assert_array_equal(hidden, (z >= 0).astype(dtype))


@needs_ort
@pytest.mark.parametrize("dtype", DTYPES)
def test_labels_follow_the_core_rule_at_ties(dtype):
    """Equal largest probabilities: the first class (ArgMax's first index);
    one sigmoid output of exactly ½: label 1 (p ≥ ½)."""
    X = inputs(3, rows=5, dtype=dtype)
    tie = bp.Sequential(Dense(3, 3, "softmax"), loss="cross_entropy", dtype=dtype)
    tie.layers[0].W, tie.layers[0].b = np.zeros((3, 3)), [0.0, 2.0, 2.0]
    half = bp.Sequential(Dense(3, 1, "sigmoid"), loss="binary_cross_entropy", dtype=dtype)
    half.layers[0].W, half.layers[0].b = np.zeros((3, 1)), [0.0]
    for net, label in ((tie, 1), (half, 1)):
        out = run(net.to_onnx(labels=True), X)
        np.testing.assert_array_equal(out["label"], np.full(5, label))
        np.testing.assert_array_equal(net.predict(X), np.full(5, label))


@needs_ort
def test_the_batch_dimension_is_dynamic():
    net = network("relu", "softmax", "float32")
    model = net.to_onnx(labels=True)
    dims = model.graph.input[0].type.tensor_type.shape.dim
    assert (dims[0].dim_param, dims[1].dim_value) == ("batch", 5)
    sess = session(model)
    for rows in (1, 2, 1000):
        X = inputs(5, rows=rows, dtype="float32", seed=rows)
        proba, label = sess.run(None, {"input": X})
        assert proba.shape == (rows, 3) and label.shape == (rows,)
        np.testing.assert_allclose(proba, net.predict_proba(X), **TOLERANCE["float32"])


@needs_ort
@pytest.mark.parametrize("opset", [13, bpo.DEFAULT_OPSET, 21])
def test_operator_sets(opset):
    net = network(LeakyReLU(0.2), "sigmoid_one", "float64")
    model = net.to_onnx(opset=opset, labels=True)
    assert [(o.domain, o.version) for o in model.opset_import] == [("", opset)]
    X = inputs(5, dtype="float64")
    out = run(model, X)
    same_outputs(net, X, out["probabilities"])
    np.testing.assert_array_equal(out["label"], net.predict(X))


# -- the graph itself -------------------------------------------------------------------
@needs_onnx
@pytest.mark.parametrize("dtype", DTYPES)
def test_the_graph_is_gemm_and_the_activations_as_onnx_ops(dtype):
    import onnx

    net = bp.Sequential(
        Dense(4, 6, "sigmoid"),
        Dense(6, 6, "tanh"),
        Dense(6, 6, "relu"),
        Dense(6, 6, LeakyReLU(0.25)),
        Dense(6, 6, "step"),
        Dense(6, 6, "exp"),
        Dense(6, 6, "identity"),
        Dense(6, 3, "softmax"),
        loss="cross_entropy",
        dtype=dtype,
        seed=0,
    )
    model = bpo.export(net, labels=True)
    onnx.checker.check_model(model, full_check=True)
    ops = [node.op_type for node in model.graph.node]
    leaky = ["LeakyRelu"] if dtype == "float32" else ["Greater", "Mul", "Where"]
    assert ops == [
        *["Gemm", "Sigmoid", "Gemm", "Tanh", "Gemm", "Relu", "Gemm", *leaky],
        *["Gemm", "GreaterOrEqual", "Cast", "Gemm", "Exp", "Gemm", "Gemm", "Softmax", "ArgMax"],
    ]
    nodes = {node.op_type: node for node in model.graph.node}
    attrs = lambda node: {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}  # noqa: E731
    if dtype == "float32":
        assert attrs(nodes["LeakyRelu"])["alpha"] == pytest.approx(0.25)
    assert attrs(nodes["Softmax"]) == {"axis": 1}
    assert attrs(nodes["ArgMax"]) == {"axis": 1, "keepdims": 0, "select_last_index": 0}
    float_type = onnx.helper.np_dtype_to_tensor_dtype(np.dtype(dtype))
    for tensor in model.graph.initializer:
        assert tensor.data_type == float_type or tensor.name.startswith("label.")
    weights = {t.name: onnx.numpy_helper.to_array(t) for t in model.graph.initializer}
    for i, layer in enumerate(net.layers):
        np.testing.assert_array_equal(weights[f"layers.{i}.W"], layer.W)
        np.testing.assert_array_equal(weights[f"layers.{i}.b"], layer.b)
    assert model.graph.input[0].type.tensor_type.elem_type == float_type
    assert [o.name for o in model.graph.output] == ["probabilities", "label"]


@needs_onnx
def test_names_metadata_and_version():
    import onnx

    net = network("relu", "softmax", "float32")
    net.classes = ["cat", "dog", "emu"]
    model = net.to_onnx(input_name="pixels", output_name="p", labels=True, label_name="kind")
    assert [i.name for i in model.graph.input] == ["pixels"]
    assert [o.name for o in model.graph.output] == ["p", "kind"]
    meta = {p.key: p.value for p in model.metadata_props}
    assert meta == {
        "classes": json.dumps(["cat", "dog", "emu"]),
        "loss": "cross_entropy",
        "task": "classification",
    }
    assert (model.producer_name, model.producer_version) == ("backprop", bp.__version__)
    assert model.doc_string == net.summary()
    # the oldest IR version that holds the opset, for older runtimes
    assert model.ir_version == onnx.helper.find_min_ir_version_for(list(model.opset_import))
    regressor = network("relu", "identity", "float64")
    meta = {p.key: p.value for p in regressor.to_onnx().metadata_props}
    assert meta == {"loss": "mse", "task": "regression"}
    assert [o.name for o in regressor.to_onnx().graph.output] == ["values"]


@needs_onnx
def test_the_file_holds_the_returned_model_and_takes_a_snapshot(tmp_path):
    import onnx

    net = network("tanh", "softmax", "float64")
    path = tmp_path / "net.onnx"
    model = bpo.export(net, path, labels=True)
    assert onnx.load(path) == model
    onnx.checker.check_model(str(path), full_check=True)
    before = path.read_bytes()
    W0 = net.layers[0].W.copy()
    net.layers[0].W = W0 + 1  # after the export: not in the file
    assert onnx.numpy_helper.to_array(model.graph.initializer[0]).tolist() == W0.tolist()
    net.to_onnx(str(path))  # a str path; replaces the file
    assert path.read_bytes() != before
    assert [p.name for p in tmp_path.iterdir()] == ["net.onnx"]  # no temporary file left


# -- refusals ---------------------------------------------------------------------------
@needs_onnx
@pytest.mark.parametrize("head", ["identity", "tanh_mse", "exp"])
def test_labels_of_a_regressor_are_refused(head):
    net = network("relu", head, "float64")
    with pytest.raises(ValueError, match="is a regressor, which has no labels"):
        net.to_onnx(labels=True)


@needs_onnx
def test_bad_arguments_are_refused():
    import onnx

    net = network("relu", "softmax", "float32")
    newest = onnx.defs.onnx_opset_version()
    with pytest.raises(ValueError, match=r"opset must lie in 13 … "):
        net.to_onnx(opset=12)
    with pytest.raises(ValueError, match=f"opset must lie in 13 … {newest}"):
        net.to_onnx(opset=newest + 1)
    with pytest.raises(TypeError, match="opset must be an integer, got float"):
        net.to_onnx(opset=17.0)
    with pytest.raises(TypeError, match="labels must be True or False"):
        net.to_onnx(labels="yes")
    with pytest.raises(TypeError, match="input_name must be a non-empty string"):
        net.to_onnx(input_name="")
    with pytest.raises(ValueError, match="label_name 'x': input_name has that name already"):
        net.to_onnx(input_name="x", labels=True, label_name="x")
    with pytest.raises(ValueError, match="output_name 'layers.0.z': names that begin with"):
        net.to_onnx(output_name="layers.0.z")
    with pytest.raises(TypeError, match="net must be a backprop Sequential, got Dense"):
        bpo.export(net.layers[0])
    with pytest.raises(TypeError, match="got unexpected|unexpected keyword"):
        net.to_onnx(zipmap=True)


def test_without_onnx_the_error_says_what_to_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "onnx", None)  # `import onnx` then fails
    net = network("relu", "softmax", "float32")
    with pytest.raises(ImportError, match=r'pip install "backprop\[onnx\]"'):
        net.to_onnx()
    code = main(["export", "missing-model.npz", "out.onnx"])
    assert code == 1  # (the model is read first)


def test_importing_backprop_does_not_load_onnx(tmp_path):
    code = "import sys, backprop, backprop.onnx; assert 'onnx' not in sys.modules"
    # (run from elsewhere than the source folder, which would shadow the package)
    subprocess.run([sys.executable, "-c", code], check=True, cwd=tmp_path)


# -- trained networks, and the command line -----------------------------------------------
@needs_ort
@pytest.mark.parametrize("dtype", DTYPES)
def test_a_network_trained_on_the_digits(dtype):
    X_train, X_test, y_train, y_test = bp.datasets.load_digits(return_split=True, dtype=dtype)
    net = bp.Sequential(
        Dense(64, 32, "relu"), Dense(32, 10, "softmax"), loss="cross_entropy", dtype=dtype, seed=0
    )
    net.fit(X_train, y_train, epochs=15, batch_size=32, lr=0.1)
    out = run(net.to_onnx(labels=True), X_test)
    same_outputs(net, X_test, out["probabilities"])
    np.testing.assert_array_equal(out["label"], net.predict(X_test))
    assert np.mean(out["label"] == y_test) > 0.9


def _call(capsys, *args):
    try:
        code = main(list(args))
    except SystemExit as exc:
        code = exc.code
    out, err = capsys.readouterr()
    return code, out, err


@needs_ort
def test_backprop_export_carries_the_standardisation_and_class_names(tmp_path, capsys):
    """`backprop train` on a CSV far from standardised folds the
    standardisation into the first layer; the exported graph takes raw rows."""
    rng = np.random.default_rng(2)
    unit = rng.normal(size=(300, 2))
    y = (unit[:, 0] + unit[:, 1] > 0).astype(int)  # a line through standardised rows
    X = unit * [20, 0.5] + [100, -5]
    names = np.array(["left", "right"])[y]
    lines = ["a,b,arm"] + [f"{p:.6f},{q:.6f},{n}" for (p, q), n in zip(X, names)]
    (tmp_path / "train.csv").write_text("\n".join(lines) + "\n")
    model = str(tmp_path / "model.npz")
    code, _, err = _call(
        capsys, "train", "--data", str(tmp_path / "train.csv"), "--epochs", "20",
        "--save", model, "--quiet",
    )  # fmt: skip
    assert code == 0, err
    onnx_path = str(tmp_path / "model.onnx")
    code, out, err = _call(capsys, "export", model, onnx_path, "--labels")
    assert code == 0, err
    assert out == (
        f"exported {onnx_path}: ONNX opset {bpo.DEFAULT_OPSET}, float32, "
        "input (batch, 2) -> probabilities (batch, 2), label (batch)\n"
    )
    import onnx

    exported = onnx.load(onnx_path)
    net = bp.load(model)
    raw = X.astype(np.float32)
    got = run(exported, raw)
    same_outputs(net, raw, got["probabilities"])
    np.testing.assert_array_equal(got["label"], net.predict(raw))
    classes = json.loads({p.key: p.value for p in exported.metadata_props}["classes"])
    assert classes == ["left", "right"]
    assert np.mean(np.array(classes)[got["label"]] == names) > 0.9  # it learned, on raw rows


@needs_onnx
def test_backprop_export_refusals(tmp_path, capsys):
    model = str(tmp_path / "r.npz")
    bp.Sequential(Dense(2, 1), loss="mse").save(model)
    code, _, err = _call(capsys, "export", model, str(tmp_path / "r.onnx"), "--labels")
    assert code == 2 and "mse network is a regressor" in err
    code, _, err = _call(capsys, "export", model, str(tmp_path / "r.onnx"), "--opset", "12")
    assert code == 2 and "must be at least 13" in err
    code, _, err = _call(capsys, "export", model, str(tmp_path / "no" / "r.onnx"))
    assert code == 1 and "cannot write" in err
    code, _, err = _call(capsys, "export", str(tmp_path / "none.npz"), str(tmp_path / "r.onnx"))
    assert code == 1 and "none.npz: not a usable backprop model file" in err
    code, out, err = _call(capsys, "export", model, str(tmp_path / "r.onnx"))
    assert code == 0 and "values (batch, 1)" in out


@needs_ort
@pytest.mark.parametrize("dtype", DTYPES)
def test_dropout_is_left_out_of_the_graph(dtype):
    # Dropout is the identity at inference: the graph holds the Dense layers
    # alone, and predicts as the network does after training with it.
    net = bp.Sequential(
        Dense(5, 8, "relu"),
        bp.Dropout(0.5),
        Dense(8, 3, "softmax"),
        loss="cross_entropy",
        dtype=dtype,
        seed=0,
    )
    X = inputs(5, dtype=dtype)
    net.fit(X, np.arange(64) % 3, epochs=3, lr=0.1)
    model = bpo.export(net)
    assert [node.op_type for node in model.graph.node] == ["Gemm", "Relu", "Gemm", "Softmax"]
    same_outputs(net, X, run(model, X)["probabilities"])
