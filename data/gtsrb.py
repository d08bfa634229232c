"""Traffic Signs, GTSRB (Stallkamp et al., 2012), training images: an out-of-distribution set of
Bayesian TAML's multi-dataset experiment (`traffic`, spec section 3).

Source: GTSRB_Final_Training_Images.zip of sid.erda.dk (no published checksum is known: none is
checked). GTSRB/Final_Training/Images/<class 00000-00042>/*.ppm (the GT-*.csv annotations are not
used: the original takes whole images). Each image is converted to RGB and resized whole to 32x32
(PIL bicubic); classes in number order, images in file-name order: test.npy, 43 classes of
different sizes (39,209 images), uint8 (+ .offsets.npy). No train or val split.
"""

from __future__ import annotations

import os
import re
import zipfile
import zlib

import numpy as np

from data import DataError, Dataset
from data.files import Splits, command, fetch, image, open_classes, ready, save_classes

BASE_URL = "https://sid.erda.dk/public/archives/daaeac0d7ce1152aea9b61d9f1e19370"
URL_ENV = "METADROP_GTSRB_URL"  # overrides BASE_URL (a mirror, or a test server)
ARCHIVE = "GTSRB_Final_Training_Images.zip"
MD5 = None  # unknown: no checksum of this archive is published
N_CLASSES, N_IMAGES = 43, 39209
SIDE = 32
SHAPE = (SIDE, SIDE, 3)
FILTERS = 32
PPM = re.compile(r"(?:.*/)?Final_Training/Images/(\d{5})/([^/]+\.ppm)$")


def _open(root: str, retry: str) -> dict:
    return {"test": open_classes(root, "", "test", N_CLASSES, int(np.prod(SHAPE)), retry)}


def prepare(root: str, source: str | None) -> None:
    """Download (source: base URL, default BASE_URL or $METADROP_GTSRB_URL) and make test."""
    retry = command("traffic", root, source)
    if ready(lambda: _open(root, retry)):
        print(f"{root}: GTSRB is already prepared")
        return
    base = (source or os.environ.get(URL_ENV) or BASE_URL).rstrip("/")
    path = os.path.join(root, ARCHIVE)
    fetch(f"{base}/{ARCHIVE}", path, MD5, retry)
    classes: list[list[np.ndarray]] = [[] for _ in range(N_CLASSES)]
    try:
        with zipfile.ZipFile(path) as zf:
            members = sorted((int(m[1]), m[2], m[0]) for n in zf.namelist() if (m := PPM.match(n)))
            if len(members) != N_IMAGES or {c for c, _, _ in members} != set(range(N_CLASSES)):
                raise ValueError(f"{len(members)} images of classes other than 0-{N_CLASSES - 1}")
            for c, _, name in members:
                classes[c].append(image(zf.read(name), SIDE, mode="RGB"))
    except (zipfile.BadZipFile, OSError, EOFError, zlib.error, ValueError) as e:
        raise DataError(f"{path} is not the GTSRB training archive ({e}); delete it and run: {retry}") from e
    save_classes(root, "", "test", [np.stack(x) for x in classes])
    print(f"{root}: GTSRB is ready")


def load(root: str) -> Dataset:
    return Dataset("traffic", SHAPE, FILTERS, Splits(_open(root, command("traffic", root))))
