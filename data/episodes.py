"""The episode sampler: a task is `way` classes, `shot` training and `query` test examples each."""

from __future__ import annotations

import numpy as np

from data import DataError

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


def sample(split: np.ndarray, way: int, shot: int, query: int, rng: np.random.Generator) -> Episode:
    """One episode: xtr [way*shot, D], ytr [way*shot, way] one-hot, xte [way*query, D], yte."""
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
    split: np.ndarray, n_tasks: int, way: int, shot: int, query: int, rng: np.random.Generator
) -> dict[str, np.ndarray]:
    """n_tasks episodes stacked on a leading axis, keyed xtr/ytr/xte/yte."""
    eps = [sample(split, way, shot, query, rng) for _ in range(n_tasks)]
    return {k: np.stack(v) for k, v in zip(("xtr", "ytr", "xte", "yte"), zip(*eps))}
