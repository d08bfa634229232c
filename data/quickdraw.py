"""QuickDraw (Jongejan et al., 2016): an in-distribution set of Bayesian TAML's multi-dataset
experiment (spec section 3). The original downloads pre-made arrays from Dropbox whose making is
not documented; here it is made from Google's public numpy bitmaps instead (our choice).

Source: storage.googleapis.com/quickdraw_dataset/full/numpy_bitmap/<category>.npy, one .npy per
category of uint8 [drawings, 784] (28x28, strokes 255 on 0). Only the first PER_CLASS = 600
drawings of each category are read: an HTTP Range request fetches the first bytes of each file
(header + 600 rows, ~0.5 MB; 162 MB for all 345), kept in <root>/numpy_bitmap/ and resumable like
any download (no checksum is published). Each drawing is resized to 32x32 (PIL bicubic) and
repeated to RGB. Classes: the 345 categories of Google's categories.txt split 241 / 52 / 52
(Meta-Dataset's proportions) at random once (numpy default_rng(0)) and written down in
data/classes.json "quickdraw": train.npy, val.npy, test.npy, 600 drawings per class, uint8.
"""

from __future__ import annotations

import os
import urllib.parse

import numpy as np

from data import DataError, Dataset
from data.files import Splits, class_lists, command, fetch, image, open_classes, ready, rgb, save_classes

BASE_URL = "https://storage.googleapis.com/quickdraw_dataset/full/numpy_bitmap"
URL_ENV = "METADROP_QUICKDRAW_URL"  # overrides BASE_URL (a mirror, or a test server)
CLASSES = {"train": 241, "val": 52, "test": 52}
PER_CLASS = 600
HEADER_MAX = 4096  # bytes fetched beyond the rows, for the .npy header (128 in these files)
SIDE = 32
SHAPE = (SIDE, SIDE, 3)
FILTERS = 32


def _open(root: str, retry: str) -> dict:
    dim = int(np.prod(SHAPE))
    return {s: open_classes(root, "", s, n, dim, retry) for s, n in CLASSES.items()}


def first_rows(path: str, n: int, retry: str) -> np.ndarray:
    """The first n rows, uint8 [n, 784], of the beginning of a .npy file."""
    try:
        with open(path, "rb") as f:
            version = np.lib.format.read_magic(f)
            read = (
                np.lib.format.read_array_header_1_0
                if version == (1, 0)
                else np.lib.format.read_array_header_2_0
            )
            shape, fortran, dtype = read(f)
            if dtype != np.uint8 or fortran or len(shape) != 2 or shape[1] != 784 or shape[0] < n:
                raise ValueError(f"it holds {dtype} {shape}, not at least {n} uint8 rows of 784")
            rows = np.frombuffer(f.read(n * 784), np.uint8)
        return rows.reshape(n, 28, 28)
    except (OSError, ValueError) as e:
        raise DataError(
            f"{path} is not the start of a QuickDraw bitmap file ({e}); delete it and run: {retry}"
        ) from e


def prepare(root: str, source: str | None) -> None:
    """Download the start of each category's file (source: base URL, default BASE_URL or
    $METADROP_QUICKDRAW_URL) and make the splits."""
    from tqdm import tqdm

    retry = command("quickdraw", root, source)
    if ready(lambda: _open(root, retry)):
        print(f"{root}: QuickDraw is already prepared")
        return
    base = (source or os.environ.get(URL_ENV) or BASE_URL).rstrip("/")
    folder = os.path.join(root, "numpy_bitmap")
    lists = class_lists("quickdraw", CLASSES)
    paths = {name: os.path.join(folder, f"{name}.npy") for names in lists.values() for name in names}
    stop = HEADER_MAX + PER_CLASS * 784
    for name, path in tqdm(paths.items(), desc="QuickDraw categories", unit="file"):  # all before any split
        fetch(f"{base}/{urllib.parse.quote(name)}.npy", path, None, retry, stop=stop, bar=False)
    drawings = {name: first_rows(path, PER_CLASS, retry) for name, path in paths.items()}  # all readable
    for split, names in lists.items():
        save_classes(root, "", split, [np.stack([rgb(image(x, SIDE)) for x in drawings[n]]) for n in names])
    print(f"{root}: QuickDraw is ready")


def load(root: str) -> Dataset:
    return Dataset("quickdraw", SHAPE, FILTERS, Splits(_open(root, command("quickdraw", root))))
