"""What the entry points check before TensorFlow starts: a prepared dataset's image shape and the
examples per class of each split, read from the files' .npy headers and the small class-offset files
(memory maps: no image is read, checked or converted), so a flag the data cannot satisfy is refused
at once.
"""

from __future__ import annotations

import os

import numpy as np

from data import DataError, Dataset, default_root, entry, load, sizes
from data.files import command

Shape = tuple[int, int, int]


def peek(name: str, root: str | None = None) -> tuple[Shape, dict[str, np.ndarray]]:
    """(H, W, C of one image, split -> [classes] examples per class) of dataset `name` in `root`
    (default its data root). A module that knows them without its files (digits: scikit-learn's
    bundled set, whose import alone takes seconds) has peek(); one whose load reads every value (a
    check of float arrays: Omniglot) has headers(root, view), its Dataset from the .npy headers only;
    the others are opened as memory maps, and a lazily converted split (data.files.Splits) is not
    converted. DataError naming get_data.py's command if the folder is missing or holds no prepared
    split, else as data.load's."""
    module, view = entry(name)
    known = getattr(module, "peek", None)
    if known is not None:
        return known()
    root = root or default_root(name)
    if not os.path.isdir(root) or not any(f.endswith(".npy") for f in os.listdir(root)):
        raise DataError(f"{name} is not prepared in {root}: prepare it with: {command(name, root)}")
    headers = getattr(module, "headers", None)
    ds = headers(root, view) if headers is not None else load(name, root)
    return ds.shape, split_sizes(ds)


def split_sizes(ds: Dataset) -> dict[str, np.ndarray]:
    """Split -> [classes] examples per class of a loaded dataset; a lazily converted split
    (data.files.Splits) is not converted."""
    own = getattr(ds.splits, "sizes", None)
    return {s: own(s) if own else sizes(ds.splits[s]) for s in ds.splits}
