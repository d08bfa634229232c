"""omniglot_small at 16x16: the out-of-distribution set of the CPU-scale Bayesian TAML demo.

The demo's in-distribution data, `digits`, are 16x16 (8x8 upsampled); one network needs one image
shape, so omniglot_small's 28x28 images (strokes 1, background 0, as digits' ink) are resized to
16x16 by area averaging (PIL's box filter). Classes and splits are omniglot_small's: train 544,
val 168, test 256 classes of 20 examples; prepared as train.npy, val.npy, test.npy, float32
[classes, 20, 256] from a prepared omniglot_small (get_data.py prepares it first).
"""

from __future__ import annotations

import os

import numpy as np

from data import Dataset, default_root
from data.files import command, open_split, ready, save_npy
from data.omniglot import DRAWERS, FILTERS, SIDE
from data.omniglot_small import CLASSES

OUT = 16  # side of the resized images (digits')


def _open(root: str, retry: str) -> dict[str, np.ndarray]:
    return {
        s: open_split(os.path.join(root, f"{s}.npy"), (n, DRAWERS, OUT * OUT), ("float32",), retry)
        for s, n in CLASSES.items()
    }


def resize(images: np.ndarray, side: int = OUT) -> np.ndarray:
    """[..., SIDE*SIDE] float images in [0, 1] -> [..., side*side], area-averaged (box filter)."""
    from PIL import Image

    flat = images.reshape(-1, SIDE, SIDE).astype(np.float32)
    out = [np.asarray(Image.fromarray(x, mode="F").resize((side, side), Image.BOX)) for x in flat]
    return np.clip(np.stack(out), 0, 1).reshape(*images.shape[:-1], side * side)


def prepare(root: str, source: str | None) -> None:
    """Prepare omniglot_small (from `source`, see data/omniglot_small.py), then resize it into root."""
    from data import omniglot_small

    retry = command("omniglot_small16", root, source)
    if ready(lambda: _open(root, retry)):
        print(f"{root}: omniglot_small16 is already prepared")
        return
    small = default_root("omniglot_small")
    omniglot_small.prepare(small, source)
    for split, images in omniglot_small.load(small).splits.items():
        save_npy(os.path.join(root, f"{split}.npy"), resize(np.asarray(images)))
    print(f"{root}: omniglot_small16 is ready ({', '.join(f'{s} {n} classes' for s, n in CLASSES.items())})")


def load(root: str) -> Dataset:
    return Dataset("omniglot_small16", (OUT, OUT, 1), FILTERS, _open(root, command("omniglot_small16", root)))
