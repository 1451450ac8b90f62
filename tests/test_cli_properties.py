"""Property-based tests of the command line: any CSV file, in the encodings
and layouts users meet, with any options, ends in exit code 0, 1 or 2 with a
message, never a traceback; and a byte-order mark, CRLF or CR line ends or a
missing final newline change nothing.

The suite runs a short campaign; a long one runs with:

    pytest tests/test_cli_properties.py --hypothesis-profile=campaign
"""

import codecs
import contextlib
import io
import re

import pytest

hypothesis = pytest.importorskip("hypothesis")
from hypothesis import event, given  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

import backprop as bp  # noqa: E402
from backprop import cli  # noqa: E402

# Values for each option of `train`, good and bad; absurd sizes fail fast, and
# no epoch count makes an example slow.
TRAIN_OPTIONS = {
    "--hidden": st.lists(
        st.sampled_from(["1", "3", "0", "-2", "x", "100000000000", "1" + "0" * 30]), max_size=2
    ),
    "--epochs": st.sampled_from(["1", "2", "0", "-1", "x"]),
    "--lr": st.sampled_from(["0.1", "-1", "0", "nan", "inf", "1e300", "x"]),
    "--batch-size": st.sampled_from(["1", "2", "0", "1000000000000"]),
    "--test-size": st.sampled_from(["0.5", "0.2", "0.999", "0.001", "0", "1", "nan", "-0.1"]),
    "--validation-split": st.sampled_from(["0.5", "0.999", "0.001", "0"]),
    "--label-column": st.sampled_from(["-1", "0", "1", "5", "-9", "x", "label", "y", ""]),
    "--optimizer": st.sampled_from(["sgd", "adam", "rmsprop", "lbfgs"]),
    "--momentum": st.sampled_from(["0", "0.9", "1", "-0.5", "nan"]),
    "--activation": st.sampled_from(["tanh", "relu", "softmax"]),
    "--dtype": st.sampled_from(["float32", "float64", "float16"]),
    "--seed": st.sampled_from(["0", "-1", "12345678901234567890"]),
    "--patience": st.sampled_from(["1", "0"]),
    "--early-stopping": st.just([]),
    "--quiet": st.just([]),
}


@st.composite
def train_options(draw):
    names = draw(st.lists(st.sampled_from(sorted(TRAIN_OPTIONS)), unique=True, max_size=4))
    argv = []
    for name in names:
        value = draw(TRAIN_OPTIONS[name])
        argv += [name, *(value if isinstance(value, list) else [value])]
    return argv


FINITE = st.sampled_from(["0", "1", "2.5", "-3", " 7 ", "1e-3", "+4"])
NUMBER = FINITE | st.sampled_from(["nan", "inf", "1e400"])
WORD = st.sampled_from(["x", "label", "café", "日本", "a b", "\ufeff1", '"1,5"', '"q""uote"'])
CELL = st.one_of(
    NUMBER,
    WORD,
    st.sampled_from(["", "  "]),
    st.text(st.characters(exclude_characters='\r\n"\0', exclude_categories=["Cs"]), max_size=4),
)


@st.composite
def tables(draw):
    """Lines of a CSV file: a well-formed labelled table (with or without a
    header, with blank lines), or rows of arbitrary cells."""
    if draw(st.booleans()):
        width = draw(st.integers(2, 4))
        rows = draw(
            st.lists(
                st.lists(FINITE, min_size=width - 1, max_size=width - 1), min_size=4, max_size=16
            )
        )
        labels = draw(
            st.lists(
                st.sampled_from(["0", "1", "a", "b", "é"]), min_size=len(rows), max_size=len(rows)
            )
        )
        lines = [",".join([*row, label]) for row, label in zip(rows, labels)]
        if draw(st.booleans()):
            lines.insert(0, ",".join(draw(st.lists(WORD, min_size=width, max_size=width))))
    else:
        lines = [",".join(row) for row in draw(st.lists(st.lists(CELL, max_size=4), max_size=8))]
    for _ in range(draw(st.integers(0, 2))):
        lines.insert(draw(st.integers(0, len(lines))), draw(st.sampled_from(["", " ", ","])))
    return lines


LAYOUTS = st.fixed_dictionaries(
    {"bom": st.booleans(), "newline": st.sampled_from(["\n", "\r\n", "\r"]), "final": st.booleans()}
)


def encode(lines, *, bom=False, newline="\n", final=True, encoding="utf-8"):
    data = (newline.join(lines) + (newline if final else "")).encode(encoding)
    return (codecs.BOM_UTF8 if bom else b"") + data


def run(*argv):
    """(exit code, stdout without timings, stderr) of main(argv), which must
    end in 0, 1 or 2 and, unless 0, an error message."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            code = cli.main(list(argv))
        except SystemExit as exc:  # argparse: bad options
            code = exc.code
    assert code in (0, 1, 2), code
    assert "Traceback" not in err.getvalue()
    if code:
        assert "error: " in err.getvalue(), err.getvalue()
    event(f"{argv[0]}: exit {code}")
    return code, re.sub(r"trained in [0-9.]+ ms", "trained", out.getvalue()), err.getvalue()


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    """A 2-input classifier with named classes."""
    net = bp.Sequential(bp.Dense(2, 3, activation="softmax"), loss="cross_entropy", seed=0)
    net.classes = ["a", "b", "c"]
    return str(net.save(tmp_path_factory.mktemp("model") / "model.npz"))


@pytest.fixture(scope="module")
def path(tmp_path_factory):
    """The CSV file, written anew by each example."""
    return tmp_path_factory.mktemp("csv") / "data.csv"


def commands(path, model, options, proba):
    """argv of `train` on the file with these options, and of `predict` on it."""
    return (
        ["train", "--data", path, "--epochs", "1", *options],
        ["predict", model, path, *(["--proba"] if proba else [])],
    )


@given(
    content=st.one_of(tables().map("\n".join), st.text(max_size=200)),
    encoding=st.sampled_from(["utf-8", "utf-8-sig", "latin-1", "cp1252", "utf-16"]),
    raw=st.none() | st.binary(max_size=200),
    options=train_options(),
    proba=st.booleans(),
)
def test_cli_on_any_file_exits_cleanly(path, model, content, encoding, raw, options, proba):
    """Any text in any encoding, or any bytes, and any options: exit code 0,
    1 or 2 with a message, never a traceback."""
    path.write_bytes(content.encode(encoding, errors="replace") if raw is None else raw)
    for argv in commands(str(path), model, options, proba):
        code, _, err = run(*argv)
        assert code in (0, 1, 2) and "Traceback" not in err
        assert code == 0 or "error: " in err.splitlines()[-1], err


@given(lines=tables(), layout=LAYOUTS, options=train_options(), proba=st.booleans())
def test_layout_changes_nothing(path, model, lines, layout, options, proba):
    """A byte-order mark, CRLF or CR line ends, or no final newline: the same
    exit code, output and message as the plain UTF-8 file."""
    for argv in commands(str(path), model, options, proba):
        path.write_bytes(encode(lines))
        plain = run(*argv)
        path.write_bytes(encode(lines, **layout))
        assert run(*argv) == plain


LATIN = st.sampled_from(["é", "ü", "ß", "Ä", "ñ", "ø"])  # bytes ≥ 0xC0 in Latin-1


@given(
    lines=tables(),
    at=st.integers(0),
    char=LATIN,
    layout=LAYOUTS,
    encoding=st.sampled_from(["latin-1", "cp1252"]),
    options=train_options(),
    proba=st.booleans(),
)
def test_latin1_bytes_are_named_by_file_and_line(
    path, model, lines, at, char, layout, encoding, options, proba
):
    """A Latin-1 or cp1252 file with a non-ASCII character: exit code 1 with
    a message naming the file and the line of the first one, unless the
    options alone were already bad (exit code 2)."""
    lines = [line.encode("ascii", errors="replace").decode() for line in lines] or [""]
    row = at % len(lines)
    lines[row] += char
    path.write_bytes(encode(lines, encoding=encoding, **layout))
    for argv in commands(str(path), model, options, proba):
        code, _, err = run(*argv)
        if code != 2:
            assert code == 1
            assert f"{path}, line {row + 1}: byte 0x{ord(char):02x} is not UTF-8" in err
