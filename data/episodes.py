"""The episode samplers: a task is `way` classes, `shot` training and `query` test examples each;
any-shot tasks (Bayesian TAML) draw a shot per class or per task, up to `max_shot`."""

from __future__ import annotations

import json
import os
import zipfile
import zlib

import numpy as np

from data import DataError, Split, as_float, sizes
from data.files import atomic, not_format

Episode = tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]


def check(n: np.ndarray, way: int, shot: int, query: int, name: str = "split") -> None:
    """A clear DataError if a split of n [classes] examples per class (data.sizes, or the files'
    headers: data.headers.peek) cannot hold one episode (every class must)."""
    if way > len(n):
        raise DataError(f"--way {way} is larger than the {len(n)} classes of the {name} split")
    if shot + query > n.min():
        raise DataError(
            f"--shot {shot} + --query {query} = {shot + query} is larger than the "
            f"{int(n.min())} examples per class of the {name} split"
            + ("" if n.min() == n.max() else " (its smallest class)")
        )


def _take(split: Split, c: int, idx: np.ndarray) -> np.ndarray:
    """Examples idx of class c as float32 [len(idx), D], from either kind of split."""
    if isinstance(split, np.ndarray):
        return as_float(split[c, idx])
    return as_float(split.images[split.offsets[c] + idx])


SAMPLERS = ("independent", "original")


def sample(
    split: Split,
    way: int,
    shot: int,
    query: int,
    rng: np.random.Generator,
    classes: np.ndarray | None = None,
) -> Episode:
    """One episode: xtr [way*shot, D], ytr [way*shot, way] one-hot, xte [way*query, D], yte; of
    `classes` (label order) if given, else of `way` random classes."""
    n = sizes(split)
    if classes is None:
        classes = rng.choice(len(n), way, replace=False)
    x = np.stack([_take(split, c, rng.choice(n[c], shot + query, replace=False)) for c in classes])
    onehot = np.eye(way, dtype=np.float32)
    ytr = np.repeat(onehot, shot, axis=0)
    yte = np.repeat(onehot, query, axis=0)
    xtr = x[:, :shot].reshape(way * shot, -1)
    xte = x[:, shot:].reshape(way * query, -1)
    return xtr, ytr, xte, yte


def sample_batch(
    split: Split,
    n_tasks: int,
    way: int,
    shot: int,
    query: int,
    rng: np.random.Generator,
    sampler: str = "independent",
) -> dict[str, np.ndarray]:
    """n_tasks episodes stacked on a leading axis, keyed xtr/ytr/xte/yte.

    sampler "independent": each task draws its own classes (the paper's tasks ~ p(T)); "original":
    the classes are drawn once per meta-batch and every task uses them, in the same label order,
    each with its own examples, as the original code's episode generator does.
    """
    if sampler not in SAMPLERS:
        raise ValueError(f"sampler {sampler!r} is not one of {SAMPLERS}")
    classes = rng.choice(len(sizes(split)), way, replace=False) if sampler == "original" else None
    eps = [sample(split, way, shot, query, rng, classes) for _ in range(n_tasks)]
    return {k: np.stack(v) for k, v in zip(("xtr", "ytr", "xte", "yte"), zip(*eps))}


# Any-shot episodes (Bayesian TAML, spec 2.1). A fair coin picks class imbalance (each class its own
# shot, uniform on 1..max_shot) or task imbalance (one shot for all classes); a class too small for
# shot + query examples gets shot = its size - query. The support rows of all classes come first (class
# by class), then zero rows up to way * max_shot; `mtr` marks the real rows, so one placeholder shape
# holds any task. Query sets are balanced: `query` per class.
IMBALANCE = ("class", "task")  # the coin's sides; `sample_anyshot(..., imbalance=...)` forces one


def check_anyshot(n: np.ndarray, way: int, max_shot: int, query: int, name: str = "split") -> None:
    """A clear DataError if a split of n [classes] examples per class cannot hold one any-shot
    episode: `way` classes, each with at least query + 1 examples (a smaller class could not give a
    support example after capping), and max_shot no larger than the largest class (every support set
    is padded to way * max_shot rows; max_shot also normalises the set sizes, so a shot above the
    capped ones may be meant)."""
    if way > len(n):
        raise DataError(f"--way {way} is larger than the {len(n)} classes of the {name} split")
    small = int(np.sum(n < query + 1))
    if small:
        raise DataError(
            f"{small} classes of the {name} split have fewer than --query {query} + 1 examples "
            f"(smallest: {int(n.min())}): lower --query"
        )
    if not 1 <= max_shot <= n.max():
        raise DataError(
            f"--max_shot {max_shot}: give 1 to {int(n.max())}, the largest class of the {name} split "
            f"(a support set holds at most its class's size - --query; each task is padded to "
            f"--way x --max_shot rows)"
        )


def sample_anyshot(
    split: Split,
    way: int,
    max_shot: int,
    query: int,
    rng: np.random.Generator,
    imbalance: str | None = None,
) -> dict[str, np.ndarray]:
    """One any-shot episode (spec 2.1): xtr [way*max_shot, D] (real rows first, then zeros), ytr
    [way*max_shot, way] one-hot (zero rows for padding), mtr [way*max_shot] float32 (1 = real row),
    xte [way*query, D], yte [way*query, way], shots [way] int64 (support examples per class, after
    capping) and imbalance, 0 for class and 1 for task imbalance. `imbalance` forces one side of the
    coin ("class" or "task"); None flips it."""
    n = sizes(split)
    classes = rng.choice(len(n), way, replace=False)
    if imbalance is None:
        imbalance = IMBALANCE[int(rng.random() >= 0.5)]
    if imbalance == "class":
        shots = rng.integers(1, max_shot + 1, size=way)
    elif imbalance == "task":
        shots = np.full(way, rng.integers(1, max_shot + 1))
    else:
        raise ValueError(f"imbalance {imbalance!r} is not one of {IMBALANCE}")
    shots = np.minimum(shots, n[classes] - query)  # small classes cap the shot (spec 2.1, Q17)
    onehot = np.eye(way, dtype=np.float32)
    xtr, xte = [], []
    for c, s in zip(classes, shots):
        x = _take(split, c, rng.choice(n[c], s + query, replace=False))
        xtr.append(x[:s])
        xte.append(x[s:])
    real = int(shots.sum())
    d = xte[0].shape[1]
    out = {
        "xtr": np.zeros((way * max_shot, d), np.float32),
        "ytr": np.zeros((way * max_shot, way), np.float32),
        "mtr": np.zeros(way * max_shot, np.float32),
        "xte": np.concatenate(xte),
        "yte": np.repeat(onehot, query, axis=0),
        "shots": shots.astype(np.int64),
        "imbalance": np.int64(IMBALANCE.index(imbalance)),
    }
    out["xtr"][:real] = np.concatenate(xtr)
    out["ytr"][:real] = np.repeat(onehot, shots, axis=0)
    out["mtr"][:real] = 1
    return out


def sample_anyshot_batch(
    split: Split,
    n_tasks: int,
    way: int,
    max_shot: int,
    query: int,
    rng: np.random.Generator,
    imbalance: str | None = None,
) -> dict[str, np.ndarray]:
    """n_tasks any-shot episodes (independent tasks) stacked on a leading axis, keyed as
    sample_anyshot's."""
    eps = [sample_anyshot(split, way, max_shot, query, rng, imbalance) for _ in range(n_tasks)]
    return {k: np.stack([e[k] for e in eps]) for k in eps[0]}


# Files of fixed episodes: xtr [E, way*shot, D], ytr [E, way*shot, way] one-hot, xte [E, way*query, D],
# yte [E, way*query, way]; images float32 in [0, 1], or uint8 meaning value/255; an optional `meta`
# (a JSON string) says how the file was made. Any-shot files (get_data.py --max_shot) pad the support
# to way*max_shot rows and add mtr [E, way*max_shot] (1 = real row), shots [E, way] and imbalance [E].
KEYS = ("xtr", "ytr", "xte", "yte")
ANYSHOT_KEYS = ("mtr", "shots", "imbalance")
CHUNK_BYTES = 1 << 28  # float32 episodes sampled at once when writing a file


def compact(x: np.ndarray) -> np.ndarray:
    """Images as uint8 if that loses nothing (prepared datasets hold values k/255), else float32."""
    if x.dtype == np.uint8:
        return x
    x = np.asarray(x, dtype=np.float32)
    if x.size and x.min() >= 0 and x.max() <= 1:
        u8 = np.rint(x * 255).astype(np.uint8)
        if np.array_equal(u8.astype(np.float32) / 255, x):
            return u8
    return x


def _as_float(x: np.ndarray) -> np.ndarray:
    return x.astype(np.float32) / 255 if x.dtype == np.uint8 else x


def _stored(k: str, v: np.ndarray) -> np.ndarray:
    """How array k of an episode file is stored: images compact, labels and masks float32, counts int64."""
    if k[0] == "x":
        return compact(v)
    return np.asarray(v, np.int64 if k in ("shots", "imbalance") else np.float32)


def save_file(path: str, batch: dict[str, np.ndarray], meta: dict | None = None) -> None:
    """Write episodes (as sample_batch or sample_anyshot_batch gives them; images may already be
    compact uint8) to an .npz."""
    arrays = {k: _stored(k, batch[k]) for k in (*KEYS, *ANYSHOT_KEYS) if k in batch}
    if meta is not None:
        arrays["meta"] = np.array(json.dumps(meta))
    with atomic(path) as tmp, open(tmp, "wb") as f:
        np.savez_compressed(f, **arrays)


def write_file(
    path: str,
    split: Split,
    way: int,
    shot: int,
    query: int,
    n: int,
    seed: int,
    meta: dict,
    max_shot: int | None = None,
) -> None:
    """n episodes of a split, drawn with numpy's default_rng(seed), to an episode file; any-shot
    episodes (sample_anyshot, `shot` unused) when max_shot is given."""
    name = " ".join(str(meta[k]) for k in ("dataset", "split") if k in meta)
    if max_shot is None:
        check(sizes(split), way, shot, query, name=name)
    else:
        check_anyshot(sizes(split), way, max_shot, query, name=name)
    rng = np.random.default_rng(seed)
    rows = way * ((shot if max_shot is None else max_shot) + query)
    dim = split.shape[2] if isinstance(split, np.ndarray) else split.images.shape[1]
    per_chunk = max(1, CHUNK_BYTES // (4 * rows * dim))
    parts = []
    for start in range(0, n, per_chunk):
        m = min(per_chunk, n - start)
        if max_shot is None:
            batch = sample_batch(split, m, way, shot, query, rng)
        else:
            batch = sample_anyshot_batch(split, m, way, max_shot, query, rng)
        parts.append({k: _stored(k, v) for k, v in batch.items()})
    if any(p[k].dtype != np.uint8 for p in parts for k in ("xtr", "xte")):
        parts = [{k: _as_float(v) if k[0] == "x" else v for k, v in p.items()} for p in parts]
    save_file(path, {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}, meta)


def load_file(
    path: str, way: int, shot: int, query: int, x_dim: int, max_shot: int | None = None
) -> dict[str, np.ndarray]:
    """Episodes of a file as float32 arrays [E, ...] (shots and imbalance int64), checked against the
    run's way/shot/query, or way/max_shot/query for an any-shot file (then with mtr, shots and
    imbalance)."""
    where = f"--episodes {path}"
    if not os.path.isfile(path):
        raise DataError(f"{where}: no such file (write one with get_data.py --episodes)")
    keys = KEYS if max_shot is None else (*KEYS, *ANYSHOT_KEYS)
    try:
        why = not_format(path, ".npz")
        if why:
            raise DataError(
                f"--episodes {why}; an episode file is an .npz with arrays {', '.join(KEYS)} "
                "(write one with get_data.py --episodes)"
            )
        with np.load(path, allow_pickle=False) as z:
            meta = json.loads(str(z["meta"])) if "meta" in z.files else None
            flags = (
                ("way", "max_shot", "query") if meta and meta.get("max_shot") else ("way", "shot", "query")
            )
            made = ""
            if isinstance(meta, dict) and all(k in meta for k in flags):
                made = f" (it was written for {' '.join(f'--{k} {meta[k]}' for k in flags)})"
            missing = [k for k in keys if k not in z.files]
            if missing:
                raise DataError(
                    f"{where} has no {', '.join(missing)}: it needs arrays {', '.join(keys)}{made}"
                    + (
                        " (write any-shot episodes with get_data.py --episodes --max_shot)"
                        if max_shot
                        else ""
                    )
                )
            arrays = {k: z[k] for k in keys}
    except (OSError, ValueError, EOFError, zipfile.BadZipFile, zlib.error) as e:
        raise DataError(f"{where} is not a readable .npz file ({e})") from e
    support = shot if max_shot is None else max_shot
    n = arrays["xtr"].shape[0] if arrays["xtr"].ndim else 0
    expected = {
        "xtr": (n, way * support, x_dim),
        "ytr": (n, way * support, way),
        "xte": (n, way * query, x_dim),
        "yte": (n, way * query, way),
        "mtr": (n, way * support),
        "shots": (n, way),
        "imbalance": (n,),
    }
    run = f"--way {way} --{'shot' if max_shot is None else 'max_shot'} {support} --query {query}"
    for k in keys:
        if arrays[k].shape != expected[k] or n == 0:
            raise DataError(
                f"{where}: {k} has shape {arrays[k].shape}, but {run} and {x_dim}-value images need "
                f"[episodes >= 1, {', '.join(map(str, expected[k][1:]))}]{made}"
            )
    for k in ("ytr", "yte"):
        y = arrays[k]
        rows = y.sum(axis=2)
        padded = k == "ytr" and max_shot is not None
        if not (np.isin(y, (0, 1)).all() and (rows == (arrays["mtr"] if padded else 1)).all()):
            what = "its real rows (mtr = 1) one-hot, padding rows 0" if padded else "each row a single 1"
            raise DataError(f"{where}: {k} is not one-hot ({what})")
        arrays[k] = y.astype(np.float32)
    if max_shot is not None:
        mtr, shots = arrays["mtr"], arrays["shots"]
        counts = np.stack([arrays["ytr"][..., c].sum(1) for c in range(way)], axis=1)
        if not (np.isin(mtr, (0, 1)).all() and np.array_equal(counts, shots) and (shots >= 1).all()):
            raise DataError(f"{where}: mtr and shots do not match ytr (every class needs a support row)")
        arrays["mtr"] = mtr.astype(np.float32)
    for k in ("xtr", "xte"):
        x = _as_float(arrays[k])
        if not (x.dtype.kind == "f" and np.isfinite(x).all() and x.min() >= 0 and x.max() <= 1):
            raise DataError(f"{where}: {k} must hold images as float in [0, 1] or uint8 (value / 255)")
        arrays[k] = x.astype(np.float32, copy=False)
    if max_shot is not None and np.abs(arrays["xtr"][arrays["mtr"] == 0]).max(initial=0) > 0:
        raise DataError(f"{where}: xtr has nonzero padding rows (mtr = 0)")
    return arrays
