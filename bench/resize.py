"""How far the transfer protocol's in-graph resizing (nets.images) is from the original's PIL bilinear.

The original resizes each uint8 image with torchvision's Resize, i.e. PIL's bilinear filter, which
widens its triangle kernel by the scale factor when shrinking (a low-pass filter); ours resizes the
float images in the graph with tf.image.resize. Photo-like test images: random crops (a quarter to
all of the shorter side) of scikit-learn's two sample photographs, shrunk with PIL's box filter to
the source side, as downsampled datasets (Tiny ImageNet 64 px, STL10 96 px, CIFAR 32 px) are.

    python bench/resize.py [--n 200]

prints, per (source side -> target side), the max and mean absolute difference on [0, 1] images of
tf.image.resize bilinear with and without antialias against PIL's bilinear.
"""

from __future__ import annotations

import argparse

import numpy as np

CASES = ((64, 32), (96, 32), (96, 84), (32, 84))  # Tiny ImageNet, STL10 to 32 and 84 px; CIFAR to 84 px


def photos(n: int, side: int, seed: int = 0) -> np.ndarray:
    """n uint8 RGB images [n, side, side, 3]: random square crops of the sample photographs, shrunk
    with PIL's box filter."""
    from PIL import Image
    from sklearn.datasets import load_sample_images

    sources = load_sample_images().images
    rng = np.random.default_rng(seed)
    out = np.empty((n, side, side, 3), np.uint8)
    for i in range(n):
        img = sources[i % len(sources)]
        short = min(img.shape[:2])
        c = int(rng.integers(short // 4, short + 1))
        y, x = (int(rng.integers(0, s - c + 1)) for s in img.shape[:2])
        crop = Image.fromarray(img[y : y + c, x : x + c])
        out[i] = np.asarray(crop.resize((side, side), Image.Resampling.BOX))
    return out


def pil_bilinear(x: np.ndarray, size: int) -> np.ndarray:
    """The original's resize: PIL bilinear on each uint8 image; [0, 1] floats."""
    from PIL import Image

    return np.stack(
        [np.asarray(Image.fromarray(im).resize((size, size), Image.Resampling.BILINEAR)) for im in x]
    ) / np.float32(255)


def tf_bilinear(x: np.ndarray, size: int, antialias: bool) -> np.ndarray:
    """tf.image.resize bilinear of the [0, 1] float images (as nets.images gets them)."""
    import tensorflow as tf

    return tf.image.resize(x.astype(np.float32) / 255, [size, size], antialias=antialias).numpy()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--n", type=int, default=200, help="images per case")
    args = p.parse_args()
    print("| resize | antialias | max abs | mean abs |\n| --- | --- | --- | --- |")
    for side, size in CASES:
        x = photos(args.n, side)
        ref = pil_bilinear(x, size)
        for antialias in (True, False):
            d = np.abs(tf_bilinear(x, size, antialias) - ref)
            print(f"| {side} -> {size} | {antialias} | {d.max():.4f} | {d.mean():.5f} |")


if __name__ == "__main__":
    main()
