"""Files of prepared datasets: downloads, checksums, and .npy splits written whole or not at all."""

from __future__ import annotations

import contextlib
import errno
import glob
import hashlib
import importlib
import io
import json
import os
import pickle
import urllib.parse
import urllib.request
import zlib
from collections.abc import Callable, Iterator, Mapping
from typing import Any

import numpy as np

from data import DataError, OtherData, Ragged, Unavailable, default_root

CHUNK = 1 << 20  # bytes per read while downloading or hashing
TIMEOUT = 60  # seconds without a byte from the server before giving up


def command(name: str, root: str, source: str | None = None) -> str:
    """The get_data.py command that prepares dataset `name` in `root`."""
    cmd = f"python get_data.py --dataset {name}"
    if os.path.normpath(root) != os.path.normpath(default_root(name)):
        cmd += f" --data_root {root}"
    if source is not None:
        cmd += f" --source {source}"
    return cmd


def file_hash(path: str, algorithm: str) -> str:
    h = hashlib.new(algorithm)
    with open(path, "rb") as f:
        while chunk := f.read(CHUNK):
            h.update(chunk)
    return h.hexdigest()


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process
        return True
    return True


def _fsync(path: str) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


@contextlib.contextmanager
def atomic(path: str) -> Iterator[str]:
    """A temporary path to write; it becomes `path` only if the block completes, else it is removed.

    The file and then its folder are flushed to disk (fsync) around the rename, so `path` is the old
    file or the whole new one even after a power loss. Temporary files of processes that no longer
    run (killed mid-write) are removed first."""
    folder = os.path.dirname(path) or "."
    os.makedirs(folder, exist_ok=True)
    for stale in glob.glob(glob.escape(path) + ".part*"):
        pid = stale[len(path) + len(".part") :]
        if pid.isdigit() and not _alive(int(pid)):
            with contextlib.suppress(OSError):
                os.remove(stale)
    tmp = f"{path}.part{os.getpid()}"
    try:
        yield tmp
        _fsync(tmp)
        os.replace(tmp, path)
        if os.name == "posix":  # a folder cannot be opened for fsync on Windows
            _fsync(folder)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


# What ran out or stood in the way, by errno, and what to do about it.
RESOURCES = {
    errno.ENOSPC: "the disk is full: free space",
    errno.EDQUOT: "the disk quota is used up: free space",
    errno.EFBIG: "the file is larger than this process may write (ulimit -f) or the file system allows",
    errno.EACCES: "permission denied: fix the permissions or choose another folder",
    errno.EPERM: "permission denied: fix the permissions or choose another folder",
    errno.EROFS: "the file system is read-only: choose another folder",
    errno.ENOMEM: "out of memory",
    errno.EIO: "the disk reported an I/O error",
}


def resource(e: OSError) -> str:
    """An OSError as one line that names the file and the resource (disk space, permission, ...)."""
    where = f"{e.filename}: " if e.filename else ""
    return f"{where}{e.strerror or e} ({RESOURCES.get(e.errno, 'check the disk and the paths')})"


def unavailable(e: BaseException, path: str) -> Unavailable | None:
    """For an error while reading `path`: an Unavailable naming what failed if it was memory, the
    disk, a permission or I/O (not the file's content, which a "not a readable ...; delete it"
    error would blame), else None."""
    if isinstance(e, Unavailable):
        return e
    if isinstance(e, MemoryError):
        return Unavailable(
            f"not enough memory to read {path}; it is kept: free memory (or raise the memory limit) "
            "and run the same command again"
        )
    if isinstance(e, OSError) and e.errno is not None:  # the content's errors (gzip, PIL) have none
        return Unavailable(f"cannot read {path} ({resource(e)}); it is kept: run the same command again")
    return None


def raise_resource(e: BaseException, path: str) -> None:
    """Raise unavailable(e, path) if there is one."""
    if (u := unavailable(e, path)) is not None:
        raise u from e


def read_json(path: str) -> Any:
    """A JSON file's content; ValueError saying why it cannot be read."""
    try:
        with open(path) as f:
            return json.load(f)
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ValueError(f"{path} is not a readable JSON file ({e})") from e


PARTIAL = ".download"  # suffix of a download in progress, kept to be resumed (never read as data)
OFFLINE = "docs/data.md#offline"  # where the files of each dataset are listed, for --source FOLDER


def local_path(url: str) -> str | None:
    """The local file or folder that `url` names: a file:// URL or anything else that is not an
    http(s) URL (a --source folder, or one joined with a file name); None for an http(s) URL.
    DataError for a file:// URL of another host."""
    parts = urllib.parse.urlsplit(url)
    if parts.scheme in ("http", "https"):
        return None
    if parts.scheme == "file":
        if parts.netloc not in ("", "localhost"):
            raise DataError(f"{url} names another machine: a file:// URL is file:///absolute/path")
        return urllib.request.url2pathname(parts.path)  # also undoes %-escapes
    # a file name that was %-escaped for a URL (quickdraw's "The%20Eiffel%20Tower.npy")
    return url if os.path.exists(url) else urllib.parse.unquote(url)


def local_file(src: str, md5: str | None) -> str:
    """src, a raw file downloaded by hand into a --source folder, once it is there and has the
    MD5 `md5` (if given); DataError saying what to do if not. It is only read, never changed."""
    folder = os.path.dirname(src) or "."
    if not os.path.isdir(folder):
        raise DataError(f"--source: the folder {folder} does not exist")
    if not os.path.isfile(src):
        raise DataError(
            f"{src} is missing: put {os.path.basename(src)} there ({OFFLINE} lists each dataset's "
            "files), or leave out --source to download it"
        )
    if md5 is not None and (got := file_hash(src, "md5")) != md5:
        raise DataError(f"{src} is corrupt (MD5 {got}, expected {md5}): replace it with an intact copy")
    return src


def _copy(src: str, part: str, stop: int | None, name: str, bar: bool) -> None:
    """A local file (its first `stop` bytes, if given) to `part`: a hard link where it can be (no
    second copy on disk; deleting `part` or what it becomes leaves `src`), else a copy."""
    from tqdm import tqdm

    if os.path.exists(part):
        os.remove(part)
    if stop is None:
        with contextlib.suppress(OSError):  # another file system, or links not allowed: copy
            os.link(src, part)
            return
    want = os.path.getsize(src) if stop is None else min(stop, os.path.getsize(src))
    with open(src, "rb") as f, open(part, "wb") as out:
        with tqdm(total=want, unit="B", unit_scale=True, desc=name, disable=not bar) as shown:
            while chunk := f.read(min(CHUNK, want - out.tell())):
                out.write(chunk)
                shown.update(len(chunk))


def _get(url: str, start: int, stop: int | None, name: str, retry: str) -> Any:  # requests.Response | None
    """GET bytes start.. (to stop, exclusive, if given) of url; None if the server has no bytes past
    `start` (HTTP 416: the partial file is complete or foreign); DataError on any other HTTP error."""
    import requests

    headers = {"Accept-Encoding": "identity"}  # Content-Length then counts the bytes we write
    if start or stop:
        headers["Range"] = f"bytes={start}-{'' if stop is None else stop - 1}"
    r = requests.get(url, stream=True, timeout=TIMEOUT, headers=headers)
    if r.status_code in (200, 206):
        return r
    r.close()
    if r.status_code == 416 and start:
        return None
    raise DataError(
        f"downloading {name} from {url} failed: HTTP {r.status_code} {r.reason}; "
        f"check the URL (see --source) or try `{retry}` again later"
    )


def _transfer(
    url: str, part: str, stop: int | None, name: str, retry: str, bar: bool
) -> tuple[int, int | None]:
    """Append url's bytes to `part` from its current size on; (bytes now in part, bytes expected)."""
    from tqdm import tqdm

    start = os.path.getsize(part) if os.path.exists(part) else 0
    if stop is not None and start >= stop:
        if start == stop:
            return start, stop
        os.remove(part)
        start = 0
    r = _get(url, start, stop, name, retry)
    if r is None:  # 416: start over
        os.remove(part)
        start = 0
        r = _get(url, start, stop, name, retry)
    # keep the bytes of a transfer cut short (the size check below reports it) so it can be resumed
    r.raw.enforce_content_length = False
    with r:
        if r.status_code == 200 and start:
            print(f"{name}: the server does not resume downloads; downloading it again")
            start = 0
        elif start:
            print(f"{name}: resuming after {start} bytes")
        length = int(r.headers.get("Content-Length", 0))
        total = start + length if length else None  # the file's size, if the server says
        if r.status_code == 206:  # "bytes <first>-<last>/<size>"
            first, _, end = r.headers.get("Content-Range", "").partition("-")
            if first.split()[-1:] != [str(start)]:
                raise DataError(
                    f"{url} sent {r.headers.get('Content-Range')!r} for bytes {start}- of {name}: delete "
                    f"{part} and run `{retry}` again"
                )
            end = end.rpartition("/")[2]
            total = int(end) if end.isdigit() else total
        want = total if stop is None else stop if total is None else min(stop, total)
        size = start
        with open(part, "ab" if start else "wb") as f:
            with tqdm(
                total=want, initial=start, unit="B", unit_scale=True, desc=name, disable=not bar
            ) as shown:
                for chunk in r.iter_content(CHUNK):
                    chunk = chunk if stop is None else chunk[: stop - size]
                    f.write(chunk)
                    f.flush()
                    size += len(chunk)
                    shown.update(len(chunk))
                    if size == stop:
                        break
    return size, want


def fetch(
    url: str, dest: str, md5: str | None, retry: str, stop: int | None = None, bar: bool = True
) -> None:
    """Download url to dest, unless dest is already there (with the right MD5).

    The bytes go to dest + PARTIAL, which becomes dest only when complete (Content-Length, or the
    first `stop` bytes of the file if given) and matching md5. An interrupted transfer keeps that
    partial file and the next call resumes it with an HTTP Range request (a server that answers 200
    instead of 206 sends it all again); a wrong checksum keeps nothing. A file:// URL or a plain
    path (a file downloaded elsewhere, in a --source folder) is linked or copied (_copy) and checked
    the same way. `retry` is the command named in error messages; `bar` False: no progress bar and
    no message for a file already there.
    """
    import requests

    name = os.path.basename(dest)
    if os.path.exists(dest):
        if md5 is None or file_hash(dest, "md5") == md5:
            if bar:
                print(f"{dest}: already downloaded")
            return
        print(f"{dest}: checksum mismatch, downloading it again")
        os.remove(dest)
    part = dest + PARTIAL
    os.makedirs(os.path.dirname(dest) or ".", exist_ok=True)
    src = local_path(url)
    if src is not None:
        _copy(local_file(src, md5), part, stop, name, bar)
        os.replace(part, dest)
        return

    def kept() -> str:
        if os.path.exists(part) and os.path.getsize(part) > 0:
            return f"the part is kept in {part}: run `{retry}` again to resume"
        return f"nothing was written: run `{retry}` again"

    try:
        size, want = _transfer(url, part, stop, name, retry, bar)
    except requests.exceptions.ChunkedEncodingError as e:  # the connection closed early
        raise DataError(f"the download of {name} from {url} was cut short ({e}); {kept()}") from e
    except (requests.exceptions.InvalidURL, requests.exceptions.MissingSchema) as e:
        raise DataError(f"{url} is not a URL ({e}): check --source") from e
    except requests.exceptions.ConnectionError as e:
        host = urllib.parse.urlsplit(url).netloc
        if os.path.exists(part) and os.path.getsize(part) > 0:
            raise DataError(
                f"the download of {name} from {host} was cut short (connection lost); {kept()}"
            ) from e
        raise DataError(
            f"cannot reach {host} for {name} (no network, or the host is down); {kept()}; "
            f"or download it elsewhere and pass its folder (or a file:// URL) with --source ({OFFLINE})"
        ) from e
    except requests.RequestException as e:
        raise DataError(f"downloading {name} from {url} failed ({e}); {kept()}") from e
    except OSError as e:
        raise DataError(f"could not write {part} ({e}): free disk space or choose --data_root") from e
    if want is not None and size != want:  # urllib3 1.x does not check Content-Length
        raise DataError(f"the download of {name} from {url} was cut short ({size} of {want} bytes); {kept()}")
    if md5 is not None and (got := file_hash(part, "md5")) != md5:
        os.remove(part)
        raise DataError(
            f"{name} from {url} is corrupt (MD5 {got}, expected {md5}); nothing was kept: run "
            f"`{retry}` again, and if this repeats the server holds another file"
        )
    os.replace(part, dest)  # no fsync: a download damaged by a power loss fails its checksum or decoding


def save_npy(path: str, array: np.ndarray) -> None:
    """np.save, but the file appears only once it is complete."""
    with atomic(path) as tmp, open(tmp, "wb") as f:
        np.save(f, array)


def write_npy(path: str, dtype: type, shape: tuple[int, ...], fill: Callable[[np.ndarray], None]) -> None:
    """Like save_npy for arrays too big to hold twice: fill(out) writes into a memory-mapped file."""
    with atomic(path) as tmp:
        out = np.lib.format.open_memmap(tmp, mode="w+", dtype=dtype, shape=shape)
        fill(out)
        out.flush()
        del out


def ready(open_splits: Callable[[], object]) -> bool:
    """Whether a dataset's prepared splits open (so get_data.py has nothing to do); OtherData if the
    folder holds another dataset's."""
    try:
        open_splits()
    except OtherData:  # another dataset's splits: not to be written over
        raise
    except DataError:
        return False
    return True


MAGIC = {".npy": b"\x93NUMPY", ".npz": b"PK\x03\x04"}  # the first bytes of each format


def numpy_format(path: str) -> str | None:
    """ ".npy" or ".npz" as a file's first bytes say (not its name), None for anything else."""
    with open(path, "rb") as f:
        head = f.read(6)
    return next((kind for kind, magic in MAGIC.items() if head.startswith(magic)), None)


def not_format(path: str, want: str) -> str | None:
    """Why path is not a `want` (".npy" or ".npz") file, or None if its first bytes say it is."""
    kind = numpy_format(path)
    if kind == want:
        return None
    what = f"a {kind} file" if kind else f"neither .npy nor .npz (no {want} header)"
    return f"{path} is not a {want} file: it is {what}"


def open_split(path: str, shape: tuple[int, ...], dtypes: tuple[str, ...], retry: str) -> np.ndarray:
    """A read-only memory map of a prepared split with this shape (any same-size shape is reshaped,
    as the original code did), one of these dtypes and finite values; DataError naming `retry` if not."""
    redo = f"delete it and run: {retry}"
    if not os.path.exists(path):
        raise DataError(f"{path} is missing; run: {retry}")
    try:
        why = not_format(path, ".npy")
        if why:
            raise DataError(f"{why}; {redo}")
        arr = np.load(path, mmap_mode="r", allow_pickle=False)
    except OSError as e:
        raise_resource(e, path)
        raise DataError(f"{path} is not a readable .npy file ({e}); {redo}") from e
    except (ValueError, EOFError) as e:
        raise DataError(f"{path} is not a readable .npy file ({e}); {redo}") from e
    # A whole .npy of another shape or type is no damaged file: most likely --data_root is the folder
    # of another dataset than --dataset. Nothing is to be deleted; the message names the mismatch.
    other = (
        f"{path} holds an array of shape {arr.shape}, expected {shape} "
        f"({' or '.join(dtypes)} values; it holds {arr.dtype})"
    )
    mismatch = (
        "--dataset and --data_root do not match: give the --data_root where this --dataset was "
        "prepared (by default ./data/<dataset>), or the --dataset that these splits were prepared for"
    )
    if arr.size != int(np.prod(shape)) or arr.dtype.name not in dtypes:
        raise OtherData(f"{other}; {mismatch}")
    arr = arr.reshape(shape)
    if arr.dtype.kind == "f":
        step = max(1, CHUNK // max(1, arr[:1].nbytes))  # classes per chunk: bounded memory
        for i in range(0, len(arr), step):
            if not np.isfinite(arr[i : i + step]).all():
                raise DataError(f"{path} holds NaN or infinite values; {redo}")
    return arr


# ---------------------------------------------------------------- datasets of classes of any size

# what a pickled dict of numpy arrays may refer to (numpy 1 and 2 module names)
PICKLE_GLOBALS = {
    ("numpy", "ndarray"),
    ("numpy", "dtype"),
    ("numpy.core.multiarray", "_reconstruct"),
    ("numpy.core.multiarray", "scalar"),
    ("numpy.core.numeric", "_frombuffer"),
    ("_codecs", "encode"),
    ("collections", "OrderedDict"),
}


class ArraysOnly(pickle.Unpickler):
    """Unpickles numpy arrays, dicts and lists (dataset pickles: miniImageNet caches, CIFAR batches);
    refuses anything that could run code."""

    def find_class(self, module: str, name: str) -> object:
        canonical = module.replace("numpy._core", "numpy.core", 1)
        if (canonical, name) not in PICKLE_GLOBALS:
            raise pickle.UnpicklingError(f"it refers to {module}.{name}, which a dataset pickle does not")
        return getattr(importlib.import_module(canonical.replace("numpy.core", "numpy._core", 1)), name)


CLASSES_JSON = os.path.join(os.path.dirname(__file__), "classes.json")


def class_lists(key: str, counts: dict[str, int]) -> dict[str, list[str]]:
    """Hard-coded class lists of data/classes.json[key] (facts of the original code), split -> names,
    checked against `counts` (split -> number of classes) and for overlaps."""
    lists = read_json(CLASSES_JSON)[key]
    got = {s: len(lists[s]) for s in counts}
    names = [c for s in counts for c in lists[s]]
    if got != counts or len(set(names)) != len(names):
        raise ValueError(f"{CLASSES_JSON}[{key}] has {got} classes (want {counts}), or overlapping splits")
    return {s: lists[s] for s in counts}


def image(
    raw: bytes | np.ndarray, side: int, box: tuple[int, int, int, int] | None = None, mode: str | None = None
) -> np.ndarray:
    """An encoded image (bytes: JPEG, PNG, PPM, ...) or a uint8 array, converted to PIL `mode` if
    given, cropped to `box` (left, upper, right, lower; PIL's crop) if given, resized to side x side
    with PIL's bicubic filter (the default of the PIL resize that the original scripts call): uint8
    [side, side, 3] for RGB, [side, side] for gray; ValueError if it cannot be decoded."""
    from PIL import Image

    try:
        im = Image.fromarray(raw) if isinstance(raw, np.ndarray) else Image.open(io.BytesIO(raw))
        with im:
            im = im.convert(mode) if mode else im
            im = im.crop(box) if box is not None else im
            return np.asarray(im.resize((side, side), Image.Resampling.BICUBIC), dtype=np.uint8)
    except (OSError, SyntaxError) as e:  # PIL's errors for damaged files
        raise ValueError(str(e)) from e


def rgb(images: np.ndarray) -> np.ndarray:
    """Gray images [..., H, W] -> [..., H, W, 3], the value repeated (MetaPerturb spec section 3)."""
    return np.repeat(images[..., None], 3, axis=-1)


def tar_members(path: str, wanted: Callable[[str], bool], retry: str) -> Iterator[tuple[str, bytes]]:
    """(name, bytes) of the wanted files of a tar archive (any compression), in archive order,
    reading it once from start to end; DataError naming `retry` if it is damaged."""
    import tarfile

    try:
        with tarfile.open(path) as tar:
            for member in tar:
                if member.isfile() and wanted(member.name):
                    f = tar.extractfile(member)
                    yield member.name, f.read() if f else b""
    except (tarfile.TarError, OSError, EOFError, zlib.error) as e:
        raise_resource(e, path)
        raise DataError(f"{path} is not a readable tar archive ({e}); delete it and run: {retry}") from e


def _classes_paths(root: str, prefix: str, split: str) -> tuple[str, str]:
    base = os.path.join(root, f"{prefix}{split}")
    return base + ".npy", base + ".offsets.npy"


def save_classes(root: str, prefix: str, split: str, classes: list[np.ndarray]) -> None:
    """One split as <prefix><split>.npy, uint8 [N, H*W*C] sorted by class, and <prefix><split>.offsets.npy,
    int64 [classes + 1] (data.Ragged). The offsets are removed first and written last, so a split is
    never both readable and incomplete."""
    images_path, offsets_path = _classes_paths(root, prefix, split)
    if os.path.exists(offsets_path):
        os.remove(offsets_path)
    ragged = Ragged.of([c.reshape(len(c), int(np.prod(c.shape[1:]))) for c in classes])  # empty ones too
    save_npy(images_path, ragged.images.astype(np.uint8, copy=False))
    save_npy(offsets_path, ragged.offsets)


def open_classes(root: str, prefix: str, split: str, n_classes: int, dim: int, retry: str) -> Ragged:
    """A split written by save_classes as a Ragged of read-only memory maps, uint8 [N, dim];
    DataError naming `retry` if it is missing or inconsistent."""
    images_path, offsets_path = _classes_paths(root, prefix, split)
    offsets = open_split(offsets_path, (n_classes + 1,), ("int64",), retry)
    if offsets[0] != 0 or (np.diff(offsets) < 0).any():
        raise DataError(f"{offsets_path} is not a list of class offsets; delete it and run: {retry}")
    return Ragged(open_split(images_path, (int(offsets[-1]), dim), ("uint8",), retry), np.asarray(offsets))


class Splits(Mapping[str, Any]):
    """Splits of uint8 Ragged classes as the Dataset interface hands them out: a split whose classes
    all have the same size becomes float32 [classes, examples, D] in [0, 1] on first use (then kept);
    any other stays a Ragged of uint8 (its r[c] is float32)."""

    def __init__(self, raw: dict[str, Ragged]) -> None:
        self._raw: dict[str, Ragged] = raw
        self._done: dict[str, Any] = {}

    def __getitem__(self, split: str) -> Any:
        if split not in self._done:
            r = self._raw[split]
            sizes = r.sizes
            if len(sizes) and (sizes == sizes[0]).all():
                x = r.images.reshape(len(sizes), int(sizes[0]), -1).astype(np.float32)
                x /= 255
                self._done[split] = x
            else:
                self._done[split] = r
        return self._done[split]

    def sizes(self, split: str) -> np.ndarray:
        """[classes] examples per class of a split, without converting it (data.headers)."""
        return self._raw[split].sizes

    def __iter__(self) -> Iterator[str]:
        return iter(self._raw)

    def __len__(self) -> int:
        return len(self._raw)
