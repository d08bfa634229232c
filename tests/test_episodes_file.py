"""Files of fixed evaluation episodes: writing, checking, and meta_test on them."""

import json
import os

import numpy as np
import pytest

import data
import get_data
from data import DataError
from data.episodes import load_file, sample_batch, save_file, write_file


def split_of_codes(n_classes: int = 12, n_examples: int = 10) -> np.ndarray:
    """Image (c, e) is 6 values k/255 that encode c and e, so every row says where it came from."""
    c, e = np.meshgrid(np.arange(n_classes), np.arange(n_examples), indexing="ij")
    codes = np.stack([c, e, c + e, 3 * c, 2 * e, np.full_like(c, 7)], axis=-1)
    return (codes.astype(np.float32) / 255).astype(np.float32)


def test_write_file_draws_valid_reproducible_episodes(tmp_path):
    split = split_of_codes()
    way, shot, query, n = 4, 2, 3, 7
    a, b, c = (str(tmp_path / f) for f in ("a.npz", "b.npz", "c.npz"))
    write_file(a, split, way, shot, query, n, seed=5, meta={"way": way, "shot": shot, "query": query})
    write_file(b, split, way, shot, query, n, seed=5, meta={})
    write_file(c, split, way, shot, query, n, seed=6, meta={})
    ea, eb, ec = (load_file(p, way, shot, query, 6) for p in (a, b, c))
    for k in ea:
        np.testing.assert_array_equal(ea[k], eb[k])
    assert not np.array_equal(ea["xtr"], ec["xtr"])
    # the documented contract: episodes of sample_batch with numpy's default_rng(seed)
    want = sample_batch(split, n, way, shot, query, np.random.default_rng(5))
    for k in want:
        np.testing.assert_array_equal(ea[k], want[k])
    # independently: labels name `way` distinct classes; support and query of a label share a class,
    # and no example is both in the support and the query set
    codes = np.rint(ea["xtr"] * 255).astype(int), np.rint(ea["xte"] * 255).astype(int)
    for t in range(n):
        xtr, xte = codes[0][t], codes[1][t]
        ltr, lte = ea["ytr"][t].argmax(1), ea["yte"][t].argmax(1)
        assert np.bincount(ltr, minlength=way).tolist() == [shot] * way
        assert np.bincount(lte, minlength=way).tolist() == [query] * way
        classes = [set(xtr[ltr == j, 0]) | set(xte[lte == j, 0]) for j in range(way)]
        assert all(len(s) == 1 for s in classes) and len(set.union(*classes)) == way
        assert not {tuple(r[:2]) for r in xtr} & {tuple(r[:2]) for r in xte}


def test_images_are_stored_compactly_only_when_lossless(tmp_path):
    split = split_of_codes()
    batch = sample_batch(split, 3, 2, 1, 2, np.random.default_rng(0))
    save_file(str(tmp_path / "u8.npz"), batch)
    with np.load(tmp_path / "u8.npz") as z:
        assert z["xtr"].dtype == np.uint8 and z["ytr"].dtype == np.float32 and "meta" not in z.files
    back = load_file(str(tmp_path / "u8.npz"), 2, 1, 2, 6)
    for k in batch:
        np.testing.assert_array_equal(back[k], batch[k])
        assert back[k].dtype == np.float32
    batch["xte"] = batch["xte"] + np.float32(1e-3)  # no longer k/255
    save_file(str(tmp_path / "f32.npz"), batch, {"note": "external"})
    with np.load(tmp_path / "f32.npz") as z:
        assert z["xte"].dtype == np.float32 and json.loads(str(z["meta"])) == {"note": "external"}
    np.testing.assert_array_equal(load_file(str(tmp_path / "f32.npz"), 2, 1, 2, 6)["xte"], batch["xte"])


def good_arrays(n=2, way=3, shot=1, query=2, dim=4) -> dict[str, np.ndarray]:
    return {
        "xtr": np.full((n, way * shot, dim), 0.5, np.float32),
        "ytr": np.tile(np.repeat(np.eye(way, dtype=np.float32), shot, 0), (n, 1, 1)),
        "xte": np.zeros((n, way * query, dim), np.float32),
        "yte": np.tile(np.repeat(np.eye(way, dtype=np.float32), query, 0), (n, 1, 1)),
    }


def bad_file(tmp_path, change) -> str:
    arrays = good_arrays()
    change(arrays)
    path = str(tmp_path / "bad.npz")
    np.savez(path, **arrays)
    return path


@pytest.mark.parametrize(
    "change, message",
    [
        (lambda a: a.pop("yte"), r"has no yte: it needs arrays xtr, ytr, xte, yte"),
        (lambda a: a.update(xte=a["xte"][:1]), r"xte has shape \(1, 6, 4\)"),
        (lambda a: a.update(xtr=a["xtr"][..., :3]), r"xtr has shape \(2, 3, 3\).*4-value images"),
        (lambda a: a["ytr"].__setitem__((0, 0, 1), 1), r"ytr is not one-hot"),
        (lambda a: a["yte"].__setitem__((1, 2), 0), r"yte is not one-hot"),
        (lambda a: a["xte"].__setitem__((0, 0, 0), 2.0), r"xte must hold images as float in \[0, 1\]"),
        (lambda a: a["xtr"].__setitem__((0, 0, 0), np.nan), r"xtr must hold images"),
        (lambda a: a.update(xtr=a["xtr"].astype(np.int64)), r"xtr must hold images"),
    ],
)
def test_load_file_refuses_bad_files(tmp_path, change, message):
    with pytest.raises(DataError, match="--episodes .*bad.npz.*" + message):
        load_file(bad_file(tmp_path, change), 3, 1, 2, 4)


def test_load_file_names_the_settings_it_was_written_for(tmp_path):
    path = str(tmp_path / "e.npz")
    write_file(path, split_of_codes(), 3, 1, 2, 2, 0, {"way": 3, "shot": 1, "query": 2})
    with pytest.raises(
        DataError, match=r"--way 5 --shot 1 --query 2.*written for --way 3 --shot 1 --query 2"
    ):
        load_file(path, 5, 1, 2, 6)
    with pytest.raises(DataError, match="no such file"):
        load_file(str(tmp_path / "missing.npz"), 3, 1, 2, 6)
    (tmp_path / "junk.npz").write_bytes(b"PK\x03\x04 truncated")
    with pytest.raises(DataError, match="junk.npz is not a readable .npz file"):
        load_file(str(tmp_path / "junk.npz"), 3, 1, 2, 6)


def test_get_data_writes_episodes_of_a_dataset(tmp_path, capsys):
    path = str(tmp_path / "digits.npz")
    argv = ["--dataset", "digits", "--episodes", path, "--split", "val", "--way", "5", "--shot", "2"]
    assert get_data.main([*argv, "--query", "3", "--n_episodes", "4", "--seed", "9"]) == 0
    eps = load_file(path, 5, 2, 3, 256)
    want = sample_batch(data.load("digits").split("val"), 4, 5, 2, 3, np.random.default_rng(9))
    for k in want:
        np.testing.assert_array_equal(eps[k], want[k])
    with np.load(path) as z:
        meta = json.loads(str(z["meta"]))
    assert meta == {
        "dataset": "digits",
        "split": "val",
        "way": 5,
        "shot": 2,
        "query": 3,
        "n_episodes": 4,
        "seed": 9,
    }
    assert get_data.main(["--dataset", "digits", "--episodes", path, "--way", "9", "--split", "val"]) == 2
    assert "--way 9 is larger than the 8 classes of the digits val split" in capsys.readouterr().err


def test_meta_test_on_an_episode_file_is_reproducible(tmp_path, monkeypatch):
    """A file written by get_data.py and evaluated by meta_test gives the same accuracy twice, even
    under another --seed (which draws other episodes without a file): MAML has no noise, so only the
    episodes could differ. main.py runs in this process (its command line, one TensorFlow import)."""
    import main

    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")  # main sets it; restored afterwards
    episodes = str(tmp_path / "eps.npz")
    flags = ["--way", "5", "--shot", "1", "--query", "5"]
    assert get_data.main(["--dataset", "digits", "--episodes", episodes, *flags, "--n_episodes", "5"]) == 0
    savedir = str(tmp_path / "run")
    common = [
        "--dataset",
        "digits",
        *flags,
        "--n_steps",
        "1",
        "--metabatch",
        "2",
        "--maml",
        "--savedir",
        savedir,
    ]
    train = ["--mode", "meta_train", "--n_train_iters", "2", "--val_freq", "2", "--n_val_iters", "2"]
    assert main.main([*common, *train]) == 0
    results = []
    for seed in ("0", "1"):
        assert main.main([*common, "--mode", "meta_test", "--episodes", episodes, "--seed", seed]) == 0
        (name,) = [n for n in os.listdir(savedir) if n.startswith("results_eps_")]  # the file's own result
        with open(os.path.join(savedir, name)) as f:
            results.append(json.load(f))
    assert not os.path.exists(os.path.join(savedir, "results.json"))  # kept for the test split
    assert [r["n"] for r in results] == [5, 5]  # every episode of the file, the last batch partial
    assert results[0]["mean"] == results[1]["mean"] and results[0]["ci95"] == results[1]["ci95"]
