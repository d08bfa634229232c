"""The episode sampler: a task is `way` classes, `shot` training and `query` test examples each."""

from __future__ import annotations

import json
import os
import zipfile
import zlib

import numpy as np

from data import DataError
from data.files import atomic, not_format

Episode = tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]


def check(split: np.ndarray, way: int, shot: int, query: int, name: str = "split") -> None:
    """A clear DataError if the split cannot hold one episode."""
    n_classes, n_examples = split.shape[:2]
    if way > n_classes:
        raise DataError(f"--way {way} is larger than the {n_classes} classes of the {name} split")
    if shot + query > n_examples:
        raise DataError(
            f"--shot {shot} + --query {query} = {shot + query} is larger than the "
            f"{n_examples} examples per class of the {name} split"
        )


SAMPLERS = ("independent", "original")


def sample(
    split: np.ndarray,
    way: int,
    shot: int,
    query: int,
    rng: np.random.Generator,
    classes: np.ndarray | None = None,
) -> Episode:
    """One episode: xtr [way*shot, D], ytr [way*shot, way] one-hot, xte [way*query, D], yte; of
    `classes` (label order) if given, else of `way` random classes."""
    if classes is None:
        classes = rng.choice(split.shape[0], way, replace=False)
    idx = np.stack([rng.choice(split.shape[1], shot + query, replace=False) for _ in classes])
    x = split[classes[:, None], idx]  # [way, shot+query, D]
    onehot = np.eye(way, dtype=np.float32)
    ytr = np.repeat(onehot, shot, axis=0)
    yte = np.repeat(onehot, query, axis=0)
    xtr = x[:, :shot].reshape(way * shot, -1)
    xte = x[:, shot:].reshape(way * query, -1)
    return xtr, ytr, xte, yte


def sample_batch(
    split: np.ndarray,
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
    classes = rng.choice(split.shape[0], way, replace=False) if sampler == "original" else None
    eps = [sample(split, way, shot, query, rng, classes) for _ in range(n_tasks)]
    return {k: np.stack(v) for k, v in zip(("xtr", "ytr", "xte", "yte"), zip(*eps))}


# Files of fixed episodes: xtr [E, way*shot, D], ytr [E, way*shot, way] one-hot, xte [E, way*query, D],
# yte [E, way*query, way]; images float32 in [0, 1], or uint8 meaning value/255; an optional `meta`
# (a JSON string) says how the file was made.
KEYS = ("xtr", "ytr", "xte", "yte")
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


def save_file(path: str, batch: dict[str, np.ndarray], meta: dict | None = None) -> None:
    """Write episodes (as sample_batch gives them; images may already be compact uint8) to an .npz."""
    arrays = {k: compact(batch[k]) if k[0] == "x" else np.asarray(batch[k], np.float32) for k in KEYS}
    if meta is not None:
        arrays["meta"] = np.array(json.dumps(meta))
    with atomic(path) as tmp, open(tmp, "wb") as f:
        np.savez_compressed(f, **arrays)


def write_file(
    path: str, split: np.ndarray, way: int, shot: int, query: int, n: int, seed: int, meta: dict
) -> None:
    """n episodes of a split, drawn with numpy's default_rng(seed), to an episode file."""
    check(split, way, shot, query, name=" ".join(str(meta[k]) for k in ("dataset", "split") if k in meta))
    rng = np.random.default_rng(seed)
    per_chunk = max(1, CHUNK_BYTES // (4 * way * (shot + query) * split.shape[2]))
    parts = []
    for start in range(0, n, per_chunk):
        batch = sample_batch(split, min(per_chunk, n - start), way, shot, query, rng)
        parts.append({k: compact(v) if k[0] == "x" else v for k, v in batch.items()})
    if any(p[k].dtype != np.uint8 for p in parts for k in ("xtr", "xte")):
        parts = [{k: _as_float(v) for k, v in p.items()} for p in parts]
    save_file(path, {k: np.concatenate([p[k] for p in parts]) for k in KEYS}, meta)


def load_file(path: str, way: int, shot: int, query: int, x_dim: int) -> dict[str, np.ndarray]:
    """Episodes of a file as float32 arrays [E, ...], checked against the run's way/shot/query."""
    where = f"--episodes {path}"
    if not os.path.isfile(path):
        raise DataError(f"{where}: no such file (write one with get_data.py --episodes)")
    try:
        why = not_format(path, ".npz")
        if why:
            raise DataError(
                f"--episodes {why}; an episode file is an .npz with arrays {', '.join(KEYS)} "
                "(write one with get_data.py --episodes)"
            )
        with np.load(path, allow_pickle=False) as z:
            missing = [k for k in KEYS if k not in z.files]
            if missing:
                raise DataError(f"{where} has no {', '.join(missing)}: it needs arrays {', '.join(KEYS)}")
            arrays = {k: z[k] for k in KEYS}
            meta = json.loads(str(z["meta"])) if "meta" in z.files else None
    except (OSError, ValueError, EOFError, zipfile.BadZipFile, zlib.error) as e:
        raise DataError(f"{where} is not a readable .npz file ({e})") from e
    flags = ("way", "shot", "query")
    made = ""
    if isinstance(meta, dict) and all(k in meta for k in flags):
        made = f" (it was written for {' '.join(f'--{k} {meta[k]}' for k in flags)})"
    n = arrays["xtr"].shape[0] if arrays["xtr"].ndim else 0
    expected = {
        "xtr": (n, way * shot, x_dim),
        "ytr": (n, way * shot, way),
        "xte": (n, way * query, x_dim),
        "yte": (n, way * query, way),
    }
    for k, shape in expected.items():
        if arrays[k].shape != shape or n == 0:
            raise DataError(
                f"{where}: {k} has shape {arrays[k].shape}, but --way {way} --shot {shot} --query {query} "
                f"and {x_dim}-value images need [episodes >= 1, {', '.join(map(str, shape[1:]))}]{made}"
            )
    for k in ("ytr", "yte"):
        y = arrays[k]
        if not (np.isin(y, (0, 1)).all() and (y.sum(axis=2) == 1).all()):
            raise DataError(f"{where}: {k} is not one-hot (each row must have a single 1, the rest 0)")
        arrays[k] = y.astype(np.float32)
    for k in ("xtr", "xte"):
        x = _as_float(arrays[k])
        if not (x.dtype.kind == "f" and np.isfinite(x).all() and x.min() >= 0 and x.max() <= 1):
            raise DataError(f"{where}: {k} must hold images as float in [0, 1] or uint8 (value / 255)")
        arrays[k] = x.astype(np.float32, copy=False)
    return arrays
