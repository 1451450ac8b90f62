"""The core's codes (backprop._codes) are the only ones: every activation,
loss and optimizer carries the core's member of its own name, and the
engine's predict modes do what their names say."""

import ast
import pathlib

import numpy as np
import pytest

import backprop as bp
from backprop import activations, losses
from backprop._codes import ActivationCode, LossCode, OptimizerKind, PredictMode
from backprop._engine import Engine
from backprop.layout import Layout


def test_every_activation_carries_the_core_code_of_its_name():
    made = {activations.get(name) for name in activations.NAMES}
    assert {act.code for act in made} == set(ActivationCode)
    for act in made:
        assert act.code is ActivationCode[act.name.upper()]
        assert getattr(activations, act.name.upper()) is act.code


def test_every_loss_carries_the_core_code_of_its_name():
    made = [losses.get(name) for name in losses.NAMES]
    assert sorted(loss.code for loss in made) == list(LossCode)
    for loss in made:
        assert loss.code is LossCode[loss.name.upper()]
        assert getattr(losses, loss.name.upper()) is loss.code


def test_every_optimizer_kind_has_its_optimizer():
    rules = [bp.SGD, bp.Adam, bp.RMSProp, bp.AdaGrad]
    assert sorted(rule.kind for rule in rules) == list(OptimizerKind)
    for rule in rules:
        assert rule.kind is OptimizerKind[rule.__name__.upper()]
        assert getattr(bp.optimizers, "KIND_" + rule.kind.name) is rule.kind
    assert bp.AdamW.kind is OptimizerKind.ADAM


@pytest.mark.parametrize("n_out", [1, 4])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_each_predict_mode_returns_what_its_name_says(n_out, dtype):
    rng = np.random.default_rng(n_out)
    params = rng.normal(size=3 * n_out + n_out).astype(dtype)
    engine = Engine(
        layout=Layout([3, n_out]),
        acts=[ActivationCode.SIGMOID],
        slopes=[0.0],
        loss=LossCode.MSE,
        params=params,
        grads=np.zeros_like(params),
        capacity=4,
    )
    for x in rng.normal(size=(20, 3)).astype(dtype):
        out = np.empty((1, n_out), dtype)
        engine.forward(x.reshape(1, 3), out)
        outputs = engine.predict_row(x, PredictMode.OUTPUTS)
        np.testing.assert_array_equal(outputs, out[0])
        assert engine.predict_row(x, PredictMode.ARGMAX) == np.argmax(out[0])
        assert engine.predict_row(x, PredictMode.THRESHOLD) == (out[0, 0] >= 0.5)
        assert engine.predict_row(x, PredictMode.VALUE) == out[0, 0]


def test_the_stub_names_every_member_of_every_code():
    stub = ast.parse((pathlib.Path(bp.__file__).parent / "_codes.pyi").read_text())
    declared = {
        node.name: [
            target.id
            for item in node.body
            if isinstance(item, ast.Assign)
            for target in item.targets
        ]
        for node in stub.body
        if isinstance(node, ast.ClassDef)
    }
    codes = [ActivationCode, LossCode, OptimizerKind, PredictMode]
    assert declared == {code.__name__: list(code.__members__) for code in codes}
