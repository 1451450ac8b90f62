"""Every example runs headless, writes its figure, and shows what it claims."""
import os
import runpy

import numpy as np
import pytest

pytest.importorskip("matplotlib")        # the optional extra "plot"; in the test extra

EXAMPLES = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "examples")


def run(name, out):
    main = runpy.run_path(os.path.join(EXAMPLES, name), run_name="example")["main"]
    return main(str(out))


def test_gradient_descent_on_w_squared(tmp_path):
    paths = run("01_gradient_descent.py", tmp_path)
    assert (tmp_path / "gradient_descent.png").stat().st_size > 10_000
    for lr, path in paths.items():                 # w_k = w₀ (1 − 2η)^k exactly
        np.testing.assert_allclose(path, (1 - 2 * lr) ** np.arange(len(path)), rtol=1e-12)
    assert abs(paths[0.3][-1]) < 1e-6 < 0.3 < abs(paths[0.02][-1]) < 1   # good vs too small
    assert np.all(np.abs(paths[1.0]) == 1)                               # oscillates
    assert abs(paths[1.05][-1]) > 5 * abs(paths[1.05][0])                # diverges


def test_where_descent_ends_depends_on_the_start(tmp_path):
    result = run("02_local_minima.py", tmp_path)
    assert (tmp_path / "local_minima.png").stat().st_size > 10_000
    ends = result["non_convex"]
    assert ends[-2.0] == pytest.approx(-1.3008, abs=1e-3) == ends[-0.5]
    assert ends[2.0] == pytest.approx(1.1309, abs=1e-3) == ends[0.5]
    assert all(abs(w) < 1e-3 for w in result["convex"].values())         # one minimum


def test_chain_rule_trace(tmp_path, capsys):
    trace = run("05_chain_rule.py", tmp_path)
    assert (tmp_path / "chain_rule.png").stat().st_size > 10_000
    assert trace.max_rel_error_numerical < 1e-6
    assert "layer 1 (sigmoid)" in capsys.readouterr().out


def test_plot_needs_two_columns_for_a_boundary():
    from backprop import plot
    with pytest.raises(ValueError, match="two columns"):
        plot.decision_boundary(None, np.zeros((3, 3)), [0, 1, 0])
