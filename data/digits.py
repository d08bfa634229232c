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


def load(root: str) -> Dataset:
    from sklearn.datasets import load_digits

    bunch = load_digits()
    images = bunch.images.astype(np.float32) / 16.0  # [n, 8, 8] in [0, 1]
    images = images.repeat(2, axis=1).repeat(2, axis=2)  # 16x16
    per_class = min(np.sum(bunch.target == d) for d in range(10))
    splits = {}
    for name, digits in DIGITS.items():
        classes = []
        for d in digits:
            imgs = images[bunch.target == d][:per_class]
            classes += [np.rot90(imgs, k, axes=(1, 2)).reshape(per_class, -1) for k in range(4)]
        splits[name] = np.stack(classes)
    return Dataset("digits", (16, 16, 1), filters=32, splits=splits)
