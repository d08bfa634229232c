"""Small archives in the real formats of the MetaPerturb datasets (tiny_imagenet, stl10,
stanford_dogs, stanford_cars), with the splits their preparation must give.

ARCHIVES[name]() -> (files {file name: bytes}, expected {split: (images [N, D] uint8 sorted by
class, sizes [classes])}). Expected images are computed from the raw pixels the archive was made of
(decoded with PIL for JPEG, resized by PIL for the datasets stored at 84 px)."""

from __future__ import annotations

import io
import tarfile
import zipfile
from collections.abc import Callable

import numpy as np
from PIL import Image
from scipy.io import savemat

Expected = dict[str, tuple[np.ndarray, np.ndarray]]


def jpeg(pixels: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(pixels).save(buf, format="JPEG", quality=90)
    return buf.getvalue()


def decoded(data: bytes, side: int) -> np.ndarray:
    """What an image file should become: RGB, side x side by Lanczos, flattened."""
    im = Image.open(io.BytesIO(data)).convert("RGB")
    if im.size != (side, side):
        im = im.resize((side, side), Image.Resampling.LANCZOS)
    return np.asarray(im).reshape(-1)


def picture(rng: np.random.Generator, h: int, w: int, gray: bool = False) -> np.ndarray:
    """Smooth random blocks (JPEG keeps them recognisable), [h, w, 3] or [h, w] uint8."""
    blocks = rng.integers(0, 256, (4, 4) if gray else (4, 4, 3), dtype=np.uint8)
    return np.asarray(Image.fromarray(blocks).resize((w, h), Image.Resampling.NEAREST))


def tar(members: dict[str, bytes], mode: str) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode=mode) as t:
        for name, body in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(body)
            t.addfile(info, io.BytesIO(body))
    return buf.getvalue()


def mat(arrays: dict) -> bytes:
    buf = io.BytesIO()
    savemat(buf, arrays)
    return buf.getvalue()


def cells(strings: list[str]) -> np.ndarray:
    """A MATLAB cell column of strings, as loadmat gives the real lists."""
    out = np.empty((len(strings), 1), dtype=object)
    for i, s in enumerate(strings):
        out[i, 0] = np.array([s])
    return out


def tiny_imagenet() -> tuple[dict[str, bytes], Expected]:
    """3 classes (wnids.txt not sorted), 3 train and 2 val images each, one grayscale."""
    rng = np.random.default_rng(22)
    wnids = ["n0300", "n0100", "n0200"]
    top = "tiny-imagenet-200"
    buf = io.BytesIO()
    train, test = [], []
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr(f"{top}/", b"")
        zf.writestr(f"{top}/wnids.txt", "\n".join(wnids) + "\n")
        zf.writestr(f"{top}/words.txt", "".join(f"{w}\tthing {w}\n" for w in sorted(wnids + ["n0999"])))
        for c, wnid in enumerate(wnids):
            images = [jpeg(picture(rng, 64, 64, gray=(c, i) == (1, 2))) for i in range(3)]
            for i in (2, 0, 1):  # not in name order in the zip
                zf.writestr(f"{top}/train/{wnid}/images/{wnid}_{i}.JPEG", images[i])
            zf.writestr(
                f"{top}/train/{wnid}/{wnid}_boxes.txt",
                "".join(f"{wnid}_{i}.JPEG\t0\t0\t9\t9\n" for i in range(3)),
            )
            train += [decoded(b, 64) for b in images]
        val = {}
        lines = []
        for k in range(6):
            wnid = wnids[(k * 2) % 3]  # classes interleaved
            val[k] = (wnid, jpeg(picture(rng, 64, 64)))
            zf.writestr(f"{top}/val/images/val_{k}.JPEG", val[k][1])
            lines.append(f"val_{k}.JPEG\t{wnid}\t1\t2\t30\t40\n")
        zf.writestr(f"{top}/val/val_annotations.txt", "".join(reversed(lines)))
        zf.writestr(f"{top}/test/images/test_0.JPEG", jpeg(picture(rng, 64, 64)))
        for wnid in wnids:
            test += [decoded(val[k][1], 64) for k in sorted(val) if val[k][0] == wnid]
    expected = {"train": (np.stack(train), np.full(3, 3)), "test": (np.stack(test), np.full(3, 2))}
    return {"tiny-imagenet-200.zip": buf.getvalue()}, expected


def stl10() -> tuple[dict[str, bytes], Expected]:
    """10 classes, 2 train and 1 test image each, labels shuffled; X.bin written channel by channel,
    each channel column by column (order="F"), as the STL-10 binary format stores them."""
    rng = np.random.default_rng(10)
    members, expected = {}, {}
    for split, per_class in (("train", 2), ("test", 1)):
        labels = rng.permutation(np.repeat(np.arange(10), per_class))
        images = rng.integers(0, 256, (len(labels), 96, 96, 3), dtype=np.uint8)
        x = b"".join(img[:, :, ch].ravel(order="F").tobytes() for img in images for ch in range(3))
        members[f"stl10_binary/{split}_X.bin"] = x
        members[f"stl10_binary/{split}_y.bin"] = (labels + 1).astype(np.uint8).tobytes()
        order = np.argsort(labels, kind="stable")
        expected[split] = (images[order].reshape(len(labels), -1), np.full(10, per_class))
    members["stl10_binary/unlabeled_X.bin"] = rng.integers(0, 256, 2 * 96 * 96 * 3, dtype=np.uint8).tobytes()
    members["stl10_binary/class_names.txt"] = (
        b"airplane\nbird\ncar\ncat\ndeer\ndog\nhorse\nmonkey\nship\ntruck\n"
    )
    return {"stl10_binary.tar.gz": tar(members, "w:gz")}, expected


def _resized(rng: np.random.Generator, n: int) -> tuple[list[bytes], list[np.ndarray]]:
    """n JPEGs of various sizes (one grayscale) and what each becomes at 84 px."""
    sizes = [(60, 100), (84, 84), (120, 90), (50, 50)]
    files = [jpeg(picture(rng, *sizes[i % 4], gray=i == 1)) for i in range(n)]
    return files, [decoded(f, 84) for f in files]


def stanford_dogs() -> tuple[dict[str, bytes], Expected]:
    """3 breeds; train 2 a breed (equal), test 1, 2, 2 (ragged); lists not sorted by breed."""
    rng = np.random.default_rng(120)
    breeds = ["n02085620-Chihuahua", "n02085782-Japanese_spaniel", "n02085936-Maltese_dog"]
    files, pixels = _resized(rng, 12)
    paths = [f"{breeds[i % 3]}/{breeds[i % 3][:9]}_{1000 + i}.jpg" for i in range(12)]
    labels = np.arange(12) % 3
    split_of = {"train": [5, 0, 1, 3, 4, 2], "test": [10, 7, 8, 11, 6]}  # image 9: in no list
    lists, expected = {}, {}
    for split, idx in split_of.items():
        lists[f"{split}_list.mat"] = mat(
            {
                "file_list": cells([paths[i] for i in idx]),
                "annotation_list": cells([paths[i][:-4] for i in idx]),
                "labels": (labels[idx] + 1).astype(np.float64).reshape(-1, 1),
            }
        )
        order = sorted(idx, key=lambda i: labels[i])  # stable: list order within a breed
        expected[split] = (np.stack([pixels[i] for i in order]), np.bincount(labels[idx], minlength=3))
    lists["file_list.mat"] = mat({"file_list": cells(paths), "labels": (labels + 1.0).reshape(-1, 1)})
    images = {f"Images/{p}": f for p, f in zip(paths, files)}
    images["Images/n02085620-Chihuahua/unlisted.jpg"] = files[0]
    return {"images.tar": tar(images, "w"), "lists.tar": tar(lists, "w")}, expected


def stanford_cars() -> tuple[dict[str, bytes], Expected]:
    """4 models, 10 images: train and test ragged, the test flag and classes interleaved."""
    rng = np.random.default_rng(196)
    files, pixels = _resized(rng, 10)
    labels = np.array([2, 0, 3, 1, 0, 2, 3, 3, 1, 0])
    test = np.array([0, 1, 0, 0, 0, 1, 1, 0, 0, 1])
    paths = [f"car_ims/{i + 1:06d}.jpg" for i in range(10)]
    ann = np.zeros(
        (1, 10),
        dtype=[
            (k, object)
            for k in ("relative_im_path", "bbox_x1", "bbox_y1", "bbox_x2", "bbox_y2", "class", "test")
        ],
    )
    for i in range(10):
        ann[0, i] = (
            paths[i],
            np.array([[1]]),
            np.array([[2]]),
            np.array([[30]]),
            np.array([[40]]),
            np.array([[labels[i] + 1]], np.uint8),
            np.array([[test[i]]], np.uint8),
        )
    names = np.empty((1, 4), dtype=object)
    for c in range(4):
        names[0, c] = np.array([f"Model {c} 2012"])
    expected = {}
    for split, flag in (("train", 0), ("test", 1)):
        idx = [i for i in np.argsort(labels, kind="stable") if test[i] == flag]
        expected[split] = (np.stack([pixels[i] for i in idx]), np.bincount(labels[test == flag], minlength=4))
    archive = tar({p: f for p, f in zip(paths, files)}, "w:gz")
    return {
        "car_ims.tgz": archive,
        "cars_annos.mat": mat({"annotations": ann, "class_names": names}),
    }, expected


ARCHIVES: dict[str, Callable[[], tuple[dict[str, bytes], Expected]]] = {
    "tiny_imagenet": tiny_imagenet,
    "stl10": stl10,
    "stanford_dogs": stanford_dogs,
    "stanford_cars": stanford_cars,
}
