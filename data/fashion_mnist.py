"""Fashion-MNIST (Xiao et al., 2017), test set: an out-of-distribution set of Bayesian TAML's
multi-dataset experiment (spec section 3).

Source: t10k-images-idx3-ubyte.gz and t10k-labels-idx1-ubyte.gz of Zalando's S3 host (MD5 as
published with torchvision). Each 28x28 image is resized to 32x32 (PIL bicubic) and repeated to
RGB; classes in label order (T-shirt/top, ..., ankle boot), images in file order: test.npy,
10 classes x 1,000, 32x32x3 uint8 (+ .offsets.npy). No train or val split.
"""

from __future__ import annotations

import gzip
import os

import numpy as np

from data import DataError, Dataset
from data.files import Splits, command, fetch, image, open_classes, ready, rgb, save_classes

BASE_URL = "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com"
URL_ENV = "METADROP_FASHION_MNIST_URL"  # overrides BASE_URL (a mirror, or a test server)
FILES = {
    "images": ("t10k-images-idx3-ubyte.gz", "bef4ecab320f06d8554ea6380940ec79"),
    "labels": ("t10k-labels-idx1-ubyte.gz", "bb300cfdad3c16e7a12a480ee83cd310"),
}
N_CLASSES, PER_CLASS = 10, 1000
SIDE = 32
SHAPE = (SIDE, SIDE, 3)
FILTERS = 32


def _open(root: str, retry: str) -> dict:
    return {"test": open_classes(root, "", "test", N_CLASSES, int(np.prod(SHAPE)), retry)}


def read_idx(path: str, magic: int, retry: str) -> np.ndarray:
    """An idx file (LeCun's MNIST format, gzipped): uint8 [n, ...] of its big-endian header's dims."""
    try:
        with gzip.open(path, "rb") as f:
            raw = f.read()
        head = np.frombuffer(raw[:4], ">u4")[0]
        ndim = head & 0xFF
        if head != magic:
            raise ValueError(f"magic number {head}, not {magic}")
        dims = np.frombuffer(raw[4 : 4 + 4 * ndim], ">u4").astype(np.int64)
        return np.frombuffer(raw[4 + 4 * ndim :], np.uint8).reshape(dims)
    except (OSError, EOFError, ValueError) as e:
        raise DataError(f"{path} is not a gzipped idx file ({e}); delete it and run: {retry}") from e


def prepare(root: str, source: str | None) -> None:
    """Download (source: base URL, default BASE_URL or $METADROP_FASHION_MNIST_URL) and make test."""
    retry = command("fashion-mnist", root, source)
    if ready(lambda: _open(root, retry)):
        print(f"{root}: Fashion-MNIST is already prepared")
        return
    base = (source or os.environ.get(URL_ENV) or BASE_URL).rstrip("/")
    paths = {k: os.path.join(root, name) for k, (name, _) in FILES.items()}
    for k, (name, md5) in FILES.items():
        fetch(f"{base}/{name}", paths[k], md5, retry)
    images = read_idx(paths["images"], 2051, retry)
    labels = read_idx(paths["labels"], 2049, retry)
    counts = np.bincount(labels, minlength=N_CLASSES)
    if images.shape[1:] != (28, 28) or len(images) != len(labels) or (counts != PER_CLASS).any():
        raise DataError(
            f"{paths['images']} and {paths['labels']} hold {images.shape} images and {counts.tolist()} "
            f"labels per class, not 28x28 and {PER_CLASS} each; delete them and run: {retry}"
        )
    big = np.stack([rgb(image(x, SIDE)) for x in images])
    save_classes(root, "", "test", [big[labels == c] for c in range(N_CLASSES)])
    print(f"{root}: Fashion-MNIST is ready")


def load(root: str) -> Dataset:
    return Dataset("fashion-mnist", SHAPE, FILTERS, Splits(_open(root, command("fashion-mnist", root))))
