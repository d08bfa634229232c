"""FGVC-Aircraft (Maji et al., 2013): 10,000 photographs of 100 aircraft variants (100 each).

Source: fgvc-aircraft-2013b.tar.gz of www.robots.ox.ac.uk/~vgg/data/fgvc-aircraft (no published
checksum is known: none is checked). Read from fgvc-aircraft-2013b/data/: variants.txt,
images_variant_{trainval,test}.txt ("<image id> <variant>"), images_box.txt ("<id> xmin ymin xmax
ymax") and images/<id>.jpg. The archive (2.75 GB) is read twice, lists then images, and kept in the
data root (./data/aircraft) so both views are made from one download.

- `aircraft` (Bayesian TAML's multi-dataset ID set): each image cropped to its bounding box (PIL
  crop of (xmin, ymin, xmax, ymax), as Meta-Dataset and the original script) and resized to 32x32;
  classes as the 70 / 15 / 15 variant lists hard-coded by the original (data/classes.json
  "aircraft"), trainval and test images pooled, 100 per variant in image-id order: train.npy,
  val.npy, test.npy.
- `aircraft_official` (MetaPerturb's target): the official trainval 6,667 / test 3,333 split of the
  100 variants in variants.txt order, whole images (banner included) resized to 84x84 (our choice;
  the original's pre-made arrays are not public): official_train.npy, official_test.npy.
All PIL bicubic, uint8 (+ .offsets.npy).
"""

from __future__ import annotations

import os

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

BASE_URL = "https://www.robots.ox.ac.uk/~vgg/data/fgvc-aircraft/archives"
URL_ENV = "METADROP_AIRCRAFT_URL"  # overrides BASE_URL (a mirror, or a test server)
ARCHIVE = "fgvc-aircraft-2013b.tar.gz"
MD5 = None  # unknown: no checksum of this archive is published
N_VARIANTS, PER_VARIANT = 100, 100
FS_CLASSES = {"train": 70, "val": 15, "test": 15}
LISTS = ("variants.txt", "images_variant_trainval.txt", "images_variant_test.txt", "images_box.txt")
SIDE = {None: 32, "official": 84}
PREFIX = {None: "", "official": "official_"}
NAME = {None: "aircraft", "official": "aircraft_official"}
FILTERS = 32


def _shape(view: str | None) -> tuple[int, int, int]:
    return (SIDE[view], SIDE[view], 3)


def _open(root: str, view: str | None, retry: str) -> dict:
    counts = FS_CLASSES if view is None else {"train": N_VARIANTS, "test": N_VARIANTS}
    dim = int(np.prod(_shape(view)))
    return {s: open_classes(root, PREFIX[view], s, n, dim, retry) for s, n in counts.items()}


def _lists(path: str, retry: str) -> dict[str, list[str]]:
    found = {}
    for name, raw in tar_members(path, lambda n: n.endswith(tuple(f"data/{f}" for f in LISTS)), retry):
        found[os.path.basename(name)] = [line for line in raw.decode().splitlines() if line.strip()]
    missing = [f for f in LISTS if f not in found]
    if missing:
        raise DataError(f"{path} has no {', '.join(missing)}: not FGVC-Aircraft; delete it and run: {retry}")
    return found


def prepare(root: str, source: str | None, view: str | None = None) -> None:
    """Download (source: base URL, default BASE_URL or $METADROP_AIRCRAFT_URL) and make the view."""
    name = NAME[view]
    retry = command(name, root, source)
    if ready(lambda: _open(root, view, retry)):
        print(f"{root}: {name} is already prepared")
        return
    base = (source or os.environ.get(URL_ENV) or BASE_URL).rstrip("/")
    path = os.path.join(root, ARCHIVE)
    fetch(f"{base}/{ARCHIVE}", path, MD5, retry)
    lists = _lists(path, retry)
    try:
        variants = lists["variants.txt"]
        split_of = {}  # image id -> (official split, variant)
        for split, f in (("train", "images_variant_trainval.txt"), ("test", "images_variant_test.txt")):
            for line in lists[f]:
                image_id, variant = line.split(" ", 1)
                split_of[image_id] = (split, variant)
        boxes = {}
        for line in lists["images_box.txt"]:
            image_id, *box = line.split()
            boxes[image_id] = tuple(int(v) for v in box)
        per_variant = {v: sorted(i for i, (_, w) in split_of.items() if w == v) for v in variants}
        sizes = {len(ids) for ids in per_variant.values()}
        if len(variants) != N_VARIANTS or sizes != {PER_VARIANT} or not set(split_of) <= set(boxes):
            raise ValueError(f"{len(variants)} variants of {sorted(sizes)} images, or images without a box")
    except ValueError as e:
        raise DataError(f"{path} is not FGVC-Aircraft 2013b ({e}); delete it and run: {retry}") from e
    images = {}
    for member, raw in tar_members(path, lambda n: "/data/images/" in n and n.endswith(".jpg"), retry):
        image_id = os.path.basename(member)[: -len(".jpg")]
        if image_id in split_of:
            try:
                box = boxes[image_id] if view is None else None
                images[image_id] = image(raw, SIDE[view], box=box, mode="RGB")
            except ValueError as e:
                raise DataError(
                    f"{path}: {member} is not a readable image ({e}); delete it, run: {retry}"
                ) from e
    missing = sorted(set(split_of) - set(images))
    if missing:
        raise DataError(
            f"{path} lacks {len(missing)} listed images, e.g. {missing[0]}; delete it and run: {retry}"
        )
    if view is None:
        fs = class_lists("aircraft", FS_CLASSES)
        unknown = [v for names in fs.values() for v in names if v not in per_variant]
        if unknown:
            raise DataError(f"{path} has no variants {unknown}; delete it and run: {retry}")
        for split, names in fs.items():
            save_classes(root, "", split, [np.stack([images[i] for i in per_variant[v]]) for v in names])
    else:
        for split in ("train", "test"):
            ids = [[i for i in per_variant[v] if split_of[i][0] == split] for v in variants]
            save_classes(root, PREFIX[view], split, [np.stack([images[i] for i in x]) for x in ids])
    print(f"{root}: {name} is ready")


def load(root: str, view: str | None = None) -> Dataset:
    return Dataset(NAME[view], _shape(view), FILTERS, Splits(_open(root, view, command(NAME[view], root))))
