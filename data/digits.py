"""scikit-learn's bundled handwritten digits: an offline demo dataset, not one of the paper's.

8x8 images upsampled to 16x16 (so 4 max-pools leave 1x1), each digit rotated by 0/90/180/270
degrees as a class of its own (as the paper does for Omniglot). Disjoint digits per split:
train 0-4 (20 classes), val 5 and 7 (8 classes), test 6, 8, 9 (12 classes); 174 examples per class
(the smallest digit count, so every class has as many).
"""

from __future__ import annotations

import numpy as np

from data import Dataset

DIGITS = {"train": (0, 1, 2, 3, 4), "val": (5, 7), "test": (6, 8, 9)}
SHAPE = (16, 16, 1)
PER_CLASS = 174  # the fewest images of one digit in scikit-learn's set (of the 8)


def peek() -> tuple[tuple[int, int, int], dict[str, np.ndarray]]:
    """(image shape, split -> examples per class) without scikit-learn (data.headers.peek)."""
    return SHAPE, {s: np.full(4 * len(d), PER_CLASS) for s, d in DIGITS.items()}


def load(root: str) -> Dataset:
    from sklearn.datasets import load_digits

    bunch = load_digits()
    images = bunch.images.astype(np.float32) / 16.0  # [n, 8, 8] in [0, 1]
    images = images.repeat(2, axis=1).repeat(2, axis=2)  # 16x16
    splits = {}
    for name, digits in DIGITS.items():
        classes = []
        for d in digits:
            imgs = images[bunch.target == d][:PER_CLASS]
            classes += [np.rot90(imgs, k, axes=(1, 2)).reshape(PER_CLASS, -1) for k in range(4)]
        splits[name] = np.stack(classes)
    return Dataset("digits", SHAPE, filters=32, splits=splits)
