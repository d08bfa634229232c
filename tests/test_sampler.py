"""The episode sampler, the digits demo data and the CI95 formula."""

import math

import numpy as np
import pytest

import data
from data.episodes import check, sample, sample_batch
from episodic import ci95


def labelled_split(n_classes: int = 7, n_examples: int = 9) -> np.ndarray:
    """Each example's features are (class id, example id): the sampler's choices can be read back."""
    c, e = np.meshgrid(np.arange(n_classes), np.arange(n_examples), indexing="ij")
    return np.stack([c, e], axis=-1).astype(np.float32)


def test_episode_labels_are_consistent_and_train_test_disjoint():
    split = labelled_split()
    rng = np.random.default_rng(0)
    for _ in range(50):
        xtr, ytr, xte, yte = sample(split, way=4, shot=2, query=3, rng=rng)
        assert xtr.shape == (8, 2) and xte.shape == (12, 2) and ytr.shape == (8, 4) and yte.shape == (12, 4)
        assert np.all(ytr.sum(1) == 1) and np.all(yte.sum(1) == 1)
        classes = {}
        for x, y in [*zip(xtr, ytr), *zip(xte, yte)]:
            classes.setdefault(int(y.argmax()), set()).add(int(x[0]))
        assert all(len(c) == 1 for c in classes.values())  # one class per label
        assert len({next(iter(c)) for c in classes.values()}) == 4  # four different classes
        assert np.bincount(ytr.argmax(1), minlength=4).tolist() == [2] * 4
        assert np.bincount(yte.argmax(1), minlength=4).tolist() == [3] * 4
        assert not {tuple(x) for x in xtr} & {tuple(x) for x in xte}  # no example in both


def test_sample_batch_stacks_tasks():
    batch = sample_batch(labelled_split(), 3, way=2, shot=1, query=2, rng=np.random.default_rng(1))
    assert batch["xtr"].shape == (3, 2, 2) and batch["yte"].shape == (3, 4, 2)


def test_check_rejects_impossible_episodes():
    split = data.sizes(labelled_split(n_classes=7, n_examples=9))
    check(split, way=7, shot=4, query=5)
    with pytest.raises(data.DataError, match="--way 8 is larger than the 7 classes"):
        check(split, way=8, shot=1, query=1)
    with pytest.raises(data.DataError, match="larger than the 9 examples"):
        check(split, way=2, shot=5, query=5)


def test_digits_splits_are_disjoint_rotated_classes():
    ds = data.load("digits")
    flat = {name: ds.split(name).reshape(-1, ds.split(name).shape[-1]) for name in data.SPLITS}
    for arr in ds.splits.values():
        assert arr.dtype == np.float32 and arr.min() >= 0 and arr.max() <= 1
        assert arr.shape[0] >= 5  # room for 5-way tasks
    rows = {name: {r.tobytes() for r in flat[name]} for name in flat}
    assert (
        not rows["train"] & rows["val"]
        and not rows["train"] & rows["test"]
        and not rows["val"] & rows["test"]
    )
    # classes 4k..4k+3 are the four rotations of the same images
    img = ds.split("train")[0].reshape(-1, 16, 16)
    np.testing.assert_array_equal(ds.split("train")[1].reshape(-1, 16, 16), np.rot90(img, 1, axes=(1, 2)))


def test_ci95_formula():
    acc = np.random.default_rng(0).random(37)
    n = len(acc)
    mean = sum(acc) / n
    std = math.sqrt(sum((a - mean) ** 2 for a in acc) / n)
    m, ci = ci95(acc)
    assert m == pytest.approx(100 * mean)
    assert ci == pytest.approx(100 * 1.96 * std / math.sqrt(n))
