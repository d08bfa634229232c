"""Datasets behind one interface: per split, the images of each class, flattened to H*W*C in [0, 1].

A split is either an array [classes, examples, H*W*C] (every class the same size) or a `Ragged` one
(classes of different sizes, as CUB or VGG Flower). Each dataset is one module with
`load(root) -> Dataset`; register it in DATASETS.
"""

from __future__ import annotations

import importlib
import os
from collections.abc import Mapping
from dataclasses import dataclass
from types import ModuleType

import numpy as np

SPLITS = ("train", "val", "test")

# name -> module of this package that loads it, or "module:view" where one source serves several
# datasets (the module's load(root, view) and prepare(root, source, view) take the view)
DATASETS = {
    "digits": "data.digits",
    "omniglot": "data.omniglot",  # the paper's: all 1200 training characters, no validation split
    "omniglot_val": "data.omniglot:val",  # the last 100 of them held out for meta-validation
    "omniglot_small": "data.omniglot_small",
    "omniglot_small16": "data.omniglot_small16",  # 16x16, the Bayesian TAML demo's OOD set
    "mimgnet": "data.mimgnet",
    # Bayesian TAML (Bayesian TAML's original code, spec section 3)
    "cifar": "data.cifar100",
    "svhn": "data.svhn",
    "cub": "data.cub",
    "aircraft": "data.aircraft",
    "quickdraw": "data.quickdraw",
    "vgg_flower": "data.vgg_flower",
    "traffic": "data.gtsrb",
    "fashion-mnist": "data.fashion_mnist",
    # MetaPerturb targets (MetaPerturb's original code, spec section 3) from the same sources
    "small_cifar_100": "data.cifar100:small",
    "aircraft_official": "data.aircraft:official",
    "cub_official": "data.cub:official",
    # MetaPerturb's source and targets (MetaPerturb's original code, spec section 3), the original's names
    "tiny_imagenet": "data.tiny_imagenet",
    "stl10": "data.stl10",
    "stanford_dogs": "data.stanford_dogs",
    "stanford_cars": "data.stanford_cars",
}
# views prepared in the folder of their source (they share its downloaded archive)
FOLDERS = {
    "small_cifar_100": "cifar",
    "aircraft_official": "aircraft",
    "cub_official": "cub",
    "omniglot_val": "omniglot",
}
DATA_ENV = "METADROP_DATA"  # the folder of all data roots (default ./data)


class DataError(Exception):
    """Bad or missing data; the message says what to do."""


class Unavailable(DataError):
    """Memory, the disk, a permission or I/O failed while reading a file, not its content: the file
    is kept; the message names the resource."""


class OtherData(DataError):
    """A readable prepared split that is not this dataset's (another dataset's folder, most likely):
    never deleted or written over; the message names the mismatch."""


@dataclass(frozen=True)
class Ragged:
    """Classes of different sizes: `images` [N, H*W*C] sorted by class, class c being
    images[offsets[c]:offsets[c + 1]]; `offsets` [classes + 1] int64, offsets[0] = 0, nondecreasing.
    `images` may be uint8 (0-255) on disk; `Ragged.of` and `classes` hand out float32 in [0, 1]."""

    images: np.ndarray
    offsets: np.ndarray

    @staticmethod
    def of(classes: list[np.ndarray]) -> Ragged:
        """From one array [n_c, D] per class."""
        offsets = np.concatenate([[0], np.cumsum([len(c) for c in classes])]).astype(np.int64)
        return Ragged(np.concatenate(classes), offsets)

    def __len__(self) -> int:
        return len(self.offsets) - 1

    @property
    def sizes(self) -> np.ndarray:
        """[classes] examples per class."""
        return np.diff(self.offsets)

    def __getitem__(self, c: int) -> np.ndarray:
        return as_float(self.images[self.offsets[c] : self.offsets[c + 1]])


Split = np.ndarray | Ragged


def as_float(images: np.ndarray) -> np.ndarray:
    """float32 in [0, 1] from uint8 (0-255) or float images."""
    return images.astype(np.float32) / 255.0 if images.dtype == np.uint8 else images


def sizes(split: Split) -> np.ndarray:
    """[classes] examples per class of either kind of split."""
    return split.sizes if isinstance(split, Ragged) else np.full(split.shape[0], split.shape[1])


def labelled(split: Split) -> tuple[np.ndarray, np.ndarray]:
    """(images [N, D] as stored, labels [N] int64): a split as a plain labelled set, for
    non-episodic training (MetaPerturb's target networks)."""
    if isinstance(split, Ragged):
        return split.images, np.repeat(np.arange(len(split)), split.sizes)
    n_classes, n_examples = split.shape[:2]
    return split.reshape(n_classes * n_examples, -1), np.repeat(np.arange(n_classes), n_examples)


@dataclass(frozen=True)
class Dataset:
    name: str
    shape: tuple[int, int, int]  # H, W, C of one image
    filters: int  # conv width of the paper's network for this data (Section 4)
    splits: Mapping[str, Split]  # SPLITS (those the dataset has) -> a split, see the module docstring

    def split(self, name: str) -> Split:
        return self.splits[name]


def default_root(name: str) -> str:
    """$METADROP_DATA/<folder> (default ./data/<folder>); the folder is the name, or the source's
    folder for a view (FOLDERS)."""
    return os.path.join(os.environ.get(DATA_ENV) or "./data", FOLDERS.get(name, name))


def entry(name: str) -> tuple[ModuleType, str | None]:
    """The module that prepares and loads dataset `name`, and its view (None for a plain entry)."""
    if name not in DATASETS:
        raise DataError(f"unknown dataset {name!r}; choose one of {sorted(DATASETS)}")
    module, _, view = DATASETS[name].partition(":")
    return importlib.import_module(module), view or None


def has_val(name: str) -> bool:
    """Whether dataset `name` holds classes out of meta-training for meta-validation (a "val" split),
    known before it is loaded: all but the views a module lists in NO_VAL."""
    module, view = entry(name)
    return view not in getattr(module, "NO_VAL", ())


def load(name: str, root: str | None = None) -> Dataset:
    """Load a prepared dataset; DataError says how to prepare one that is missing."""
    module, view = entry(name)
    root = root or default_root(name)
    return module.load(root, view) if view else module.load(root)
