"""Files of prepared datasets: downloads, checksums, and .npy splits written whole or not at all."""

from __future__ import annotations

import contextlib
import errno
import glob
import hashlib
import json
import os
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np

from data import DataError, OtherData, default_root

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


def read_json(path: str) -> Any:
    """A JSON file's content; ValueError saying why it cannot be read."""
    try:
        with open(path) as f:
            return json.load(f)
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ValueError(f"{path} is not a readable JSON file ({e})") from e


def fetch(url: str, dest: str, md5: str | None, retry: str) -> None:
    """Download url to dest, unless dest is already there (with the right MD5).

    The bytes go to a temporary file that becomes dest only when complete (Content-Length) and
    matching md5, so an interrupted or failed download leaves nothing behind. `retry` is the
    command named in error messages.
    """
    import requests
    from tqdm import tqdm

    name = os.path.basename(dest)
    if os.path.exists(dest):
        if md5 is None or file_hash(dest, "md5") == md5:
            print(f"{dest}: already downloaded")
            return
        print(f"{dest}: checksum mismatch, downloading it again")
    with atomic(dest) as tmp:
        digest = hashlib.md5()
        size = 0
        try:
            # identity encoding: Content-Length then counts the bytes we write
            identity = {"Accept-Encoding": "identity"}
            with requests.get(url, stream=True, timeout=TIMEOUT, headers=identity) as r:
                if r.status_code != 200:
                    raise DataError(
                        f"downloading {name} from {url} failed: HTTP {r.status_code} {r.reason}; "
                        f"check the URL (see --source) or try `{retry}` again later"
                    )
                total = int(r.headers.get("Content-Length", 0)) or None
                with open(tmp, "wb") as f, tqdm(total=total, unit="B", unit_scale=True, desc=name) as bar:
                    for chunk in r.iter_content(CHUNK):
                        f.write(chunk)
                        digest.update(chunk)
                        size += len(chunk)
                        bar.update(len(chunk))
        except requests.exceptions.ChunkedEncodingError as e:  # the connection closed early
            raise DataError(
                f"the download of {name} from {url} was cut short after {size} bytes ({e}); "
                f"nothing was kept: run `{retry}` again"
            ) from e
        except requests.RequestException as e:
            raise DataError(
                f"network error while downloading {name} from {url} ({e}); nothing was kept: "
                f"check your connection and run `{retry}` again"
            ) from e
        except OSError as e:
            raise DataError(f"could not write {tmp} ({e}): free disk space or choose --data_root") from e
        if total is not None and size != total:  # urllib3 1.x does not check Content-Length
            raise DataError(
                f"the download of {name} from {url} was cut short ({size} of {total} bytes); "
                f"nothing was kept: run `{retry}` again"
            )
        if md5 is not None and digest.hexdigest() != md5:
            raise DataError(
                f"{name} from {url} is corrupt (MD5 {digest.hexdigest()}, expected {md5}); nothing was "
                f"kept: run `{retry}` again, and if this repeats the server holds another file"
            )


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
        if e.errno is None:  # numpy's own complaint about the content
            raise DataError(f"{path} is not a readable .npy file ({e}); {redo}") from e
        raise DataError(f"cannot read {path} ({resource(e)}); it is kept") from e
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
