"""The authors' released MetaPerturb phi (a legacy PyTorch file) as our phi, without PyTorch; phi files.

    python phi_io.py perturb_750.pth phi.npz      # then: transfer.py --phase tgt --phi_from phi.npz

PyTorch's legacy (non-zip, before 1.6) `torch.save` format is a run of pickles on one stream: a magic
number, the protocol version (1001), a dict of system information, the object itself (here a
state dict, an OrderedDict of tensors) whose tensors refer to storages through persistent ids
('storage', storage type, key, location, size, view), the list of storage keys in the order their
data follow, and then each storage as a little-endian int64 element count and its raw bytes.

The file is data: each pickle is first scanned (pickletools) and refused if it holds an opcode
outside the few that plain values and a state dict need, then unpickled with only the globals its
position may hold (the state dict: OrderedDict, the tensor rebuild functions and the storage types,
which here only record values; the other four: none). Every count, offset, shape and stride is
checked against the bytes the file holds before it is used.
"""

from __future__ import annotations

import collections
import io
import math
import os
import pickle
import pickletools
import reprlib
import struct
import sys
import zipfile
from typing import IO, Any, NamedTuple

import numpy as np

MAGIC = 0x1950A86A20F9469CFC6C
PROTOCOL = 1001
STORAGES = {  # torch.<name> -> element dtype (little-endian)
    "FloatStorage": np.dtype("<f4"),
    "DoubleStorage": np.dtype("<f8"),
    "HalfStorage": np.dtype("<f2"),
    "LongStorage": np.dtype("<i8"),
    "IntStorage": np.dtype("<i4"),
}
# the released checkpoint's tensors (PyTorch layout; spec 1.2: 82 values) and our names for them
SHAPES = {
    "kernel": (4, 1, 3, 3),
    "phi_1.w_identity": (1, 1, 3, 3),
    "phi_1.w_all": (1, 1, 3, 3),
    "phi_2.w_identity": (1, 1, 3, 3),
    "phi_2.w_all": (1, 1, 3, 3),
    "fc.weight": (1, 10),
}
NAMES = {
    "phi_1.w_identity": "k1_id",
    "phi_1.w_all": "k1_all",
    "phi_2.w_identity": "k2_id",
    "phi_2.w_all": "k2_all",
    "kernel": "K",
    "fc.weight": "w",
}
MAX_BYTES = 1 << 20  # the released file is 1490 bytes
MAX_DIMS = 8
MAX_MEMO = 1 << 16  # memo indices: CPython's unpickler allocates a table up to the largest
# the opcodes that ints, strings, tuples, lists, dicts, globals, calls and persistent ids need
OPCODES = frozenset(
    "PROTO FRAME STOP MARK NONE NEWTRUE NEWFALSE BININT BININT1 BININT2 LONG1 BINUNICODE "
    "SHORT_BINUNICODE EMPTY_TUPLE TUPLE TUPLE1 TUPLE2 TUPLE3 EMPTY_LIST APPEND APPENDS EMPTY_DICT "
    "SETITEM SETITEMS MEMOIZE BINPUT LONG_BINPUT BINGET LONG_BINGET GLOBAL STACK_GLOBAL REDUCE "
    "BUILD BINPERSID".split()
)
MEMO_OPS = frozenset({"BINPUT", "LONG_BINPUT", "BINGET", "LONG_BINGET"})


class Storage(NamedTuple):  # a tuple: a pickle's BUILD cannot change it
    key: str
    kind: str
    size: int


class TensorRef(NamedTuple):
    storage: Storage
    offset: int
    shape: tuple[int, ...]
    stride: tuple[int, ...]


class _Rebuild:
    """torch._utils._rebuild_tensor(_v2)(storage, offset, shape, stride, ...): records its arguments."""

    __slots__ = ()

    def __call__(self, storage: Any, offset: Any, shape: Any, stride: Any, *_: Any) -> TensorRef:
        return TensorRef(storage, offset, shape, stride)


STATE_GLOBALS: dict[tuple[str, str], Any] = {
    ("collections", "OrderedDict"): collections.OrderedDict,
    ("torch._utils", "_rebuild_tensor"): _Rebuild(),
    ("torch._utils", "_rebuild_tensor_v2"): _Rebuild(),
    **{("torch", name): name for name in STORAGES},
}


class _Unpickler(pickle.Unpickler):
    """One pickle of the file, admitting only the globals in `admits` and, if `storages` is given,
    storages as persistent ids (recorded there by key)."""

    def __init__(self, f: IO[bytes], admits: dict, storages: dict[str, Storage] | None, limit: int) -> None:
        super().__init__(f)
        self.admits, self.storages, self.limit = admits, storages, limit

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) not in self.admits:
            raise pickle.UnpicklingError(f"global {module}.{name} is not allowed")
        return self.admits[(module, name)]

    def persistent_load(self, pid: Any) -> Storage:
        if self.storages is None:
            raise pickle.UnpicklingError("a persistent id is not allowed")
        if not (type(pid) is tuple and len(pid) == 6 and pid[0] == "storage" and pid[5] is None):
            raise pickle.UnpicklingError(f"unsupported persistent id {reprlib.repr(pid)}")
        _, kind, key, _location, size, _view = pid
        if kind not in STORAGES or type(key) is not str or type(size) is not int or size < 0:
            raise pickle.UnpicklingError(f"unsupported persistent id {reprlib.repr(pid)}")
        if size * STORAGES[kind].itemsize > self.limit:
            raise pickle.UnpicklingError(f"storage {key} of {size} elements is larger than the file")
        storage = self.storages.setdefault(key, Storage(key, kind, size))
        if storage != (key, kind, size):
            raise pickle.UnpicklingError(f"storage {key} is given as both {storage[1:]} and {(kind, size)}")
        return storage


def _load(f: io.BytesIO, what: str, admits: dict | None = None, storages: dict | None = None) -> Any:
    """The next pickle of f, its opcodes scanned before anything is built. ValueError if refused."""
    start = f.tell()
    try:
        for op, arg, _ in pickletools.genops(f):
            if op.name not in OPCODES or (op.name == "PROTO" and not 2 <= arg <= 5):
                raise ValueError(f"opcode {op.name} is not allowed")
            if op.name in MEMO_OPS and arg >= MAX_MEMO:
                raise ValueError(f"memo index {arg} is out of range")
        f.seek(start)
        return _Unpickler(f, admits or {}, storages, f.getbuffer().nbytes).load()
    except Exception as e:  # whatever a malformed pickle raises: nothing in it has run
        raise ValueError(f"in the {what}: {e}") from None


def _plain(value: Any, depth: int) -> bool:
    """Whether value is a str/int/bool, or (depth > 0) a dict of str to _plain(., depth - 1) values."""
    if type(value) in (str, int, bool):
        return True
    return (
        depth > 0
        and type(value) is dict
        and all(type(k) is str and _plain(v, depth - 1) for k, v in value.items())
    )


def _array(name: str, t: Any, data: dict[str, np.ndarray]) -> np.ndarray:
    """The values of tensor `name`, its offset, shape and stride checked against its storage."""
    if type(t) is not TensorRef or type(t.storage) is not Storage:
        raise ValueError(f"{name} is not a tensor")
    shape, stride = t.shape, t.stride
    if not (
        type(shape) is type(stride) is tuple
        and len(shape) == len(stride) <= MAX_DIMS
        and all(type(i) is int and 0 <= i < 2**31 for i in (t.offset, *shape, *stride))
    ):
        raise ValueError(f"{name} has (offset, shape, stride) {reprlib.repr((t.offset, shape, stride))}")
    size, numel = t.storage.size, math.prod(shape)
    last = t.offset + sum((n - 1) * s for n, s in zip(shape, stride))  # index of the last element
    if t.offset > size or numel > size or max(shape, default=0) > size or (numel and last >= size):
        raise ValueError(
            f"{name} (offset {t.offset}, shape {list(shape)}, stride {list(stride)}) reaches past "
            f"its storage of {size} elements"
        )
    index = np.asarray(t.offset, np.int64)
    for n, s in zip(shape, stride):  # element (i, j, ..) is at offset + i * stride_0 + j * stride_1 ..
        index = index[..., None] + np.arange(n, dtype=np.int64) * s
    return data[t.storage.key][index]


def read_legacy(path: str) -> dict[str, np.ndarray]:
    """The tensors of a legacy (non-zip) torch.save file of a state dict, by name (PyTorch layout).
    ValueError naming the file if it is not one (nothing in it is imported or run)."""
    if os.path.getsize(path) > MAX_BYTES:
        raise ValueError(f"{path} is larger than {MAX_BYTES} bytes: not a MetaPerturb phi")
    with open(path, "rb") as f:
        raw = f.read(MAX_BYTES + 1)
    if raw.startswith(b"PK\x03\x04"):
        raise ValueError(
            f"{path} is a zip-format PyTorch file (torch >= 1.6), which is not read here: re-save it in "
            "the legacy format with PyTorch: load it with weights_only=True, then "
            "torch.save(state_dict, new_path, _use_new_zipfile_serialization=False)"
        )
    try:
        return parse_legacy(raw)
    except ValueError as e:
        raise ValueError(f"{path} is not a legacy PyTorch state dict ({e})") from None


def parse_legacy(raw: bytes) -> dict[str, np.ndarray]:
    """read_legacy of the file's bytes; ValueError saying what is wrong."""
    f = io.BytesIO(raw)
    magic = _load(f, "magic number")
    if type(magic) is not int or magic != MAGIC:
        raise ValueError("wrong magic number")
    if not (type(p := _load(f, "protocol version")) is int and p == PROTOCOL):
        raise ValueError(f"protocol version {reprlib.repr(p)}, not {PROTOCOL}")
    info = _load(f, "system information")
    if not (type(info) is dict and _plain(info, 2) and info.get("little_endian") is True):
        raise ValueError(f"system information {reprlib.repr(info)}: not a little-endian file's")
    storages: dict[str, Storage] = {}
    state = _load(f, "state dict", STATE_GLOBALS, storages)
    if type(state) not in (dict, collections.OrderedDict) or not all(type(k) is str for k in state):
        raise ValueError(f"it holds a {type(state).__name__}, not a state dict (names to tensors)")
    keys = _load(f, "storage keys")
    if not (type(keys) is list and all(type(k) is str for k in keys) and sorted(keys) == sorted(storages)):
        raise ValueError(f"storage keys {reprlib.repr(keys)} are not those of its tensors")
    data = {}
    for key in keys:
        dtype, size = STORAGES[storages[key].kind], storages[key].size
        header = f.read(8)
        if len(header) < 8 or struct.unpack("<q", header)[0] != size:
            raise ValueError(f"storage {key} does not start with its size {size}")
        buffer = f.read(size * dtype.itemsize)
        if len(buffer) < size * dtype.itemsize:
            raise ValueError(f"storage {key} is truncated")
        data[key] = np.frombuffer(buffer, dtype)
    if f.read(1):
        raise ValueError("bytes follow the last storage")
    return {name: _array(reprlib.repr(name), t, data) for name, t in dict.items(state)}


def finite(path: str, phi: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """phi, or ValueError naming the file and the arrays that hold NaN or infinite values."""
    bad = [k for k, v in phi.items() if not np.isfinite(v).all()]
    if bad:
        raise ValueError(f"{path}: phi {', '.join(bad)} holds NaN or infinite values; give a finite phi")
    return phi


def from_torch(path: str) -> dict[str, np.ndarray]:
    """Our phi (noise.MetaPerturb.init_phi's names and TensorFlow layout) from the released file:
    conv kernels [out, in, 3, 3] -> [3, 3, in, out]; fc.weight [1, 10] -> w [10]. ValueError naming
    the file and the tensor if it is not the released layout (SHAPES) of finite values."""
    tensors = read_legacy(path)
    missing, extra = sorted(set(SHAPES) - set(tensors)), sorted(set(tensors) - set(SHAPES))
    if missing or extra:
        which = (f"lacks {', '.join(missing)}" if missing else "") + (" and " if missing and extra else "")
        which += f"holds {', '.join(extra)} besides" if extra else ""
        raise ValueError(f"{path} {which}: not a MetaPerturb perturbation ({len(SHAPES)} tensors)")
    for name, shape in SHAPES.items():
        if tensors[name].shape != shape:
            raise ValueError(f"{path}: {name} has shape {list(tensors[name].shape)}, not {list(shape)}")
    phi = {}
    for name, ours in NAMES.items():
        t = tensors[name].astype(np.float32)
        phi[ours] = t.reshape(-1) if ours == "w" else t.transpose(2, 3, 1, 0)
    return finite(path, phi)


def read_npz(path: str, expected: dict[str, list[int]]) -> dict[str, np.ndarray]:
    """phi from our .npz (write_phi): each array's name, shape and dtype are read from its header and
    checked against `expected` before its data; no pickles (allow_pickle=False); finite values.
    ValueError naming the file otherwise."""
    try:
        with zipfile.ZipFile(path) as z:
            shapes = {}
            for member in z.namelist():
                with z.open(member) as f:
                    version = np.lib.format.read_magic(f)
                    header = np.lib.format.read_array_header_2_0 if version == (2, 0) else None
                    shape, _, dtype = (header or np.lib.format.read_array_header_1_0)(f)
                shapes[member.removesuffix(".npy")] = list(shape) if dtype.kind == "f" else str(dtype)
    except Exception as e:  # whatever a malformed zip or header raises: nothing in it has run
        raise ValueError(f"{path} is not an .npz of arrays ({e})") from None
    if shapes != expected:
        raise ValueError(f"{path} holds {shapes}, not this perturbation's phi {expected}")
    with np.load(path, allow_pickle=False) as f:
        return finite(path, {k: f[k] for k in f.files})


def write_phi(path: str, phi: dict[str, np.ndarray]) -> None:
    """phi as an .npz of its named arrays, written whole or not at all."""
    from data.files import atomic

    with atomic(path) as tmp, open(tmp, "wb") as f:
        np.savez(f, **phi)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) != 2:
        print("usage: python phi_io.py PERTURB.pth OUT.npz", file=sys.stderr)
        return 2
    from data.files import resource

    if not os.path.isfile(argv[0]):
        print(
            f"error: no file {argv[0]}: the authors' phi is checkpoints/src/tiny_imagenet_resnet20_final/"
            "perturb_750.pth of github.com/JWoong148/MetaPerturb (docs/metaperturb.md)",
            file=sys.stderr,
        )
        return 2
    if os.path.isdir(argv[1]):
        print(f"error: {argv[1]} is a folder: give the .npz file to write", file=sys.stderr)
        return 2
    try:
        phi = from_torch(argv[0])
        write_phi(argv[1], phi)
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except OSError as e:
        print(f"error: cannot convert {argv[0]} to {argv[1]}: {resource(e)}", file=sys.stderr)
        return 2
    print(f"wrote {argv[1]}: " + ", ".join(f"{k} {list(v.shape)}" for k, v in phi.items()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
