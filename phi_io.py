"""The authors' released MetaPerturb phi (a legacy PyTorch file) as our phi, without PyTorch.

    python phi_io.py perturb_750.pth phi.npz      # then: transfer.py --phase tgt --phi_from phi.npz

PyTorch's legacy (non-zip, before 1.6) `torch.save` format is a run of pickles on one stream: a magic
number, the protocol version (1001), a dict of system information, the object itself (here a
state dict, an OrderedDict of tensors) whose tensors refer to storages through persistent ids
('storage', storage type, key, location, size, view), the list of storage keys in the order their
data follow, and then each storage as a little-endian int64 element count and its raw bytes. Only
the classes a state dict needs are accepted; anything else is refused (no code runs).
"""

from __future__ import annotations

import collections
import os
import pickle
import struct
import sys
from dataclasses import dataclass
from typing import IO, Any

import numpy as np

MAGIC = 0x1950A86A20F9469CFC6C
PROTOCOL = 1001
STORAGES = {  # torch.<name> -> element dtype
    "FloatStorage": np.float32,
    "DoubleStorage": np.float64,
    "HalfStorage": np.float16,
    "LongStorage": np.int64,
    "IntStorage": np.int32,
}
# the released checkpoint's names and shapes (PyTorch layout) -> ours, and the axes that take one to the other
NAMES = {
    "phi_1.w_identity": "k1_id",
    "phi_1.w_all": "k1_all",
    "phi_2.w_identity": "k2_id",
    "phi_2.w_all": "k2_all",
    "kernel": "K",
    "fc.weight": "w",
}


@dataclass
class Storage:
    key: str
    dtype: type
    size: int
    data: np.ndarray | None = None


@dataclass
class TensorRef:
    storage: Storage
    offset: int
    shape: tuple[int, ...]
    stride: tuple[int, ...]

    def array(self) -> np.ndarray:
        data = self.storage.data
        assert data is not None
        item = data.itemsize
        view = np.lib.stride_tricks.as_strided(
            data[self.offset :], self.shape, tuple(s * item for s in self.stride), writeable=False
        )
        return np.array(view)


def _rebuild(storage: Storage, offset: int, shape: tuple, stride: tuple, *_: Any) -> TensorRef:
    return TensorRef(storage, offset, tuple(shape), tuple(stride))


class _Unpickler(pickle.Unpickler):
    def __init__(self, f: IO[bytes], storages: dict[str, Storage]) -> None:
        super().__init__(f)
        self.storages = storages

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) == ("collections", "OrderedDict"):
            return collections.OrderedDict
        if (module, name) in (("torch._utils", "_rebuild_tensor_v2"), ("torch._utils", "_rebuild_tensor")):
            return _rebuild
        if module == "torch" and name in STORAGES:
            return STORAGES[name]
        raise pickle.UnpicklingError(f"{module}.{name} is not part of a state dict of tensors")

    def persistent_load(self, pid: Any) -> Storage:
        kind, dtype, key, _location, size, view = pid
        if kind != "storage" or view is not None:
            raise pickle.UnpicklingError(f"unsupported persistent id {pid!r}")
        return self.storages.setdefault(key, Storage(key, dtype, int(size)))


def read_legacy(path: str) -> dict[str, np.ndarray]:
    """The tensors of a legacy (non-zip) torch.save file of a state dict, by name (PyTorch layout).
    ValueError if the file is not one."""
    storages: dict[str, Storage] = {}
    with open(path, "rb") as f:
        try:
            if pickle.load(f) != MAGIC:
                raise ValueError(f"{path} is not a legacy PyTorch file (wrong magic number)")
            if pickle.load(f) != PROTOCOL:
                raise ValueError(f"{path}: unknown legacy PyTorch protocol version")
            pickle.load(f)  # system information (endianness, type sizes)
            state = _Unpickler(f, storages).load()
            keys = pickle.load(f)
        except (pickle.UnpicklingError, EOFError, TypeError, ValueError) as e:
            raise ValueError(f"{path} is not a legacy PyTorch state dict ({e})") from None
        for key in keys:
            s = storages[key]
            (n,) = struct.unpack("<q", f.read(8))
            raw = f.read(n * np.dtype(s.dtype).itemsize)
            if n != s.size or len(raw) != n * np.dtype(s.dtype).itemsize:
                raise ValueError(f"{path}: storage {key} is truncated")
            s.data = np.frombuffer(raw, dtype=np.dtype(s.dtype).newbyteorder("<"))
    if not isinstance(state, dict) or not all(isinstance(v, TensorRef) for v in state.values()):
        raise ValueError(f"{path} does not hold a state dict of tensors")
    return {k: v.array() for k, v in state.items()}


def from_torch(path: str) -> dict[str, np.ndarray]:
    """Our phi (noise.MetaPerturb.init_phi's names and TensorFlow layout) from the released file:
    conv kernels [out, in, 3, 3] -> [3, 3, in, out]; fc.weight [1, 10] -> w [10]."""
    tensors = read_legacy(path)
    missing = sorted(set(NAMES) - set(tensors))
    if missing:
        raise ValueError(f"{path} lacks {', '.join(missing)}: not a MetaPerturb perturbation")
    phi = {}
    for name, ours in NAMES.items():
        t = tensors[name].astype(np.float32)
        phi[ours] = t.reshape(-1) if ours == "w" else t.transpose(2, 3, 1, 0)
    return phi


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) != 2:
        print("usage: python phi_io.py PERTURB.pth OUT.npz", file=sys.stderr)
        return 2
    from transfer import write_phi

    if not os.path.isfile(argv[0]):
        print(
            f"error: no file {argv[0]}: the authors' phi is checkpoints/src/tiny_imagenet_resnet20_final/"
            "perturb_750.pth of github.com/JWoong148/MetaPerturb (docs/metaperturb.md)",
            file=sys.stderr,
        )
        return 2
    try:
        phi = from_torch(argv[0])
    except (OSError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    write_phi(argv[1], phi)
    print(f"wrote {argv[1]}: " + ", ".join(f"{k} {list(v.shape)}" for k, v in phi.items()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
