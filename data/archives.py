"""What the MetaPerturb datasets (tiny_imagenet, stl10, stanford_dogs, stanford_cars) share.

Raw archives come from a base URL, downloaded with resumption (HTTP Range: an interrupted transfer
is kept as <name>.partial and continued by the next run), or from a folder, used in place. Either
way their MD5 is checked where it is known.

A prepared split is two files: <split>.npy, uint8 images [N, H*W*C] sorted by class (RGB, row-major
H, W, C), and <split>_offsets.npy, int64 [classes + 1], class c being images[offsets[c]:offsets[c+1]].
The offsets are written first and the images last, each file whole or not at all, and the images
file is removed before a split is rewritten: a split whose images file opens is complete. It loads
as an array [classes, n, H*W*C] when every class has n images, else as `data.Ragged`.
"""

from __future__ import annotations

import io
import os
import tarfile
import zipfile
import zlib
from collections.abc import Callable

import numpy as np

from data import DataError, Ragged, Split
from data.files import CHUNK, TIMEOUT, _fsync, file_hash, not_format, open_split, save_npy, write_npy

PARTIAL = ".partial"  # suffix of an interrupted download, resumed by the next run


def base(source: str | None, env: str, default: str) -> str:
    """The source in force: --source, else $env, else the default URL."""
    return source or os.environ.get(env) or default


def obtain(name: str, root: str, source: str, md5: str | None, retry: str) -> tuple[str, bool]:
    """(path of archive `name`, whether this run downloaded it, so that it is deleted once used).

    `source` is a folder holding the archive (used in place) or a base URL from which it is
    downloaded into root; an archive already in root with the right MD5 is used as it is. Archives
    this run did not download are kept."""
    if os.path.isdir(source):
        path = os.path.join(source, name)
        if not os.path.isfile(path):
            raise DataError(
                f"{path} is missing: put {name} in {source}, or leave out --source to download it"
            )
        if md5 is not None and (got := file_hash(path, "md5")) != md5:
            raise DataError(f"{path} is corrupt (MD5 {got}, expected {md5}): replace it with an intact copy")
        return path, False
    path = os.path.join(root, name)
    return path, download(f"{source.rstrip('/')}/{name}", path, md5, retry)


def download(url: str, dest: str, md5: str | None, retry: str) -> bool:
    """Download url to dest and return True, or False if dest is already there with the right MD5.

    An earlier partial transfer (dest + PARTIAL) is resumed where the server allows it (HTTP Range).
    dest appears only when complete and matching md5; a partial transfer is kept for the next run,
    a complete one with the wrong MD5 is deleted. DataError says what to do."""
    import requests
    import urllib3
    from tqdm import tqdm

    name = os.path.basename(dest)
    if os.path.exists(dest):
        if md5 is None or file_hash(dest, "md5") == md5:
            print(f"{dest}: already there, used as it is")
            return False
        print(f"{dest}: checksum mismatch, downloading it again")
        os.remove(dest)
    part = dest + PARTIAL
    os.makedirs(os.path.dirname(dest) or ".", exist_ok=True)
    have = os.path.getsize(part) if os.path.exists(part) else 0
    headers = {"Accept-Encoding": "identity"}  # Content-Length then counts the bytes we write
    if have:
        headers["Range"] = f"bytes={have}-"
    kept = f"the bytes received are kept in {part}: run `{retry}` again to resume"
    try:
        with requests.get(url, stream=True, timeout=TIMEOUT, headers=headers) as r:
            resumed = r.status_code == 206 and r.headers.get("Content-Range", "").startswith(f"bytes {have}-")
            if have and (r.status_code == 416 or (r.status_code == 206 and not resumed)):
                os.remove(part)  # the partial file does not fit the server's: start over
                return download(url, dest, md5, retry)
            if r.status_code not in (200, 206):
                raise DataError(
                    f"downloading {name} from {url} failed: HTTP {r.status_code} {r.reason}; check the "
                    f"URL (see --source) or try `{retry}` again later"
                )
            start = have if resumed else 0
            length = int(r.headers.get("Content-Length", 0)) or None
            size = start
            with open(part, "ab" if resumed else "wb") as f:
                bar = tqdm(
                    initial=start, total=length and start + length, unit="B", unit_scale=True, desc=name
                )
                with bar:
                    # read1: the bytes that came before a cut are written, and kept
                    while chunk := r.raw.read1(CHUNK):
                        f.write(chunk)
                        size += len(chunk)
                        bar.update(len(chunk))
    except (requests.exceptions.ChunkedEncodingError, urllib3.exceptions.ProtocolError) as e:  # closed early
        raise DataError(f"the download of {name} from {url} was cut short ({e}); {kept}") from e
    except (requests.RequestException, urllib3.exceptions.HTTPError) as e:
        raise DataError(f"network error while downloading {name} from {url} ({e}); {kept}") from e
    except OSError as e:
        raise DataError(f"could not write {part} ({e}): free disk space or choose --data_root") from e
    if length is not None and size != start + length:  # urllib3 1.x does not check Content-Length
        raise DataError(f"the download of {name} from {url} was cut short at {size} bytes; {kept}")
    if md5 is not None and (got := file_hash(part, "md5")) != md5:
        os.remove(part)
        raise DataError(
            f"{name} from {url} is corrupt (MD5 {got}, expected {md5}); it was deleted: run `{retry}` "
            "again, and if this repeats the server holds another file"
        )
    _fsync(part)
    os.replace(part, dest)
    return True


def rgb(data: bytes, side: int, name: str) -> np.ndarray:
    """Encoded image `name` (JPEG, PNG, ...) as uint8 [side*side*3]: RGB (grayscale repeated),
    resized to side x side (aspect ratio not kept) with Lanczos filtering if it has another size.
    ValueError if it cannot be decoded."""
    from PIL import Image

    try:
        with Image.open(io.BytesIO(data)) as im:
            im = im.convert("RGB")
            if im.size != (side, side):
                im = im.resize((side, side), Image.Resampling.LANCZOS)
            return np.asarray(im, np.uint8).reshape(-1)
    except (OSError, SyntaxError, Image.DecompressionBombError) as e:  # what PIL raises for bad data
        raise ValueError(f"{name} is not a readable image ({e})") from e


# what reading a damaged archive raises (with ValueError from rgb and the modules' own checks)
UNREADABLE = (zipfile.BadZipFile, tarfile.TarError, zlib.error, EOFError, KeyError, ValueError)


def unreadable(path: str, downloaded: bool, what: str, retry: str, e: Exception) -> DataError:
    """The error for an archive that cannot be read as `what`; a downloaded one is deleted."""
    if downloaded:
        os.remove(path)
        return DataError(f"{path} is not a readable {what} ({e}); it was deleted: run `{retry}` again")
    return DataError(
        f"{path} is not a readable {what} ({e}): replace it with an intact copy and run `{retry}`"
    )


def _paths(root: str, split: str) -> tuple[str, str]:
    return os.path.join(root, f"{split}.npy"), os.path.join(root, f"{split}_offsets.npy")


def write_split(
    root: str, split: str, sizes: np.ndarray, dim: int, fill: Callable[[np.ndarray], None]
) -> None:
    """Write a split of len(sizes) classes, sizes[c] images of class c: fill(out) writes the images
    [sum(sizes), dim] uint8, sorted by class, into a memory-mapped file."""
    images, offsets = _paths(root, split)
    if os.path.exists(images):
        os.remove(images)
    save_npy(offsets, np.concatenate([[0], np.cumsum(sizes)]).astype(np.int64))
    write_npy(images, np.uint8, (int(np.sum(sizes)), dim), fill)


def discard(root: str, splits: tuple[str, ...]) -> None:
    """Remove these splits' files (a preparation that failed half-way leaves none of them)."""
    for split in splits:
        for path in _paths(root, split):
            if os.path.exists(path):
                os.remove(path)


def save_split(root: str, split: str, images: np.ndarray, labels: np.ndarray, classes: int) -> None:
    """Write images [N, dim] uint8 with labels [N] in range(classes), stably sorted by class."""
    order = np.argsort(labels, kind="stable")

    def fill(out: np.ndarray) -> None:
        out[:] = images[order]

    write_split(root, split, np.bincount(labels, minlength=classes), images.shape[1], fill)


def open_split_of(root: str, split: str, dim: int, retry: str) -> Split:
    """A prepared split (see the module docstring), memory-mapped; DataError naming `retry` if it is
    missing or inconsistent."""
    images_path, offsets_path = _paths(root, split)
    if not os.path.exists(images_path):
        raise DataError(f"{images_path} is missing; run: {retry}")
    if not os.path.exists(offsets_path):
        raise DataError(f"{offsets_path} is missing; delete {images_path} and run: {retry}")
    redo = f"delete it and {images_path}, and run: {retry}"
    try:
        offsets = None if not_format(offsets_path, ".npy") else np.load(offsets_path, allow_pickle=False)
    except (ValueError, OSError, EOFError):
        offsets = None
    if offsets is None or offsets.dtype != np.int64 or offsets.ndim != 1 or len(offsets) < 2:
        raise DataError(f"{offsets_path} is not a .npy file of int64 class offsets; {redo}")
    n = int(offsets[-1])
    if offsets[0] != 0 or (np.diff(offsets) < 0).any():
        raise DataError(f"{offsets_path} holds offsets that do not start at 0 and grow; {redo}")
    images = open_split(images_path, (n, dim), ("uint8",), retry)
    sizes = np.diff(offsets)
    if (sizes == sizes[0]).all():
        return images.reshape(len(sizes), int(sizes[0]), dim)
    return Ragged(images, offsets)


def decode_tar(path: str, wanted: dict[str, tuple[str, int]], side: int) -> dict[str, np.ndarray]:
    """Stream a tar archive (plain or gzip) once and decode the images it holds under the member
    names of `wanted` (name -> (split, row)) with `rgb`: {split: uint8 [rows, side*side*3]}.
    ValueError if one is missing or unreadable."""
    rows = {split: 1 + max(r for s, r in wanted.values() if s == split) for split, _ in wanted.values()}
    out = {split: np.zeros((n, side * side * 3), np.uint8) for split, n in rows.items()}
    seen = set()
    with tarfile.open(path, "r|*") as tar:
        for member in tar:
            name = member.name.removeprefix("./")
            if name in wanted and member.isfile():
                split, row = wanted[name]
                out[split][row] = rgb(tar.extractfile(member).read(), side, name)
                seen.add(name)
    if missing := len(wanted) - len(seen):
        example = next(n for n in wanted if n not in seen)
        raise ValueError(f"it lacks {missing} of the images its lists name, {example} among them")
    return out
