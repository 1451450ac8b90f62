"""Hand-made model files whose members and headers disagree with their
metadata: `backprop.load` refuses them with a ValueError naming the member
or field at fault, before it reads (or allocates for) any array data.
"""
import io as _io
import json
import struct
import tracemalloc
import zipfile
import zlib

import numpy as np

import backprop as bp
from backprop import io

MB = 1 << 20


# -- writing archives by hand ----------------------------------------------------
def npy(header: dict, payload: bytes, version=(1, 0)) -> bytes:
    """An .npy file: `header` ({'descr', 'fortran_order', 'shape'}) in the
    given format version, then `payload` whatever the header says."""
    fp = _io.BytesIO()
    write = np.lib.format.write_array_header_1_0 if version == (1, 0) else \
        np.lib.format.write_array_header_2_0
    write(fp, header)
    data = fp.getvalue()
    return data[:6] + bytes(version) + data[8:] + payload


def header_of(arr: np.ndarray) -> dict:
    return {"descr": np.lib.format.dtype_to_descr(arr.dtype), "fortran_order": False,
            "shape": arr.shape}


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
    copy = [1, 1, 0, 0, 0, 1, 0, 1] + [0] * 5          # length 258 (code 285), distance 1
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
        central += struct.pack("<IHHHHHHIIIHHHHHII", 0x02014B50, 20, 20, 0, *fields, 0, 0, 0,
                               0, len(out)) + name
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
        except Exception as exc:
            result = exc
        return result, tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def small_net(optimizer=None):
    net = bp.Sequential(bp.Dense(3, 4, activation="tanh"), bp.Dense(4, 2, activation="softmax"),
                        loss="cross_entropy", dtype="float32", seed=0)
    net.optimizer = optimizer or bp.Adam(1e-3)
    return net


# -- regressions: structure before data --------------------------------------------
def test_a_header_claiming_a_huge_array_is_refused_before_its_data_is_read():
    """An 11 MB file whose params header claims 1 GiB, which its data would
    decompress to (padded to stay within 100-fold; the CRC is left wrong,
    as zipfile checks it only once all the data is read)."""
    members = members_of(small_net(bp.SGD(0.1)))           # meta and params only
    head = npy({"descr": "<f4", "fortran_order": False, "shape": (1 << 28,)}, b"")
    stream = zeros_bomb(head, 1 << 30)
    bomb = [member("meta.npy", npy(*members["meta"])),
            ("params.npy", stream + bytes(11 * MB - len(stream)), zipfile.ZIP_DEFLATED,
             len(head) + (1 << 30), 0)]
    result, peak = peak_of_load(archive(bomb))
    assert isinstance(result, ValueError), result
    assert "params: shape (268435456,) does not fit the 26 weights" in str(result)
    assert peak < 100 * MB


def test_a_small_header_over_a_huge_compressed_payload_is_refused():
    """The params header fits the metadata, but 2 GiB of zeros follow it."""
    members = members_of(small_net(bp.SGD(0.1)))
    head = npy(*members["params"])
    bomb = [member("meta.npy", npy(*members["meta"])),
            ("params.npy", zeros_bomb(head, 1 << 31), zipfile.ZIP_DEFLATED,
             len(head) + (1 << 31), 0)]
    result, peak = peak_of_load(archive(bomb))
    assert isinstance(result, ValueError), result
    assert "params: declares" in str(result) and "more than 100-fold" in str(result)
    assert peak < 100 * MB


def test_a_metadata_member_over_4_mib_is_refused_unread():
    net = small_net(bp.SGD(0.1))
    text = np.array(str(io.state_of(net)["meta"]) + " " * (2 * MB))      # 4 bytes a character
    file = [member("meta.npy", npy(header_of(text), text.tobytes()), zipfile.ZIP_DEFLATED),
            member("params.npy", npy(*members_of(net)["params"]))]
    result, peak = peak_of_load(archive(file))
    assert isinstance(result, ValueError), result
    assert "meta: more than 4194304 bytes" in str(result) and peak < 5 * MB


def test_a_member_claiming_more_than_the_file_holds_is_refused_unread():
    """A stored member whose archive entry claims 2 GiB, in a file of 2 kB
    whose metadata and header agree with that."""
    meta = json.loads(str(io.state_of(bp.Sequential(bp.Dense(1, 1), dtype="float32"))["meta"]))
    meta["layers"][0]["n_out"] = 1 << 28                                # 2²⁹ weights
    text = np.array(json.dumps(meta))
    head = npy({"descr": "<f4", "fortran_order": False, "shape": (1 << 29,)}, b"")
    size = len(head) + (1 << 31)
    file = [member("meta.npy", npy(header_of(text), text.tobytes())),
            ("params.npy", head + bytes(1000), zipfile.ZIP_STORED, size, 0, size)]
    result, peak = peak_of_load(archive(file))
    assert isinstance(result, ValueError), result
    assert f"params: claims {size} bytes in a file of" in str(result) and peak < 5 * MB


def test_the_bombs_are_what_they_claim():
    head = b"header\n"
    for zeros in (259, 2064 + 259, 5000, 123457):
        out = zlib.decompressobj(-15)
        assert out.decompress(zeros_bomb(head, zeros)) == head + bytes(zeros) and out.eof
