"""What the MetaPerturb datasets (tiny_imagenet, stl10, stanford_dogs, stanford_cars) share, on top
of data/files.py.

Raw files come from a base URL (downloaded by files.fetch: resumable, MD5-checked) or from a folder
(used in place, MD5-checked). A split is stored by files.save_classes (uint8 images [N, H*W*C]
sorted by class, with class offsets) and handed out uint8, memory-mapped: as an array
[classes, n, H*W*C] when every class has n images, else as a data.Ragged. (files.Splits would make
an equal-size split float32 in memory: 4.9 GB for Tiny ImageNet's training set.)
"""

from __future__ import annotations

import os
import zipfile
import zlib

import numpy as np

from data import DataError, Split
from data.files import (
    fetch,
    image,
    local_file,
    local_path,
    open_classes,
    save_classes,
    tar_members,
    unavailable,
)

# what reading a damaged archive raises (with ValueError from image() and the modules' own checks)
UNREADABLE = (zipfile.BadZipFile, zlib.error, EOFError, KeyError, IndexError, ValueError)


def base(source: str | None, env: str, default: str) -> str:
    """The source in force: --source, else $env, else the default URL."""
    return source or os.environ.get(env) or default


def obtain(name: str, root: str, source: str, md5: str | None, retry: str) -> tuple[str, bool]:
    """(path of raw file `name`, whether this run downloaded it, so that it is deleted once used).

    `source` is a folder (or file:// URL) holding the file, used in place, or a base URL from which
    it is downloaded into root; a file already in root with the right MD5 is used as it is and kept."""
    folder = local_path(source)
    if folder is not None:
        return local_file(os.path.join(folder, name), md5), False
    path = os.path.join(root, name)
    before = _stamp(path)
    fetch(f"{source.rstrip('/')}/{name}", path, md5, retry)
    return path, _stamp(path) != before


def _stamp(path: str) -> tuple[int, int] | None:
    """Which file is at path (a new download replaces it)."""
    if not os.path.exists(path):
        return None
    st = os.stat(path)
    return st.st_ino, st.st_mtime_ns


def unreadable(path: str, downloaded: bool, what: str, retry: str, e: Exception) -> DataError:
    """The error for a raw file that cannot be read as `what`; one this run downloaded is deleted
    (unless memory, the disk or a permission failed, not the file: raise_resource)."""
    if (u := unavailable(e, path)) is not None:
        return u
    if downloaded:
        os.remove(path)
        return DataError(f"{path} is not a readable {what} ({e}); it was deleted: run `{retry}` again")
    return DataError(
        f"{path} is not a readable {what} ({e}): replace it with an intact copy and run `{retry}`"
    )


def rgb(raw: bytes, side: int, name: str) -> np.ndarray:
    """Encoded image `name` as uint8 [side*side*3]: RGB (gray or CMYK converted), resized whole to
    side x side (files.image: bicubic, aspect ratio not kept). ValueError if it cannot be decoded."""
    try:
        return image(raw, side, mode="RGB").reshape(-1)
    except ValueError as e:
        raise ValueError(f"{name} is not a readable image ({e})") from e


def decode_tar(path: str, wanted: dict[str, tuple[str, int]], side: int, retry: str) -> dict[str, np.ndarray]:
    """Read a tar archive (any compression) once and decode the images it holds under the member
    names of `wanted` (name -> (split, row)): {split: uint8 [rows, side*side*3]}. ValueError if one
    is missing or unreadable, DataError if the archive is damaged."""
    rows = {split: 1 + max(r for s, r in wanted.values() if s == split) for split, _ in wanted.values()}
    out = {split: np.zeros((n, side * side * 3), np.uint8) for split, n in rows.items()}
    seen = set()
    for name, raw in tar_members(path, lambda n: n.removeprefix("./") in wanted, retry):
        split, row = wanted[name.removeprefix("./")]
        out[split][row] = rgb(raw, side, name)
        seen.add(name.removeprefix("./"))
    if missing := len(wanted) - len(seen):
        example = next(n for n in wanted if n not in seen)
        raise ValueError(f"it lacks {missing} of the images its lists name, {example} among them")
    return out


def save_split(root: str, split: str, images: np.ndarray, labels: np.ndarray, classes: int) -> None:
    """files.save_classes of images [N, D] uint8 with labels [N] in range(classes), each class in
    the order of `images`."""
    save_classes(root, "", split, [images[labels == c] for c in range(classes)])


def open_splits(root: str, splits: tuple[str, ...], classes: int, shape: tuple[int, ...], retry: str) -> dict:
    """Every prepared split of a dataset of `classes` classes of images of `shape` (open_split_of)."""
    dim = int(np.prod(shape))
    return {s: open_split_of(root, s, classes, dim, retry) for s in splits}


def open_split_of(root: str, split: str, classes: int, dim: int, retry: str) -> Split:
    """A prepared split (module docstring); DataError naming `retry` if missing or inconsistent."""
    r = open_classes(root, "", split, classes, dim, retry)
    sizes = r.sizes
    if (sizes == sizes[0]).all():
        return r.images.reshape(len(sizes), int(sizes[0]), dim)
    return r
