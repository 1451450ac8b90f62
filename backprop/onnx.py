"""A network as an ONNX graph, to run where backprop is not installed.

    import backprop.onnx
    backprop.onnx.export(net, "model.onnx")            # or net.to_onnx("model.onnx")

ONNX Runtime loads the file from Python, C, C++, C#, Java or JavaScript
(docs/deploy.md).  The graph is built with the onnx package's own helpers
(onnx.helper, onnx.numpy_helper) and passes onnx.checker with shape
inference before it is written.  Needs onnx, the optional extra "onnx"
(pip install "backprop[onnx]"); `import backprop` never loads it.

The graph, in the network's float type (float32 or float64 tensors):

    input   'input'   (batch, n_inputs); the batch dimension is dynamic
    layer i Gemm(x, W_i, b_i), then its activation:
              identity    none
              sigmoid     Sigmoid
              tanh        Tanh
              relu        Relu
              leaky_relu  LeakyRelu(alpha=slope) in float32; in float64
                          Where(z > 0, z, z · slope), since LeakyRelu's alpha
                          is a 32-bit float attribute that would round the slope
              softmax     Softmax(axis=1)
              step        Cast(GreaterOrEqual(z, 0)): 1 for z ≥ 0, else 0, the
                          core's rule at 0 too
              exp         Exp
    output  'probabilities' (classifiers) or 'values' (regressors):
            (batch, n_outputs), what net.predict_proba gives
    labels=True adds 'label' (int64), net.predict's labels: ArgMax over the
            outputs (the first of equal maxima) for cross_entropy, shape
            (batch,); [p ≥ ½] per output for sigmoid outputs, shape (batch,)
            for one output and (batch, n_outputs) for several.  A regressor
            has no labels: labels=True is refused for mse and poisson.

The model's metadata (metadata_props) holds 'classes' (net.classes as a
JSON list, when the network has class names), 'loss' (its name) and
'task' ('classification' or 'regression'); its doc_string is net.summary().
Where results differ: backprop raises a ValueError when an output
overflows the float type (exp of a large z), ONNX Runtime returns inf.
"""

from __future__ import annotations

import json
import os
from typing import TYPE_CHECKING

import numpy as np

from . import activations as _activations
from . import losses as _losses
from ._format import write_atomically
from ._version import __version__
from .layers import Dense

if TYPE_CHECKING:
    import onnx as onnx_package

__all__ = ["export", "DEFAULT_OPSET", "MIN_OPSET"]

DEFAULT_OPSET = 17  # (ONNX Runtime 1.13 and later run it)
MIN_OPSET = 13  # Softmax over one axis, Squeeze's axes as an input

_UNARY = {
    _activations.SIGMOID: "Sigmoid",
    _activations.TANH: "Tanh",
    _activations.RELU: "Relu",
    _activations.SOFTMAX: "Softmax",
    _activations.EXP: "Exp",
}


def _onnx():
    """The onnx package, or an ImportError that says how to install it."""
    try:
        import onnx
    except ImportError:
        raise ImportError(
            'backprop.onnx needs the onnx package, the optional extra "onnx": '
            'pip install "backprop[onnx]" (or onnx)'
        ) from None
    return onnx


def _check_net(net) -> None:
    layers = getattr(net, "layers", None)
    if (
        not isinstance(getattr(net, "loss", None), _losses.Loss)
        or not isinstance(layers, tuple)
        or not all(isinstance(layer, Dense) for layer in layers)
    ):
        raise TypeError(f"net must be a backprop Sequential, got {type(net).__name__}")


def _check_opset(onnx, opset) -> int:
    newest = onnx.defs.onnx_opset_version()
    if opset is None:
        return min(DEFAULT_OPSET, newest)
    if not isinstance(opset, (int, np.integer)) or isinstance(opset, bool):
        raise TypeError(f"opset must be an integer, got {type(opset).__name__}")
    if not MIN_OPSET <= opset <= newest:
        raise ValueError(
            f"opset must lie in {MIN_OPSET} … {newest} (the newest this onnx "
            f"{onnx.__version__} knows), got {opset}"
        )
    return int(opset)


class _Graph:
    """The nodes and constants of the graph being built."""

    def __init__(self, onnx, dtype: np.dtype):
        self.helper, self.numpy_helper = onnx.helper, onnx.numpy_helper
        self.float_type = self.helper.np_dtype_to_tensor_dtype(dtype)
        self.dtype = dtype
        self.nodes: list = []
        self.constants: list = []

    def constant(self, name: str, value) -> str:
        self.constants.append(self.numpy_helper.from_array(np.asarray(value), name))
        return name

    def node(self, op: str, inputs: list[str], output: str, **attributes) -> str:
        name = f"{output}/{op}"
        self.nodes.append(self.helper.make_node(op, inputs, [output], name=name, **attributes))
        return output

    def activation(self, act: _activations.Activation, z: str, out: str) -> str:
        """The nodes of a = f(z), named `out`."""
        code = act.code
        if code == _activations.SOFTMAX:
            return self.node("Softmax", [z], out, axis=1)
        if code in _UNARY:
            return self.node(_UNARY[code], [z], out)
        zero = self.dtype.type(0)
        if code == _activations.STEP:
            at_least = self.node(
                "GreaterOrEqual", [z, self.constant(f"{z}.zero", zero)], f"{z}.nonnegative"
            )
            return self.node("Cast", [at_least], out, to=self.float_type)
        if code == _activations.LEAKY_RELU:
            if self.dtype == np.float32:
                return self.node("LeakyRelu", [z], out, alpha=act.negative_slope)
            slope = self.constant(f"{z}.slope", self.dtype.type(act.negative_slope))
            positive = self.node("Greater", [z, self.constant(f"{z}.zero", zero)], f"{z}.positive")
            scaled = self.node("Mul", [z, slope], f"{z}.scaled")
            return self.node("Where", [positive, z, scaled], out)
        half = self.constant(f"{z}.half", self.dtype.type(0.5))
        one = self.constant(f"{z}.one", self.dtype.type(1))
        if code == _activations.GELU:  # ½ z (1 + erf(z/√2))
            if self.dtype != np.float32:
                raise ValueError(
                    "the gelu activation needs ONNX's Erf, which ONNX Runtime has for "
                    "float32 only: export net.copy('float32'), or train with gelu_tanh"
                )
            scaled = self.node(
                "Mul", [z, self.constant(f"{z}.sqrt_half", self.dtype.type(np.sqrt(0.5)))], f"{z}.u"
            )
            cdf = self.node("Add", [self.node("Erf", [scaled], f"{z}.erf"), one], f"{z}.2cdf")
            return self.node("Mul", [self.node("Mul", [z, half], f"{z}.half_z"), cdf], out)
        if code == _activations.GELU_TANH:  # z σ(√(8/π) (z + 0.044715 z³))
            cube = self.node("Mul", [self.node("Mul", [z, z], f"{z}.sq"), z], f"{z}.cube")
            inner = self.node(
                "Add",
                [
                    z,
                    self.node(
                        "Mul",
                        [cube, self.constant(f"{z}.c", self.dtype.type(_activations.GELU_CUBIC))],
                        f"{z}.c_cube",
                    ),
                ],
                f"{z}.inner",
            )
            v = self.node(
                "Mul",
                [inner, self.constant(f"{z}.k", self.dtype.type(np.sqrt(8 / np.pi)))],
                f"{z}.v",
            )
            return self.node("Mul", [z, self.node("Sigmoid", [v], f"{z}.sigmoid")], out)
        if code == _activations.SILU:  # z σ(z)
            return self.node("Mul", [z, self.node("Sigmoid", [z], f"{z}.sigmoid")], out)
        if code == _activations.SOFTPLUS:  # max(z, 0) + log(1 + e^−|z|)
            tail = self.node(
                "Exp",
                [self.node("Neg", [self.node("Abs", [z], f"{z}.abs")], f"{z}.neg_abs")],
                f"{z}.tail",
            )
            log = self.node("Log", [self.node("Add", [tail, one], f"{z}.one_plus")], f"{z}.log")
            return self.node("Add", [self.node("Relu", [z], f"{z}.relu"), log], out)
        if code in (_activations.ELU, _activations.SELU):  # z for z > 0, else α (e^z − 1)
            selu = code == _activations.SELU
            alpha = _activations.SELU_ALPHA if selu else act.alpha
            negative = self.node(
                "Mul",
                [
                    self.node("Sub", [self.node("Exp", [z], f"{z}.exp"), one], f"{z}.expm1"),
                    self.constant(f"{z}.alpha", self.dtype.type(alpha)),
                ],
                f"{z}.negative",
            )
            positive = self.node("Greater", [z, self.constant(f"{z}.zero", zero)], f"{z}.positive")
            if not selu:
                return self.node("Where", [positive, z, negative], out)
            elu = self.node("Where", [positive, z, negative], f"{z}.elu")
            scale = self.constant(f"{z}.scale", self.dtype.type(_activations.SELU_SCALE))
            return self.node("Mul", [elu, scale], out)
        raise ValueError(f"no ONNX form for the {act.name} activation")  # pragma: no cover


def _labels(graph: _Graph, net, proba: str, name: str) -> tuple[str, list]:
    """The label node of net.predict's rule, and the output's shape."""
    int64 = graph.helper.np_dtype_to_tensor_dtype(np.dtype(np.int64))
    if net.loss.code == _losses.CROSS_ENTROPY:
        graph.node("ArgMax", [proba], name, axis=1, keepdims=0, select_last_index=0)
        return name, ["batch"]
    if net.loss.code != _losses.BINARY_CROSS_ENTROPY:
        raise ValueError(
            f"labels=True: a {net.loss.name} network is a regressor, which has no "
            "labels (net.predict gives its values); export its outputs alone"
        )
    half = graph.constant("label.threshold", graph.dtype.type(0.5))
    above = graph.node("GreaterOrEqual", [proba, half], "label.at_least_half")
    if net.n_outputs > 1:
        graph.node("Cast", [above], name, to=int64)
        return name, ["batch", net.n_outputs]
    ints = graph.node("Cast", [above], "label.columns", to=int64)
    graph.node("Squeeze", [ints, graph.constant("label.axes", np.array([1]))], name)
    return name, ["batch"]


_OWN = ("layers.", "label.")  # the beginnings of the graph's own names


def _check_names(names: dict[str, str]) -> None:
    """The names of the graph's inputs and outputs: strings, distinct, and
    none of the graph's own."""
    seen: dict[str, str] = {}
    for option, name in names.items():
        if not isinstance(name, str) or not name:
            raise TypeError(f"{option} must be a non-empty string, got {name!r}")
        if name.startswith(_OWN):
            raise ValueError(
                f"{option} {name!r}: names that begin with {' or '.join(map(repr, _OWN))} "
                "are the graph's own"
            )
        if name in seen:
            raise ValueError(f"{option} {name!r}: {seen[name]} has that name already")
        seen[name] = option


def export(
    net,
    path: str | os.PathLike | None = None,
    opset: int | None = None,
    *,
    labels: bool = False,
    input_name: str = "input",
    output_name: str | None = None,
    label_name: str = "label",
) -> onnx_package.ModelProto:
    """The ONNX model of `net` (a backprop Sequential), written to `path`
    when given (atomically, as model files are).  Returns the onnx
    ModelProto.

    opset: the ONNX operator set, MIN_OPSET (13) or newer, DEFAULT_OPSET
    (17) by default.  labels: also output net.predict's labels (see the
    module's docstring).  input_name, output_name ('probabilities' for
    classifiers, 'values' for regressors by default) and label_name name
    the graph's inputs and outputs.
    """
    onnx = _onnx()
    _check_net(net)
    opset = _check_opset(onnx, opset)
    if not isinstance(labels, (bool, np.bool_)):
        raise TypeError(f"labels must be True or False, got {labels!r}")
    if output_name is None:
        output_name = "probabilities" if net.is_classifier else "values"
    names = {"input_name": input_name, "output_name": output_name}
    _check_names({**names, "label_name": label_name} if labels else names)
    with net.exclusive():  # one snapshot of the weights
        weights = [(layer.W.copy(), layer.b.copy()) for layer in net.layers]
    helper = onnx.helper
    graph = _Graph(onnx, net.dtype)
    a = input_name
    for i, (layer, (W, b)) in enumerate(zip(net.layers, weights)):
        last = i == len(net.layers) - 1
        out = output_name if last else f"layers.{i}.a"
        identity = layer.activation.code == _activations.IDENTITY
        z = out if identity else f"layers.{i}.z"
        W_name, b_name = graph.constant(f"layers.{i}.W", W), graph.constant(f"layers.{i}.b", b)
        graph.node("Gemm", [a, W_name, b_name], z)
        a = out if identity else graph.activation(layer.activation, z, out)
    outputs = [
        helper.make_tensor_value_info(output_name, graph.float_type, ["batch", net.n_outputs])
    ]
    if labels:
        label, shape = _labels(graph, net, output_name, label_name)
        int64 = helper.np_dtype_to_tensor_dtype(np.dtype(np.int64))
        outputs.append(helper.make_tensor_value_info(label, int64, shape))
    model = helper.make_model(
        helper.make_graph(
            graph.nodes,
            "backprop.Sequential",
            [helper.make_tensor_value_info(input_name, graph.float_type, ["batch", net.n_inputs])],
            outputs,
            graph.constants,
        ),
        opset_imports=[helper.make_opsetid("", opset)],
        producer_name="backprop",
        producer_version=__version__,
        doc_string=net.summary(),
    )
    model.ir_version = helper.find_min_ir_version_for(list(model.opset_import))
    meta = {"loss": net.loss.name, "task": "classification" if net.is_classifier else "regression"}
    if net.classes is not None:
        meta["classes"] = json.dumps(net.classes)
    helper.set_model_props(model, meta)
    onnx.checker.check_model(model, full_check=True)
    if path is not None:
        write_atomically(os.fspath(path), lambda fh: fh.write(model.SerializeToString()))
    return model
