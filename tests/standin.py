"""Tiny stand-ins of the downloaded datasets, in their real archive formats, served on 127.0.0.1.

    from tests import standin
    standin.prepare("cifar", root)          # a tiny CIFAR-FS in root, through the real get_data path

`prepare(name, root, per_class)` builds the source files of dataset `name` (every class of the
real class lists, about `per_class` images each), serves them on a local HTTP server and runs the
dataset module's own prepare() against it, with the module's expected sizes and checksums set to
the stand-in's. `build(name, per_class)` gives the files and those settings, for tests.

Every image is one solid colour that names it: red = class index in the source (label order),
green = index within its class in file order, blue = IMAGE_TAG[file] (see `ident`), so a test
can tell from one pixel where a prepared image came from (resizing keeps a solid colour).
"""

from __future__ import annotations

import contextlib
import hashlib
import http.server
import io
import pickle
import re
import struct
import tarfile
import threading
import unittest.mock
import urllib.parse
from collections import Counter
from collections.abc import Callable, Iterator

import numpy as np

import data
import data.files
from tests import metaperturb_archives

SEED = 0
TRAIN_TAG, TEST_TAG = 0, 255  # blue of images from a source's training / test file


class Server:
    """Serves `routes` (path -> (status, body, cut)) on 127.0.0.1, with HTTP Range requests (206)
    unless `ranges` is False; `cut` closes the connection after half of the bytes to send."""

    def __init__(self, ranges: bool = True) -> None:
        self.routes: dict[str, tuple[int, bytes, bool]] = {}
        self.hits: Counter = Counter()
        self.range_hits: Counter = Counter()
        self.ranges = ranges
        srv = self

        class Handler(http.server.BaseHTTPRequestHandler):
            disable_nagle_algorithm = True  # headers and body are separate writes: no 40 ms waits

            def do_GET(self):
                srv.hits[self.path] += 1
                status, body, cut = srv.routes.get(self.path, (404, b"not found", False))
                m = re.fullmatch(r"bytes=(\d+)-(\d*)", self.headers.get("Range", ""))
                if m and status == 200 and srv.ranges:
                    srv.range_hits[self.path] += 1
                    start = int(m[1])
                    stop = min(len(body), int(m[2]) + 1) if m[2] else len(body)
                    if start >= len(body):
                        self.send_response(416)
                        self.send_header("Content-Length", "0")
                        self.end_headers()
                        return
                    self.send_response(206)
                    self.send_header("Content-Range", f"bytes {start}-{stop - 1}/{len(body)}")
                    body = body[start:stop]
                else:
                    self.send_response(status)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body[: len(body) // 2] if cut else body)
                self.close_connection = True

            def log_message(self, *args):
                pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, args=(0.05,), daemon=True)
        self.thread.start()

    def serve(self, name: str, body: bytes, status: int = 200, cut: bool = False) -> None:
        self.routes[f"/{name}"] = (status, body, cut)

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


def ident(cls: int, k: int, tag: int, shape: tuple[int, ...]) -> np.ndarray:
    """A solid uint8 image of `shape` ([H, W, 3] or [H, W]) naming class `cls`, index `k`, file `tag`
    (a gray image holds only (cls * 16 + k) % 256)."""
    if len(shape) == 2:
        return np.full(shape, (cls * 16 + k) % 256, np.uint8)
    return np.broadcast_to(np.array([cls % 256, k % 256, tag], np.uint8), shape).copy()


def decode(images: np.ndarray) -> np.ndarray:
    """[N, H*W*3] prepared images -> [N, 3] (class, index, tag) of their first pixel."""
    return np.asarray(images).reshape(len(images), -1)[:, :3].astype(np.int64)


def tar_gz(files: dict[str, bytes]) -> bytes:
    """A .tar.gz of these files, the same bytes every time (no time stamps)."""
    import gzip

    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        for name, body in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(body)
            tar.addfile(info, io.BytesIO(body))
    return gzip.compress(buf.getvalue(), compresslevel=1, mtime=0)


def md5(body: bytes) -> str:
    return hashlib.md5(body).hexdigest()


def _interleaved(sizes: list[int], rng: np.random.Generator) -> np.ndarray:
    """Labels of a file holding sizes[c] images of class c, in random order."""
    return rng.permutation(np.repeat(np.arange(len(sizes)), sizes))


def _images(labels: np.ndarray, tag: int, shape: tuple[int, ...]) -> np.ndarray:
    """The ident images of a file whose images have these labels, in that order."""
    seen: Counter = Counter()
    out = []
    for c in labels:
        out.append(ident(int(c), seen[c], tag, shape))
        seen[c] += 1
    return np.stack(out)


class Py2Pickler(pickle._Pickler):
    """Protocol 2 as Python 2's cPickle wrote it (CIFAR's batches): str and bytes as 8-bit strings."""

    def _string(self, b: bytes) -> None:
        short = len(b) < 256
        self.write(
            pickle.SHORT_BINSTRING + bytes([len(b)]) + b
            if short
            else pickle.BINSTRING + struct.pack("<i", len(b)) + b
        )

    def save_str(self, obj: str) -> None:
        self._string(obj.encode("latin1"))
        self.memoize(obj)

    def save_bytes(self, obj: bytes) -> None:
        self._string(obj)
        self.memoize(obj)

    dispatch = {**pickle._Pickler.dispatch, str: save_str, bytes: save_bytes}


def py2_pickle(obj: object) -> bytes:
    buf = io.BytesIO()
    Py2Pickler(buf, protocol=2).dump(obj)
    return buf.getvalue()


# ---------------------------------------------------------------- one builder per source


def cifar100(per_class: int) -> tuple[dict[str, bytes], dict[str, object]]:
    """cifar-100-python.tar.gz: per class `per_class` training and per_class // 5 test images."""
    from data import cifar100 as mod

    rng = np.random.default_rng(SEED)
    lists = data.files.read_json(data.files.CLASSES_JSON)["cifar_fs"]
    names = sorted(n for split in lists.values() for n in split)
    n_test = max(1, per_class // 5)
    files = {}
    for split, n, tag in (("train", per_class, TRAIN_TAG), ("test", n_test, TEST_TAG)):
        labels = _interleaved([n] * len(names), rng)
        x = _images(labels, tag, (32, 32, 3))
        rows = x.transpose(0, 3, 1, 2).reshape(len(x), -1)  # CHW rows, as the real pickles
        files[split] = py2_pickle({"data": rows, "fine_labels": labels.tolist(), "batch_label": split})
    files["meta"] = py2_pickle({"fine_label_names": names, "coarse_label_names": ["c"]})
    body = tar_gz({f"cifar-100-python/{k}": v for k, v in files.items()})
    patches = {
        "MD5": md5(body),
        "TRAIN_PER_CLASS": per_class,
        "TEST_PER_CLASS": n_test,
        "SMALL_TRAIN": per_class // 2,
        "SMALL_VAL": per_class - per_class // 2,
    }
    return {mod.ARCHIVE: body}, {"data.cifar100": patches}


def svhn(per_class: int) -> tuple[dict[str, bytes], dict[str, object]]:
    """train/test_32x32.mat: class c (label c+1) has per_class + c training, per_class + 2c test images."""
    import scipy.io

    from data import svhn as mod

    rng = np.random.default_rng(SEED + 1)
    out, sums = {}, {}
    for split, extra, tag in (("train", 1, TRAIN_TAG), ("test", 2, TEST_TAG)):
        labels = _interleaved([per_class + extra * c for c in range(mod.N_CLASSES)], rng)
        x = _images(labels, tag, (32, 32, 3))
        buf = io.BytesIO()
        scipy.io.savemat(buf, {"X": x.transpose(1, 2, 3, 0), "y": (labels + 1)[:, None].astype(np.uint8)})
        name = mod.FILES[split][0]
        out[name] = buf.getvalue()
        sums[split] = (name, md5(out[name]))
    return out, {"data.svhn": {"FILES": sums, "VAL_PER_CLASS": per_class}}


BUILDERS: dict[str, Callable[[int], tuple[dict[str, bytes], dict[str, object]]]] = {
    "cifar": cifar100,
    "small_cifar_100": cifar100,
    "svhn": svhn,
}


def build(name: str, per_class: int = 70) -> tuple[dict[str, bytes], dict[str, dict[str, object]]]:
    """(files to serve: name -> bytes, settings: module -> {constant: value}) of dataset `name`."""
    if name not in BUILDERS:
        raise KeyError(f"no stand-in for {name!r}; there are stand-ins for {sorted(BUILDERS)}")
    return BUILDERS[name](per_class)


@contextlib.contextmanager
def patched(settings: dict[str, dict[str, object]]) -> Iterator[None]:
    """The modules' constants set to the stand-in's while the block runs."""
    import importlib

    with contextlib.ExitStack() as stack:
        for module, values in settings.items():
            mod = importlib.import_module(module)
            for k, v in values.items():
                stack.enter_context(unittest.mock.patch.object(mod, k, v))
        yield


@contextlib.contextmanager
def serving(files: dict[str, bytes]) -> Iterator[Server]:
    """A Server with `files` at its root, and no proxy between us and it."""
    env = {"NO_PROXY": "127.0.0.1", "no_proxy": "127.0.0.1"}
    server = Server()
    try:
        with unittest.mock.patch.dict("os.environ", env):
            for name, body in files.items():
                server.serve(name, body)
            yield server
    finally:
        server.close()


def prepare(name: str, root: str, per_class: int = 70) -> None:
    """A tiny stand-in of dataset `name` prepared in `root` by its module's prepare(); about
    `per_class` images in each class (at least 65 = Bayesian TAML's 50 shots + 15 queries by default).
    Datasets that download nothing (digits; omniglot_small, from ../shared) are prepared as they are."""
    module, view = data.entry(name)
    if name not in BUILDERS and not hasattr(module, "BASE_URL"):
        if hasattr(module, "prepare"):
            module.prepare(root, None)
        return
    files, settings = build(name, per_class)
    with serving(files) as server, patched(settings):
        module.prepare(root, server.url, *([view] if view else []))


def png(x: np.ndarray) -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(x).save(buf, format="PNG")
    return buf.getvalue()


def cub(per_class: int) -> tuple[dict[str, bytes], dict[str, object]]:
    """CUB_200_2011.tgz: 200 classes of per_class images (PNG bytes under .jpg names, 10x12 px, as
    the module decodes by content); image k of class c is grayscale when c % 5 == 0 and k == 1; the
    first half of each class is in the official training split. Images come before the lists."""
    from data import cub as mod

    rng = np.random.default_rng(SEED + 2)
    labels = _interleaved([per_class] * mod.N_CLASSES, rng)
    seen: Counter = Counter()
    members, rows = {}, {"images.txt": [], "image_class_labels.txt": [], "train_test_split.txt": []}
    for i, c in enumerate(labels, start=1):
        k = seen[c]
        seen[c] += 1
        path = f"{c + 1:03d}.Bird_{c + 1}/Bird_{c + 1}_{k:04d}_{i}.jpg"
        gray = c % 5 == 0 and k == 1
        members[f"CUB_200_2011/images/{path}"] = png(
            ident(int(c), k, TRAIN_TAG, (10, 12) if gray else (10, 12, 3))
        )
        rows["images.txt"].append(f"{i} {path}")
        rows["image_class_labels.txt"].append(f"{i} {c + 1}")
        rows["train_test_split.txt"].append(f"{i} {int(k < per_class // 2)}")
    members.update({f"CUB_200_2011/{f}": "\n".join(r).encode() + b"\n" for f, r in rows.items()})
    body = tar_gz(members)
    return {mod.ARCHIVE: body}, {"data.cub": {"MD5": md5(body), "N_IMAGES": len(labels)}}


BUILDERS.update({"cub": cub, "cub_official": cub})
# MetaPerturb's tiny_imagenet, stl10, stanford_dogs, stanford_cars (random pictures, not ident colours)
BUILDERS.update({name: metaperturb_archives.builder(name) for name in metaperturb_archives.ARCHIVES})


def sources() -> list[str]:
    """One dataset name per source (views of one source share its builder)."""
    return sorted({b: n for n, b in sorted(BUILDERS.items(), reverse=True)}.values())


def fashion_mnist(per_class: int) -> tuple[dict[str, bytes], dict[str, object]]:
    """t10k-{images-idx3,labels-idx1}-ubyte.gz: 10 classes of per_class gray 28x28 images."""
    import gzip

    from data import fashion_mnist as mod

    labels = _interleaved([per_class] * mod.N_CLASSES, np.random.default_rng(SEED + 3)).astype(np.uint8)
    x = _images(labels, TRAIN_TAG, (28, 28))
    head = np.array([2051, len(x), 28, 28], ">u4").tobytes()
    files = {
        mod.FILES["images"][0]: gzip.compress(head + x.tobytes(), mtime=0),
        mod.FILES["labels"][0]: gzip.compress(
            np.array([2049, len(x)], ">u4").tobytes() + labels.tobytes(), mtime=0
        ),
    }
    sums = {k: (name, md5(files[name])) for k, (name, _) in mod.FILES.items()}
    return files, {"data.fashion_mnist": {"FILES": sums, "PER_CLASS": per_class}}


def gtsrb(per_class: int) -> tuple[dict[str, bytes], dict[str, object]]:
    """GTSRB_Final_Training_Images.zip: 43 class folders of per_class + c % 3 PPM images (odd sizes)
    and a GT-<class>.csv each, members in no particular order."""
    import zipfile

    from PIL import Image

    from data import gtsrb as mod

    buf = io.BytesIO()
    n = 0
    with zipfile.ZipFile(buf, "w") as zf:
        for c in reversed(range(mod.N_CLASSES)):
            folder = f"GTSRB/Final_Training/Images/{c:05d}"
            rows = ["Filename;Width;Height;Roi.X1;Roi.Y1;Roi.X2;Roi.Y2;ClassId"]
            for k in reversed(range(per_class + c % 3)):
                ppm = io.BytesIO()
                Image.fromarray(ident(c, k, TRAIN_TAG, (9 + k % 4, 11, 3))).save(ppm, format="PPM")
                zf.writestr(f"{folder}/{k // 2:05d}_{k % 2:05d}.ppm", ppm.getvalue())
                rows.append(f"{k // 2:05d}_{k % 2:05d}.ppm;11;{9 + k % 4};1;1;10;8;{c}")
                n += 1
            zf.writestr(f"{folder}/GT-{c:05d}.csv", "\n".join(rows) + "\n")
    return {mod.ARCHIVE: buf.getvalue()}, {"data.gtsrb": {"N_IMAGES": n}}


BUILDERS.update({"fashion-mnist": fashion_mnist, "traffic": gtsrb})


def vgg_flower(per_class: int) -> tuple[dict[str, bytes], dict[str, object]]:
    """102flowers.tgz + imagelabels.mat: class label l (1-102) has per_class + l % 4 images, PNG
    bytes under .jpg names, 13x9 px, labels interleaved."""
    import scipy.io

    from data import vgg_flower as mod

    labels = _interleaved([per_class + (c + 1) % 4 for c in range(102)], np.random.default_rng(SEED + 4))
    x = _images(labels, TRAIN_TAG, (13, 9, 3))
    body = tar_gz({f"jpg/image_{i + 1:05d}.jpg": png(img) for i, img in enumerate(x)})
    buf = io.BytesIO()
    scipy.io.savemat(buf, {"labels": (labels + 1)[None, :].astype(np.uint8)})
    files = {mod.FILES["images"][0]: body, mod.FILES["labels"][0]: buf.getvalue()}
    sums = {k: (name, md5(files[name])) for k, (name, _) in mod.FILES.items()}
    return files, {"data.vgg_flower": {"FILES": sums, "N_IMAGES": len(labels)}}


BUILDERS["vgg_flower"] = vgg_flower


def aircraft(per_class: int) -> tuple[dict[str, bytes], dict[str, object]]:
    """fgvc-aircraft-2013b.tar.gz: the 100 variants of data/classes.json, per_class images each (the
    first third in test), 20x30 PNG bytes under .jpg names: inside the bounding box (5, 4, 25, 14)
    the ident colour, outside it white; images before the lists."""
    from data import aircraft as mod

    lists = data.files.read_json(data.files.CLASSES_JSON)["aircraft"]
    variants = sorted(v for split in lists.values() for v in split)
    labels = _interleaved([per_class] * len(variants), np.random.default_rng(SEED + 5))
    seen: Counter = Counter()
    members, rows = {}, {"trainval": [], "test": [], "box": []}
    for i, c in enumerate(labels):
        k = seen[c]
        seen[c] += 1
        image_id = f"{1000000 + 7 * i:07d}"
        x = np.full((20, 30, 3), 255, np.uint8)
        x[4:14, 5:25] = ident(int(c), k, TRAIN_TAG, (10, 20, 3))
        members[f"fgvc-aircraft-2013b/data/images/{image_id}.jpg"] = png(x)
        rows["test" if k < per_class // 3 else "trainval"].append(f"{image_id} {variants[c]}")
        rows["box"].append(f"{image_id} 5 4 25 14")
    prefix = "fgvc-aircraft-2013b/data/"
    members[prefix + "variants.txt"] = "\n".join(variants).encode() + b"\n"
    for key, f in (
        ("trainval", "images_variant_trainval.txt"),
        ("test", "images_variant_test.txt"),
        ("box", "images_box.txt"),
    ):
        members[prefix + f] = "\n".join(sorted(rows[key])).encode() + b"\n"
    return {mod.ARCHIVE: tar_gz(members)}, {"data.aircraft": {"PER_VARIANT": per_class}}


BUILDERS.update({"aircraft": aircraft, "aircraft_official": aircraft})


def quickdraw(per_class: int) -> tuple[dict[str, bytes], dict[str, object]]:
    """<category>.npy for the 345 categories: uint8 [per_class + 5, 784] each, row k of category c
    (in sorted order) a solid gray (16 c + k) % 256; the module reads the first per_class rows."""

    lists = data.files.read_json(data.files.CLASSES_JSON)["quickdraw"]
    names = sorted(n for split in lists.values() for n in split)
    files = {}
    for c, name in enumerate(names):
        buf = io.BytesIO()
        np.save(buf, np.stack([ident(c, k, TRAIN_TAG, (28, 28)).ravel() for k in range(per_class + 5)]))
        files[f"{urllib.parse.quote(name)}.npy"] = buf.getvalue()
    return files, {"data.quickdraw": {"PER_CLASS": per_class}}


BUILDERS["quickdraw"] = quickdraw


def mimgnet(per_class: int) -> tuple[dict[str, bytes], dict[str, object]]:
    """mini-imagenet-cache-{train,validation,test}.pkl (Ren et al.'s caches): 64 / 16 / 20 classes
    of per_class 84x84 images, image_data in random order, class_dict {wnid: indices}."""
    from data import mimgnet as mod

    rng = np.random.default_rng(SEED + 6)
    files = {}
    for s, (split, name) in enumerate(mod.FILES.items()):
        n = mod.CLASSES[split]
        labels = _interleaved([per_class] * n, rng)
        x = _images(labels, s, (84, 84, 3))  # blue: the split
        wnids = [f"n{s}{c:07d}" for c in range(n)]
        class_dict = {wnids[c]: np.flatnonzero(labels == c).tolist() for c in range(n)}
        files[name] = pickle.dumps({"image_data": x, "class_dict": class_dict}, protocol=4)
    return files, {"data.mimgnet": {"EXAMPLES": per_class}}


BUILDERS["mimgnet"] = mimgnet
