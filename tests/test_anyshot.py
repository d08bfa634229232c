"""Any-shot episodes (Bayesian TAML, spec 2.1, test T9): the sampler's law by statistical tests over
many draws, capping for small classes, padding and mask, dense and Ragged splits, episode files."""

import numpy as np
import pytest
from scipy import stats

import data
from data.episodes import (
    check_anyshot,
    load_file,
    sample_anyshot,
    sample_anyshot_batch,
    write_file,
)

P_MIN = 1e-4  # a correct sampler fails a test below with probability 1e-4 (seeds are fixed anyway)


def labelled_ragged(sizes: list[int]) -> data.Ragged:
    """Each example's features are (class id, example id, 1): the sampler's choices can be read back,
    and a real row is never all zero."""
    return data.Ragged.of(
        [
            np.stack([np.full(n, c), np.arange(n), np.ones(n)], axis=1).astype(np.float32)
            for c, n in enumerate(sizes)
        ]
    )


def read_back(ep: dict[str, np.ndarray], way: int, query: int) -> list[tuple[int, set, set]]:
    """Per label: (class id, support example ids, query example ids); checks one class per label."""
    out = []
    for c in range(way):
        tr = ep["xtr"][ep["ytr"][:, c] == 1]
        te = ep["xte"][ep["yte"][:, c] == 1]
        classes = set(tr[:, 0]) | set(te[:, 0])
        assert len(classes) == 1
        out.append((int(classes.pop()), set(tr[:, 1]), set(te[:, 1])))
    return out


def test_anyshot_law_coin_shots_and_task_imbalance():
    """T9: the coin is fair; class-imbalance shots are iid uniform on 1..max_shot; task-imbalance
    tasks share one shot, uniform on 1..max_shot (large classes: no capping)."""
    way, max_shot, query, n = 3, 6, 2, 20000
    split = labelled_ragged([max_shot + query + 5] * 8)
    rng = np.random.default_rng(0)
    shots, kinds = [], []
    for _ in range(n):
        ep = sample_anyshot(split, way, max_shot, query, rng)
        shots.append(ep["shots"])
        kinds.append(int(ep["imbalance"]))
        assert ep["mtr"].sum() == ep["shots"].sum() == ep["ytr"].sum()
    shots, kinds = np.array(shots), np.array(kinds)
    assert stats.binomtest(int(kinds.sum()), n, 0.5).pvalue > P_MIN
    task, cls = shots[kinds == 1], shots[kinds == 0]
    assert (task == task[:, :1]).all()  # one shot for all classes
    uniform = np.full(max_shot, 1 / max_shot)
    for sample in (task[:, 0], *cls.T):
        counts = np.bincount(sample - 1, minlength=max_shot)
        assert len(counts) == max_shot  # nothing outside 1..max_shot
        assert stats.chisquare(counts, uniform * len(sample)).pvalue > P_MIN
    # Independence of the classes' shots: P(all equal) = max_shot^-(way-1).
    equal = int((cls == cls[:, :1]).all(1).sum())
    assert stats.binomtest(equal, len(cls), max_shot ** -(way - 1)).pvalue > P_MIN


def test_anyshot_capping_for_small_classes():
    """A class with query + k examples gets min(shot, k): P(k) = (max_shot - k + 1) / max_shot."""
    way, max_shot, query, k = 2, 8, 3, 4
    split = labelled_ragged([query + k, query + k])  # both classes in every task
    rng = np.random.default_rng(1)
    shots = np.concatenate([sample_anyshot(split, way, max_shot, query, rng)["shots"] for _ in range(8000)])
    counts = np.bincount(shots - 1, minlength=max_shot)
    assert counts[k:].sum() == 0
    expected = np.array([1 / max_shot] * (k - 1) + [(max_shot - k + 1) / max_shot]) * len(shots)
    assert stats.chisquare(counts[:k], expected).pvalue > P_MIN


@pytest.mark.parametrize("imbalance", ["class", "task", None])
def test_anyshot_episode_structure(imbalance):
    """Support and query disjoint, `query` queries per class, real rows first, padding rows zero,
    the mask marks the real rows, way distinct classes; the forced side of the coin is kept."""
    way, max_shot, query = 4, 5, 3
    sizes = [6, 9, 20, 4, 30, 12]
    split = labelled_ragged(sizes)
    rng = np.random.default_rng(2)
    for _ in range(300):
        ep = sample_anyshot(split, way, max_shot, query, rng, imbalance)
        assert ep["xtr"].shape == (way * max_shot, 3) and ep["ytr"].shape == (way * max_shot, way)
        assert ep["mtr"].shape == (way * max_shot,) and ep["xte"].shape == (way * query, 3)
        real = int(ep["shots"].sum())
        assert (ep["mtr"][:real] == 1).all() and (ep["mtr"][real:] == 0).all()
        assert (ep["xtr"][real:] == 0).all() and (ep["ytr"][real:] == 0).all()
        assert (ep["ytr"][:real].sum(1) == 1).all() and (ep["xtr"][:real, 2] == 1).all()
        assert (ep["yte"].sum(0) == query).all()
        if imbalance is not None:
            assert ep["imbalance"] == ("class", "task").index(imbalance)
        got = read_back(ep, way, query)
        assert len({c for c, _, _ in got}) == way
        for (c, tr, te), s in zip(got, ep["shots"]):
            assert len(tr) == s and len(te) == query and not tr & te
            assert 1 <= s <= min(max_shot, sizes[c] - query)
            assert max(tr | te) < sizes[c]


def test_dense_and_ragged_splits_give_the_same_episodes():
    dense = np.random.default_rng(3).random((7, 11, 5)).astype(np.float32)
    ragged = data.Ragged.of(list(dense))
    a = sample_anyshot_batch(dense, 6, 3, 4, 2, np.random.default_rng(4))
    b = sample_anyshot_batch(ragged, 6, 3, 4, 2, np.random.default_rng(4))
    assert a.keys() == b.keys()
    for k in a:
        np.testing.assert_array_equal(a[k], b[k])
    assert a["xtr"].shape == (6, 12, 5) and a["mtr"].shape == (6, 12) and a["shots"].shape == (6, 3)


def test_uint8_ragged_split_gives_floats_in_unit_range():
    images = np.arange(40, dtype=np.uint8).reshape(20, 2) * 6
    split = data.Ragged(images, np.array([0, 5, 12, 20]))
    ep = sample_anyshot(split, 3, 2, 3, np.random.default_rng(0))
    assert ep["xtr"].dtype == np.float32 and ep["xte"].max() <= 1
    assert set(np.round(ep["xte"].ravel() * 255).astype(int)) <= set(images.ravel().tolist())


def test_check_anyshot_names_what_is_wrong():
    n = data.sizes(labelled_ragged([5, 9, 3]))
    check_anyshot(n, 2, 9, 2)
    with pytest.raises(data.DataError, match="--way 4 is larger than the 3 classes"):
        check_anyshot(n, 4, 9, 2)
    with pytest.raises(data.DataError, match="fewer than --query 3 \\+ 1 examples"):
        check_anyshot(n, 2, 9, 3)
    # a support set is padded to way * max_shot rows: no larger than the largest class (issue #27)
    with pytest.raises(data.DataError, match="--max_shot 10: give 1 to 9, the largest class"):
        check_anyshot(n, 2, 10, 2)


def test_anyshot_episode_file_round_trip(tmp_path):
    """write_file(max_shot=...) holds exactly the sampler's episodes for its seed (uint8 on disk)."""
    rng = np.random.default_rng(5)
    split = data.Ragged.of([rng.integers(0, 256, (n, 6)).astype(np.float32) / 255 for n in (9, 12, 7, 20)])
    path = str(tmp_path / "eps.npz")
    meta = {"dataset": "x", "split": "test", "way": 3, "max_shot": 4, "query": 3}
    write_file(path, split, 3, 1, 3, 25, 7, meta, max_shot=4)
    got = load_file(path, 3, 1, 3, 6, max_shot=4)
    want = sample_anyshot_batch(split, 25, 3, 4, 3, np.random.default_rng(7))
    for k in want:
        np.testing.assert_allclose(got[k], want[k], atol=1e-7)
    with pytest.raises(data.DataError, match=r"--max_shot 5 .*\(it was written for --way 3 --max_shot 4"):
        load_file(path, 3, 1, 3, 6, max_shot=5)
    with pytest.raises(data.DataError, match="has no mtr"):
        write_file(path, split, 3, 2, 3, 5, 0, {})
        load_file(path, 3, 2, 3, 6, max_shot=2)


@pytest.mark.parametrize(
    "corrupt, message",
    [
        (lambda a: a["mtr"].__setitem__((0, 0), 0), "mtr and shots do not match|is not one-hot"),
        (lambda a: a["shots"].__setitem__((1, 0), 9), "mtr and shots do not match"),
        (lambda a: a["xtr"].__setitem__((0, -1, 0), 0.5), "nonzero padding rows"),
    ],
)
def test_corrupt_anyshot_files_are_refused(tmp_path, corrupt, message):
    split = data.Ragged.of([np.full((n, 4), 0.5, np.float32) for n in (9, 12, 7)])
    path = str(tmp_path / "eps.npz")
    write_file(path, split, 3, 1, 3, 4, 0, {}, max_shot=5)
    with np.load(path) as z:
        arrays = {k: z[k].copy() for k in z.files}
    arrays["xtr"] = arrays["xtr"].astype(np.float32) / (255 if arrays["xtr"].dtype == np.uint8 else 1)
    corrupt(arrays)
    np.savez(path, **arrays)
    with pytest.raises(data.DataError, match=message):
        load_file(path, 3, 1, 3, 4, max_shot=5)
