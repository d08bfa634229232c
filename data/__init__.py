"""Datasets behind one interface: per split, an array [classes, examples, H*W*C] in [0, 1] float32.

Each dataset is one module with `load(root) -> Dataset`; register it in DATASETS.
"""

from __future__ import annotations

import importlib
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

SPLITS = ("train", "val", "test")

# name -> module of this package that loads it
DATASETS = {
    "digits": "data.digits",
    "omniglot": "data.omniglot",
    "omniglot_small": "data.omniglot_small",
    "mimgnet": "data.mimgnet",
}


class DataError(Exception):
    """Bad or missing data; the message says what to do."""


@dataclass(frozen=True)
class Dataset:
    name: str
    shape: tuple[int, int, int]  # H, W, C of one image
    filters: int  # conv width of the paper's network for this data (Section 4)
    splits: Mapping[str, np.ndarray]  # SPLITS -> [classes, examples, H*W*C] float32 in [0, 1]

    def split(self, name: str) -> np.ndarray:
        return self.splits[name]


def default_root(name: str) -> str:
    return f"./data/{name}"


def load(name: str, root: str | None = None) -> Dataset:
    """Load a prepared dataset; DataError says how to prepare one that is missing."""
    if name not in DATASETS:
        raise DataError(f"unknown dataset {name!r}; choose one of {sorted(DATASETS)}")
    module = importlib.import_module(DATASETS[name])
    return module.load(root or default_root(name))
