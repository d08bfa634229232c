"""Stanford Dogs (Khosla et al., 2011): 120 dog breeds of ImageNet; a MetaPerturb target dataset.

Source: images.tar (MD5 1bb1f2a596ae7057f99d7d75860002ef) and lists.tar (MD5
edbb9f16854ec66506b5f09b583e0656) from vision.stanford.edu/aditya86/ImageNetDogs, or --source (a
base URL or a folder holding both) or $METADROP_STANFORD_DOGS_URL. lists.tar holds the official split
as MATLAB files train_list.mat and test_list.mat: file_list (paths <wnid>-<breed>/<file>.jpg under
Images/ in images.tar) and labels (1-120, breeds in wnid order).
- train: [120, 100, 84*84*3] uint8 (12,000 images); test: Ragged, 8,580 images, 48-152 a class;
  classes in label order, images in list order within a class.
Images have various sizes; they are stored at 84x84 (RGB, resized whole with bicubic filtering,
aspect ratio not kept, no bounding-box crop): the size of MetaPerturb's run.sh for fine-grained
targets, which resizes again to --img_size in its graph. The archives are read once (no
extraction); those this run downloaded are deleted once both splits are written.
"""

from __future__ import annotations

import io
import os
import tarfile

import numpy as np

from data import DataError, Dataset
from data.archives import UNREADABLE, base, decode_tar, obtain, open_splits, save_split, unreadable
from data.files import command, ready

URL = "http://vision.stanford.edu/aditya86/ImageNetDogs"
URL_ENV = "METADROP_STANFORD_DOGS_URL"  # overrides URL (a mirror, or a test server)
IMAGES, LISTS = "images.tar", "lists.tar"
MD5 = {IMAGES: "1bb1f2a596ae7057f99d7d75860002ef", LISTS: "edbb9f16854ec66506b5f09b583e0656"}
CLASSES = 120
SIDE = 84
SHAPE = (SIDE, SIDE, 3)
FILTERS = 32  # conv width of the 4-layer network for RGB data (Meta-Dropout, Section 4)
SPLITS = ("train", "test")


def read_list(data: bytes, name: str) -> tuple[list[str], np.ndarray]:
    """(file paths, labels [N] 0-based) of a train_list.mat or test_list.mat."""
    from scipy.io import loadmat

    mat = loadmat(io.BytesIO(data))
    files = [str(np.ravel(f)[0]) for f in np.ravel(mat["file_list"])]
    labels = np.ravel(mat["labels"]).astype(np.int64) - 1
    if len(files) != len(labels) or not files:
        raise ValueError(f"{name}: {len(files)} files but {len(labels)} labels")
    if not 0 <= labels.min() <= labels.max() < CLASSES:
        raise ValueError(f"{name} holds labels outside 1-{CLASSES}")
    return files, labels


def _lists(path: str) -> dict[str, tuple[list[str], np.ndarray]]:
    with tarfile.open(path) as tar:
        return {
            s: read_list(tar.extractfile(tar.getmember(f"{s}_list.mat")).read(), f"{s}_list.mat")
            for s in SPLITS
        }


def prepare(root: str, source: str | None) -> None:
    """Download (or take from a folder) images.tar and lists.tar and write train and test."""
    retry = command("stanford_dogs", root, source)
    if ready(lambda: open_splits(root, SPLITS, CLASSES, SHAPE, retry)):
        print(f"{root}: stanford_dogs is already prepared")
        return
    url = base(source, URL_ENV, URL)
    lists, lists_downloaded = obtain(LISTS, root, url, MD5.get(LISTS), retry)
    images, images_downloaded = obtain(IMAGES, root, url, MD5.get(IMAGES), retry)
    try:
        split_lists = _lists(lists)
        wanted = {f"Images/{f}": (s, i) for s, (fs, _) in split_lists.items() for i, f in enumerate(fs)}
        if len(wanted) != sum(len(files) for files, _ in split_lists.values()):
            raise ValueError("its lists name an image twice")
    except (*UNREADABLE, NotImplementedError, TypeError) as e:  # what scipy's loadmat raises
        raise unreadable(lists, lists_downloaded, "Stanford Dogs lists.tar", retry, e) from e
    try:
        decoded = decode_tar(images, wanted, SIDE, retry)
    except (DataError, *UNREADABLE) as e:  # DataError: a damaged tar
        raise unreadable(images, images_downloaded, "Stanford Dogs images.tar", retry, e) from e
    for split, (_, labels) in split_lists.items():
        save_split(root, split, decoded[split], labels, CLASSES)
        print(f"{root}/{split}.npy: {len(labels)} images of {CLASSES} classes")
    for path, downloaded in ((lists, lists_downloaded), (images, images_downloaded)):
        if downloaded:
            os.remove(path)


def load(root: str) -> Dataset:
    return Dataset(
        "stanford_dogs",
        SHAPE,
        FILTERS,
        open_splits(root, SPLITS, CLASSES, SHAPE, command("stanford_dogs", root)),
    )
