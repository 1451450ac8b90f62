"""The command line, run as a user runs it (a separate process), and through
main() for the many small cases."""

import codecs
import os
import re
import signal
import subprocess
import sys
import tempfile
import time

import numpy as np
import pytest

import backprop as bp
from backprop import _format
from backprop.cli import main

# The folder that holds the backprop under test: the subprocesses import it too.
PACKAGE_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(bp.__file__)))


def command(*args):
    """argv and environment to run `python -m backprop *args` on the backprop under test."""
    path = os.pathsep.join(filter(None, [PACKAGE_ROOT, os.environ.get("PYTHONPATH")]))
    return [sys.executable, "-m", "backprop", *args], {**os.environ, "PYTHONPATH": path}


def run(*args):
    # From a neutral directory, so that the working directory plays no part.
    argv, env = command(*args)
    with tempfile.TemporaryDirectory() as cwd:
        return subprocess.run(argv, capture_output=True, text=True, timeout=300, cwd=cwd, env=env)


def call(capsys, *args):
    """(exit code, stdout, stderr) of main(args), in this process."""
    try:
        code = main(list(args))
    except SystemExit as exc:  # argparse: bad options
        code = exc.code
    out, err = capsys.readouterr()
    assert "Traceback" not in err
    return code, out, err


def test_train_digits_prints_epochs_and_accuracy():
    result = run("train", "--epochs", "12")
    assert result.returncode == 0, result.stderr
    epochs = re.findall(r"^epoch +(\d+)/12 +loss ([0-9.]+)$", result.stdout, re.M)
    assert [int(e) for e, _ in epochs] == list(range(1, 13))
    losses = [float(v) for _, v in epochs]
    assert losses[-1] < losses[0]
    accuracy = float(re.search(r"test accuracy ([0-9.]+)", result.stdout).group(1))
    assert accuracy > 0.9


def test_train_xor():
    result = run("train", "--data", "xor", "--quiet")
    assert result.returncode == 0, result.stderr
    assert "test accuracy 1.0000" in result.stdout


@pytest.mark.parametrize(
    "args,code,message",
    [
        (("train", "--lr", "-1"), 2, "must be a finite number > 0"),
        (("train", "--data", "mnist.csv"), 1, "cannot read mnist.csv"),
        (("train", "--optimizer", "lbfgs"), 2, "invalid choice"),
        (("predict", "missing.npz", "x.csv"), 1, "missing.npz: not a usable backprop model"),
        (("train", "--epochs", "0"), 2, "must be at least 1"),
        (("train", "--test-size", "2"), 2, "must lie in (0, 1)"),
        ((), 2, "usage"),
    ],
)
def test_bad_options_exit_2(args, code, message):
    result = run(*args)
    assert result.returncode == code
    assert message in result.stderr + result.stdout


def test_info():
    result = run("info")
    assert result.returncode == 0 and result.stdout.startswith("backprop ")


def test_csv_train_save_and_predict(tmp_path):
    """A labelled CSV with a header and named classes: train, save, predict
    raw rows; the model file carries the standardisation and class names."""
    X, y = bp.datasets.make_spirals(300, noise=0.05, seed=2)
    X = X * 50 + 100  # far from standardised
    names = np.array(["left", "right"])[y]
    lines = ["a,b,arm"] + [f"{p:.6f},{q:.6f},{n}" for (p, q), n in zip(X, names)]
    (tmp_path / "train.csv").write_text("\n".join(lines) + "\n")
    (tmp_path / "rows.csv").write_text("\n".join(f"{p:.6f},{q:.6f}" for p, q in X[:40]) + "\n")
    model = tmp_path / "model.npz"
    result = run(
        "train",
        "--data",
        str(tmp_path / "train.csv"),
        "--hidden",
        "32",
        "32",
        "--epochs",
        "300",
        "--optimizer",
        "adam",
        "--lr",
        "0.01",
        "--save",
        str(model),
        "--quiet",
    )
    assert result.returncode == 0, result.stderr
    assert f"saved {model}" in result.stdout
    predicted = run("predict", str(model), str(tmp_path / "rows.csv"))
    assert predicted.returncode == 0, predicted.stderr
    labels = predicted.stdout.split()
    assert set(labels) <= {"left", "right"} and len(labels) == 40
    assert np.mean(np.array(labels) == names[:40]) > 0.85
    proba = run("predict", str(model), str(tmp_path / "train.csv"), "--proba")
    rows = [list(map(float, line.split(","))) for line in proba.stdout.split()]
    assert len(rows) == 300 and all(abs(sum(r) - 1) < 1e-4 for r in rows)


def test_bad_csv_files(tmp_path):
    (tmp_path / "ragged.csv").write_text("1,2,0\n3,1\n")
    result = run("train", "--data", str(tmp_path / "ragged.csv"))
    assert result.returncode == 1 and "line 2: 2 columns, expected 3" in result.stderr
    (tmp_path / "nan.csv").write_text("1,2,0\n3,nan,1\n4,5,1\n")
    result = run("train", "--data", str(tmp_path / "nan.csv"))
    assert result.returncode == 1 and "NaN" in result.stderr
    (tmp_path / "one.csv").write_text("1,2,0\n3,4,0\n")
    result = run("train", "--data", str(tmp_path / "one.csv"))
    assert result.returncode == 1 and "single class" in result.stderr


def test_bench_subcommand_runs_the_suite():
    # As a user runs it: the installed `backprop` command, in a checkout.
    import shutil

    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    command = shutil.which("backprop", path=os.path.dirname(sys.executable))
    if command is None or not os.path.isdir(os.path.join(root, "bench")):
        pytest.skip("needs the installed `backprop` command and a checkout with bench/")
    result = subprocess.run(
        [command, "bench", "--quick", "--sections", "digits", "--threads", "1"],
        capture_output=True,
        text=True,
        timeout=600,
        cwd=root,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert "Digits end to end" in result.stdout


# -- CSV files as spreadsheets and editors write them -----------------------------
ROWS = [(i % 7 - 3.0, (i * 5) % 11 / 4, "yes" if i % 3 else "no") for i in range(40)]


def write(path, rows, *, header=None, newline="\n", end="\n", bom=False, encoding="utf-8"):
    lines = ([",".join(header)] if header else []) + [",".join(map(str, r)) for r in rows]
    data = (newline.join(lines) + end).encode(encoding)
    path.write_bytes((codecs.BOM_UTF8 if bom else b"") + data)
    return str(path)


def trained(capsys, path, *options):
    """The exit code and what `train` printed, timing left out."""
    code, out, err = call(capsys, "train", "--data", path, "--epochs", "3", *options)
    assert code == 0, err
    return re.sub(r"trained in [0-9.]+ ms", "trained", out)


def linear_model(path, n_out, classes, loss="mse"):
    """A model whose outputs are known: x·W + b, W the first n_out columns of I."""
    net = bp.Sequential(bp.Dense(2, n_out, activation="linear"), loss=loss)
    net.layers[0].W = np.eye(2, n_out)
    net.layers[0].b = np.full(n_out, 0.5) * (np.arange(n_out) == n_out - 1)
    net.classes = classes
    net.save(path)
    return str(path)


@pytest.mark.parametrize(
    "variant",
    [
        dict(bom=True),
        dict(bom=True, newline="\r\n", end="\r\n"),
        dict(newline="\r\n", end=""),
        dict(newline="\r", end="\r"),
        dict(end=""),
        dict(newline="\n\n", end="\n\n\n"),  # blank lines
        dict(newline="\n \r\n", end=" \n"),  # blank lines, blanks and mixed ends
    ],
)
@pytest.mark.parametrize("header", [None, ("x", "y", "label")])
def test_csv_encoding_variants_read_as_plain_utf8(tmp_path, capsys, variant, header):
    """A byte-order mark, CRLF or CR line ends, a missing final newline and
    blank lines change nothing: all 40 rows are read, with or without a header."""
    plain = trained(capsys, write(tmp_path / "plain.csv", ROWS, header=header))
    assert "(40 rows, 2 features, 2 classes)" in plain
    other = trained(capsys, write(tmp_path / "plain.csv", ROWS, header=header, **variant))
    assert other == plain


def test_bom_csv_label_column_by_name_and_first_column(tmp_path, capsys):
    """Excel's "CSV UTF-8": the first header name is found, not '\\ufefflabel'."""
    rows = [(label, x, y) for x, y, label in ROWS]
    header = ("label", "x", "y")
    bom = write(tmp_path / "bom.csv", rows, header=header, bom=True, newline="\r\n")
    by_name = trained(capsys, bom, "--label-column", "label")
    assert "(40 rows, 2 features, 2 classes)" in by_name
    assert trained(capsys, bom, "--label-column", "0") == by_name
    plain = write(tmp_path / "bom.csv", ROWS, header=("x", "y", "label"))
    assert trained(capsys, plain) == by_name  # the same table, label last


def test_first_row_with_a_class_name_is_data(tmp_path, capsys):
    out = trained(capsys, write(tmp_path / "named.csv", ROWS))
    assert "(40 rows, 2 features, 2 classes)" in out


@pytest.mark.parametrize("encoding", ["latin-1", "cp1252"])
@pytest.mark.parametrize("where", ["header", "label"])
def test_csv_not_utf8_names_the_file_and_line(tmp_path, capsys, encoding, where):
    rows = [r[:2] + ("café" if where == "label" and i == 3 else r[2],) for i, r in enumerate(ROWS)]
    header = ("x", "y", "catégorie" if where == "header" else "label")
    path = write(tmp_path / "latin.csv", rows, header=header, encoding=encoding)
    code, _, err = call(capsys, "train", "--data", path)
    line = 1 if where == "header" else 5
    assert code == 1
    assert f"{path}, line {line}: byte 0xe9 is not UTF-8" in err and "CSV UTF-8" in err


@pytest.mark.parametrize(
    "encoding,message",
    [
        ("utf-16", 'is UTF-16 text (Excel\'s "Unicode Text")'),
        ("utf-16-le", "line 1: a NUL byte"),
    ],
)
def test_utf16_csv_is_refused_with_a_message(tmp_path, capsys, encoding, message):
    path = write(tmp_path / "unicode.txt", ROWS, header=("x", "y", "label"), encoding=encoding)
    model = linear_model(tmp_path / "m.npz", 2, None)
    for args in (("train", "--data", path), ("predict", model, path)):
        code, _, err = call(capsys, *args)
        assert code == 1 and f"{path}" in err and message in err


def test_csv_messages_count_blank_lines(tmp_path, capsys):
    (tmp_path / "bad.csv").write_bytes(b"\xef\xbb\xbf1,2,a\r\n\r\n3,4,b\r\n\r\n5,x,a\r\n")
    code, _, err = call(capsys, "train", "--data", str(tmp_path / "bad.csv"))
    assert code == 1 and "bad.csv, line 5: 'x' is not a number" in err
    (tmp_path / "ragged.csv").write_text("1,2,0\n\n3,1\n")
    code, _, err = call(capsys, "train", "--data", str(tmp_path / "ragged.csv"))
    assert code == 1 and "ragged.csv, line 3: 2 columns, expected 3" in err
    (tmp_path / "unlabelled.csv").write_text("1,2,a\n3,4,\n")
    code, _, err = call(capsys, "train", "--data", str(tmp_path / "unlabelled.csv"))
    assert code == 1 and "unlabelled.csv, line 2: no label" in err


def test_label_column_not_in_the_file_is_a_bad_option(tmp_path, capsys):
    path = write(tmp_path / "d.csv", ROWS, header=("x", "y", "label"), bom=True)
    code, _, err = call(capsys, "train", "--data", path, "--label-column", "kind")
    assert code == 2 and f"--label-column 'kind': no such column in {path}" in err
    code, _, err = call(capsys, "train", "--data", path, "--label-column", "3")
    assert code == 2 and f"--label-column 3: {path} has 3 columns" in err


def test_predict_reads_bom_and_crlf_files_as_plain_ones(tmp_path, capsys):
    model = str(tmp_path / "m.npz")
    call(
        capsys,
        "train",
        "--data",
        write(tmp_path / "t.csv", ROWS),
        "--epochs",
        "30",
        "--save",
        model,
        "--quiet",
    )
    rows = [r[:2] for r in ROWS]
    code, plain, err = call(capsys, "predict", model, write(tmp_path / "p.csv", rows))
    assert code == 0, err
    assert len(plain.split()) == 40 and set(plain.split()) <= {"yes", "no"}
    for variant in (dict(bom=True), dict(bom=True, header=("x", "y"), newline="\r\n")):
        code, out, err = call(capsys, "predict", model, write(tmp_path / "p.csv", rows, **variant))
        assert code == 0 and out == plain, err


# -- messages, not tracebacks ---------------------------------------------------
@pytest.mark.parametrize("hidden", [["100000000000"], ["8", "10" + "0" * 30]])
def test_hidden_too_large_for_memory_is_a_bad_option(capsys, hidden):
    code, _, err = call(capsys, "train", "--data", "xor", "--hidden", *hidden)
    assert code == 2
    assert f"--hidden {' '.join(hidden)}: " in err and "do not fit in memory" in err


@pytest.mark.parametrize("value", ["0.999", "0.0001"])
@pytest.mark.parametrize("data", ["digits", "spirals"])
def test_test_size_leaving_no_rows_is_a_bad_option(capsys, data, value):
    code, _, err = call(capsys, "train", "--data", data, "--test-size", value)
    assert code == 2 and f"--test-size {value} leaves " in err
    assert re.search(r"leaves (0 training and \d+|\d+ training and 0) test rows", err)


@pytest.mark.parametrize("value", ["0", "1", "-0.2", "nan", "inf", "half"])
def test_test_size_outside_0_1_is_a_bad_option(capsys, value):
    code, _, err = call(capsys, "train", "--test-size", value)
    assert code == 2 and "argument --test-size" in err


def test_test_size_too_small_for_a_small_csv(tmp_path, capsys):
    path = write(tmp_path / "four.csv", ROWS[:4])
    code, _, err = call(capsys, "train", "--data", path)
    assert code == 2 and "--test-size 0.2 leaves 4 training and 0 test rows of 4" in err


def test_validation_split_leaving_no_rows_is_a_bad_option(capsys):
    code, _, err = call(capsys, "train", "--data", "spirals", "--validation-split", "0.999")
    assert code == 2
    assert "--validation-split 0.999 leaves 0 training and 320 validation rows of 320" in err


@pytest.mark.parametrize(
    "args,message",
    [
        (("--optimizer", "adam", "--momentum", "0.5"), "--momentum applies to --optimizer sgd"),
        (("--momentum", "1"), "argument --momentum: must lie in [0, 1)"),
        (("--momentum", "nan"), "argument --momentum: must lie in [0, 1)"),
        (("--seed", "-1"), "argument --seed: must be at least 0"),
        (("--dropout", "1"), "argument --dropout: must lie in [0, 1)"),
        (("--dropout", "-0.2"), "argument --dropout: must lie in [0, 1)"),
    ],
)
def test_other_bad_training_options_exit_2(capsys, args, message):
    code, _, err = call(capsys, "train", "--data", "xor", *args)
    assert code == 2 and message in err


def test_train_with_dropout_after_every_hidden_layer(tmp_path, capsys):
    path = tmp_path / "net.npz"
    args = ("train", "--hidden", "32", "16", "--epochs", "8", "--seed", "1", "--save", str(path))
    code, out, _ = call(capsys, *args, "--dropout", "0.3")
    assert code == 0 and out.count("dropout 0.3") == 2  # in the summary
    net = bp.load(path)
    assert net.dropout == (0.3, 0.3, 0.0)
    assert float(re.search(r"test accuracy ([0-9.]+)", out).group(1)) > 0.85
    code, out, _ = call(capsys, *args)
    assert code == 0 and "dropout 0" not in out and bp.load(path).dropout == (0.0, 0.0, 0.0)


def test_predict_with_an_mse_model_and_class_names(tmp_path, capsys):
    """One output unit per class: the class is the unit with the highest output."""
    model = linear_model(tmp_path / "three.npz", 3, ["left", "right", "neither"])
    rows = write(tmp_path / "rows.csv", [(1, 0), (0, 1), (0, 0), (0.2, 0.1)])
    code, out, err = call(capsys, "predict", model, rows)
    assert code == 0, err
    assert out.split() == ["left", "right", "neither", "neither"]
    code, out, _ = call(capsys, "predict", model, rows, "--proba")
    assert out.splitlines()[0] == "1,0,0.5"


def test_predict_with_a_one_output_mse_model(tmp_path, capsys):
    rows = write(tmp_path / "rows.csv", [(1, 0), (0, 2.5)])
    code, out, _ = call(capsys, "predict", linear_model(tmp_path / "a.npz", 1, None), rows)
    assert code == 0 and out.split() == ["1.5", "0.5"]
    model = linear_model(tmp_path / "b.npz", 1, ["price"])
    code, _, err = call(capsys, "predict", model, rows)
    assert (
        code == 1
        and f"{model}: class names label a model with one output unit per class" in err
        and "--proba" in err
    )


def test_predict_with_a_multi_label_model(tmp_path, capsys):
    """binary_cross_entropy with two units: two 0/1 labels a row."""
    net = bp.Sequential(bp.Dense(2, 2, activation="sigmoid"), loss="binary_cross_entropy")
    net.layers[0].W, net.layers[0].b = 10 * np.eye(2), np.full(2, -5.0)
    net.save(tmp_path / "m.npz")
    rows = write(tmp_path / "rows.csv", [(1, 0), (0, 1), (1, 1)])
    code, out, _ = call(capsys, "predict", str(tmp_path / "m.npz"), rows)
    assert code == 0 and out.split() == ["1,0", "0,1", "1,1"]
    net.classes = ["red", "round"]
    net.save(tmp_path / "m.npz")
    code, _, err = call(capsys, "predict", str(tmp_path / "m.npz"), rows)
    assert code == 1 and "binary_cross_entropy model with 2" in err


def test_ctrl_c_during_train_prints_interrupted_and_exits_130():
    argv, env = command("train", "--data", "spirals", "--epochs", "100000000")
    with tempfile.TemporaryDirectory() as cwd:
        proc = subprocess.Popen(
            argv,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            cwd=cwd,
            env={**env, "PYTHONUNBUFFERED": "1"},
            # as at a terminal, even if this process ignores Ctrl-C
            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
        )
        try:
            for line in proc.stdout:  # training starts after this line
                if line.startswith("optimizer:"):
                    break
            time.sleep(0.5)  # well into training
            proc.send_signal(signal.SIGINT)
            out, err = proc.communicate(timeout=60)
        finally:
            proc.kill()
    assert proc.returncode == 130
    assert err == "backprop: interrupted\n"
    assert out == ""  # no epochs, no result


def test_ctrl_c_during_predict_prints_interrupted_and_exits_130(tmp_path, capsys, monkeypatch):
    model = linear_model(tmp_path / "m.npz", 3, ["a", "b", "c"])
    rows = write(tmp_path / "rows.csv", [(1, 0)])

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(bp.Sequential, "predict_proba", interrupted)
    try:
        result = call(capsys, "predict", model, rows)
    except KeyboardInterrupt:  # not to end the test session
        pytest.fail("Ctrl-C escaped main()")
    assert result == (130, "", "backprop: interrupted\n")


def test_warnings_are_one_line_messages(capsys):
    code, _, err = call(capsys, "train", "--data", "xor", "--lr", "1e300", "--epochs", "3")
    assert code == 0
    assert err.startswith("backprop: warning: training stopped at epoch 1")
    assert "net.fit(" not in err  # no source line


def test_train_with_a_checkpoint_resumes_and_does_not_train_twice(tmp_path):
    run_file = tmp_path / "run.npz"
    args = ("train", "--epochs", "5", "--checkpoint", str(run_file), "--quiet")
    first = run(*args, "--save", str(tmp_path / "a.npz"))
    assert first.returncode == 0, first.stderr
    meta = _format.read(str(run_file))[0].training
    assert meta.epoch == 5 and meta.run["complete"]
    again = run(*args, "--save", str(tmp_path / "b.npz"))  # the same command again
    assert again.returncode == 0, again.stderr

    def figures(out):  # the result line without its time
        return re.sub(r"trained in [0-9.]+ \S+; ", "", out).replace("a.npz", "b.npz")

    assert figures(again.stdout) == figures(first.stdout)
    a, b = bp.load(tmp_path / "a.npz"), bp.load(tmp_path / "b.npz")
    np.testing.assert_array_equal(a.params, b.params)
    other = run("train", "--epochs", "6", "--checkpoint", str(run_file), "--quiet")
    assert other.returncode == 1 and "belongs to another run" in other.stderr
