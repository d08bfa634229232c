"""phi_io.py: reading a legacy (non-zip) PyTorch state dict written here from the format's description."""

import collections
import pickle
import struct
import sys
import types

import numpy as np
import pytest

import phi_io
import transfer

TORCH_SHAPES = {
    "kernel": (4, 1, 3, 3),
    "phi_1.w_identity": (1, 1, 3, 3),
    "phi_1.w_all": (1, 1, 3, 3),
    "phi_2.w_identity": (1, 1, 3, 3),
    "phi_2.w_all": (1, 1, 3, 3),
    "fc.weight": (1, 10),
}


class Tensor:
    """A tensor as torch.save pickles it: _rebuild_tensor_v2(storage, offset, size, stride, ...)."""

    def __init__(self, key: str, array: np.ndarray, torch: types.ModuleType) -> None:
        self.key, self.array, self.torch = key, array, torch

    def __reduce__(self):
        strides = tuple(s // self.array.itemsize for s in self.array.strides)
        storage = ("storage", self.torch.FloatStorage, self.key, "cuda:0", self.array.size, None)
        return self.torch._utils._rebuild_tensor_v2, (
            PersistentStorage(storage),
            0,
            self.array.shape,
            strides,
            True,
            collections.OrderedDict(),
        )


class PersistentStorage:
    def __init__(self, pid):
        self.pid = pid


def fake_torch(monkeypatch) -> types.ModuleType:
    """Modules named torch and torch._utils, so that pickle writes the references torch.save writes."""
    torch = types.ModuleType("torch")
    utils = types.ModuleType("torch._utils")

    def _rebuild_tensor_v2(*args):
        raise AssertionError("never called")

    _rebuild_tensor_v2.__module__ = "torch._utils"
    _rebuild_tensor_v2.__qualname__ = "_rebuild_tensor_v2"
    utils._rebuild_tensor_v2 = _rebuild_tensor_v2
    torch.FloatStorage = type("FloatStorage", (), {"__module__": "torch"})
    torch._utils = utils
    monkeypatch.setitem(sys.modules, "torch", torch)
    monkeypatch.setitem(sys.modules, "torch._utils", utils)
    return torch


def write_legacy(path, tensors: dict[str, np.ndarray], torch, transposed: str | None = None) -> None:
    """The legacy layout: magic, protocol, system info, the pickled state dict with persistent
    storage ids, the storage keys, then per storage an int64 count and raw little-endian data.
    `transposed` stores that tensor as a non-contiguous view (a transpose of its storage)."""
    keys = [str(1000 + i) for i in range(len(tensors))]
    state = collections.OrderedDict()
    storages = []
    for key, (name, a) in zip(keys, tensors.items()):
        a = a.astype("<f4")
        if name == transposed:  # storage holds a.T contiguous; the tensor is its transpose view
            base = np.ascontiguousarray(a.T)
            state[name] = Tensor(key, base.T, torch)
            storages.append(base)
        else:
            state[name] = Tensor(key, np.ascontiguousarray(a), torch)
            storages.append(a)

    class Pickler(pickle.Pickler):
        def persistent_id(self, obj):
            return obj.pid if isinstance(obj, PersistentStorage) else None

    with open(path, "wb") as f:
        pickle.dump(phi_io.MAGIC, f, protocol=2)
        pickle.dump(phi_io.PROTOCOL, f, protocol=2)
        pickle.dump(
            {"protocol_version": 1001, "little_endian": True, "type_sizes": {"int": 4}}, f, protocol=2
        )
        Pickler(f, protocol=2).dump(state)
        pickle.dump(keys, f, protocol=2)
        for s in storages:
            f.write(struct.pack("<q", s.size))
            f.write(np.ascontiguousarray(s).tobytes())


def released_like(seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {k: rng.standard_normal(s).astype(np.float32) for k, s in TORCH_SHAPES.items()}


def test_reads_a_legacy_state_dict_and_maps_it_onto_our_phi(tmp_path, monkeypatch):
    torch = fake_torch(monkeypatch)
    tensors = released_like()
    tensors["fc.weight"] = np.array(
        [[0.316, 0.318, 0.316, -0.075, 0.102, 0.103, 0.105, -0.299, 0.144, 0.175]]
    )
    path = tmp_path / "perturb_750.pth"
    write_legacy(path, tensors, torch)
    monkeypatch.delitem(sys.modules, "torch")  # the reader needs no torch
    monkeypatch.delitem(sys.modules, "torch._utils")
    read = phi_io.read_legacy(str(path))
    assert list(read) == list(TORCH_SHAPES)
    for k, v in tensors.items():
        np.testing.assert_array_equal(read[k], v.astype(np.float32))
    phi = phi_io.from_torch(str(path))
    assert sum(v.size for v in phi.values()) == 82
    np.testing.assert_array_equal(np.round(phi["w"], 3), tensors["fc.weight"][0].astype(np.float32).round(3))
    # PyTorch's conv weight [out, in, kh, kw] is TensorFlow's [kh, kw, in, out]: kernel m at [:, :, 0, m].
    for m in range(4):
        np.testing.assert_array_equal(phi["K"][:, :, 0, m], tensors["kernel"][m, 0])
    np.testing.assert_array_equal(phi["k2_all"][:, :, 0, 0], tensors["phi_2.w_all"][0, 0])
    # transfer.py takes it as --phi_from after the shapes check.
    expected = {"k1_id": [3, 3, 1, 1], "k1_all": [3, 3, 1, 1], "k2_id": [3, 3, 1, 1], "k2_all": [3, 3, 1, 1]}
    got = transfer.read_phi(str(path), {**expected, "K": [3, 3, 1, 4], "w": [10]})
    np.testing.assert_array_equal(got["w"], phi["w"])


def test_strided_storage_views(tmp_path, monkeypatch):
    torch = fake_torch(monkeypatch)
    tensors = released_like(1)
    write_legacy(tmp_path / "t.pth", tensors, torch, transposed="fc.weight")
    np.testing.assert_array_equal(
        phi_io.read_legacy(str(tmp_path / "t.pth"))["fc.weight"], tensors["fc.weight"]
    )


def test_refuses_other_files_and_code(tmp_path, monkeypatch):
    (tmp_path / "zip.pth").write_bytes(b"PK\x03\x04 a zip archive")
    with pytest.raises(ValueError, match="not a legacy PyTorch"):
        phi_io.read_legacy(str(tmp_path / "zip.pth"))
    # A pickle that would call os.system is refused before anything runs.
    with open(tmp_path / "evil.pth", "wb") as f:
        for obj in (phi_io.MAGIC, phi_io.PROTOCOL, {}):
            pickle.dump(obj, f, protocol=2)
        f.write(b"\x80\x02cos\nsystem\nX\x04\x00\x00\x00trueq\x00\x85R.")
    with pytest.raises(ValueError, match="os.system is not part of a state dict"):
        phi_io.read_legacy(str(tmp_path / "evil.pth"))
    torch = fake_torch(monkeypatch)
    tensors = released_like()
    del tensors["kernel"]
    write_legacy(tmp_path / "partial.pth", tensors, torch)
    with pytest.raises(ValueError, match="lacks kernel"):
        phi_io.from_torch(str(tmp_path / "partial.pth"))
    assert phi_io.main([str(tmp_path / "partial.pth"), str(tmp_path / "out.npz")]) == 2
    assert not (tmp_path / "out.npz").exists()


def test_missing_file_says_where_the_released_phi_is(tmp_path, capsys):
    assert phi_io.main([str(tmp_path / "perturb_750.pth"), str(tmp_path / "out.npz")]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: no file {tmp_path / 'perturb_750.pth'}") and "JWoong148/MetaPerturb" in err
    assert not (tmp_path / "out.npz").exists()
