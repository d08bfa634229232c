"""Small archives in the real formats of the MetaPerturb datasets (tiny_imagenet, stl10,
stanford_dogs, stanford_cars), with the splits their preparation must give.

ARCHIVES[name](classes, per_class, expect=True) -> (files {file name: bytes}, expected {split:
(images [N, D] uint8 sorted by class, sizes [classes])}, empty if not expect); about per_class
images a class. Expected images come
from the pixels the archive was made of (decoded from JPEG, resized for the datasets stored at
84 px, by PIL). `builder(name)` is what tests/standin.py registers."""

from __future__ import annotations

import hashlib
import io
import tarfile
import zipfile
from collections.abc import Callable

import numpy as np
from PIL import Image
from scipy.io import savemat

import data

Expected = dict[str, tuple[np.ndarray, np.ndarray]]


def jpeg(pixels: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(pixels).save(buf, format="JPEG", quality=90)
    return buf.getvalue()


def decoded(data: bytes, side: int) -> np.ndarray:
    """What an image file should become: RGB, side x side by PIL's bicubic filter, flattened."""
    im = Image.open(io.BytesIO(data)).convert("RGB")
    return np.asarray(im.resize((side, side), Image.Resampling.BICUBIC)).reshape(-1)


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


def tiny_imagenet(classes: int, per_class: int, expect: bool = True) -> tuple[dict[str, bytes], Expected]:
    """per_class train and max(2, per_class // 5) val images a class, wnids.txt not sorted, one
    image grayscale, val images of the classes interleaved."""
    rng = np.random.default_rng(22)
    wnids = [f"n{(7 * c) % classes:04d}{c}" for c in range(classes)]
    n_val = max(2, per_class // 5)
    top = "tiny-imagenet-200"
    buf = io.BytesIO()
    train, val = [], {}
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr(f"{top}/", b"")
        zf.writestr(f"{top}/wnids.txt", "\n".join(wnids) + "\n")
        zf.writestr(f"{top}/words.txt", "".join(f"{w}\tthing {w}\n" for w in sorted(wnids + ["n9999"])))
        for c, wnid in enumerate(wnids):
            images = [jpeg(picture(rng, 64, 64, gray=(c, i) == (1, 2))) for i in range(per_class)]
            for i in reversed(range(per_class)):  # not in name order in the zip
                zf.writestr(f"{top}/train/{wnid}/images/{wnid}_{i}.JPEG", images[i])
            boxes = "".join(f"{wnid}_{i}.JPEG\t0\t0\t9\t9\n" for i in range(per_class))
            zf.writestr(f"{top}/train/{wnid}/{wnid}_boxes.txt", boxes)
            train += [
                decoded(images[i], 64) if expect else None
                for i in sorted(range(per_class), key=lambda i: f"{wnid}_{i}.JPEG")
            ]
        lines = []
        for k in range(n_val * classes):
            val[k] = (wnids[k % classes], jpeg(picture(rng, 64, 64)))
            zf.writestr(f"{top}/val/images/val_{k}.JPEG", val[k][1])
            lines.append(f"val_{k}.JPEG\t{val[k][0]}\t1\t2\t30\t40\n")
        zf.writestr(f"{top}/val/val_annotations.txt", "".join(reversed(lines)))
        zf.writestr(f"{top}/test/images/test_0.JPEG", jpeg(picture(rng, 64, 64)))
    if not expect:
        return {"tiny-imagenet-200.zip": buf.getvalue()}, {}
    test = [
        decoded(val[k][1], 64)
        for w in wnids
        for k in sorted(val, key=lambda k: f"val_{k}.JPEG")
        if val[k][0] == w
    ]
    expected = {
        "train": (np.stack(train), np.full(classes, per_class)),
        "test": (np.stack(test), np.full(classes, n_val)),
    }
    return {"tiny-imagenet-200.zip": buf.getvalue()}, expected


def stl10(classes: int, per_class: int, expect: bool = True) -> tuple[dict[str, bytes], Expected]:
    """per_class train and per_class + 1 test images a class, labels shuffled; X.bin written channel
    by channel, each channel column by column (order="F"), as the STL-10 binary format stores them."""
    rng = np.random.default_rng(10)
    members, expected = {}, {}
    for split, n in (("train", per_class), ("test", per_class + 1)):
        labels = rng.permutation(np.repeat(np.arange(classes), n))
        images = rng.integers(0, 256, (len(labels), 96, 96, 3), dtype=np.uint8)
        x = b"".join(img[:, :, ch].ravel(order="F").tobytes() for img in images for ch in range(3))
        members[f"stl10_binary/{split}_X.bin"] = x
        members[f"stl10_binary/{split}_y.bin"] = (labels + 1).astype(np.uint8).tobytes()
        order = np.argsort(labels, kind="stable")
        expected[split] = (images[order].reshape(len(labels), -1), np.full(classes, n))
    members["stl10_binary/unlabeled_X.bin"] = rng.integers(0, 256, 2 * 96 * 96 * 3, dtype=np.uint8).tobytes()
    members["stl10_binary/class_names.txt"] = "".join(f"class{c}\n" for c in range(classes)).encode()
    return {"stl10_binary.tar.gz": tar(members, "w:gz")}, expected


def _resized(rng: np.random.Generator, n: int, expect: bool) -> tuple[list[bytes], list[np.ndarray]]:
    """n JPEGs of various sizes (the second grayscale) and what each becomes at 84 px (if expect)."""
    sizes = [(30, 50), (84, 84), (60, 45), (25, 25)]
    files = [jpeg(picture(rng, *sizes[i % 4], gray=i == 1)) for i in range(n)]
    return files, [decoded(f, 84) for f in files] if expect else []


def stanford_dogs(classes: int, per_class: int, expect: bool = True) -> tuple[dict[str, bytes], Expected]:
    """per_class train images a breed (equal), 1 + c % 3 test images for breed c (ragged), one
    image in no list; the lists not sorted by breed."""
    rng = np.random.default_rng(120)
    breeds = [f"n02{c:06d}-Breed_{c}" for c in range(classes)]
    counts = {"train": [per_class] * classes, "test": [1 + c % 3 for c in range(classes)]}
    labels = {s: rng.permutation(np.repeat(np.arange(classes), n)) for s, n in counts.items()}
    n_images = sum(len(v) for v in labels.values()) + 1
    files, pixels = _resized(rng, n_images, expect)
    paths = [
        f"{breeds[c]}/{breeds[c][:9]}_{1000 + i}.jpg"
        for i, c in enumerate(np.concatenate(list(labels.values()) + [[0]]))
    ]
    lists, expected, i = {}, {}, 0
    for split, y in labels.items():
        idx = list(range(i, i + len(y)))
        i += len(y)
        lists[f"{split}_list.mat"] = mat(
            {
                "file_list": cells([paths[j] for j in idx]),
                "annotation_list": cells([paths[j][:-4] for j in idx]),
                "labels": (y + 1).astype(np.float64).reshape(-1, 1),
            }
        )
        order = np.argsort(y, kind="stable")  # list order within a breed
        if expect:
            expected[split] = (np.stack([pixels[idx[j]] for j in order]), np.array(counts[split]))
    lists["file_list.mat"] = mat({"file_list": cells(paths[:-1]), "labels": np.ones((len(paths) - 1, 1))})
    images = {f"Images/{p}": f for p, f in zip(paths, files)}
    return {"images.tar": tar(images, "w"), "lists.tar": tar(lists, "w")}, expected


def stanford_cars(classes: int, per_class: int, expect: bool = True) -> tuple[dict[str, bytes], Expected]:
    """per_class + c % 2 train and 1 + c % 3 test images for model c (both ragged), the test flag
    and the classes interleaved in the annotations."""
    rng = np.random.default_rng(196)
    labels = np.concatenate([[c] * (per_class + c % 2 + 1 + c % 3) for c in range(classes)])
    test = np.concatenate([[0] * (per_class + c % 2) + [1] * (1 + c % 3) for c in range(classes)])
    perm = rng.permutation(len(labels))
    labels, test = labels[perm], test[perm]
    files, pixels = _resized(rng, len(labels), expect)
    paths = [f"car_ims/{i + 1:06d}.jpg" for i in range(len(labels))]
    fields = ("relative_im_path", "bbox_x1", "bbox_y1", "bbox_x2", "bbox_y2", "class", "test")
    ann = np.zeros((1, len(labels)), dtype=[(k, object) for k in fields])
    for i in range(len(labels)):
        box = [np.array([[v]]) for v in (1, 2, 30, 40)]
        ann[0, i] = (paths[i], *box, np.array([[labels[i] + 1]], np.uint8), np.array([[test[i]]], np.uint8))
    names = np.empty((1, classes), dtype=object)
    for c in range(classes):
        names[0, c] = np.array([f"Model {c} 2012"])
    expected = {}
    for split, flag in (("train", 0), ("test", 1)) if expect else ():
        idx = [i for i in np.argsort(labels, kind="stable") if test[i] == flag]
        expected[split] = (
            np.stack([pixels[i] for i in idx]),
            np.bincount(labels[test == flag], minlength=classes),
        )
    archive = tar(dict(zip(paths, files)), "w:gz")
    return {
        "car_ims.tgz": archive,
        "cars_annos.mat": mat({"annotations": ann, "class_names": names}),
    }, expected


ARCHIVES: dict[str, Callable[[int, int, bool], tuple[dict[str, bytes], Expected]]] = {
    "tiny_imagenet": tiny_imagenet,
    "stl10": stl10,
    "stanford_dogs": stanford_dogs,
    "stanford_cars": stanford_cars,
}


def builder(name: str) -> Callable[[int], tuple[dict[str, bytes], dict[str, dict[str, object]]]]:
    """A builder for tests/standin.py: the dataset's real number of classes, `per_class` images a
    class, the module's MD5s set to the stand-in's."""

    def build(per_class: int) -> tuple[dict[str, bytes], dict[str, dict[str, object]]]:
        module, _ = data.entry(name)
        files, _ = ARCHIVES[name](module.CLASSES, per_class, False)
        return files, {module.__name__: {"MD5": {f: hashlib.md5(b).hexdigest() for f, b in files.items()}}}

    return build
