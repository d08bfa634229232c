"""omniglot_small prepared from the real Omniglot "minimal" archives in ../shared."""

import io
import os
import zipfile

import numpy as np
import pytest
from PIL import Image

import data
import get_data
from data import DataError, omniglot_small

SOURCE = omniglot_small.SOURCE
pytestmark = pytest.mark.skipif(
    not all(os.path.isfile(os.path.join(SOURCE, z)) for z in omniglot_small.ZIPS),
    reason=f"the real Omniglot archives are not in {SOURCE} (see ../shared/README.md)",
)


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    root = str(tmp_path_factory.mktemp("omniglot_small"))
    assert get_data.main(["--dataset", "omniglot_small", "--data_root", root]) == 0
    return root


def source_image(char_id: int, drawer: int) -> np.ndarray:
    """Independently: the drawing's PNG from whichever archive holds it, 28x28 Lanczos, ink 1."""
    for name in omniglot_small.ZIPS:
        with zipfile.ZipFile(os.path.join(SOURCE, name)) as zf:
            for member in zf.namelist():
                if member.endswith(f"/{char_id:04d}_{drawer:02d}.png"):
                    im = Image.open(io.BytesIO(zf.read(member))).convert("L")
                    small = im.resize((28, 28), Image.Resampling.LANCZOS)
                    return 1 - np.asarray(small, np.float64).ravel() / 255
    raise AssertionError(f"no drawing {char_id}_{drawer}")


def test_checksums_are_those_of_shared_sha256sums():
    sums = dict(line.split()[::-1] for line in open(os.path.join(SOURCE, "SHA256SUMS")).read().splitlines())
    assert omniglot_small.ZIPS == sums


def test_shapes_range_and_alphabet_splits(root):
    ds = data.load("omniglot_small", root)
    assert ds.shape == (28, 28, 1) and ds.filters == 64
    # 136 / 42 / 64 characters of the documented alphabets, 4 rotations each
    assert {k: v.shape for k, v in ds.splits.items()} == {
        "train": (544, 20, 784),
        "val": (168, 20, 784),
        "test": (256, 20, 784),
    }
    for split in ds.splits.values():
        assert split.dtype == np.float32 and split.min() == 0 and split.max() == 1
        assert split.mean() < 0.25  # strokes are 1 on a 0 background
    # first characters by ID: Balinese 0108 (train), Sanskrit 0851 (val), Katakana 0596 (test);
    # last: Latin 0708, Sanskrit 0892, Tagalog 0909
    for name, first, last in (("train", 108, 708), ("val", 851, 892), ("test", 596, 909)):
        split = ds.split(name)
        for cls, cid in ((0, first), (len(split) - 4, last)):
            for drawer in (1, 20):
                np.testing.assert_allclose(split[cls, drawer - 1], source_image(cid, drawer), atol=1e-6)


def test_rotations_and_disjoint_splits(root):
    ds = data.load("omniglot_small", root)
    for split in ds.splits.values():
        base = split[0::4].reshape(-1, 20, 28, 28)
        for k in range(1, 4):
            want = np.rot90(base, k, axes=(2, 3)).reshape(-1, 20, 784)
            np.testing.assert_array_equal(split[k::4], want)
    seen = {k: {row.tobytes() for row in v.reshape(-1, 784)} for k, v in ds.splits.items()}
    assert not (seen["train"] & seen["val"] or seen["train"] & seen["test"] or seen["val"] & seen["test"])


def test_rerun_does_no_work(root, capsys):
    stamps = {f: os.stat(os.path.join(root, f)).st_mtime_ns for f in os.listdir(root)}
    assert get_data.main(["--dataset", "omniglot_small", "--data_root", root]) == 0
    assert "already prepared" in capsys.readouterr().out
    assert {f: os.stat(os.path.join(root, f)).st_mtime_ns for f in os.listdir(root)} == stamps


def test_bad_source_is_refused(tmp_path, capsys):
    source = tmp_path / "src"
    source.mkdir()
    small1, small2 = omniglot_small.ZIPS
    os.symlink(os.path.join(SOURCE, small2), source / small2)  # the real one, not a copy
    out = str(tmp_path / "out")
    args = ["--dataset", "omniglot_small", "--data_root", out, "--source", str(source)]
    assert get_data.main(args) == 2
    assert f"{small1} is missing: point --source" in capsys.readouterr().err
    (source / small1).write_bytes(b"PK\x03\x04 not the archive")
    assert get_data.main(args) == 2
    assert f"{small1} is corrupt (SHA256" in capsys.readouterr().err
    assert not os.path.exists(out) or os.listdir(out) == []
    with pytest.raises(
        DataError, match=f"run: python get_data.py --dataset omniglot_small --data_root {out}$"
    ):
        data.load("omniglot_small", out)
