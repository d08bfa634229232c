"""data.headers.peek of Omniglot reads the .npy headers only: it answers what data.load answers,
and it answers for files whose values load refuses (so it never read them)."""

from __future__ import annotations

import numpy as np
import pytest

import data
from data import omniglot
from data.headers import peek


@pytest.fixture
def root(tmp_path, monkeypatch):
    """An Omniglot data root of 10 characters, 6 of them for meta-training (2 held out by omniglot_val)."""
    monkeypatch.setattr(omniglot, "N_CHARACTERS", 10)
    monkeypatch.setattr(omniglot, "N_TRAIN", 6)
    monkeypatch.setattr(omniglot, "N_VAL", 2)
    rng = np.random.default_rng(0)
    for split, chars in (("train", 6), ("test", 4)):
        x = rng.random((chars * omniglot.ROTATIONS, omniglot.DRAWERS, omniglot.SIDE**2), np.float32)
        np.save(tmp_path / f"{split}.npy", x)
    return tmp_path


@pytest.mark.parametrize("name", ["omniglot", "omniglot_val"])
def test_peek_answers_what_load_answers(root, name):
    shape, sizes = peek(name, str(root))
    ds = data.load(name, str(root))
    assert shape == ds.shape == (28, 28, 1) and list(sizes) == list(ds.splits)
    for s in ds.splits:
        np.testing.assert_array_equal(sizes[s], data.sizes(ds.split(s)))
    # independently: 4 rotations per character, 20 drawers each
    want = {"omniglot": {"train": 24, "test": 16}, "omniglot_val": {"train": 16, "test": 16, "val": 8}}[name]
    assert {s: len(n) for s, n in sizes.items()} == want and all((n == 20).all() for n in sizes.values())


@pytest.mark.parametrize("bad", [np.nan, 2.0], ids=["nan", "out-of-range"])
def test_peek_reads_no_value(root, bad):
    # the data part of train.npy (after its header) is made bad everywhere: load reads it and
    # refuses it; peek reads only the header, so it answers as before
    path = root / "train.npy"
    with open(path, "rb") as f:
        np.lib.format.read_magic(f)
        np.lib.format.read_array_header_1_0(f)
        start = f.tell()
    size = path.stat().st_size
    with open(path, "r+b") as f:
        f.seek(start)
        f.write(np.full((size - start) // 4, bad, np.float32).tobytes())
    shape, sizes = peek("omniglot", str(root))
    assert shape == (28, 28, 1) and len(sizes["train"]) == 24 and len(sizes["test"]) == 16
    with pytest.raises(data.DataError, match="train.npy holds (NaN or infinite values|values in)"):
        data.load("omniglot", str(root))


def test_peek_still_checks_the_headers(root):
    # a train.npy of another shape is refused by peek as by load: nothing but the values is skipped
    np.save(root / "train.npy", np.zeros((5, 20, 784), np.float32))
    for read in (peek, data.load):
        with pytest.raises(data.OtherData, match="holds an array of shape \\(5, 20, 784\\)"):
            read("omniglot", str(root))
