"""STL-10 (Coates, Lee & Ng, 2011): 10 classes, 96x96 RGB; a MetaPerturb target dataset.

Source: stl10_binary.tar.gz (MD5 91f7769df0f17e558f3565bffb0c7dfb) from ai.stanford.edu/~acoates/
stl10, or --source (a base URL or a folder holding it) or $METADROP_STL10_URL. Of its binary files,
{train,test}_X.bin hold uint8 images of 3*96*96 bytes, each channel stored column by column, and
{train,test}_y.bin one label 1-10 an image; the unlabelled set is skipped.
- train: [10, 500, 96*96*3] uint8; test: [10, 800, 96*96*3] uint8; classes in label order (airplane,
  bird, car, cat, deer, dog, horse, monkey, ship, truck), images in file order within a class.
The archive is read once (no extraction); if this run downloaded it, it is deleted once both
splits are written.
"""

from __future__ import annotations

import os

import numpy as np

from data import DataError, Dataset
from data.archives import UNREADABLE, base, obtain, open_splits, save_split, unreadable
from data.files import command, ready, tar_members

URL = "http://ai.stanford.edu/~acoates/stl10"
URL_ENV = "METADROP_STL10_URL"  # overrides URL (a mirror, or a test server)
ARCHIVE = "stl10_binary.tar.gz"
MD5 = {ARCHIVE: "91f7769df0f17e558f3565bffb0c7dfb"}
SIDE = 96
SHAPE = (SIDE, SIDE, 3)
CLASSES = 10
FILTERS = 32  # conv width of the 4-layer network for RGB data (Meta-Dropout, Section 4)
SPLITS = ("train", "test")


def _read(path: str, retry: str) -> dict[str, bytes]:
    """{train,test}_{X,y}.bin from the archive, read in one pass."""
    wanted = {f"{s}_{k}.bin" for s in SPLITS for k in "Xy"}
    found = {
        os.path.basename(n): raw
        for n, raw in tar_members(path, lambda n: os.path.basename(n) in wanted, retry)
    }
    if missing := sorted(wanted - set(found)):
        raise ValueError(f"it lacks {', '.join(missing)}")
    return found


def images_of(x: bytes, y: bytes, name: str) -> tuple[np.ndarray, np.ndarray]:
    """(images [N, 96*96*3] uint8 row-major RGB, labels [N] 0-9) from the bytes of X.bin and y.bin."""
    if len(x) % int(np.prod(SHAPE)):
        raise ValueError(f"{name}_X.bin holds {len(x)} bytes, not a whole number of {SIDE}x{SIDE} images")
    chw = np.frombuffer(x, np.uint8).reshape(-1, 3, SIDE, SIDE)  # [N, C, W, H]: columns stored first
    labels = np.frombuffer(y, np.uint8).astype(np.int64) - 1
    if len(labels) != len(chw):
        raise ValueError(f"{name}_y.bin holds {len(labels)} labels for {len(chw)} images")
    if len(labels) and not 0 <= labels.min() <= labels.max() < CLASSES:
        raise ValueError(f"{name}_y.bin holds labels outside 1-{CLASSES}")
    return chw.transpose(0, 3, 2, 1).reshape(len(chw), -1), labels


def prepare(root: str, source: str | None) -> None:
    """Download (or take from a folder) stl10_binary.tar.gz and write train and test."""
    retry = command("stl10", root, source)
    if ready(lambda: open_splits(root, SPLITS, CLASSES, SHAPE, retry)):
        print(f"{root}: stl10 is already prepared")
        return
    path, downloaded = obtain(ARCHIVE, root, base(source, URL_ENV, URL), MD5.get(ARCHIVE), retry)
    try:
        files = _read(path, retry)
        splits = {s: images_of(files[f"{s}_X.bin"], files[f"{s}_y.bin"], s) for s in SPLITS}
    except (DataError, *UNREADABLE) as e:  # DataError: a damaged tar
        raise unreadable(path, downloaded, "STL-10 binary archive", retry, e) from e
    for split, (images, labels) in splits.items():
        save_split(root, split, images, labels, CLASSES)
        print(f"{root}/{split}.npy: {len(images)} images of {CLASSES} classes")
    if downloaded:
        os.remove(path)


def load(root: str) -> Dataset:
    return Dataset("stl10", SHAPE, FILTERS, open_splits(root, SPLITS, CLASSES, SHAPE, command("stl10", root)))
