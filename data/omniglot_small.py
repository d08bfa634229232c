"""Omniglot's "minimal" background sets, for CPU-scale experiments and the tests.

Source: images_background_small1.zip and images_background_small2.zip of the Omniglot release,
found in ../shared/data/omniglot/ (or --source DIR) and checked by SHA256. They hold 242 distinct
characters of 8 alphabets. Preprocessing is Omniglot's (28x28, strokes 1, four rotations as
classes; see data/omniglot.py). Splits are by alphabet, so no alphabet is shared between them:
- train: Balinese, Early_Aramaic, Greek, Korean, Latin (all of small1): 136 characters, 544 classes
- val: Sanskrit: 42 characters, 168 classes
- test: Japanese_(katakana), Tagalog: 64 characters, 256 classes
Each class has 20 examples; prepared as train.npy, val.npy and test.npy, float32 [classes, 20, 784].
"""

from __future__ import annotations

import os

import numpy as np

from data import DataError, Dataset
from data.files import command, file_hash, open_split, ready, save_npy
from data.omniglot import BASE_URL, DRAWERS, FILTERS, ROTATIONS, SIDE, read_characters, with_rotations

# shared/data/omniglot beside the project folder, found from this file (any working directory)
SOURCE = os.path.normpath(os.path.join(os.path.dirname(__file__), "..", "..", "shared", "data", "omniglot"))
# archive -> SHA256 (as in SHA256SUMS next to them)
ZIPS = {
    "images_background_small1.zip": "f38eb80f801274ac2b4dff5b24289016bfaba4a7d5bb50deebf27104ad6cb8a4",
    "images_background_small2.zip": "3ccaa407515a8778e5d0861875af38b17e418f301ad5bb3b5a6b65d901a41c7f",
}
ALPHABETS = {
    "train": ("Balinese", "Early_Aramaic", "Greek", "Korean", "Latin"),
    "val": ("Sanskrit",),
    "test": ("Japanese_(katakana)", "Tagalog"),
}
CLASSES = {"train": 544, "val": 168, "test": 256}


def _open(root: str, retry: str) -> dict[str, np.ndarray]:
    return {
        s: open_split(os.path.join(root, f"{s}.npy"), (n, DRAWERS, SIDE * SIDE), ("float32",), retry)
        for s, n in CLASSES.items()
    }


def prepare(root: str, source: str | None) -> None:
    """Preprocess the archives in `source` (default SOURCE) into root."""
    retry = command("omniglot_small", root, source)
    if ready(lambda: _open(root, retry)):
        print(f"{root}: omniglot_small is already prepared")
        return
    default = "" if source else " (the default --source: shared/data/omniglot beside the project folder)"
    source = source or SOURCE
    paths = []
    for name, sha256 in ZIPS.items():
        path = os.path.join(source, name)
        if not os.path.isfile(path):
            raise DataError(
                f"{path} is missing{default}: point --source to the folder with {' and '.join(ZIPS)} "
                f"(Omniglot's release, {BASE_URL})"
            )
        if file_hash(path, "sha256") != sha256:
            raise DataError(f"{path} is corrupt (SHA256 is not {sha256}): restore it from Omniglot's release")
        paths.append(path)
    alphabets, images = read_characters(paths, retry)
    alphabets = np.array(alphabets)
    for split, names in ALPHABETS.items():
        chars = images[np.isin(alphabets, names)]
        if len(chars) * ROTATIONS != CLASSES[split]:
            raise DataError(f"{source}: {names} hold {len(chars) * ROTATIONS} classes, not {CLASSES[split]}")
        save_npy(os.path.join(root, f"{split}.npy"), with_rotations(chars))
    print(f"{root}: omniglot_small is ready ({', '.join(f'{s} {n} classes' for s, n in CLASSES.items())})")


def load(root: str) -> Dataset:
    splits = _open(root, command("omniglot_small", root))
    return Dataset("omniglot_small", (SIDE, SIDE, 1), FILTERS, splits)
