"""VGG Flower 102 (Nilsback & Zisserman, 2008): an in-distribution set of Bayesian TAML's
multi-dataset experiment (spec section 3).

Source: 102flowers.tgz (jpg/image_00001.jpg ...) and imagelabels.mat (labels 1-102 of the 8,189
images) of www.robots.ox.ac.uk/~vgg/data/flowers/102 (MD5 as published with torchvision). Classes
as the 71 / 15 / 16 lists hard-coded by the original (data/classes.json "vgg_flower", "<label>.<name>"),
in list order; images in file order, resized whole to 32x32 (PIL bicubic): train.npy, val.npy,
test.npy, classes of 40 to 258 images, uint8 (+ .offsets.npy). Values are handed out in [0, 1] like
every other dataset: the original's 0-255 VGG Flower (Bayesian TAML spec quirk Q8) is not kept.
"""

from __future__ import annotations

import os
import re

import numpy as np

from data import DataError, Dataset
from data.files import (
    Splits,
    class_lists,
    command,
    fetch,
    image,
    open_classes,
    ready,
    save_classes,
    tar_members,
)

BASE_URL = "https://www.robots.ox.ac.uk/~vgg/data/flowers/102"
URL_ENV = "METADROP_VGG_FLOWER_URL"  # overrides BASE_URL (a mirror, or a test server)
FILES = {
    "images": ("102flowers.tgz", "52808999861908f626f3c1f4e79d11fa"),
    "labels": ("imagelabels.mat", "e0620be6f572b9609742df49c70aed4d"),
}
CLASSES = {"train": 71, "val": 15, "test": 16}
N_IMAGES = 8189
SIDE = 32
SHAPE = (SIDE, SIDE, 3)
FILTERS = 32
JPG = re.compile(r"(?:.*/)?image_(\d{5})\.jpg$")


def _open(root: str, retry: str) -> dict:
    dim = int(np.prod(SHAPE))
    return {s: open_classes(root, "", s, n, dim, retry) for s, n in CLASSES.items()}


def prepare(root: str, source: str | None) -> None:
    """Download (source: base URL, default BASE_URL or $METADROP_VGG_FLOWER_URL) and make the splits."""
    import scipy.io

    retry = command("vgg_flower", root, source)
    if ready(lambda: _open(root, retry)):
        print(f"{root}: VGG Flower is already prepared")
        return
    base = (source or os.environ.get(URL_ENV) or BASE_URL).rstrip("/")
    paths = {k: os.path.join(root, name) for k, (name, _) in FILES.items()}
    for k, (name, md5) in FILES.items():
        fetch(f"{base}/{name}", paths[k], md5, retry)
    try:
        labels = np.asarray(scipy.io.loadmat(paths["labels"])["labels"]).ravel().astype(np.int64)
        if len(labels) != N_IMAGES or sorted(set(labels)) != list(range(1, 103)):
            raise ValueError(f"{len(labels)} labels of {len(set(labels))} classes, not {N_IMAGES} of 102")
    except Exception as e:  # scipy raises many kinds on a damaged file
        raise DataError(
            f"{paths['labels']} is not VGG Flower's imagelabels.mat ({e}); delete it and run: {retry}"
        ) from e
    images: dict[int, np.ndarray] = {}
    for name, raw in tar_members(paths["images"], lambda n: JPG.match(n) is not None, retry):
        try:
            images[int(JPG.match(name)[1])] = image(raw, SIDE, mode="RGB")
        except ValueError as e:
            raise DataError(
                f"{paths['images']}: {name} is not a readable image ({e}); delete it, run: {retry}"
            ) from e
    if sorted(images) != list(range(1, N_IMAGES + 1)):
        raise DataError(
            f"{paths['images']} holds {len(images)} of the {N_IMAGES} images; delete it and run: {retry}"
        )
    for split, names in class_lists("vgg_flower", CLASSES).items():
        ids = [int(n.split(".", 1)[0]) for n in names]
        save_classes(
            root, "", split, [np.stack([images[i + 1] for i in np.flatnonzero(labels == c)]) for c in ids]
        )
    print(f"{root}: VGG Flower is ready")


def load(root: str) -> Dataset:
    return Dataset("vgg_flower", SHAPE, FILTERS, Splits(_open(root, command("vgg_flower", root))))
