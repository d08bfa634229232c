"""phi_io.py: reading a legacy (non-zip) PyTorch state dict written here from the format's description,
and refusing crafted hostile, truncated and inconsistent files without running anything in them."""

import collections
import io
import pickle
import struct
import sys
import types
import zipfile

import numpy as np
import pytest

import phi_io
import transfer

TORCH_SHAPES = {  # spec 1.2: the released file's tensors, 82 values
    "kernel": (4, 1, 3, 3),
    **{f"phi_{i}.w_{k}": (1, 1, 3, 3) for i in (1, 2) for k in ("identity", "all")},
    "fc.weight": (1, 10),
}
OURS = {"k1_id": [3, 3, 1, 1], "k1_all": [3, 3, 1, 1], "k2_id": [3, 3, 1, 1], "k2_all": [3, 3, 1, 1]}
OURS = {**OURS, "K": [3, 3, 1, 4], "w": [10]}
SYS_INFO = {"protocol_version": 1001, "little_endian": True, "type_sizes": {"short": 2, "int": 4, "long": 4}}
POSITIONS = ["magic number", "protocol version", "system information", "state dict", "storage keys"]


class PersistentStorage:
    def __init__(self, pid):
        self.pid = pid


class Tensor:
    """A tensor as torch.save pickles it: _rebuild_tensor_v2(storage, offset, size, stride, ...)."""

    def __init__(self, torch, key, size, offset, shape, stride, hooks=None) -> None:
        self.torch, self.key, self.size = torch, key, size
        self.offset, self.shape, self.stride = offset, shape, stride
        self.hooks = collections.OrderedDict() if hooks is None else hooks

    def __reduce__(self):
        storage = ("storage", self.torch.FloatStorage, self.key, "cuda:0", self.size, None)
        args = (PersistentStorage(storage), self.offset, self.shape, self.stride, True, self.hooks)
        return self.torch._utils._rebuild_tensor_v2, args


class Hostile:
    """Unpickled, it would create the file `marker` (a stand-in for any call: os.system, eval, ...)."""

    def __init__(self, marker) -> None:
        self.marker = str(marker)

    def __reduce__(self):
        return open, (self.marker, "w")


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


def legacy_parts(tensors: dict[str, np.ndarray], torch, transposed: str | None = None):
    """The five pickled objects of the legacy layout (magic, protocol, system info, the state dict
    with persistent storage ids, the storage keys) and the storages' arrays. `transposed` stores
    that tensor as a non-contiguous view (a transpose of its storage)."""
    keys = [str(1000 + i) for i in range(len(tensors))]
    state = collections.OrderedDict()
    storages = []
    for key, (name, a) in zip(keys, tensors.items()):
        a = a.astype("<f4")
        base = np.ascontiguousarray(a.T if name == transposed else a)
        view = base.T if name == transposed else base
        strides = tuple(s // 4 for s in view.strides)
        state[name] = Tensor(torch, key, base.size, 0, view.shape, strides)
        storages.append(base)
    return [phi_io.MAGIC, phi_io.PROTOCOL, dict(SYS_INFO), state, keys], storages


def dump(path, parts, storages, protocol: int = 2) -> None:
    """The legacy file: the pickles, then per storage an int64 count and raw little-endian data."""

    class Pickler(pickle.Pickler):
        def persistent_id(self, obj):
            return obj.pid if isinstance(obj, PersistentStorage) else None

    with open(path, "wb") as f:
        for part in parts:
            Pickler(f, protocol=protocol).dump(part)
        for s in storages:
            f.write(struct.pack("<q", s.size))
            f.write(np.ascontiguousarray(s).tobytes())


def write_legacy(path, tensors: dict[str, np.ndarray], torch, transposed: str | None = None) -> None:
    dump(path, *legacy_parts(tensors, torch, transposed))


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
    got = transfer.read_phi(str(path), OURS)
    np.testing.assert_array_equal(got["w"], phi["w"])


def test_strided_storage_views(tmp_path, monkeypatch):
    torch = fake_torch(monkeypatch)
    tensors = released_like(1)
    for name in ("fc.weight", "kernel"):
        write_legacy(tmp_path / "t.pth", tensors, torch, transposed=name)
        np.testing.assert_array_equal(phi_io.read_legacy(str(tmp_path / "t.pth"))[name], tensors[name])


@pytest.mark.parametrize("protocol", [2, 3, 4, 5])
@pytest.mark.parametrize("nested", [False, True])
@pytest.mark.parametrize("position", range(5))
def test_no_pickled_call_runs_in_any_position(tmp_path, monkeypatch, position, nested, protocol):
    torch = fake_torch(monkeypatch)
    parts, storages = legacy_parts(released_like(), torch)
    marker = tmp_path / "ran"
    evil = {"a": [1, (Hostile(marker),)]} if nested else Hostile(marker)
    if position == 3:  # inside a tensor's rebuild call (its backward hooks)
        parts[3]["kernel"].hooks = evil
    else:
        parts[position] = evil
    path = tmp_path / "evil.pth"
    dump(path, parts, storages, protocol)
    with pytest.raises(ValueError) as refused:
        phi_io.read_legacy(str(path))
    assert not marker.exists()
    assert f"in the {POSITIONS[position]}: global io.open is not allowed" in str(refused.value)
    with pytest.raises(transfer.UsageError, match="global io.open is not allowed"):
        transfer.read_phi(str(path), OURS)
    assert not marker.exists()


@pytest.mark.parametrize("protocol", [2, 5])
def test_a_plain_hostile_pickle_is_refused_before_anything_runs(tmp_path, capsys, protocol):
    marker = tmp_path / "ran"
    path = tmp_path / "evil.pth"
    path.write_bytes(pickle.dumps(Hostile(marker), protocol=protocol))
    assert phi_io.main([str(path), str(tmp_path / "out.npz")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "in the magic number: global io.open is not allowed" in err
    assert not marker.exists() and not (tmp_path / "out.npz").exists()


@pytest.mark.parametrize("position", [2, 4])
def test_persistent_ids_outside_the_state_dict_are_refused(tmp_path, monkeypatch, position):
    torch = fake_torch(monkeypatch)
    parts, storages = legacy_parts(released_like(), torch)
    parts[position] = [PersistentStorage(("storage", "FloatStorage", "1000", "cpu", 36, None))]
    dump(tmp_path / "p.pth", parts, storages)
    with pytest.raises(ValueError, match=f"in the {POSITIONS[position]}: a persistent id is not allowed"):
        phi_io.read_legacy(str(tmp_path / "p.pth"))


@pytest.mark.parametrize(
    "raw, message",
    [  # opcodes no position needs, refused before the unpickler sees them
        (b"\x80\x05\x96" + struct.pack("<Q", 2) + b"ab.", "opcode BYTEARRAY8 is not allowed"),
        (b"\x80\x05\x96" + struct.pack("<Q", 1 << 40) + b".", "expected 1099511627776 bytes in a bytearray8"),
        (b"\x80\x02\x82\x01.", "opcode EXT1 is not allowed"),
        (b"\x80\x02cbuiltins\nlist\n)\x81.", "opcode NEWOBJ is not allowed"),
        (b"\x80\x02G?\xf0\x00\x00\x00\x00\x00\x00.", "opcode BINFLOAT is not allowed"),
        (b"\x80\x01K\x01.", "opcode PROTO is not allowed"),
        # a memo index that would make CPython's unpickler allocate a table that long
        (b"\x80\x02K\x01r" + struct.pack("<I", 1 << 16) + b".", "memo index 65536 is out of range"),
    ],
)
def test_opcodes_outside_the_few_needed_are_refused(tmp_path, raw, message):
    path = tmp_path / "op.pth"
    path.write_bytes(raw)
    with pytest.raises(ValueError, match=message):
        phi_io.read_legacy(str(path))


def test_every_truncation_and_corruption_is_a_value_error(tmp_path, monkeypatch):
    torch = fake_torch(monkeypatch)
    tensors = {k: v for k, v in released_like().items() if k in ("kernel", "fc.weight")}
    write_legacy(tmp_path / "t.pth", tensors, torch, transposed="kernel")
    data = (tmp_path / "t.pth").read_bytes()
    for cut in range(len(data)):
        with pytest.raises(ValueError):
            phi_io.parse_legacy(data[:cut])
    rng = np.random.default_rng(0)
    for i in range(len(data)):
        for value in (0, 255, data[i] ^ 1, int(rng.integers(256))):
            try:  # a changed storage byte is a different float: read; anything else: refused
                phi_io.parse_legacy(data[:i] + bytes([value]) + data[i + 1 :])
            except ValueError:
                pass
    path = tmp_path / "bad.pth"
    path.write_bytes(data + b"\x00")
    with pytest.raises(ValueError, match="bytes follow the last storage"):
        phi_io.read_legacy(str(path))


@pytest.mark.parametrize(
    "offset, shape, stride",
    [
        (0, (1, 10), (10, 2)),  # the stride reaches past the 10 elements
        (11, (1, 10), (10, 1)),  # the offset is past the storage
        (11, (0,), (1,)),
        (0, (1, 2**20), (0, 0)),  # more elements than the storage holds
        (0, (0, 2**30), (1, 1)),
        (0, (1, 2**40), (0, 0)),
        (0, (1, 10), (10, -1)),
        (-1, (1, 10), (10, 1)),
        ("0", (1, 10), (10, 1)),
        (0, (1, 10), (10,)),
        (0, (1,) * 9, (1,) * 9),
        (0, [1, 10], [10, 1]),
    ],
)
def test_views_outside_their_storage_are_refused(tmp_path, monkeypatch, offset, shape, stride):
    torch = fake_torch(monkeypatch)
    parts, storages = legacy_parts(released_like(), torch)
    parts[3]["fc.weight"] = Tensor(torch, "1005", 10, offset, shape, stride)
    dump(tmp_path / "v.pth", parts, storages)
    with pytest.raises(
        ValueError, match=r"'fc.weight' (has \(offset, shape, stride\)|.*reaches past its storage of 10)"
    ):
        phi_io.read_legacy(str(tmp_path / "v.pth"))


def test_lying_storage_sizes_and_keys_are_refused(tmp_path, monkeypatch):
    torch = fake_torch(monkeypatch)
    path = tmp_path / "s.pth"

    def refused(parts, storages, message):
        dump(path, parts, storages)
        with pytest.raises(ValueError, match=message):
            phi_io.read_legacy(str(path))

    parts, storages = legacy_parts(released_like(), torch)
    parts[3]["fc.weight"] = Tensor(torch, "1005", 2**40, 0, (1, 10), (10, 1))
    refused(parts, storages, "storage 1005 of 1099511627776 elements is larger than the file")
    parts, storages = legacy_parts(released_like(), torch)
    storages[5] = np.zeros(9, np.float32)
    refused(parts, storages, "storage 1005 does not start with its size 10")
    parts, storages = legacy_parts(released_like(), torch)
    parts[3]["fc.weight"] = Tensor(torch, "1004", 10, 0, (1, 10), (10, 1))
    refused(
        parts, storages, r"storage 1004 is given as both \('FloatStorage', 9\) and \('FloatStorage', 10\)"
    )
    parts, storages = legacy_parts(released_like(), torch)
    refused(parts[:4] + [parts[4][:5]], storages, "storage keys .* are not those of its tensors")
    refused(parts[:4] + [parts[4] + ["7"]], storages, "storage keys .* are not those of its tensors")
    refused(parts[:4] + [parts[4][:5] + [5]], storages, "storage keys .* are not those of its tensors")
    refused([parts[0], 1000, *parts[2:]], storages, "protocol version 1000, not 1001")
    refused([parts[0], True, *parts[2:]], storages, "protocol version True, not 1001")
    refused(parts[:2] + [{**SYS_INFO, "little_endian": False}] + parts[3:], storages, "little-endian")
    refused(parts[:3] + [[1, 2]] + parts[4:], storages, "it holds a list, not a state dict")
    refused(parts[:3] + [{1: parts[3]["kernel"]}] + parts[4:], storages, "it holds a dict, not a state dict")


def test_zip_format_files_are_refused_unread(tmp_path, capsys):
    marker = tmp_path / "ran"
    path = tmp_path / "new.pth"
    with zipfile.ZipFile(path, "w") as z:
        z.writestr("archive/data.pkl", pickle.dumps(Hostile(marker), protocol=2))
        z.writestr("archive/version", "3\n")
    assert phi_io.main([str(path), str(tmp_path / "out.npz")]) == 2
    err = capsys.readouterr().err
    assert "is a zip-format PyTorch file" in err and "_use_new_zipfile_serialization=False" in err
    assert not marker.exists()


def test_the_released_layout_is_checked_tensor_by_tensor(tmp_path, monkeypatch):
    torch = fake_torch(monkeypatch)
    path = str(tmp_path / "l.pth")
    tensors = released_like()
    tensors["fc.weight"] = tensors["fc.weight"].reshape(2, 5)  # the same 10 values, the wrong shape
    write_legacy(path, tensors, torch)
    with pytest.raises(ValueError, match=r"fc.weight has shape \[2, 5\], not \[1, 10\]"):
        phi_io.from_torch(path)
    write_legacy(path, {**released_like(), "bias": np.zeros(3)}, torch)
    with pytest.raises(ValueError, match="holds bias besides"):
        phi_io.from_torch(path)
    tensors = released_like()
    del tensors["kernel"]
    write_legacy(path, tensors, torch)
    with pytest.raises(ValueError, match="lacks kernel"):
        phi_io.from_torch(path)
    assert phi_io.main([path, str(tmp_path / "out.npz")]) == 2
    assert not (tmp_path / "out.npz").exists()


def test_non_finite_phi_is_refused_naming_the_file(tmp_path, monkeypatch):
    torch = fake_torch(monkeypatch)
    tensors = released_like()
    tensors["kernel"][1, 0, 2, 2] = np.nan
    write_legacy(tmp_path / "nan.pth", tensors, torch)
    with pytest.raises(transfer.UsageError, match=r"nan.pth: phi K holds NaN or infinite values"):
        transfer.read_phi(str(tmp_path / "nan.pth"), OURS)
    phi = {k: np.zeros(s, np.float32) for k, s in OURS.items()}
    phi["w"][3] = np.inf
    transfer.write_phi(str(tmp_path / "inf.npz"), phi)
    with pytest.raises(transfer.UsageError, match=r"inf.npz: phi w holds NaN or infinite values"):
        transfer.read_phi(str(tmp_path / "inf.npz"), OURS)


def npz(path, arrays: dict[str, bytes]) -> None:
    with zipfile.ZipFile(path, "w") as z:
        for name, raw in arrays.items():
            z.writestr(name + ".npy", raw)


def npy(header: dict, data: bytes = b"") -> bytes:
    f = io.BytesIO()
    np.lib.format.write_array_header_1_0(f, header)
    return f.getvalue() + data


def test_npz_headers_are_checked_before_their_data(tmp_path):
    phi = {k: np.zeros(s, np.float32) for k, s in OURS.items()}
    path = tmp_path / "phi.npz"
    raw = {
        k: npy({"descr": "<f4", "fortran_order": False, "shape": tuple(s)}, bytes(4 * v.size))
        for (k, s), v in zip(OURS.items(), phi.values())
    }
    npz(path, raw)
    assert {k: list(v.shape) for k, v in transfer.read_phi(str(path), OURS).items()} == OURS
    # a header that promises 10^12 values in a few bytes
    npz(path, {**raw, "w": npy({"descr": "<f4", "fortran_order": False, "shape": (10**12,)}, bytes(40))})
    with pytest.raises(transfer.UsageError, match=r"'w': \[1000000000000\].*not this perturbation's phi"):
        transfer.read_phi(str(path), OURS)
    # an object array (a pickle inside the .npy) is refused from its header, nothing unpickled
    marker = tmp_path / "ran"
    f = io.BytesIO()
    np.save(f, np.array([Hostile(marker), 1], dtype=object), allow_pickle=True)
    npz(path, {**raw, "w": f.getvalue()})
    with pytest.raises(transfer.UsageError, match="'w': 'object'"):
        transfer.read_phi(str(path), OURS)
    assert not marker.exists()
    transfer.write_phi(str(path), phi)
    data = path.read_bytes()
    for cut in range(0, len(data), 41):
        path.write_bytes(data[:cut])
        with pytest.raises(transfer.UsageError, match="cannot read phi from"):
            transfer.read_phi(str(path), OURS)


def test_output_path_a_folder_or_unwritable_is_one_line(tmp_path, monkeypatch, capsys):
    torch = fake_torch(monkeypatch)
    path = str(tmp_path / "p.pth")
    write_legacy(path, released_like(), torch)
    assert phi_io.main([path, str(tmp_path)]) == 2
    assert capsys.readouterr().err == f"error: {tmp_path} is a folder: give the .npz file to write\n"
    (tmp_path / "file").write_text("")
    assert phi_io.main([path, str(tmp_path / "file" / "out.npz")]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: cannot convert {path} to ") and err.count("\n") == 1
    assert phi_io.main([path, str(tmp_path / "out.npz")]) == 0


def test_missing_file_says_where_the_released_phi_is(tmp_path, capsys):
    assert phi_io.main([str(tmp_path / "perturb_750.pth"), str(tmp_path / "out.npz")]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: no file {tmp_path / 'perturb_750.pth'}") and "JWoong148/MetaPerturb" in err
    assert not (tmp_path / "out.npz").exists()


def test_a_target_run_refuses_a_hostile_phi_in_one_line(tmp_path, monkeypatch, capsys):
    torch = fake_torch(monkeypatch)
    parts, storages = legacy_parts(released_like(), torch)
    marker = tmp_path / "ran"
    parts[2] = {**SYS_INFO, "type_sizes": Hostile(marker)}  # the case: in the system information
    dump(tmp_path / "evil.pth", parts, storages)
    flags = "--phase tgt --data digits --tgt_split test --n_per_class 10 --model conv4_4 --img_size 16"
    flags += " --batch_size 8 --train_steps 6 --exp_name t"
    paths = ["--save_dir", str(tmp_path), "--phi_from", str(tmp_path / "evil.pth")]
    assert transfer.main(flags.split() + paths) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: cannot read phi from") and err.count("\n") == 1
    assert "in the system information: global io.open is not allowed" in err
    assert not marker.exists() and not (tmp_path / "tgt" / "t" / "results.json").exists()
