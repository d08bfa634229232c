"""CIFAR-100 (Krizhevsky, 2009) and the two datasets made of it.

Source: cifar-100-python.tar.gz of www.cs.toronto.edu/~kriz (MD5 as published with torchvision):
pickles `train` (500 images per fine class) and `test` (100 per class), uint8 rows of 3072 values
(1024 red, 1024 green, 1024 blue), and `meta` with the fine class names. The archive is kept in the
data root (./data/cifar), so both views below are made from one download.

- `cifar` (CIFAR-FS, Bertinetto et al., 2019; Bayesian TAML's ID dataset): train and test images
  pooled per class (train first, each in file order), 600 per class, 32x32x3; classes by name in the
  64 / 16 / 20 lists that the original script hard-codes (data/classes.json "cifar_fs"):
  train.npy, val.npy, test.npy (+ .offsets.npy).
- `small_cifar_100` (s-CIFAR100, MetaPerturb's target): the first 50 images of each class of the
  train file = 5,000 for training, the full test set (10,000) for testing, classes in label order.
  Its validation split (for choosing among source runs, MetaPerturb spec Q9; our choice) is the
  last 100 training images of each class (10,000, disjoint from the 50): small_*.npy.
"""

from __future__ import annotations

import io
import os

import numpy as np

from data import DataError, Dataset
from data.files import (
    ArraysOnly,
    Splits,
    class_lists,
    command,
    fetch,
    open_classes,
    ready,
    save_classes,
    tar_members,
)

BASE_URL = "https://www.cs.toronto.edu/~kriz"
URL_ENV = "METADROP_CIFAR100_URL"  # overrides BASE_URL (a mirror, or a test server)
ARCHIVE = "cifar-100-python.tar.gz"
MD5 = "eb9058c3a382ffc7106e4002c42a8d85"
TRAIN_PER_CLASS, TEST_PER_CLASS = 500, 100  # images per fine class in the train and test files
SMALL_TRAIN, SMALL_VAL = 50, 100  # s-CIFAR100: first 50 per class; validation: the last 100
SHAPE = (32, 32, 3)
FILTERS = 32  # Bayesian TAML's conv width (spec section 1)
FS_CLASSES = {"train": 64, "val": 16, "test": 20}
N_CLASSES = 100
PREFIX = {None: "", "small": "small_"}  # view -> file prefix
NAME = {None: "cifar", "small": "small_cifar_100"}


def _n_classes(view: str | None) -> dict[str, int]:
    return FS_CLASSES if view is None else {s: N_CLASSES for s in ("train", "val", "test")}


def _open(root: str, view: str | None, retry: str) -> dict:
    dim = int(np.prod(SHAPE))
    return {s: open_classes(root, PREFIX[view], s, n, dim, retry) for s, n in _n_classes(view).items()}


def read_archive(path: str, retry: str) -> tuple[list[str], dict[str, tuple[np.ndarray, np.ndarray]]]:
    """(fine class names, {"train"/"test": (images uint8 [N, 32*32*3] HWC, fine labels [N])})."""
    files = {}
    for name, raw in tar_members(path, lambda n: os.path.basename(n) in ("train", "test", "meta"), retry):
        try:
            files[os.path.basename(name)] = ArraysOnly(io.BytesIO(raw), encoding="bytes").load()
        except Exception as e:  # anything a damaged or foreign pickle can raise
            raise DataError(
                f"{path}: {name} is not a CIFAR-100 pickle ({e}); delete it and run: {retry}"
            ) from e
    try:
        names = [n.decode() for n in files["meta"][b"fine_label_names"]]
        out = {}
        for split in ("train", "test"):
            d = files[split]
            x = np.asarray(d[b"data"], dtype=np.uint8).reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1)
            out[split] = (x.reshape(len(x), -1), np.asarray(d[b"fine_labels"], dtype=np.int64))
    except (KeyError, ValueError, TypeError, AttributeError) as e:
        raise DataError(
            f"{path} is not the CIFAR-100 python archive ({e!r}); delete it and run: {retry}"
        ) from e
    counts = {s: np.bincount(y, minlength=len(names)) for s, (_, y) in out.items()}
    want = {"train": TRAIN_PER_CLASS, "test": TEST_PER_CLASS}
    if len(names) != N_CLASSES or any((counts[s] != want[s]).any() for s in want):
        tr, te = counts["train"], counts["test"]
        raise DataError(
            f"{path} holds {len(names)} classes, {tr.min()}-{tr.max()} training and {te.min()}-{te.max()} "
            f"test images per class, not {N_CLASSES}, {TRAIN_PER_CLASS} and {TEST_PER_CLASS}; delete it "
            f"and run: {retry}"
        )
    return names, out


def _per_class(images: np.ndarray, labels: np.ndarray, c: int) -> np.ndarray:
    return images[labels == c]  # file order


def prepare(root: str, source: str | None, view: str | None = None) -> None:
    """Download (source: base URL, default BASE_URL or $METADROP_CIFAR100_URL) and make the view."""
    name = NAME[view]
    retry = command(name, root, source)
    if ready(lambda: _open(root, view, retry)):
        print(f"{root}: {name} is already prepared")
        return
    base = (source or os.environ.get(URL_ENV) or BASE_URL).rstrip("/")
    path = os.path.join(root, ARCHIVE)
    fetch(f"{base}/{ARCHIVE}", path, MD5, retry)
    names, files = read_archive(path, retry)
    (xtr, ytr), (xte, yte) = files["train"], files["test"]
    if view is None:
        index = {n: c for c, n in enumerate(names)}
        for split, classes in class_lists("cifar_fs", FS_CLASSES).items():
            missing = [n for n in classes if n not in index]
            if missing:
                raise DataError(f"{path} has no classes {missing}; delete it and run: {retry}")
            pooled = [
                np.concatenate([_per_class(xtr, ytr, index[n]), _per_class(xte, yte, index[n])])
                for n in classes
            ]
            save_classes(root, PREFIX[view], split, pooled)
    else:
        train = [_per_class(xtr, ytr, c) for c in range(N_CLASSES)]
        save_classes(root, PREFIX[view], "train", [x[:SMALL_TRAIN] for x in train])
        save_classes(root, PREFIX[view], "val", [x[-SMALL_VAL:] for x in train])
        save_classes(root, PREFIX[view], "test", [_per_class(xte, yte, c) for c in range(N_CLASSES)])
    print(f"{root}: {name} is ready")


def load(root: str, view: str | None = None) -> Dataset:
    return Dataset(NAME[view], SHAPE, FILTERS, Splits(_open(root, view, command(NAME[view], root))))
