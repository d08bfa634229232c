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
import tarfile
import threading
import unittest.mock
from collections import Counter
from collections.abc import Callable, Iterator

import numpy as np

import data
import data.files

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
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz", compresslevel=1) as tar:
        for name, body in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(body)
            tar.addfile(info, io.BytesIO(body))
    return buf.getvalue()


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
        files[split] = pickle.dumps({b"data": rows, b"fine_labels": labels.tolist()}, protocol=2)
    files["meta"] = pickle.dumps({b"fine_label_names": [n.encode() for n in names]}, protocol=2)
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
    `per_class` images in each class (at least 65 = Bayesian TAML's 50 shots + 15 queries by default)."""
    module, view = data.entry(name)
    files, settings = build(name, per_class)
    with serving(files) as server, patched(settings):
        module.prepare(root, server.url, *([view] if view else []))
