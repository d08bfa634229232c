"""miniImageNet (Vinyals et al., 2016) with the class split of Ravi & Larochelle (2017).

Source: mini-imagenet-cache-{train,validation,test}.pkl, the widely used pickles of Ren et al.
(2018, github.com/renmengye/few-shot-ssl-public) as mirrored by learn2learn on Zenodo
(record 7978538). Each holds image_data, uint8 [N, 84, 84, 3], and class_dict, {ImageNet wnid:
[indices]}: 64 / 16 / 20 classes of 600 images. They are read by an unpickler that builds numpy
arrays and nothing else, converted to train.npy, val.npy and test.npy, uint8 [classes, 600,
84*84*3] with classes sorted by wnid, and deleted. Pickles already in the data root are used
without downloading. A split becomes float32 (/255) the first time a run uses it, so a run holds
only the splits it needs (train 3.3 GB, val 0.8 GB, test 1.0 GB).
"""

from __future__ import annotations

import contextlib
import functools
import os

import numpy as np

from data import DataError, Dataset, Ragged
from data.files import ArraysOnly, Splits, command, fetch, open_split, raise_resource, ready, write_npy

BASE_URL = "https://zenodo.org/records/7978538/files"
URL_ENV = "METADROP_MIMGNET_URL"  # overrides BASE_URL (a mirror, or a test server)
FILES = {
    "train": "mini-imagenet-cache-train.pkl",
    "val": "mini-imagenet-cache-validation.pkl",
    "test": "mini-imagenet-cache-test.pkl",
}
CLASSES = {"train": 64, "val": 16, "test": 20}
EXAMPLES = 600
SHAPE = (84, 84, 3)
FILTERS = 32  # conv width for miniImageNet (Section 4)


def _dim() -> int:
    return int(np.prod(SHAPE))


def _path(root: str, split: str) -> str:
    return os.path.join(root, f"{split}.npy")


def _open(root: str, split: str, retry: str) -> np.ndarray:
    """A prepared split; EXAMPLES per class, or any other whole number (tests/standin.py's are small)."""
    path, examples = _path(root, split), EXAMPLES
    with contextlib.suppress(OSError, ValueError, EOFError):  # open_split below says what is wrong
        size = np.load(path, mmap_mode="r", allow_pickle=False).size
        if size and size % (CLASSES[split] * _dim()) == 0:
            examples = size // (CLASSES[split] * _dim())
    return open_split(path, (CLASSES[split], examples, _dim()), ("uint8",), retry)


def _convert(pkl: str, split: str, npy: str, retry: str) -> None:
    """One cache pickle -> [classes, 600, 84*84*3] uint8, classes sorted by wnid."""
    try:
        with open(pkl, "rb") as f:
            cache = ArraysOnly(f, encoding="latin1").load()
        images, classes = cache["image_data"], cache["class_dict"]
        if not (isinstance(images, np.ndarray) and images.dtype == np.uint8 and images.shape[1:] == SHAPE):
            raise ValueError(f"image_data is not uint8 [N, {', '.join(map(str, SHAPE))}]")
        if len(classes) != CLASSES[split]:
            raise ValueError(f"{len(classes)} classes, not {CLASSES[split]}")
        index = np.array([classes[wnid] for wnid in sorted(classes)], dtype=np.int64)
        if index.shape != (CLASSES[split], EXAMPLES) or not 0 <= index.min() <= index.max() < len(images):
            raise ValueError(f"class_dict does not give {EXAMPLES} images of image_data to every class")
    except Exception as e:  # anything a damaged or foreign pickle can raise: shown malformed
        raise_resource(e, pkl)  # ... unless memory, the disk or a permission failed: kept
        os.remove(pkl)
        raise DataError(
            f"{pkl} is not a miniImageNet cache ({type(e).__name__}: {e}); it was deleted: run `{retry}` "
            "again, and if this repeats the server holds another file"
        ) from e

    def fill(out: np.ndarray) -> None:
        for c, idx in enumerate(index):
            out[c] = images[idx].reshape(EXAMPLES, -1)

    write_npy(npy, np.uint8, index.shape + (_dim(),), fill)
    os.remove(pkl)


def prepare(root: str, source: str | None) -> None:
    """Download (source: base URL, default BASE_URL or $METADROP_MIMGNET_URL) and convert each split."""
    retry = command("mimgnet", root, source)
    base = (source or os.environ.get(URL_ENV) or BASE_URL).rstrip("/")
    for split, name in FILES.items():
        npy = _path(root, split)
        if ready(functools.partial(_open, root, split, retry)):
            print(f"{npy}: already prepared")
            continue
        pkl = os.path.join(root, name)
        fetch(f"{base}/{name}", pkl, None, retry)
        _convert(pkl, split, npy, retry)
        print(f"{npy}: ready")


def load(root: str) -> Dataset:
    retry = command("mimgnet", root)
    raw = {s: _open(root, s, retry) for s in CLASSES}  # [classes, examples, D] each: even classes
    offsets = {s: np.arange(len(a) + 1, dtype=np.int64) * a.shape[1] for s, a in raw.items()}
    return Dataset(
        "mimgnet",
        SHAPE,
        FILTERS,
        Splits({s: Ragged(a.reshape(-1, a.shape[2]), offsets[s]) for s, a in raw.items()}),
    )
