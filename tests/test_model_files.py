"""Hand-made model files whose members and headers disagree with their
metadata.  `backprop.load` returns a network that predicts finite outputs
and whose file round-trips, or refuses the file with a ValueError naming
the member or field at fault, before it reads (or allocates for) any array
data: never another exception, never a crash, never a large allocation.

First regressions (files that would decompress to GiBs), then properties;
the suite runs a short campaign of these, a long one runs with:

    pytest tests/test_model_files.py --hypothesis-profile=campaign
"""

import io as _io
import json
import math
import re
import struct
import tracemalloc
import zipfile
import zlib

import numpy as np
import pytest

hypothesis = pytest.importorskip("hypothesis")
from hypothesis import given  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

import backprop as bp  # noqa: E402
from backprop import io  # noqa: E402

MB = 1 << 20


# -- writing archives by hand ----------------------------------------------------
def npy(header: dict, payload: bytes, version=(1, 0)) -> bytes:
    """An .npy file: `header` ({'descr', 'fortran_order', 'shape'}) in the
    given format version, then `payload` whatever the header says."""
    fp = _io.BytesIO()
    write = (
        np.lib.format.write_array_header_1_0
        if version == (1, 0)
        else np.lib.format.write_array_header_2_0
    )
    write(fp, header)
    data = fp.getvalue()
    return data[:6] + bytes(version) + data[8:] + payload


def header_of(arr: np.ndarray) -> dict:
    return {
        "descr": np.lib.format.dtype_to_descr(arr.dtype),
        "fortran_order": False,
        "shape": arr.shape,
    }


def deflate(data: bytes) -> bytes:
    packer = zlib.compressobj(6, zlib.DEFLATED, -15)
    return packer.compress(data) + packer.flush()


def zeros_bomb(head: bytes, zeros: int) -> bytes:
    """A raw deflate stream of `head` then `zeros` (> 258) zero bytes, 13
    bytes for each 2064: a stored block holds head and the first zeros, then
    fixed-Huffman blocks copy 258 bytes at distance 1, again and again."""

    def bits(seq):
        out = bytearray((len(seq) + 7) // 8)
        for i, b in enumerate(seq):
            out[i // 8] |= b << (i % 8)
        return bytes(out)

    copy = [1, 1, 0, 0, 0, 1, 0, 1] + [0] * 5  # length 258 (code 285), distance 1
    units = (zeros - 259) // 2064
    head += bytes(zeros - 258 - 2064 * units)
    stored = b"\0" + struct.pack("<HH", len(head), 0xFFFF ^ len(head)) + head
    return stored + bits([1, 1, 0] + copy) + bits(copy * 8) * units + b"\0"


def archive(members) -> bytes:
    """A zip archive of `members`, (name, data as stored, method, declared
    size, crc[, declared compressed size]) each, with exactly the sizes and
    CRCs given."""
    out, central = bytearray(), bytearray()
    for name, data, method, size, crc, *packed in members:
        name = name.encode()
        fields = (method, 0, 0x21, crc, packed[0] if packed else len(data), size, len(name), 0)
        central += (
            struct.pack("<IHHHHHHIIIHHHHHII", 0x02014B50, 20, 20, 0, *fields, 0, 0, 0, 0, len(out))
            + name
        )
        out += struct.pack("<IHHHHHIIIHH", 0x04034B50, 20, 0, *fields) + name + data
    n = len(members)
    end = struct.pack("<IHHHHIIH", 0x06054B50, 0, 0, n, n, len(central), len(out), 0)
    return bytes(out + central + end)


def member(name, content: bytes, method=zipfile.ZIP_STORED, size=None):
    data = deflate(content) if method == zipfile.ZIP_DEFLATED else content
    return (name, data, method, len(content) if size is None else size, zlib.crc32(content))


def members_of(net):
    """The members `save` writes for `net`, as {name: (header, payload)}."""
    return {name: (header_of(arr), arr.tobytes()) for name, arr in io.state_of(net).items()}


def peak_of_load(data: bytes):
    """bp.load on the archive bytes `data`: (network or exception, peak bytes allocated)."""
    tracemalloc.start()
    try:
        try:
            result = bp.load(_io.BytesIO(data))
        except Exception as exc:  # noqa: BLE001  (the failure is the result)
            result = exc
        return result, tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def small_net(optimizer=None):
    net = bp.Sequential(
        bp.Dense(3, 4, activation="tanh"),
        bp.Dense(4, 2, activation="softmax"),
        loss="cross_entropy",
        dtype="float32",
        seed=0,
    )
    net.optimizer = optimizer or bp.Adam(1e-3)
    return net


# -- regressions: structure before data --------------------------------------------
def test_a_header_claiming_a_huge_array_is_refused_before_its_data_is_read():
    """An 11 MB file whose params header claims 1 GiB, which its data would
    decompress to (padded to stay within 100-fold; the CRC is left wrong,
    as zipfile checks it only once all the data is read)."""
    members = members_of(small_net(bp.SGD(0.1)))  # meta and params only
    head = npy({"descr": "<f4", "fortran_order": False, "shape": (1 << 28,)}, b"")
    stream = zeros_bomb(head, 1 << 30)
    bomb = [
        member("meta.npy", npy(*members["meta"])),
        (
            "params.npy",
            stream + bytes(11 * MB - len(stream)),
            zipfile.ZIP_DEFLATED,
            len(head) + (1 << 30),
            0,
        ),
    ]
    result, peak = peak_of_load(archive(bomb))
    assert isinstance(result, ValueError), result
    assert "params: shape (268435456,) does not fit the 26 weights" in str(result)
    assert peak < 100 * MB


def test_a_small_header_over_a_huge_compressed_payload_is_refused():
    """The params header fits the metadata, but 2 GiB of zeros follow it."""
    members = members_of(small_net(bp.SGD(0.1)))
    head = npy(*members["params"])
    bomb = [
        member("meta.npy", npy(*members["meta"])),
        ("params.npy", zeros_bomb(head, 1 << 31), zipfile.ZIP_DEFLATED, len(head) + (1 << 31), 0),
    ]
    result, peak = peak_of_load(archive(bomb))
    assert isinstance(result, ValueError), result
    assert "params: declares" in str(result) and "more than 100-fold" in str(result)
    assert peak < 100 * MB


def test_a_metadata_member_over_4_mib_is_refused_unread():
    net = small_net(bp.SGD(0.1))
    text = np.array(str(io.state_of(net)["meta"]) + " " * (2 * MB))  # 4 bytes a character
    file = [
        member("meta.npy", npy(header_of(text), text.tobytes()), zipfile.ZIP_DEFLATED),
        member("params.npy", npy(*members_of(net)["params"])),
    ]
    result, peak = peak_of_load(archive(file))
    assert isinstance(result, ValueError), result
    assert "meta: more than 4194304 bytes" in str(result) and peak < 5 * MB


def test_a_member_claiming_more_than_the_file_holds_is_refused_unread():
    """A stored member whose archive entry claims 2 GiB, in a file of 2 kB
    whose metadata and header agree with that."""
    meta = json.loads(str(io.state_of(bp.Sequential(bp.Dense(1, 1), dtype="float32"))["meta"]))
    meta["layers"][0]["n_out"] = 1 << 28  # 2²⁹ weights
    text = np.array(json.dumps(meta))
    head = npy({"descr": "<f4", "fortran_order": False, "shape": (1 << 29,)}, b"")
    size = len(head) + (1 << 31)
    file = [
        member("meta.npy", npy(header_of(text), text.tobytes())),
        ("params.npy", head + bytes(1000), zipfile.ZIP_STORED, size, 0, size),
    ]
    result, peak = peak_of_load(archive(file))
    assert isinstance(result, ValueError), result
    assert f"params: claims {size} bytes in a file of" in str(result) and peak < 5 * MB


def test_the_bombs_are_what_they_claim():
    head = b"header\n"
    for zeros in (259, 2064 + 259, 5000, 123457):
        out = zlib.decompressobj(-15)
        assert out.decompress(zeros_bomb(head, zeros)) == head + bytes(zeros) and out.eof


# -- properties: whatever a file claims ----------------------------------------------
HIDDEN = ["identity", "sigmoid", "tanh", "relu", "leaky_relu"]
OUTPUT = {
    "binary_cross_entropy": ["sigmoid"],
    "cross_entropy": ["softmax"],
    "mse": HIDDEN,
    "poisson": ["exp"],
}
OPTIMIZERS = [
    lambda: bp.SGD(0.05),
    lambda: bp.SGD(0.05, momentum=0.9),
    lambda: bp.SGD(0.05, momentum=0.5, nesterov=True),
    lambda: bp.Adam(1e-2, clip_norm=1.0),
    lambda: bp.AdamW(1e-2),
    lambda: bp.RMSProp(1e-2, l2=1e-3),
    lambda: bp.AdaGrad(0.1),
]


@st.composite
def networks(draw):
    """A small network, its optimizer, trained a little or not at all."""
    loss = draw(st.sampled_from(sorted(OUTPUT)))
    sizes = draw(st.lists(st.integers(1, 4), min_size=2, max_size=4))
    if loss == "cross_entropy":
        sizes[-1] = max(sizes[-1], 2)
    acts = [draw(st.sampled_from(HIDDEN)) for _ in sizes[2:]]
    acts.append(draw(st.sampled_from(OUTPUT[loss])))
    leaky = bp.activations.LeakyReLU(0.2)
    layers = [
        bp.Dense(a, b, activation=leaky if act == "leaky_relu" else act)
        for a, b, act in zip(sizes, sizes[1:], acts)
    ]
    net = bp.Sequential(
        *layers,
        loss=loss,
        dtype=draw(st.sampled_from(["float32", "float64"])),
        seed=draw(st.none() | st.integers(0, 2**70)),
        n_threads=draw(st.none() | st.integers(1, 4)),
    )
    net.optimizer = draw(st.sampled_from(OPTIMIZERS))()
    if draw(st.booleans()):
        rng = np.random.default_rng(0)
        y = {
            "mse": rng.normal(size=(8, sizes[-1])),
            "cross_entropy": rng.integers(0, sizes[-1], 8),
            "binary_cross_entropy": rng.integers(0, 2, (8, sizes[-1])),
            "poisson": rng.poisson(1.0, (8, sizes[-1])),
        }[loss]
        keeping = draw(  # callbacks whose state the file holds (an array, for EarlyStopping)
            st.sampled_from(
                [
                    [],
                    [bp.callbacks.EarlyStopping("loss", patience=3)],
                    [bp.callbacks.CosineDecay(5), bp.callbacks.ReduceLROnPlateau("loss")],
                ]
            )
        )
        net.fit(rng.normal(size=(8, sizes[0])), y, epochs=1, batch_size=4, callbacks=keeping)
    if draw(st.booleans()):
        one_unit = loss == "binary_cross_entropy" and sizes[-1] == 1  # labels 0 and 1
        net.classes = [f"class {i}" for i in range(2 if one_unit else sizes[-1])]
    return net


def paths(node, at=()):
    """The path (keys and indices) of every value inside a JSON value."""
    items = (
        node.items()
        if isinstance(node, dict)
        else enumerate(node)
        if isinstance(node, list)
        else ()
    )
    for key, value in items:
        yield at + (key,)
        yield from paths(value, at + (key,))


DEEP = "\0deep\0"  # stands for nesting too deep for json.dumps
SCALARS = (
    st.none()
    | st.booleans()
    | st.integers(-(2**70), 2**70)
    | st.floats()
    | st.sampled_from([0, 1, 2, -1, 2**31, 2**63, 2**64, 10**400, 0.5, 2.5, 1e-300])
    | st.text(max_size=6)
    | st.sampled_from(
        [
            "3",
            "0.1",
            "NaN",
            "1e400",
            "",
            "adam",
            "Adam",
            "relu",
            "float32",
            "PCG64",
            "backprop model",
            DEEP,
        ]
    )
)
JUNK = st.recursive(
    SCALARS,
    lambda kids: (
        st.lists(kids, max_size=3) | st.dictionaries(st.text(max_size=4), kids, max_size=3)
    ),
    max_leaves=8,
)

# What a message must name for an edit of each top-level field.
NAMED = {
    "format": ("no backprop header",),
    "version": ("version", "unexpected field 'training'"),  # (version 1 has no training state)
    "layers": ("meta.layers", "meta: ", "meta.classes", "params", "optimizer_state"),
    "loss": ("meta.loss", "meta: "),
    "dtype": ("meta.dtype", "params", "optimizer_state"),
    "seed": ("meta.seed",),
    "n_threads": ("meta.n_threads",),
    "classes": ("meta.classes",),
    "optimizer": ("meta.optimizer", "optimizer_state"),
    "optimizer_steps": ("meta.optimizer_steps",),
    "rng": ("meta.rng",),
    "training": ("meta.training", "training_"),
}
PLAUSIBLE = [
    "backprop model",
    "identity",
    "sigmoid",
    "tanh",
    "relu",
    "leaky_relu",
    "softmax",
    "exp",
    "mse",
    "binary_cross_entropy",
    "cross_entropy",
    "poisson",
    "float32",
    "float64",
    "SGD",
    "Adam",
    "AdamW",
    "RMSProp",
    "AdaGrad",
    "PCG64",
    "0",
    "12345",
    str(2**127),
    "class 0",
]
DESCRS = ["<f4", "<f8", ">f4", ">f8", "<f2", "<i4", "<i8", "|b1", "|u1", "<c8", "<U3", "|V8", "|O"]


def decoded(header, payload):
    """The array an .npy header and payload make, or None."""
    try:
        return np.frombuffer(payload, header["descr"]).reshape(header["shape"])
    except (ValueError, TypeError):
        return None


class File:
    """A model file being made by hand: the metadata (parsed, or its text),
    each member's .npy header (None: as `save` writes it), payload and
    format version, and how the archive stores each."""

    def __init__(self, net):
        self.meta = json.loads(str(io.state_of(net)["meta"]))
        self.text = None
        self.members = {
            f"{name}.npy": [header, payload, (1, 0)]
            for name, (header, payload) in members_of(net).items()
        }
        self.members["meta.npy"][:2] = [None, None]
        self.method, self.size, self.crc, self.extra = {}, {}, {}, []

    def meta_text(self):
        if self.text is not None:
            return self.text
        return json.dumps(self.meta).replace(json.dumps(DEEP), "[" * 5000 + "]" * 5000)

    def npy(self, name) -> bytes:
        header, payload, version = self.members[name]
        if name == "meta.npy":
            text = np.array(self.meta_text())
            header, payload = header or header_of(text), text.tobytes()
        return npy(header, payload, version)

    def bytes(self) -> bytes:
        parts = []
        for name in self.members:
            name, data, method, size, crc = member(
                name, self.npy(name), self.method.get(name, zipfile.ZIP_STORED)
            )
            parts.append(
                (name, data, method, size + self.size.get(name, 0), crc ^ self.crc.get(name, 0))
            )
        return archive(parts + self.extra)


def edit_meta(draw, file, kind):
    meta = file.meta
    if kind == "add":
        node = draw(
            st.sampled_from(
                [meta] + [v for v in map(lambda p: at(meta, p), paths(meta)) if isinstance(v, dict)]
            )
        )
        node["x-" + draw(st.text(max_size=3))] = draw(JUNK)
        return ("unexpected field", "no backprop header", "version", "nested too deeply")
    path = draw(
        st.sampled_from(
            [p for p in paths(meta) if kind != "drop" or isinstance(at(meta, p[:-1]), dict)]
        )
    )
    parent = at(meta, path[:-1])
    if kind == "drop":
        del parent[path[-1]]
        # (a callback's array dropped from the metadata leaves its member unexpected)
        return ("missing", "no backprop header", "version", "unexpected member 'training_")
    old = parent[path[-1]]
    if kind == "nudge":  # another value of the same kind, often a valid one
        parent[path[-1]] = draw(
            st.booleans()
            if isinstance(old, bool)
            else st.integers(0, 6) | st.integers(0, 2**64)
            if isinstance(old, int)
            else st.floats(0, 1, exclude_max=True)
            if isinstance(old, float)
            else st.sampled_from(PLAUSIBLE)
            if isinstance(old, str)
            else st.just(old)
        )
    else:
        parent[path[-1]] = draw(JUNK)
    return NAMED.get(path[0], ("unexpected field",)) + ("nested too deeply",)


def at(node, path):
    for key in path:
        node = node[key]
    return node


def edit_header(draw, file):
    name = draw(st.sampled_from(sorted(file.members)))
    header, payload, _ = file.members[name]
    old = decoded(header, payload) if header else None
    n = old.size if old is not None else 1
    shape = draw(
        st.sampled_from(
            [
                (n,),
                (n + 1,),
                (max(n - 1, 0),),
                (n, 1),
                (1, n),
                (),
                (0,),
                (2**40,),
                (2**31, 2**31),
                (2**62,),
            ]
        )
    )
    descr = draw(st.sampled_from(DESCRS + ([header["descr"]] if header else ["<U9"])))
    if old is not None and draw(st.booleans()) and np.prod(shape) <= 1 << 16:
        if descr[1] in "fiub" and shape == (n,):  # the data, made to fit
            payload = old.astype(descr).tobytes()
        else:
            payload = bytes(int(np.prod(shape)) * np.dtype(descr).itemsize)
    file.members[name] = [
        {"descr": descr, "fortran_order": draw(st.booleans()), "shape": shape},
        payload,
        draw(st.sampled_from([(1, 0), (2, 0), (3, 0)])),
    ]
    return (name[:-4],)


def edit_members(draw, file):
    name = draw(st.sampled_from(sorted(file.members)))
    how = draw(st.sampled_from(["drop", "twice", "extra"]))
    if how == "drop":
        del file.members[name]
        return (name[:-4],)
    if how == "twice":
        file.extra.append(member(name, file.npy(name)))
        return (name,)
    extra = draw(
        st.sampled_from(
            [
                "optimizer_state_0.npy",
                "optimizer_state_1.npy",
                "optimizer_state_2.npy",
                "optimizer_state_10.npy",
                "notes.npy",
                "meta",
                "params",
                "../params.npy",
                "dir/",
            ]
        )
    )
    file.extra.append(member(extra, file.npy(name)))
    return (extra[:-4] if extra.endswith(".npy") else extra,)


def edit_archive(draw, file):
    name = draw(st.sampled_from(sorted(file.members)))
    how = draw(st.sampled_from(["deflated", "bzip2", "size", "crc"]))
    if how == "size":
        file.size[name] = draw(st.sampled_from([-1, 1, 1000, 1 << 24, 1 << 31]))
    elif how == "crc":
        file.crc[name] = 1
    else:
        file.method[name] = zipfile.ZIP_DEFLATED if how == "deflated" else zipfile.ZIP_BZIP2
    return (name[:-4],)


@st.composite
def edits(draw, file):
    """One edit of `file`, applied; returns the names its refusal may give."""
    kind = draw(
        st.sampled_from(
            ["nudge", "value", "drop", "add", "text", "numbers", "header", "members", "archive"]
        )
    )
    if kind in ("nudge", "value", "drop", "add"):
        return edit_meta(draw, file, kind)
    if kind == "text":
        file.text = draw(
            st.sampled_from(
                [file.meta_text()[:-1], "[" * 100_000, "{}", "null", "", "{'format': 1}"]
            )
            | JUNK.map(lambda j: json.dumps(j).replace(json.dumps(DEEP), "[" * 9999))
        )
        return ("meta", "no backprop header")
    arrays = [name for name in sorted(file.members) if name != "meta.npy"]
    if not (arrays if kind == "numbers" else file.members):  # all dropped already
        return ()
    if kind == "numbers":
        name = draw(st.sampled_from(arrays))
        values = decoded(*file.members[name][:2])
        if values is None or values.dtype.kind != "f" or not values.size:  # an edited header
            return ()
        values = values.copy()
        values.flat[draw(st.integers(0, values.size - 1))] = draw(
            st.sampled_from([np.nan, np.inf, -np.inf, -1e-3, 0.0, 0.5])
        )
        file.members[name][1] = values.tobytes()
        return (name[:-4],)
    return {"header": edit_header, "members": edit_members, "archive": edit_archive}[kind](
        draw, file
    )


def expect_refusal(result, names):
    assert isinstance(result, ValueError), repr(result)
    message = str(result)
    assert message.startswith("path: ") and len(message) < 600, message
    assert any(name in message for name in names), (names, message)
    why = message.removeprefix("path: not a usable backprop model file: ")
    hypothesis.event("refused: " + re.match(r"[\w.]*", why).group())


def exp_overflows(net, X) -> bool:
    """Whether an exp layer of `net` meets a z past the log of its dtype's
    largest number for inputs X (in float64, the other layers by numpy)."""
    a = X.astype(np.float64)
    for layer in net.layers:
        z = a @ layer.W.astype(np.float64) + layer.b
        if layer.activation.name == "exp":
            if z.max() > np.log(np.finfo(net.dtype).max):
                return True
            a = np.exp(z)
        else:
            a = np.asarray(layer.activation(z))
    return False


# Fields that files written before them lack, and which load with this value
# (test_a_model_file_from_before_decay_biases_loads_with_it_true).
OPTIONAL_FIELDS = {("optimizer", "settings", "decay_biases"): True}


def expect_a_working_network(net, data: bytes):
    """`net` predicts finite outputs (unless its weights are huge: a header's
    byte order flipped over the same data), and saving it writes what the
    file `data` holds (as numpy reads it)."""
    assert isinstance(net, bp.Sequential), repr(net)
    hypothesis.event("loaded")
    X = np.random.default_rng(1).uniform(-1, 1, (5, net.n_inputs))
    try:
        assert np.isfinite(net.predict_proba(X)).all()
    except ValueError as exc:
        assert "outputs overflow" in str(exc), exc
        assert np.abs(net.params).max() > 1e6 or exp_overflows(net, X), exc
    again = io.state_of(net)
    with np.load(_io.BytesIO(data)) as f:
        assert sorted(f.files) == sorted(again)
        meta, saved = json.loads(str(f["meta"])), json.loads(str(again["meta"]))
        for path, default in OPTIONAL_FIELDS.items():  # older files leave them out
            try:
                parent, given = at(saved, path[:-1]), at(meta, path[:-1])
            except (KeyError, TypeError):
                continue
            if path[-1] not in given and parent.get(path[-1]) == default:
                del parent[path[-1]]
        assert meta == saved
        for name in f.files:
            if name != "meta":
                np.testing.assert_array_equal(again[name], f[name])


@given(net=networks(), data=st.data())
def test_a_hand_made_file_loads_whole_or_is_refused_by_name(net, data):
    """One or two edits of a saved file (metadata, values, headers, members,
    archive entries): it loads whole or is refused naming what was edited."""
    file = File(net)
    names = ()
    for _ in range(data.draw(st.integers(1, 2))):
        names += data.draw(edits(file))
    content = file.bytes()
    result, peak = peak_of_load(content)
    assert peak < 50 * MB
    if isinstance(result, Exception):
        expect_refusal(result, names)
    else:
        expect_a_working_network(result, content)


@given(net=networks())
def test_an_unedited_file_loads_whole(net):
    data = File(net).bytes()
    result, _ = peak_of_load(data)
    assert isinstance(result, bp.Sequential), repr(result)
    np.testing.assert_array_equal(result.params, net.params)
    expect_a_working_network(result, data)


@given(
    net=networks(),
    shape=st.lists(st.integers(0, 2**62), max_size=3).map(tuple),
    descr=st.sampled_from(DESCRS),
    fortran=st.booleans(),
    fit=st.booleans(),
)
def test_a_params_header_loads_only_when_it_matches_the_metadata(net, shape, descr, fortran, fit):
    """Any params header, its data made to fit where that is small: the file
    loads exactly when the header gives the metadata's weight count and
    dtype (in either byte order)."""
    file = File(net)
    header, payload, _ = file.members["params.npy"]
    n, dtype = len(net.params), net.dtype
    shape = (n,) if fit and len(shape) == 1 else shape
    descr = (">" if descr[0] == ">" else "<") + dtype.str[1:] if fit else descr
    if math.prod(shape) * np.dtype(descr).itemsize <= 1 << 16:
        payload = (
            np.frombuffer(payload, header["descr"]).astype(descr).tobytes()
            if shape == (n,) and np.dtype(descr).kind in "fiub"
            else bytes(math.prod(shape) * np.dtype(descr).itemsize)
        )
    file.members["params.npy"] = [
        {"descr": descr, "fortran_order": fortran, "shape": shape},
        payload,
        (1, 0),
    ]
    data = file.bytes()
    result, peak = peak_of_load(data)
    assert peak < 50 * MB
    matches = shape == (n,) and np.dtype(descr).newbyteorder("=") == dtype.newbyteorder("=")
    if matches:
        expect_a_working_network(result, data)
    else:
        expect_refusal(result, ("params",))
