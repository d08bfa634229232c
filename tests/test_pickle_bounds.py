"""Dataset pickles (data.files.ArraysOnly): what numpy, pickle and Python 2 write loads as it was saved;
a hostile pickle is refused with one line, quickly and without allocating more than its bytes allow
(measured with tracemalloc in a child process, which also survives a crash of the old unpickler)."""

from __future__ import annotations

import collections
import io
import json
import os
import pickle
import struct
import subprocess
import sys

import numpy as np
import pytest

import data
from data.files import ArraysOnly
from tests.standin import py2_pickle, tar_gz

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MB = 1 << 20
BIG = 1 << 27  # elements or bytes a hostile pickle asks for: 128 MiB and more


def saved() -> dict:
    """Arrays and values of every kind a dataset pickle holds (numbers only; no empty arrays)."""
    rng = np.random.default_rng(0)
    return {
        "image_data": rng.integers(0, 256, (3, 4, 5), dtype=np.uint8),
        "big_endian": np.arange(6, dtype=">f4").reshape(2, 3),
        "fortran": np.asfortranarray(rng.standard_normal((3, 2))),
        "bools": np.array([True, False]),
        "complex": np.array([1 + 2j], np.complex128),
        "zero_dim": np.array(7, np.int64),
        "scalar": np.float32(2.5),
        "labels": [1, 2, 3],
        "class_dict": collections.OrderedDict([("n01", [0, 2]), ("n02", [1])]),
    }


def same(got: object, want: object) -> None:
    if isinstance(want, np.ndarray | np.generic):
        assert isinstance(got, np.ndarray) if isinstance(want, np.ndarray) else type(got) is type(want)
        assert got.dtype == want.dtype and got.shape == want.shape
        np.testing.assert_array_equal(got, want)
    elif isinstance(want, dict):
        assert isinstance(got, type(want)) and list(got) == list(want)
        for k in want:
            same(got[k], want[k])
    else:
        assert got == want


@pytest.mark.parametrize("protocol", range(6))
def test_what_numpy_writes_loads_as_pickle_loads_it(protocol):
    body = pickle.dumps(saved(), protocol=protocol)
    want = pickle.loads(body)  # our own bytes: the unrestricted loader is the reference
    for encoding in ("latin1", "bytes"):
        same(ArraysOnly(io.BytesIO(body), encoding=encoding).load(), want)


def test_python2_pickles_load_as_saved(tmp_path):
    # Python 2's cPickle (CIFAR batches, the miniImageNet caches): 8-bit strings, read as bytes or latin1
    body = py2_pickle({k: v for k, v in saved().items() if k != "class_dict"})
    want = pickle.loads(body, encoding="latin1")
    (tmp_path / "batch").write_bytes(body)
    with open(tmp_path / "batch", "rb") as f:  # a file, as data/mimgnet.py reads it
        same(ArraysOnly(f, encoding="latin1").load(), want)
    got = ArraysOnly(io.BytesIO(body), encoding="bytes").load()
    same({k.decode(): v for k, v in got.items()}, want)


# ---------------------------------------------------------------- hostile pickles, opcode by opcode


def glob(module: str, name: str) -> bytes:
    return b"c" + module.encode() + b"\n" + name.encode() + b"\n"


def text(s: str) -> bytes:
    return b"X" + struct.pack("<I", len(s)) + s.encode()


def num(n: int) -> bytes:
    return b"J" + struct.pack("<i", n)


def call(fn: bytes, *args: bytes) -> bytes:
    return fn + b"(" + b"".join(args) + b"tR"


def tup(*items: bytes) -> bytes:
    return b"(" + b"".join(items) + b"t"


RECONSTRUCT = glob("numpy.core.multiarray", "_reconstruct")
NDARRAY = glob("numpy", "ndarray")


def dtype(spec: str, order: str = "|") -> bytes:
    """numpy.dtype(spec, False, True) and BUILD with the state numpy writes, in this byte order."""
    state = tup(num(3), text(order), b"NNN", num(-1), num(-1), num(0))
    return call(glob("numpy", "dtype"), text(spec), b"\x89\x88") + state + b"b"


def array(shape: tuple[int, ...], dt: bytes, raw: bytes) -> bytes:
    """numpy's reduce: _reconstruct(ndarray, (0,), b"b"), then BUILD (1, shape, dt, False, raw)."""
    empty = call(RECONSTRUCT, NDARRAY, tup(num(0)), text("b"))
    return empty + tup(num(1), tup(*map(num, shape)), dt, b"\x89", raw) + b"b"


def od_build(n: int, copies: int) -> bytes:
    """A dict of n entries, memoized, then BUILD of it into `copies` new OrderedDicts."""
    state = b"}(" + b"".join(num(k) + b"K\x00" for k in range(n)) + b"u"
    new = call(glob("collections", "OrderedDict")) + b"h\x00b"
    return b"\x80\x02" + state + b"q\x000(" + new * copies + b"l."


OBJECTS = call(glob("numpy", "dtype"), text("O8"), b"\x89\x88")  # no BUILD: its flags ask for a list


HOSTILE = {
    # a shape numpy's _reconstruct allocated at once (128 MiB from 69 bytes)
    "reconstruct_shape": (
        b"\x80\x02" + call(RECONSTRUCT, NDARRAY, tup(num(BIG)), text("b")) + b".",
        "_reconstruct of shape (134217728,), not an empty array",
    ),
    # numpy.ndarray is only an argument: called, it allocated 1 GiB
    "ndarray_called": (b"\x80\x02" + call(NDARRAY, tup(num(BIG))) + b".", "it calls numpy.ndarray"),
    # an itemsize of 128 MiB in _reconstruct's type code
    "huge_itemsize": (
        b"\x80\x02" + call(RECONSTRUCT, NDARRAY, tup(num(1)), text(f"V{BIG}")) + b".",
        "_reconstruct of 'V134217728', not of numpy.ndarray and b",
    ),
    "huge_itemsize_dtype": (
        b"\x80\x02" + dtype(f"V{BIG}") + b".",
        "dtype 'V134217728', which is not a number",
    ),
    "dtype_state": (
        b"\x80\x02"
        + call(glob("numpy", "dtype"), text("u1"), b"\x89\x88")
        + tup(num(3), text("|"), b"NNN", num(BIG), num(-1), num(0))
        + b"b.",
        "dtype uint8 has state (3, '|', None, None, None, 134217728, ...)",
    ),
    # an object array of 2^24 elements whose state holds an empty list: the old code crashed (SIGSEGV)
    "object_array": (b"\x80\x02" + array((1 << 24,), OBJECTS, b"]") + b".", "dtype 'O8', which is not"),
    # a shape that data of 3 bytes cannot fill
    "lying_state": (
        b"\x80\x02" + array((BIG,), dtype("u1"), b"C\x03abc") + b".",
        "an array of shape (134217728,) and uint8 has 3 bytes of data, not 134217728",
    ),
    # one memoized MiB of data given to 200 byte-swapped arrays: each was a copy (200 MiB)
    "shared_data": (
        b"\x80\x02B"
        + struct.pack("<I", MB)
        + bytes(MB)
        + b"q\x000"
        + dtype("f4", ">")
        + b"q\x010("
        + array((MB // 4,), b"h\x01", b"h\x00") * 200
        + b"l.",
        "an array of 1048576 bytes: more than its file's bytes hold",
    ),
    # CPython's unpickler sized its memo table by the largest index (512 MiB for this one)
    "memo_index": (b"\x80\x02Nr" + struct.pack("<I", 1 << 25) + b".", "memo index 33554432 after 0 stored"),
    "memo_get": (
        b"\x80\x02Nq\x00j" + struct.pack("<I", 1 << 25) + b".",
        "memo index 33554432 after 1 stored",
    ),
    # lengths that the old unpickler allocated before it read (1 GiB each)
    "bytes_length": (b"\x80\x04\x8e" + struct.pack("<Q", 1 << 30) + b"abc.", "expected 1073741824 bytes"),
    "frame_length": (b"\x80\x04\x95" + struct.pack("<Q", 1 << 30) + b"N.", "a frame of 1073741824 bytes"),
    # a state copied into each new OrderedDict by BUILD (100 MiB from 140 kB)
    "ordered_dict_build": (od_build(20000, 100), "BUILD on an OrderedDict"),
    "build_on_global": (b"\x80\x02" + RECONSTRUCT + b"}b.", "BUILD on a global"),
    "encode_codec": (
        b"\x80\x02" + call(glob("_codecs", "encode"), text("x"), text("zlib")) + b".",
        "_codecs.encode to 'zlib', not latin1",
    ),
    "newobj": (b"\x80\x02" + NDARRAY + tup(num(BIG)) + b"\x81.", "opcode NEWOBJ"),
}

LOAD = """
import json, sys, time, tracemalloc
from data.files import ArraysOnly
tracemalloc.start()
start = time.perf_counter()
try:
    with open(sys.argv[1], "rb") as f:
        ArraysOnly(f, encoding="latin1").load()
    error = None
except Exception as e:
    error = f"{type(e).__name__}: {e}"
peak = tracemalloc.get_traced_memory()[1]
print(json.dumps({"error": error, "peak": peak, "s": time.perf_counter() - start}))
"""


@pytest.mark.parametrize("case", HOSTILE)
def test_hostile_pickle_is_refused_without_allocating(case, tmp_path):
    body, says = HOSTILE[case]
    path = tmp_path / "hostile.pkl"
    path.write_bytes(body)
    run = subprocess.run(
        [sys.executable, "-c", LOAD, str(path)], cwd=ROOT, capture_output=True, text=True, timeout=120
    )
    assert run.returncode == 0, run.stderr  # not killed (the old code's object array: SIGSEGV)
    got = json.loads(run.stdout)
    assert got["error"] is not None and got["error"].startswith("UnpicklingError: "), got
    assert says in got["error"] and "\n" not in got["error"]
    # Python objects of a pickle take a few times its bytes; the old code took 128 MiB to 1 GiB
    assert got["peak"] < 40 * len(body) + 4 * MB, f"{got['peak'] / MB:.0f} MiB"
    assert got["s"] < 10  # measured: well under a second each, on a busy machine


# ---------------------------------------------------------------- through the datasets' readers


def test_hostile_mimgnet_cache_is_one_line_and_deleted(tmp_path):
    from data import mimgnet

    pkl = tmp_path / "mini-imagenet-cache-test.pkl"
    pkl.write_bytes(HOSTILE["reconstruct_shape"][0])
    with pytest.raises(data.DataError) as e:
        mimgnet._convert(str(pkl), "test", str(tmp_path / "test.npy"), "python get_data.py --dataset mimgnet")
    assert "is not a miniImageNet cache (UnpicklingError: _reconstruct of shape (134217728,)" in str(e.value)
    assert "\n" not in str(e.value) and not pkl.exists() and not (tmp_path / "test.npy").exists()


def test_hostile_cifar_batch_is_one_line(tmp_path):
    from data import cifar100

    path = tmp_path / "cifar-100-python.tar.gz"
    path.write_bytes(tar_gz({"cifar-100-python/train": HOSTILE["memo_index"][0]}))
    with pytest.raises(data.DataError) as e:
        cifar100.read_archive(str(path), "python get_data.py --dataset cifar")
    assert "train is not a CIFAR-100 pickle (memo index 33554432 after 0 stored values)" in str(e.value)
    assert "\n" not in str(e.value)
