"""The datasets of seeds 002 and 004 prepared from stand-in archives in their real formats
(tests/standin.py) served on 127.0.0.1: contents, class splits, resume, failures."""

import os

import numpy as np
import pytest

import data
import get_data
from data import DataError, Ragged
from data.files import CLASSES_JSON, PARTIAL, read_json
from tests import standin
from tests.standin import TEST_TAG, TRAIN_TAG, decode


@pytest.fixture(autouse=True)
def no_proxy(monkeypatch):
    for var in ("HTTP_PROXY", "HTTPS_PROXY", "http_proxy", "https_proxy", "ALL_PROXY", "all_proxy"):
        monkeypatch.delenv(var, raising=False)


def run(name: str, root: str, server: standin.Server, settings: dict) -> int:
    with standin.patched(settings):
        return get_data.main(["--dataset", name, "--data_root", root, "--source", server.url])


def prepared(root: str) -> list[str]:
    return sorted(f for f in os.listdir(root) if f.endswith(".npy"))


# ---------------------------------------------------------------- CIFAR-100: CIFAR-FS and s-CIFAR100


def test_cifar_fs_classes_and_pooling(tmp_path):
    root = str(tmp_path / "cifar")
    standin.prepare("cifar", root, per_class=10)
    ds = data.load("cifar", root)
    assert ds.shape == (32, 32, 3) and ds.filters == 32
    lists = read_json(CLASSES_JSON)["cifar_fs"]
    names = sorted(n for split in lists.values() for n in split)
    assert {s: len(v) for s, v in lists.items()} == {"train": 64, "val": 16, "test": 20}
    for split in ("train", "val", "test"):
        x = ds.split(split)
        assert x.dtype == np.float32 and x.shape == (len(lists[split]), 12, 3072)  # 10 + 2 pooled
        for c, name in enumerate(lists[split]):
            got = decode(np.rint(x[c] * 255))
            want = [(names.index(name), k, TRAIN_TAG) for k in range(10)]
            want += [(names.index(name), k, TEST_TAG) for k in range(2)]
            assert got.tolist() == [list(w) for w in want]
    # HWC layout: the pickles' CHW rows were transposed, so a pixel holds (R, G, B)
    raw = np.load(os.path.join(root, "train.npy"))
    assert raw.dtype == np.uint8 and (raw.reshape(-1, 1024, 3) == raw[:, None, :3]).all()


def test_small_cifar_100_shares_the_archive_and_has_disjoint_validation(tmp_path, monkeypatch):
    monkeypatch.setenv(data.DATA_ENV, str(tmp_path))
    files, settings = standin.build("small_cifar_100", per_class=10)
    with standin.serving(files) as server:
        assert run("cifar", data.default_root("cifar"), server, settings) == 0
        server.hits.clear()
        with standin.patched(settings):
            assert get_data.main(["--dataset", "small_cifar_100", "--source", server.url]) == 0
        assert sum(server.hits.values()) == 0  # the archive in ./data/cifar is used again
    assert data.default_root("small_cifar_100") == data.default_root("cifar") == str(tmp_path / "cifar")
    ds = data.load("small_cifar_100")
    train, val, test = (ds.split(s) for s in ("train", "val", "test"))
    assert train.shape == (100, 5, 3072) and val.shape == (100, 5, 3072) and test.shape == (100, 2, 3072)
    for c in range(100):
        assert decode(np.rint(train[c] * 255)).tolist() == [[c, k, TRAIN_TAG] for k in range(5)]
        assert decode(np.rint(val[c] * 255)).tolist() == [[c, k, TRAIN_TAG] for k in range(5, 10)]
        assert decode(np.rint(test[c] * 255)).tolist() == [[c, k, TEST_TAG] for k in range(2)]
    images, labels = data.labelled(train)
    assert images.shape == (500, 3072) and (labels == np.repeat(np.arange(100), 5)).all()


def test_cifar_archive_with_the_expected_checksum_but_damaged(tmp_path, capsys):
    files, settings = standin.build("cifar", per_class=6)
    ((name, body),) = files.items()
    bad = body[: len(body) * 2 // 3]
    settings["data.cifar100"]["MD5"] = standin.md5(bad)
    root = str(tmp_path / "cifar")
    with standin.serving({name: bad}) as server:
        assert run("cifar", root, server, settings) == 2
    err = capsys.readouterr().err
    assert "not a readable tar archive" in err and "python get_data.py --dataset cifar" in err
    assert prepared(root) == []
    with pytest.raises(DataError, match="python get_data.py --dataset cifar"):
        data.load("cifar", root)


# ---------------------------------------------------------------- SVHN


def test_svhn_validation_draw_and_ragged_test(tmp_path):
    root = str(tmp_path / "svhn")
    standin.prepare("svhn", root, per_class=8)
    ds = data.load("svhn", root)
    assert sorted(ds.splits) == ["test", "val"] and ds.shape == (32, 32, 3)
    val, test = ds.split("val"), ds.split("test")
    assert val.shape == (10, 8, 3072) and val.dtype == np.float32
    assert isinstance(test, Ragged) and test.sizes.tolist() == [8 + 2 * c for c in range(10)]
    assert test.images.dtype == np.uint8
    for c in range(10):  # class c is label c + 1; test in file order
        assert decode(test.images[test.offsets[c] : test.offsets[c + 1]]).tolist() == [
            [c, k, TEST_TAG] for k in range(8 + 2 * c)
        ]
        assert test[c].dtype == np.float32 and test[c].max() <= 1
    # validation: the original's --ver 2 draw, re-done with its calls: seed 222, one shuffle per class
    np.random.seed(222)
    for c in range(10):
        idx = np.arange(8 + c)  # class c has 8 + c training images in the stand-in
        np.random.shuffle(idx)
        got = decode(np.rint(val[c] * 255))
        assert got.tolist() == [[c, int(k), TRAIN_TAG] for k in idx[:8]]


# ---------------------------------------------------------------- every stand-in: resume, damage


@pytest.mark.parametrize("name", sorted(standin.BUILDERS))
def test_interrupted_download_is_resumed_and_prepares_nothing_before(name, tmp_path, capsys):
    files, settings = standin.build(name, per_class=6)
    first = next(iter(files))
    root = str(tmp_path / name)
    with standin.serving(files) as server:
        server.serve(first, files[first], cut=True)
        assert run(name, root, server, settings) == 2
        err = capsys.readouterr().err
        assert first in err and "resume" in err
        assert prepared(root) == [] and os.path.exists(os.path.join(root, first + PARTIAL))
        with pytest.raises(DataError):
            data.load(name, root)
        server.serve(first, files[first])
        server.hits.clear()
        assert run(name, root, server, settings) == 0
        assert server.range_hits[f"/{first}"] == 1 and "resuming after" in capsys.readouterr().out
    assert not any(f.endswith(PARTIAL) for f in os.listdir(root))
    with standin.patched(settings):
        ds = data.load(name, root)
    assert all(len(data.sizes(ds.split(s))) for s in ds.splits)


@pytest.mark.parametrize("name", sorted(standin.BUILDERS))
def test_truncated_archive_prepares_nothing(name, tmp_path, capsys):
    files, settings = standin.build(name, per_class=6)
    first = next(iter(files))
    root = str(tmp_path / name)
    with standin.serving(files) as server:
        server.serve(first, files[first][: len(files[first]) // 2])
        assert run(name, root, server, settings) == 2
    err = capsys.readouterr().err
    assert f"python get_data.py --dataset {name}" in err and "Traceback" not in err
    assert prepared(root) == []


@pytest.mark.parametrize("folder", ["cifar", "svhn", "mimgnet"])
def test_seed_002_shims_prepare_their_own_folder(folder):
    """`cd ./data/<folder> && python get_data.py` (seed 002's README) runs get_data.py for that folder's
    dataset into that folder: a closed port gives the download's clear error, nothing else."""
    import subprocess
    import sys

    here = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "data", folder)
    before = sorted(os.listdir(here))
    p = subprocess.run(
        [sys.executable, "get_data.py", "--source", "http://127.0.0.1:9"],
        cwd=here,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert p.returncode == 2 and "network error" in p.stderr and "Traceback" not in p.stderr, p.stderr
    assert f"--dataset {folder} --data_root {here}" in p.stderr
    assert sorted(os.listdir(here)) == before
