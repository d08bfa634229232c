"""CUB-200-2011 (Wah et al., 2011): 11,788 photographs of 200 bird species, 84x84x3.

Source: CUB_200_2011.tgz of CaltechDATA (data.caltech.edu, record 65de6-vp158; it replaced
www.vision.caltech.edu/visipedia-data/CUB-200-2011, which the original script used), MD5 as
published with torchvision-style loaders. Read from the archive: images.txt (id, path),
image_class_labels.txt (id, class id 1-200), train_test_split.txt (id, is_train) and the JPEGs,
each resized whole to 84x84 with PIL's bicubic filter. The archive is kept in the data root
(./data/cub), so both views are made from one download.

- `cub` (Bayesian TAML's out-of-distribution set for miniImageNet): val = the 50 classes whose id is
  2 mod 4, test = the 50 whose id is 0 mod 4, every image of those classes in images.txt order,
  except those that are not RGB (grayscale), which the original drops (spec section 3: 2,950 and
  2,953 listed images before dropping): val.npy, test.npy, classes of different sizes.
- `cub_official` (MetaPerturb's target): the official split, train 5,994 / test 5,794 of all 200
  classes in id order, grayscale images repeated to RGB: official_train.npy, official_test.npy.
"""

from __future__ import annotations

import os

import numpy as np

from data import DataError, Dataset
from data.files import Splits, command, fetch, image, open_classes, ready, save_classes, tar_members

URL = "https://data.caltech.edu/records/65de6-vp158/files/CUB_200_2011.tgz?download=1"
URL_ENV = "METADROP_CUB_URL"  # a base URL holding CUB_200_2011.tgz (a mirror, or a test server)
ARCHIVE = "CUB_200_2011.tgz"
MD5 = "97eceeb196236b17998738112f37df78"
N_CLASSES, N_IMAGES = 200, 11788
SIDE = 84
SHAPE = (SIDE, SIDE, 3)
FILTERS = 32
LISTS = ("images.txt", "image_class_labels.txt", "train_test_split.txt")
SPLITS = {None: {"val": 2, "test": 0}, "official": {"train": 1, "test": 0}}  # split -> id mod 4 / is_train
PREFIX = {None: "", "official": "official_"}
NAME = {None: "cub", "official": "cub_official"}


def _n_classes(view: str | None) -> dict[str, int]:
    return {s: N_CLASSES // 4 if view is None else N_CLASSES for s in SPLITS[view]}


def _open(root: str, view: str | None, retry: str) -> dict:
    dim = int(np.prod(SHAPE))
    return {s: open_classes(root, PREFIX[view], s, n, dim, retry) for s, n in _n_classes(view).items()}


Lists = dict[str, list[list[str]]]  # id list file -> its rows, split into fields


def read_archive(path: str, retry: str) -> tuple[Lists, dict[str, tuple[np.ndarray, bool]]]:
    """(the id lists: file -> rows of fields, image path -> (uint8 [84, 84, 3], was RGB)), in one
    pass over the archive."""
    lists: Lists = {}
    images: dict[str, tuple[np.ndarray, bool]] = {}

    def wanted(name: str) -> bool:
        return os.path.basename(name) in LISTS or "/images/" in name

    for name, raw in tar_members(path, wanted, retry):
        if os.path.basename(name) in LISTS:
            lists[os.path.basename(name)] = [
                line.split() for line in raw.decode().splitlines() if line.strip()
            ]
            continue
        try:
            x = image(raw, SIDE)
            rgb = x.shape == SHAPE  # the original's test: grayscale (and any other mode) is dropped
            images[name.split("/images/", 1)[1]] = (x if rgb else image(raw, SIDE, mode="RGB"), rgb)
        except ValueError as e:
            raise DataError(
                f"{path}: {name} is not a readable image ({e}); delete it and run: {retry}"
            ) from e
    missing = [f for f in LISTS if f not in lists]
    if missing:
        raise DataError(
            f"{path} has no {', '.join(missing)}: it is not CUB-200-2011; delete it and run: {retry}"
        )
    return lists, images


def prepare(root: str, source: str | None, view: str | None = None) -> None:
    """Download (source: a base URL holding CUB_200_2011.tgz, default CaltechDATA or $METADROP_CUB_URL)
    and make the view."""
    name = NAME[view]
    retry = command(name, root, source)
    if ready(lambda: _open(root, view, retry)):
        print(f"{root}: {name} is already prepared")
        return
    base = source or os.environ.get(URL_ENV)
    path = os.path.join(root, ARCHIVE)
    fetch(f"{base.rstrip('/')}/{ARCHIVE}" if base else URL, path, MD5, retry)
    lists, images = read_archive(path, retry)
    try:
        paths = {int(i): p for i, p in lists["images.txt"]}
        label = {int(i): int(c) for i, c in lists["image_class_labels.txt"]}
        is_train = {int(i): int(t) for i, t in lists["train_test_split.txt"]}
        if not (len(paths) == N_IMAGES and set(paths) == set(label) == set(is_train)):
            raise ValueError(f"{len(paths)} images, not {N_IMAGES} with a class and a split each")
        if sorted(set(label.values())) != list(range(1, N_CLASSES + 1)):
            raise ValueError(f"class ids are not 1-{N_CLASSES}")
        missing = [p for p in paths.values() if p not in images]
        if missing:
            raise ValueError(f"{len(missing)} listed images are missing, e.g. {missing[0]}")
    except ValueError as e:
        raise DataError(f"{path} is not CUB-200-2011 ({e}); delete it and run: {retry}") from e
    for split, key in SPLITS[view].items():
        if view is None:  # the classes of this split; RGB images only
            ids = [c for c in range(1, N_CLASSES + 1) if c % 4 == key]
            keep = [[i for i in sorted(paths) if label[i] == c and images[paths[i]][1]] for c in ids]
        else:
            ids = range(1, N_CLASSES + 1)
            keep = [[i for i in sorted(paths) if label[i] == c and is_train[i] == key] for c in ids]
        classes = [np.array([images[paths[i]][0] for i in idx], np.uint8).reshape(-1, *SHAPE) for idx in keep]
        save_classes(root, PREFIX[view], split, classes)
    print(f"{root}: {name} is ready")


def load(root: str, view: str | None = None) -> Dataset:
    return Dataset(NAME[view], SHAPE, FILTERS, Splits(_open(root, view, command(NAME[view], root))))
