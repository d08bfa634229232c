"""SVHN (Netzer et al., 2011), cropped digits: Bayesian TAML's out-of-distribution set for CIFAR-FS.

Source: train_32x32.mat and test_32x32.mat of ufldl.stanford.edu/housenumbers (MD5 as published
with torchvision): X uint8 [32, 32, 3, N], y [N, 1] in 1..10 (10 is the digit 0). Class k-1 holds
label k, so classes 0-8 are the digits 1-9 and class 9 the digit 0, as in the original script.

- val.npy: 600 images per class from the training file. The original ships its indices
  (data/svhn/val_idx.npy, not public as a fact list); we draw them as its `--ver 2` does: numpy's
  legacy generator seeded 222, for class 0..9 in turn a shuffle of the class's indices (file order),
  the first 600 kept in shuffled order.
- test.npy: every test image (26,032), per class in file order: classes of different sizes.
Both 32x32x3 uint8 (+ .offsets.npy, data.Ragged); no train split (test only, spec section 3).
"""

from __future__ import annotations

import os

import numpy as np

from data import DataError, Dataset
from data.files import Splits, command, fetch, open_classes, ready, save_classes

BASE_URL = "http://ufldl.stanford.edu/housenumbers"
URL_ENV = "METADROP_SVHN_URL"  # overrides BASE_URL (a mirror, or a test server)
FILES = {"train": ("train_32x32.mat", "e26dedcc434d2e4c54c9b2d4a06d8373"),
         "test": ("test_32x32.mat", "eb5a983be6a315427106f1b164d9cef3")}  # fmt: skip
VAL_PER_CLASS = 600
SEED = 222  # the original's np.random.seed
N_CLASSES = 10
SHAPE = (32, 32, 3)
FILTERS = 32


def _open(root: str, retry: str) -> dict:
    dim = int(np.prod(SHAPE))
    return {s: open_classes(root, "", s, N_CLASSES, dim, retry) for s in ("val", "test")}


def read_mat(path: str, retry: str) -> list[np.ndarray]:
    """One .mat file -> per class (label - 1) its images, uint8 [n_c, 32*32*3], in file order."""
    import scipy.io

    try:
        mat = scipy.io.loadmat(path)
        x, y = mat["X"], np.asarray(mat["y"]).ravel().astype(np.int64)
        if x.dtype != np.uint8 or x.shape[:3] != SHAPE or x.shape[3] != len(y):
            raise ValueError(f"X is {x.dtype} {x.shape}, y has {len(y)} labels")
    except Exception as e:  # scipy raises many kinds on a damaged file
        raise DataError(f"{path} is not an SVHN .mat file ({e}); delete it and run: {retry}") from e
    if y.min() < 1 or y.max() > N_CLASSES:
        raise DataError(
            f"{path} has labels {y.min()}..{y.max()}, not 1..{N_CLASSES}; delete it and run: {retry}"
        )
    images = x.transpose(3, 0, 1, 2).reshape(len(y), -1)
    return [images[y == k + 1] for k in range(N_CLASSES)]


def validation(train: list[np.ndarray]) -> list[np.ndarray]:
    """VAL_PER_CLASS images per class: the original's `--ver 2` draw (module docstring)."""
    rng = np.random.RandomState(SEED)
    out = []
    for x in train:
        idx = np.arange(len(x))
        rng.shuffle(idx)
        out.append(x[idx[:VAL_PER_CLASS]])
    return out


def prepare(root: str, source: str | None) -> None:
    """Download (source: base URL, default BASE_URL or $METADROP_SVHN_URL) and make val and test."""
    retry = command("svhn", root, source)
    if ready(lambda: _open(root, retry)):
        print(f"{root}: SVHN is already prepared")
        return
    base = (source or os.environ.get(URL_ENV) or BASE_URL).rstrip("/")
    paths = {}
    for split, (name, md5) in FILES.items():
        paths[split] = os.path.join(root, name)
        fetch(f"{base}/{name}", paths[split], md5, retry)
    train = read_mat(paths["train"], retry)
    small = min(len(x) for x in train)
    if small < VAL_PER_CLASS:
        raise DataError(
            f"{paths['train']} has a class of {small} images, fewer than {VAL_PER_CLASS}: run: {retry}"
        )
    save_classes(root, "", "val", validation(train))
    save_classes(root, "", "test", read_mat(paths["test"], retry))
    print(f"{root}: SVHN is ready")


def load(root: str) -> Dataset:
    return Dataset("svhn", SHAPE, FILTERS, Splits(_open(root, command("svhn", root))))
