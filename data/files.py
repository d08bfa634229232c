"""Files of prepared datasets: downloads, checksums, and .npy splits written whole or not at all."""

from __future__ import annotations

import collections
import contextlib
import errno
import glob
import hashlib
import io
import json
import math
import os
import pickle
import pickletools
import re
import reprlib
import urllib.parse
import urllib.request
import zlib
from collections.abc import Callable, Iterator, Mapping
from typing import IO, Any

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


def open_split(
    path: str, shape: tuple[int, ...], dtypes: tuple[str, ...], retry: str, values: bool = True
) -> np.ndarray:
    """A read-only memory map of a prepared split with this shape (any same-size shape is reshaped,
    as the original code did), one of these dtypes and (`values`) finite values; DataError naming
    `retry` if not. With values False only the .npy header is read (data.headers.peek)."""
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
    if values and arr.dtype.kind == "f":
        step = max(1, CHUNK // max(1, arr[:1].nbytes))  # classes per chunk: bounded memory
        for i in range(0, len(arr), step):
            if not np.isfinite(arr[i : i + step]).all():
                raise DataError(f"{path} holds NaN or infinite values; {redo}")
    return arr


# ---------------------------------------------------------------- datasets of classes of any size

# Dataset pickles (miniImageNet caches, CIFAR batches) are data: their opcodes are checked before anything
# is built, and what they build is bounded by their bytes (docs/failures.md#files-from-outside).
# The opcodes of plain values, the memo, globals, calls and BUILD; no instantiation of classes, no extensions.
PICKLE_OPCODES = frozenset(
    "PROTO FRAME STOP MARK POP POP_MARK DUP NONE NEWTRUE NEWFALSE INT BININT BININT1 BININT2 LONG LONG1 "
    "LONG4 FLOAT BINFLOAT STRING BINSTRING SHORT_BINSTRING BINBYTES SHORT_BINBYTES BINBYTES8 BYTEARRAY8 "
    "UNICODE BINUNICODE SHORT_BINUNICODE BINUNICODE8 EMPTY_TUPLE TUPLE TUPLE1 TUPLE2 TUPLE3 EMPTY_LIST LIST "
    "APPEND APPENDS EMPTY_DICT DICT SETITEM SETITEMS PUT BINPUT LONG_BINPUT MEMOIZE GET BINGET LONG_BINGET "
    "GLOBAL STACK_GLOBAL REDUCE BUILD".split()
)
MEMO_STORES = frozenset({"PUT", "BINPUT", "LONG_BINPUT", "MEMOIZE"})
MEMO_GETS = frozenset({"GET", "BINGET", "LONG_BINGET"})
MAX_DIMS = 32  # numpy 1's limit on dimensions (numpy 2: 64)
NUMBERS = re.compile(r"[biufc]\d{1,2}")  # the dtypes an array of a dataset pickle may have ("u1", "f8", ...)


class _Window:
    """The bytes of a file from where it stands to `end`: reads past it return what is left."""

    __slots__ = ("f", "end")

    def __init__(self, f: IO[bytes], end: int) -> None:
        self.f, self.end = f, end

    def read(self, n: int = -1) -> bytes:
        left = self.end - self.f.tell()
        return self.f.read(left if n < 0 else min(n, left))

    def readline(self) -> bytes:
        return self.f.readline(self.end - self.f.tell())

    def tell(self) -> int:
        return self.f.tell()


def scan_pickle(f: IO[bytes], end: int) -> None:
    """Walk the pickle at f's position (ending by byte `end`) opcode by opcode, building nothing.
    UnpicklingError if an opcode is not in PICKLE_OPCODES, a length or frame reaches past `end`, or a
    memo index is beyond the values stored so far (CPython's unpickler allocates a memo table up to
    the largest index, and a bytes object of the stated length before reading it)."""
    stores = 0
    try:
        for op, arg, pos in pickletools.genops(_Window(f, end)):
            if op.name not in PICKLE_OPCODES:
                raise pickle.UnpicklingError(f"opcode {op.name}, which a dataset pickle does not use")
            if op.name == "FRAME" and arg > end - pos - 9:  # 9: the opcode and its 8-byte length
                raise pickle.UnpicklingError(f"a frame of {arg} bytes, more than the {end - pos - 9} left")
            if (op.name in MEMO_STORES and arg is not None and arg > stores) or (
                op.name in MEMO_GETS and arg >= stores
            ):
                raise pickle.UnpicklingError(f"memo index {arg} after {stores} stored values")
            stores += op.name in MEMO_STORES
    except ValueError as e:  # pickletools: a length past the end, a bad opcode or argument
        raise pickle.UnpicklingError(str(e)) from None


class _Budget:
    """Bytes that the arrays, scalars and bytes a pickle makes may still take."""

    __slots__ = ("left",)

    def __init__(self, left: int) -> None:
        self.left = left

    def take(self, n: int, what: str) -> None:
        if n > self.left:
            raise pickle.UnpicklingError(f"{what} of {n} bytes: more than its file's bytes hold")
        self.left -= n


def _text(x: object) -> str | None:
    """x as text: a str, or a py2 str unpickled as bytes (encoding="bytes"); None for anything else."""
    return x.decode("latin1") if type(x) is bytes else x if type(x) is str else None


def _nbytes(shape: object, dtype: np.dtype) -> int:
    """Bytes of an array of this shape (a tuple of sizes, checked) and dtype."""
    if not (
        type(shape) is tuple and len(shape) <= MAX_DIMS and all(type(n) is int and n >= 0 for n in shape)
    ):
        raise pickle.UnpicklingError(f"shape {reprlib.repr(shape)} is not a tuple of sizes")
    return math.prod(shape) * dtype.itemsize


class _Dtype:
    """numpy.dtype(spec, align, copy) of a pickle: a number type (NUMBERS); its __setstate__ (BUILD)
    admits only a byte order and otherwise the state numpy writes for that type. Arrays and scalars
    take `dtype`; numpy's own dtype.__setstate__ is never called."""

    __slots__ = ("dtype",)

    def __init__(self, spec: object, align: object = False, copy: object = True) -> None:
        text = _text(spec)
        if not (text is not None and NUMBERS.fullmatch(text) and type(align) in (bool, int)):
            raise pickle.UnpicklingError(f"dtype {reprlib.repr(spec)}, which is not a number type")
        try:
            self.dtype = np.dtype(text)
        except TypeError as e:
            raise pickle.UnpicklingError(f"dtype {text!r}: {e}") from None

    def __setstate__(self, state: object) -> None:
        want = self.dtype.__reduce__()[2]
        same = type(state) is tuple and len(state) == len(want)
        if not (
            same and all(type(x) is type(y) and x == y for i, (x, y) in enumerate(zip(state, want)) if i != 1)
        ):
            raise pickle.UnpicklingError(f"dtype {self.dtype} has state {reprlib.repr(state)}")
        order = _text(state[1])
        if order not in ("<", ">", "|", "="):
            raise pickle.UnpicklingError(f"dtype {self.dtype} has byte order {reprlib.repr(order)}")
        self.dtype = self.dtype.newbyteorder(order)  # "|" and "=": as it is


class _Array(np.ndarray):
    """An array of a pickle: _reconstruct makes it empty, then its __setstate__ (BUILD) fills it once,
    after checking that the state is (1, shape, a _Dtype, fortran order, data) with data of exactly
    shape x itemsize bytes, and taking those bytes from the budget."""

    def __setstate__(self, state: object) -> None:
        budget = self.__dict__.pop("budget", None)
        if not (budget is not None and type(state) is tuple and len(state) == 5 and type(state[2]) is _Dtype):
            raise pickle.UnpicklingError(
                "an array's state is not (1, shape, dtype, fortran, data) of a new array"
            )
        version, shape, dtype, fortran, raw = state
        n = _nbytes(shape, dtype.dtype)
        if not (type(version) is int and version == 1 and type(fortran) in (bool, int)):
            raise pickle.UnpicklingError(f"an array's state has version {version!r}, fortran {fortran!r}")
        if type(raw) not in (bytes, bytearray, str) or len(raw) != n:
            got = f"{len(raw)} bytes" if type(raw) in (bytes, bytearray, str) else f"a {type(raw).__name__}"
            raise pickle.UnpicklingError(
                f"an array of shape {shape} and {dtype.dtype} has {got} of data, not {n}"
            )
        budget.take(n, "an array")
        super().__setstate__((1, shape, dtype.dtype, bool(fortran), raw))


class _Call:
    """A global of a dataset pickle: fn(budget, *args). No __dict__, and BUILD (__setstate__) is refused."""

    __slots__ = ("fn", "budget")

    def __init__(self, fn: Callable[..., object], budget: _Budget) -> None:
        self.fn, self.budget = fn, budget

    def __call__(self, *args: object) -> object:
        return self.fn(self.budget, *args)

    def __setstate__(self, state: object) -> None:
        raise pickle.UnpicklingError("BUILD on a global")


class _OrderedDict(collections.OrderedDict):
    """An OrderedDict that BUILD cannot fill (a state would be copied into it at each BUILD)."""

    def __setstate__(self, state: object) -> None:
        raise pickle.UnpicklingError("BUILD on an OrderedDict")


def _ndarray(budget: _Budget, *args: object) -> None:
    raise pickle.UnpicklingError("it calls numpy.ndarray, which a dataset pickle only names for _reconstruct")


def _reconstruct(budget: _Budget, subtype: object, shape: object, typecode: object) -> _Array:
    """numpy's first step to an array: an empty one ((0,) of "b", all numpy writes); BUILD fills it."""
    if not (type(subtype) is _Call and subtype.fn is _ndarray and _text(typecode) == "b"):
        raise pickle.UnpicklingError(f"_reconstruct of {reprlib.repr(typecode)}, not of numpy.ndarray and b")
    if not (type(shape) is tuple and shape == (0,)):
        raise pickle.UnpicklingError(f"_reconstruct of shape {reprlib.repr(shape)}, not an empty array")
    out = _Array((0,), "b")
    out.budget = budget
    return out


def _frombuffer(budget: _Budget, buf: object, dtype: object, shape: object, order: object) -> _Array:
    """numpy's array from a pickled buffer (protocol 5), once its length is shape x itemsize."""
    if not (type(buf) in (bytes, bytearray) and type(dtype) is _Dtype and _text(order) in ("C", "F")):
        raise pickle.UnpicklingError("_frombuffer of something other than bytes, a dtype and an order")
    n = _nbytes(shape, dtype.dtype)
    if len(buf) != n:
        raise pickle.UnpicklingError(
            f"an array of shape {shape} and {dtype.dtype} has {len(buf)} bytes, not {n}"
        )
    budget.take(n, "an array")
    return np.frombuffer(buf, dtype.dtype).reshape(shape, order=_text(order)).view(_Array)


def _scalar(budget: _Budget, dtype: object, raw: object) -> np.generic:
    """numpy's scalar from its bytes, once they are exactly one item."""
    if not (type(dtype) is _Dtype and type(raw) in (bytes, str) and len(raw) == dtype.dtype.itemsize):
        raise pickle.UnpicklingError("a numpy scalar that is not one number of its dtype")
    budget.take(len(raw), "a scalar")
    return np.frombuffer(raw.encode("latin1") if type(raw) is str else raw, dtype.dtype)[0]


def _encode(budget: _Budget, text: object, encoding: object) -> bytes:
    """_codecs.encode(text, "latin1"): how Python 3 writes bytes in protocols 0-2."""
    if not (type(text) is str and _text(encoding) in ("latin1", "latin-1")):
        raise pickle.UnpicklingError(f"_codecs.encode to {reprlib.repr(encoding)}, not latin1")
    budget.take(len(text), "a bytes object")
    return text.encode("latin1")


# the globals a dataset pickle may name (numpy 1 names; numpy 2's numpy._core is read as numpy.core)
PICKLE_GLOBALS: dict[tuple[str, str], Callable[..., object]] = {
    ("numpy", "ndarray"): _ndarray,
    ("numpy", "dtype"): lambda budget, *args: _Dtype(*args),
    ("numpy.core.multiarray", "_reconstruct"): _reconstruct,
    ("numpy.core.multiarray", "scalar"): _scalar,
    ("numpy.core.numeric", "_frombuffer"): _frombuffer,
    ("_codecs", "encode"): _encode,
    ("collections", "OrderedDict"): lambda budget: _OrderedDict(),
}


class ArraysOnly(pickle.Unpickler):
    """Unpickles numpy arrays of numbers, dicts and lists (dataset pickles: miniImageNet caches, CIFAR
    batches) from a file object at the pickle's start; refuses anything that could run code, and any
    pickle whose objects would take more memory than its bytes allow: scan_pickle first, then only
    the checked PICKLE_GLOBALS, whose arrays, scalars and bytes may take at most twice the file's
    bytes (a Python 3 protocol 2 pickle holds an array's data as text that becomes bytes first).
    Arrays are _Array, a subclass of np.ndarray; OrderedDicts are _OrderedDict."""

    def __init__(self, f: IO[bytes], *, encoding: str) -> None:
        super().__init__(f, encoding=encoding)
        self.f = f
        start = f.tell()
        self.end = f.seek(0, os.SEEK_END)
        f.seek(start)
        budget = _Budget(2 * (self.end - start))
        self.globals = {key: _Call(fn, budget) for key, fn in PICKLE_GLOBALS.items()}

    def find_class(self, module: str, name: str) -> object:
        canonical = module.replace("numpy._core", "numpy.core", 1)
        if (canonical, name) not in self.globals:
            raise pickle.UnpicklingError(f"it refers to {module}.{name}, which a dataset pickle does not")
        return self.globals[(canonical, name)]

    def load(self) -> Any:
        start = self.f.tell()
        scan_pickle(self.f, self.end)
        self.f.seek(start)
        return super().load()


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
