"""Omniglot (Lake et al., 2015) in the paper's setup (Section 4, after Vinyals et al., 2016).

Source: the official archives images_background.zip and images_evaluation.zip of
github.com/brendenlake/omniglot (105x105 PNGs, 1623 characters x 20 drawers), checked by MD5.
Each image is resized to 28x28 (PIL, Lanczos) and inverted, so strokes are 1 and background 0.
Characters are ordered by the ID in their file names (0001-1623, the background alphabets first);
the first 1200 are for meta-training and the other 423 for meta-testing. Each character rotated
counter-clockwise by 0, 90, 180 and 270 degrees is a class of its own, in that order, character
after character: train.npy [4800, 20, 784] and test.npy [1692, 20, 784], float32 in [0, 1], the
format of the original code's arrays (which are accepted too: put them in the data root).

Two datasets read these files (data.DATASETS). "omniglot", the paper's: meta-training on all 4800
classes of train.npy and no validation split (the original code trains on them all and meta-tests the
last checkpoint). "omniglot_val" (view "val"): the last 100 meta-training characters (IDs 1101-1200,
the last 400 classes of train.npy) held out for meta-validation, so "train" is the first 4400 classes
and "val" the other 400.
"""

from __future__ import annotations

import contextlib
import io
import os
import re
import zipfile
import zlib

import numpy as np

from data import DataError, Dataset
from data.files import command, fetch, open_split, raise_resource, ready, save_npy

BASE_URL = "https://github.com/brendenlake/omniglot/raw/master/python"
URL_ENV = "METADROP_OMNIGLOT_URL"  # overrides BASE_URL (a mirror, or a test server)
# archive -> MD5, as published with torchvision's Omniglot
ZIPS = {
    "images_background.zip": "68d2efa1b9178cc56df9314c21c6e718",
    "images_evaluation.zip": "6b91aef0f799c5bb55b94e3f2daec811",
}
N_CHARACTERS = 1623
N_TRAIN = 1200  # characters for meta-training, validation included (Vinyals et al., 2016)
N_VAL = 100  # the last of those held out for meta-validation by the view "val" (omniglot_val)
NAME = {None: "omniglot", "val": "omniglot_val"}
NO_VAL = (None,)  # the views without a validation split (data.has_val)
DRAWERS = 20
SIDE = 28
ROTATIONS = 4
FILTERS = 64  # conv width for Omniglot (Section 4)

# <top>/<alphabet>/<character>/<ID>_<drawer>.png
PNG = re.compile(r"(?:[^/]+/)?([^/]+)/[^/]+/(\d+)_(\d+)\.png$")


def image(png: bytes) -> np.ndarray:
    """One 105x105 PNG -> [28, 28] uint8, strokes 255 and background 0."""
    from PIL import Image

    with Image.open(io.BytesIO(png)) as im:
        small = im.convert("L").resize((SIDE, SIDE), Image.Resampling.LANCZOS)
    return 255 - np.asarray(small, dtype=np.uint8)


def read_characters(paths: list[str], retry: str) -> tuple[list[str], np.ndarray]:
    """Characters of Omniglot archives in ID order: their alphabets and images [n, 20, 28, 28] uint8.

    A character in several archives (the "small" splits share some) is read from the first.
    """
    from tqdm import tqdm

    with contextlib.ExitStack() as stack:
        # ID -> (archive, alphabet, drawer -> member)
        members: dict[int, tuple[str, str, dict[int, str]]] = {}
        archives: dict[str, zipfile.ZipFile] = {}
        for path in paths:
            try:
                archives[path] = zf = stack.enter_context(zipfile.ZipFile(path))
            except zipfile.BadZipFile as e:
                raise DataError(f"{path} is not a readable zip ({e}); delete it and run: {retry}") from e
            except OSError as e:
                raise_resource(e, path)
                raise
            found: dict[int, tuple[str, str, dict[int, str]]] = {}
            for name in zf.namelist():
                if m := PNG.match(name):
                    found.setdefault(int(m[2]), (path, m[1], {}))[2][int(m[3])] = name
            for cid, char in found.items():
                members.setdefault(cid, char)
        if not members:
            raise DataError(f"no <alphabet>/<character>/<ID>_<drawer>.png in {paths}; run: {retry}")
        alphabets, images = [], np.empty((len(members), DRAWERS, SIDE, SIDE), np.uint8)
        for i, cid in enumerate(tqdm(sorted(members), desc="resizing characters", unit="char")):
            path, alphabet, drawers = members[cid]
            if sorted(drawers) != list(range(1, DRAWERS + 1)):
                raise DataError(
                    f"{path}: character {cid} ({alphabet}) has drawings {sorted(drawers)}, not 1-{DRAWERS}; "
                    f"this is not an Omniglot archive: delete it and run: {retry}"
                )
            for d in range(DRAWERS):
                member = drawers[d + 1]
                try:
                    images[i, d] = image(archives[path].read(member))
                except (OSError, EOFError, ValueError, zipfile.BadZipFile, zlib.error) as e:
                    raise_resource(e, path)
                    raise DataError(f"{path}: {member} is corrupt ({e}); delete it and run: {retry}") from e
            alphabets.append(alphabet)
    return alphabets, images


def with_rotations(images: np.ndarray) -> np.ndarray:
    """[n, 20, 28, 28] uint8 -> [4n, 20, 784] float32 in [0, 1]: class 4c+k is character c rotated by 90k."""
    n = images.shape[0]
    rotated = np.stack([np.rot90(images, k, axes=(2, 3)) for k in range(ROTATIONS)], axis=1)
    return rotated.reshape(n * ROTATIONS, DRAWERS, SIDE * SIDE).astype(np.float32) / 255


def _paths(root: str) -> dict[str, str]:
    return {s: os.path.join(root, f"{s}.npy") for s in ("train", "test")}


def _open(root: str, retry: str, values: bool = True) -> dict[str, np.ndarray]:
    n_classes = {"train": N_TRAIN * ROTATIONS, "test": (N_CHARACTERS - N_TRAIN) * ROTATIONS}
    return {
        s: open_split(path, (n_classes[s], DRAWERS, SIDE * SIDE), ("float32", "float64"), retry, values)
        for s, path in _paths(root).items()
    }


def prepare(root: str, source: str | None, view: str | None = None) -> None:
    """Download (source: base URL, default BASE_URL or $METADROP_OMNIGLOT_URL) and preprocess; both
    views read the same files."""
    retry = command("omniglot", root, source)
    if ready(lambda: _open(root, retry)):
        print(f"{root}: Omniglot is already prepared")
        return
    base = (source or os.environ.get(URL_ENV) or BASE_URL).rstrip("/")
    paths = [os.path.join(root, name) for name in ZIPS]
    for path, (name, md5) in zip(paths, ZIPS.items()):
        fetch(f"{base}/{name}", path, md5, retry)
    _, images = read_characters(paths, retry)
    if len(images) != N_CHARACTERS:
        raise DataError(f"{', '.join(paths)} hold {len(images)} characters, not {N_CHARACTERS}: run: {retry}")
    out = _paths(root)
    save_npy(out["test"], with_rotations(images[N_TRAIN:]))
    save_npy(out["train"], with_rotations(images[:N_TRAIN]))
    print(f"{root}: Omniglot is ready (train.npy {N_TRAIN} characters, test.npy {N_CHARACTERS - N_TRAIN})")


def check_range(split: np.ndarray, path: str, retry: str) -> None:
    lo, hi = float(split.min()), float(split.max())
    if not (lo >= 0 and hi <= 1):
        raise DataError(f"{path} holds values in [{lo}, {hi}], not [0, 1]; delete it and run: {retry}")


def _dataset(arrays: dict[str, np.ndarray], view: str | None) -> Dataset:
    """The paper's splits (view None) or, with view "val", the last N_VAL training characters held
    out as "val"."""
    splits = dict(arrays)
    if view == "val":
        cut = (N_TRAIN - N_VAL) * ROTATIONS
        splits.update(train=arrays["train"][:cut], val=arrays["train"][cut:])
    return Dataset(NAME[view], (SIDE, SIDE, 1), FILTERS, splits)


def load(root: str, view: str | None = None) -> Dataset:
    """The splits of `view` (_dataset), float32 in [0, 1], their values checked."""
    retry = command("omniglot", root)
    arrays = _open(root, retry)
    for s, path in _paths(root).items():
        check_range(arrays[s], path, retry)
    return _dataset({s: a.astype(np.float32, copy=False) for s, a in arrays.items()}, view)


def headers(root: str, view: str | None = None) -> Dataset:
    """load(root, view) for data.headers.peek: its splits are the files' memory maps, of which only
    the .npy headers are read (shapes and dtypes checked); load checks the values."""
    return _dataset(_open(root, command("omniglot", root), values=False), view)
