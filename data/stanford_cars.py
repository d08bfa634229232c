"""Stanford Cars (Krause et al., 2013): 196 car models; a MetaPerturb target dataset.

Source: car_ims.tgz (MD5 d5c8f0aa497503f355e17dc7886c3f14: car_ims/000001.jpg ... 016185.jpg) and
cars_annos.mat (MD5 b407c6086d669747186bd1d764ff9dbc), the all-images layout the dataset's page
offered. Its hosts (ai.stanford.edu/~jkrause/car196, imagenet.stanford.edu/internal/car196) are
gone; the default is the Internet Archive's copy of the latter (URL), and --source (a base URL or
a folder holding both files, e.g. from a mirror) or $METADROP_STANFORD_CARS_URL override it; the
MD5s make sure any of them gives the original bytes. cars_annos.mat holds `annotations`, one
struct an image: relative_im_path, bounding box, class (1-196) and test (1 for the official test
split).
- train: Ragged, 8,144 images; test: Ragged, 8,041 images (classes of different sizes); classes
  in label order, images in annotation order within a class.
Images are stored at 84x84 (RGB, whole image resized with bicubic filtering, aspect ratio not
kept, no bounding-box crop), the size MetaPerturb's run.sh uses for Cars. The archive is read
once (no extraction); files this run downloaded are deleted once the splits are written.
"""

from __future__ import annotations

import os

import numpy as np

from data import DataError, Dataset
from data.archives import UNREADABLE, base, decode_tar, obtain, open_splits, save_split, unreadable
from data.files import command, ready

URL = "https://web.archive.org/web/2019id_/http://imagenet.stanford.edu/internal/car196"
URL_ENV = "METADROP_STANFORD_CARS_URL"  # overrides URL (a mirror, or a test server)
IMAGES, ANNOS = "car_ims.tgz", "cars_annos.mat"
MD5 = {IMAGES: "d5c8f0aa497503f355e17dc7886c3f14", ANNOS: "b407c6086d669747186bd1d764ff9dbc"}
CLASSES = 196
SIDE = 84
SHAPE = (SIDE, SIDE, 3)
FILTERS = 32  # conv width of the 4-layer network for RGB data (Meta-Dropout, Section 4)
SPLITS = ("train", "test")


def read_annotations(path: str) -> dict[str, tuple[list[str], np.ndarray]]:
    """split -> (image paths in car_ims.tgz, labels [N] 0-based) from cars_annos.mat."""
    from scipy.io import loadmat

    ann = np.ravel(loadmat(path)["annotations"])
    files = [str(np.ravel(a)[0]) for a in ann["relative_im_path"]]
    labels = np.array([int(np.ravel(a)[0]) for a in ann["class"]], np.int64) - 1
    test = np.array([int(np.ravel(a)[0]) for a in ann["test"]]) == 1
    if not len(files) or not 0 <= labels.min() <= labels.max() < CLASSES:
        raise ValueError(f"its annotations are empty or hold a class outside 1-{CLASSES}")
    if len(set(files)) != len(files):
        raise ValueError("its annotations name an image twice")
    out = {}
    for split in SPLITS:
        keep = test == (split == "test")
        out[split] = ([f for f, k in zip(files, keep) if k], labels[keep])
        if not keep.any():
            raise ValueError(f"its annotations give the {split} split no image")
    return out


def prepare(root: str, source: str | None) -> None:
    """Download (or take from a folder) car_ims.tgz and cars_annos.mat and write train and test."""
    retry = command("stanford_cars", root, source)
    if ready(lambda: open_splits(root, SPLITS, CLASSES, SHAPE, retry)):
        print(f"{root}: stanford_cars is already prepared")
        return
    url = base(source, URL_ENV, URL)
    try:
        annos, annos_downloaded = obtain(ANNOS, root, url, MD5.get(ANNOS), retry)
        images, images_downloaded = obtain(IMAGES, root, url, MD5.get(IMAGES), retry)
    except DataError as e:
        if url != URL:
            raise
        raise DataError(
            f"{e}\nStanford Cars' own hosts are gone and {URL} is the Internet Archive's copy: if it "
            f"fails, get {IMAGES} (MD5 {MD5[IMAGES]}) and {ANNOS} (MD5 {MD5[ANNOS]}) from a mirror and "
            f"run: {command('stanford_cars', root, 'FOLDER_OR_URL')}"
        ) from e
    try:
        split_annos = read_annotations(annos)
    except (*UNREADABLE, NotImplementedError, TypeError) as e:  # what scipy's loadmat raises
        raise unreadable(annos, annos_downloaded, "Stanford Cars cars_annos.mat", retry, e) from e
    wanted = {f: (s, i) for s, (files, _) in split_annos.items() for i, f in enumerate(files)}
    try:
        decoded = decode_tar(images, wanted, SIDE, retry)
    except (DataError, *UNREADABLE) as e:  # DataError: a damaged tar
        raise unreadable(images, images_downloaded, "Stanford Cars car_ims.tgz", retry, e) from e
    for split, (_, labels) in split_annos.items():
        save_split(root, split, decoded[split], labels, CLASSES)
        print(f"{root}/{split}.npy: {len(labels)} images of {CLASSES} classes")
    for path, downloaded in ((annos, annos_downloaded), (images, images_downloaded)):
        if downloaded:
            os.remove(path)


def load(root: str) -> Dataset:
    return Dataset(
        "stanford_cars",
        SHAPE,
        FILTERS,
        open_splits(root, SPLITS, CLASSES, SHAPE, command("stanford_cars", root)),
    )
