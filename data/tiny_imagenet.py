"""Tiny ImageNet (Stanford CS231n): 200 ImageNet classes, 64x64 RGB; MetaPerturb's source dataset.

Source: tiny-imagenet-200.zip (MD5 90528d7ca1a48142e341f4ef8d21d0de) from cs231n.stanford.edu, or
--source (a base URL or a folder holding the zip) or $METADROP_TINY_IMAGENET_URL. The zip holds
wnids.txt (the 200 class ids, one a line: their order is the class order here), train/<wnid>/images/
<wnid>_<i>.JPEG (500 a class) and val/images/val_<i>.JPEG labelled by val/val_annotations.txt
(file, wnid, box; 50 a class). The unlabelled test images are not used.
- train: the official training images, [200, 500, 64*64*3] uint8, each class in file-name order
- test: the official validation images, [200, 50, 64*64*3] uint8, in file-name order
Images are kept at 64 px (grayscale ones converted to RGB); MetaPerturb resizes to --img_size in
its graph. Both splits are decoded before either is written (about 2.5 GB of memory at the peak);
a zip this run downloaded is deleted once they are written.
"""

from __future__ import annotations

import os
import zipfile
from collections import defaultdict

import numpy as np

from data import Dataset
from data.archives import UNREADABLE, base, obtain, open_splits, rgb, unreadable
from data.files import command, ready, save_classes

URL = "http://cs231n.stanford.edu"
URL_ENV = "METADROP_TINY_IMAGENET_URL"  # overrides URL (a mirror, or a test server)
ZIP = "tiny-imagenet-200.zip"
MD5 = {ZIP: "90528d7ca1a48142e341f4ef8d21d0de"}
TOP = "tiny-imagenet-200"  # the folder inside the zip
CLASSES = 200
SIDE = 64
SHAPE = (SIDE, SIDE, 3)
FILTERS = 32  # conv width of the 4-layer network for RGB data (Meta-Dropout, Section 4)
SPLITS = ("train", "test")


def members(zf: zipfile.ZipFile) -> dict[str, list[list[str]]]:
    """split -> per class (wnids.txt order) its member names in file-name order."""
    wnids = zf.read(f"{TOP}/wnids.txt").decode().split()
    if len(wnids) != CLASSES or len(set(wnids)) != len(wnids):
        raise ValueError(f"wnids.txt lists {len(set(wnids))} distinct classes, not {CLASSES}")
    names = set(zf.namelist())
    train: dict[str, list[str]] = defaultdict(list)
    for name in names:  # <TOP>/train/<wnid>/images/<file>.JPEG
        parts = name.split("/")
        if len(parts) == 5 and parts[1:4:2] == ["train", "images"] and parts[4].lower().endswith(".jpeg"):
            train[parts[2]].append(name)
    val: dict[str, list[str]] = defaultdict(list)
    for line in zf.read(f"{TOP}/val/val_annotations.txt").decode().splitlines():
        if line.strip():
            file, wnid = line.split("\t")[:2]
            if wnid not in wnids:
                raise ValueError(f"val_annotations.txt labels {file} with {wnid}, which wnids.txt lacks")
            if f"{TOP}/val/images/{file}" not in names:
                raise ValueError(f"val_annotations.txt names {file}, which val/images lacks")
            val[wnid].append(f"{TOP}/val/images/{file}")
    for split, found in (("train", train), ("val", val)):
        if missing := [w for w in wnids if not found[w]]:
            raise ValueError(f"{split} holds no image of {missing[0]}")
    return {"train": [sorted(train[w]) for w in wnids], "test": [sorted(val[w]) for w in wnids]}


def prepare(root: str, source: str | None) -> None:
    """Download (or take from a folder) tiny-imagenet-200.zip and write train and test."""
    retry = command("tiny_imagenet", root, source)
    if ready(lambda: open_splits(root, SPLITS, CLASSES, SHAPE, retry)):
        print(f"{root}: tiny_imagenet is already prepared")
        return
    path, downloaded = obtain(ZIP, root, base(source, URL_ENV, URL), MD5.get(ZIP), retry)
    splits = {}
    try:
        with zipfile.ZipFile(path) as zf:
            for split, classes in members(zf).items():
                splits[split] = [np.stack([rgb(zf.read(n), SIDE, n) for n in files]) for files in classes]
    except UNREADABLE as e:
        raise unreadable(path, downloaded, "Tiny ImageNet zip", retry, e) from e
    for split, classes in splits.items():
        save_classes(root, "", split, classes)
        print(f"{root}/{split}.npy: {sum(map(len, classes))} images of {CLASSES} classes")
    if downloaded:
        os.remove(path)


def load(root: str) -> Dataset:
    return Dataset(
        "tiny_imagenet",
        SHAPE,
        FILTERS,
        open_splits(root, SPLITS, CLASSES, SHAPE, command("tiny_imagenet", root)),
    )
