"""Tiny ImageNet (Stanford CS231n): 200 ImageNet classes, 64x64 RGB; MetaPerturb's source dataset.

Source: tiny-imagenet-200.zip (MD5 90528d7ca1a48142e341f4ef8d21d0de) from cs231n.stanford.edu, or
--source (a base URL or a folder holding the zip) or $METADROP_TINY_IMAGENET_URL. The zip holds
wnids.txt (the 200 class ids, one a line: their order is the class order here), train/<wnid>/images/
<wnid>_<i>.JPEG (500 a class) and val/images/val_<i>.JPEG labelled by val/val_annotations.txt
(file, wnid, box; 50 a class). The unlabelled test images are not used.
- train: the official training images, [200, 500, 64*64*3] uint8, each class in file-name order
- test: the official validation images, [200, 50, 64*64*3] uint8, in file-name order
Images are kept at 64 px (grayscale ones repeated to RGB); MetaPerturb resizes to --img_size in its
graph. The zip is read in place; if this run downloaded it, it is deleted once both
splits are written.
"""

from __future__ import annotations

import os
import zipfile
from collections import defaultdict

import numpy as np

from data import Dataset
from data.archives import UNREADABLE, base, discard, obtain, open_split_of, rgb, unreadable, write_split
from data.files import command, ready

URL = "http://cs231n.stanford.edu"
URL_ENV = "METADROP_TINY_IMAGENET_URL"  # overrides URL (a mirror, or a test server)
ZIP = "tiny-imagenet-200.zip"
MD5 = {ZIP: "90528d7ca1a48142e341f4ef8d21d0de"}
TOP = "tiny-imagenet-200"  # the folder inside the zip
SIDE = 64
SHAPE = (SIDE, SIDE, 3)
FILTERS = 32  # conv width of the 4-layer network for RGB data (Meta-Dropout, Section 4)
SPLITS = ("train", "test")


def _dim() -> int:
    return int(np.prod(SHAPE))


def _open(root: str, retry: str) -> dict:
    return {s: open_split_of(root, s, _dim(), retry) for s in SPLITS}


def _members(zf: zipfile.ZipFile) -> dict[str, list[str]]:
    """split -> member names, class-sorted (wnids.txt order), file-name order within a class."""
    wnids = zf.read(f"{TOP}/wnids.txt").decode().split()
    if not wnids or len(set(wnids)) != len(wnids):
        raise ValueError("wnids.txt lists no classes, or one twice")
    names = set(zf.namelist())
    by_class: dict[str, list[str]] = defaultdict(list)
    for name in names:  # <TOP>/train/<wnid>/images/<file>.JPEG
        parts = name.split("/")
        if len(parts) == 5 and parts[1:4:2] == ["train", "images"] and parts[4].lower().endswith(".jpeg"):
            by_class[parts[2]].append(name)
    if missing := [w for w in wnids if not by_class[w]]:
        raise ValueError(f"train/{missing[0]}/images holds no JPEG")
    train = [sorted(by_class[w]) for w in wnids]
    val: dict[str, list[str]] = defaultdict(list)
    for line in zf.read(f"{TOP}/val/val_annotations.txt").decode().splitlines():
        if line.strip():
            file, wnid = line.split("\t")[:2]
            if wnid not in wnids:
                raise ValueError(f"val_annotations.txt labels {file} with {wnid}, which wnids.txt lacks")
            if f"{TOP}/val/images/{file}" not in names:
                raise ValueError(f"val_annotations.txt names {file}, which val/images lacks")
            val[wnid].append(f"{TOP}/val/images/{file}")
    if any(not val[w] for w in wnids):
        raise ValueError("val_annotations.txt gives some class no image")
    return {"train": train, "test": [sorted(val[w]) for w in wnids]}


def _write(zf: zipfile.ZipFile, root: str, split: str, classes: list[list[str]]) -> None:
    def fill(out: np.ndarray) -> None:
        i = 0
        for files in classes:
            for name in files:
                out[i] = rgb(zf.read(name), SIDE, name)
                i += 1

    write_split(root, split, np.array([len(f) for f in classes]), _dim(), fill)


def prepare(root: str, source: str | None) -> None:
    """Download (or take from a folder) tiny-imagenet-200.zip and write train and test."""
    retry = command("tiny_imagenet", root, source)
    if ready(lambda: _open(root, retry)):
        print(f"{root}: tiny_imagenet is already prepared")
        return
    path, downloaded = obtain(ZIP, root, base(source, URL_ENV, URL), MD5.get(ZIP), retry)
    try:
        with zipfile.ZipFile(path) as zf:
            for split, classes in _members(zf).items():
                _write(zf, root, split, classes)
                print(f"{root}/{split}.npy: {sum(map(len, classes))} images of {len(classes)} classes")
    except UNREADABLE as e:
        discard(root, SPLITS)
        raise unreadable(path, downloaded, "Tiny ImageNet zip", retry, e) from e
    if downloaded:
        os.remove(path)


def load(root: str) -> Dataset:
    return Dataset("tiny_imagenet", SHAPE, FILTERS, _open(root, command("tiny_imagenet", root)))
