"""The datasets of seeds 002 and 004 prepared from stand-in archives in their real formats
(tests/standin.py) served on 127.0.0.1: contents, class splits, resume, failures."""

import os
import urllib.parse

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
    # a failed run removes the data folder it made
    return sorted(f for f in os.listdir(root) if f.endswith(".npy")) if os.path.isdir(root) else []


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


@pytest.mark.parametrize("name", standin.sources())
def test_interrupted_download_is_resumed_and_prepares_nothing_before(name, tmp_path, capsys):
    files, settings = standin.build(name, per_class=6)
    first = next(iter(files))
    root = str(tmp_path / name)
    with standin.serving(files) as server:
        server.serve(first, files[first], cut=True)
        assert run(name, root, server, settings) == 2
        err = capsys.readouterr().err
        assert first in err and "resume" in err
        parts = [f for _, _, names in os.walk(root) for f in names if f.endswith(PARTIAL)]
        assert prepared(root) == [] and parts == [urllib.parse.unquote(first) + PARTIAL]
        with pytest.raises(DataError):
            data.load(name, root)
        server.serve(first, files[first])
        server.range_hits.clear()
        assert run(name, root, server, settings) == 0
        assert server.range_hits[f"/{first}"] == 1 and "resuming after" in capsys.readouterr().out
    assert not any(f.endswith(PARTIAL) for _, _, names in os.walk(root) for f in names)
    with standin.patched(settings):
        ds = data.load(name, root)
    assert all(len(data.sizes(ds.split(s))) for s in ds.splits)


@pytest.mark.parametrize("name", standin.sources())
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


@pytest.mark.parametrize("folder", ["cifar", "cub"])
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
    assert p.returncode == 2 and "cannot reach 127.0.0.1:9" in p.stderr, p.stderr
    assert "Traceback" not in p.stderr
    # the command to run again is relative to where the user stands
    assert f"`python get_data.py --dataset {folder} --data_root . --source http://127.0.0.1:9`" in p.stderr
    assert here not in p.stderr
    assert sorted(os.listdir(here)) == before


# ---------------------------------------------------------------- CUB


def test_cub_ood_classes_drop_grayscale_and_official_split(tmp_path):
    root = str(tmp_path / "cub")
    standin.prepare("cub", root, per_class=4)
    ds = data.load("cub", root)
    assert sorted(ds.splits) == ["test", "val"] and ds.shape == (84, 84, 3)
    for split, mod4 in (("val", 2), ("test", 0)):
        x = ds.split(split)
        ids = [c for c in range(1, 201) if c % 4 == mod4]
        assert len(data.sizes(x)) == 50
        for j, cid in enumerate(ids):
            cls = x[j] if isinstance(x, Ragged) else x[j]
            got = decode(np.rint(np.asarray(cls) * 255))
            gray = (cid - 1) % 5 == 0
            assert got.tolist() == [[cid - 1, k, TRAIN_TAG] for k in range(4) if not (gray and k == 1)]
    files, settings = standin.build("cub_official", per_class=4)
    with standin.serving(files) as server:
        assert run("cub_official", root, server, settings) == 0
        assert sum(server.hits.values()) == 0  # the archive is there
    off = data.load("cub_official", root)
    train, test = off.split("train"), off.split("test")
    assert train.shape == (200, 2, 84 * 84 * 3) and test.shape == (200, 2, 84 * 84 * 3)
    for c in range(200):  # official: grayscale kept as RGB (gray value (16 c + k) % 256)
        gray = [(16 * c + 1) % 256] * 3 if c % 5 == 0 else [c, 1, TRAIN_TAG]
        assert decode(np.rint(train[c] * 255)).tolist() == [[c, 0, TRAIN_TAG], gray]
        assert decode(np.rint(test[c] * 255)).tolist() == [[c, k, TRAIN_TAG] for k in (2, 3)]


# ---------------------------------------------------------------- Fashion-MNIST, GTSRB


def test_fashion_mnist_gray_to_rgb_32(tmp_path):
    root = str(tmp_path / "fm")
    standin.prepare("fashion-mnist", root, per_class=3)
    ds = data.load("fashion-mnist", root)
    assert sorted(ds.splits) == ["test"] and ds.shape == (32, 32, 3)
    x = ds.split("test")
    assert x.shape == (10, 3, 3072)
    for c in range(10):  # a solid gray (16 c + k) stays solid when resized, repeated to RGB
        np.testing.assert_array_equal(
            np.rint(x[c] * 255), np.repeat([[16 * c + k] for k in range(3)], 3072, 1)
        )


def test_traffic_classes_in_folder_order_images_by_name(tmp_path):
    root = str(tmp_path / "traffic")
    standin.prepare("traffic", root, per_class=3)
    ds = data.load("traffic", root)
    x = ds.split("test")
    assert sorted(ds.splits) == ["test"] and isinstance(x, Ragged) and ds.shape == (32, 32, 3)
    assert x.sizes.tolist() == [3 + c % 3 for c in range(43)]
    for c in range(43):  # file k is named k//2, k%2: name order is k order
        assert decode(x.images[x.offsets[c] : x.offsets[c + 1]]).tolist() == [
            [c, k, TRAIN_TAG] for k in range(3 + c % 3)
        ]


def test_vgg_flower_hard_coded_classes_in_0_1(tmp_path):
    root = str(tmp_path / "flower")
    standin.prepare("vgg_flower", root, per_class=3)
    ds = data.load("vgg_flower", root)
    lists = read_json(CLASSES_JSON)["vgg_flower"]
    assert ds.shape == (32, 32, 3)
    for split in ("train", "val", "test"):
        x = ds.split(split)
        assert isinstance(x, Ragged) and len(x) == len(lists[split])
        for j, name in enumerate(lists[split]):
            label = int(name[:3])
            assert x[j].max() <= 1 and x[j].dtype == np.float32  # normalised (spec Q8)
            got = decode(np.rint(x[j] * 255))
            assert got.tolist() == [[label - 1, k, TRAIN_TAG] for k in range(3 + label % 4)]


def test_aircraft_bounding_box_crop_variant_split_and_official_view(tmp_path):
    root = str(tmp_path / "aircraft")
    standin.prepare("aircraft", root, per_class=6)
    ds = data.load("aircraft", root)
    lists = read_json(CLASSES_JSON)["aircraft"]
    variants = sorted(v for split in lists.values() for v in split)
    assert ds.shape == (32, 32, 3) and {s: len(lists[s]) for s in lists} == {
        "train": 70,
        "val": 15,
        "test": 15,
    }
    for split in ("train", "val", "test"):
        x = np.rint(ds.split(split) * 255)
        assert x.shape == (len(lists[split]), 6, 3072)
        for j, v in enumerate(lists[split]):  # cropped: no white border pixel survives
            c = variants.index(v)
            assert (x[j].reshape(6, -1, 3) == x[j].reshape(6, -1, 3)[:, :1]).all()
            assert sorted(decode(x[j]).tolist()) == [[c, k, TRAIN_TAG] for k in range(6)]
    files, settings = standin.build("aircraft_official", per_class=6)
    with standin.serving(files) as server:
        assert run("aircraft_official", root, server, settings) == 0
        assert sum(server.hits.values()) == 0
    off = data.load("aircraft_official", root)
    train, test = off.split("train"), off.split("test")
    assert (
        off.shape == (84, 84, 3)
        and train.shape == (100, 4, 84 * 84 * 3)
        and test.shape == (100, 2, 84 * 84 * 3)
    )
    assert (train.max(axis=2) == 1).all()  # whole images: the white border is kept
    images, labels = data.labelled(test)
    assert images.shape == (200, 84 * 84 * 3) and labels.tolist() == np.repeat(np.arange(100), 2).tolist()


def test_quickdraw_reads_the_first_drawings_of_each_category(tmp_path):
    root = str(tmp_path / "qd")
    files, settings = standin.build("quickdraw", per_class=3)
    with standin.serving(files) as server:
        assert run("quickdraw", root, server, settings) == 0
        assert len(server.range_hits) == 345  # only the start of each file was asked for
    ds = data.load("quickdraw", root)
    lists = read_json(CLASSES_JSON)["quickdraw"]
    names = sorted(n for split in lists.values() for n in split)
    assert len(names) == len(set(names)) == 345 and "The Eiffel Tower" in names
    for split, n in (("train", 241), ("val", 52), ("test", 52)):
        x = ds.split(split)
        assert x.shape == (n, 3, 3072)
        for j in (0, n - 1):
            c = names.index(lists[split][j])
            np.testing.assert_array_equal(
                np.rint(x[j] * 255), np.repeat([[(16 * c + k) % 256] for k in range(3)], 3072, 1)
            )


# ---------------------------------------------------------------- the interface


def test_ragged_labelled_and_splits_against_loops():
    rng = np.random.default_rng(0)
    classes = [rng.integers(0, 256, (n, 6), dtype=np.uint8) for n in (3, 1, 4)]
    r = Ragged.of(classes)
    assert len(r) == 3 and r.sizes.tolist() == [3, 1, 4] and r.offsets.tolist() == [0, 3, 4, 8]
    for c, x in enumerate(classes):
        assert r[c].dtype == np.float32
        np.testing.assert_allclose(r[c], x.astype(np.float64) / 255, rtol=1e-6)
    images, labels = data.labelled(r)
    rows = [(x[i], c) for c, x in enumerate(classes) for i in range(len(x))]
    np.testing.assert_array_equal(images, np.stack([row for row, _ in rows]))
    assert labels.tolist() == [c for _, c in rows] and data.sizes(r).tolist() == [3, 1, 4]
    dense = rng.random((2, 3, 6)).astype(np.float32)
    images, labels = data.labelled(dense)
    assert labels.tolist() == [0, 0, 0, 1, 1, 1] and (images[4] == dense[1, 1]).all()
    # Splits: equal class sizes become float32 [classes, examples, D], others stay Ragged uint8
    from data.files import Splits

    even = Ragged.of([x[:1] for x in classes])
    s = Splits({"a": r, "b": even})
    assert s["a"] is r and s["b"].dtype == np.float32 and s["b"].shape == (3, 1, 6)
    np.testing.assert_array_equal(s["b"][2, 0], classes[2][0] / np.float32(255))
    assert s["b"] is s["b"]  # converted once


def test_metadrop_data_moves_every_default_root(tmp_path, monkeypatch):
    monkeypatch.setenv(data.DATA_ENV, str(tmp_path))
    assert data.default_root("svhn") == str(tmp_path / "svhn")
    assert data.default_root("cub_official") == str(tmp_path / "cub")
    with pytest.raises(
        DataError,
        match=f"{tmp_path}/svhn/val.offsets.npy is missing; run: python get_data.py --dataset svhn$",
    ):
        data.load("svhn")
    monkeypatch.delenv(data.DATA_ENV)
    assert data.default_root("svhn") == "./data/svhn"


def test_the_datasets_of_seeds_002_and_004_have_stand_ins():
    """tests/standin.py prepares each of them (seed 002's commands run on stand-ins)."""
    names = ["cifar", "svhn", "mimgnet", "cub", "aircraft", "quickdraw", "vgg_flower", "traffic"]
    names += ["fashion-mnist", "small_cifar_100", "aircraft_official", "cub_official"]
    assert [n for n in names if n not in standin.BUILDERS or n not in data.DATASETS] == []


def test_mimgnet_stand_in_loads_in_a_fresh_process(tmp_path):
    """A stand-in's smaller classes load without the stand-in's settings (main.py runs on them)."""
    import subprocess
    import sys

    root = str(tmp_path / "mimgnet")
    standin.prepare("mimgnet", root, per_class=3)
    splits = "('train', 'val', 'test')"
    code = f"import data; ds = data.load('mimgnet', {root!r}); print(*(ds.split(s).shape for s in {splits}))"
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert p.returncode == 0, p.stderr
    assert p.stdout.split("\n")[0] == "(64, 3, 21168) (16, 3, 21168) (20, 3, 21168)"


def test_save_classes_round_trip_and_a_split_without_offsets_is_not_prepared(tmp_path):
    from data.files import open_classes, save_classes

    classes = [
        np.full((2, 4, 4, 3), 7, np.uint8),
        np.zeros((0, 4, 4, 3), np.uint8),
        np.ones((3, 4, 4, 3), np.uint8),
    ]
    save_classes(str(tmp_path), "p_", "train", classes)
    r = open_classes(str(tmp_path), "p_", "train", 3, 48, "retry me")
    assert r.sizes.tolist() == [2, 0, 3] and (r.images[:2] == 7).all() and (r.images[2:] == 1).all()
    with pytest.raises(DataError, match="expected \\(5,\\) .*do not match"):  # named, not deleted
        open_classes(str(tmp_path), "p_", "train", 4, 48, "retry me")  # another class count
    save_classes(str(tmp_path), "p_", "train", classes[:1])  # rewritten: offsets go first
    assert open_classes(str(tmp_path), "p_", "train", 1, 48, "retry me").sizes.tolist() == [2]
    os.remove(tmp_path / "p_train.offsets.npy")  # as if killed while writing the images
    with pytest.raises(DataError, match="p_train.offsets.npy is missing; run: retry me"):
        open_classes(str(tmp_path), "p_", "train", 1, 48, "retry me")


def test_a_server_without_range_requests_sends_the_file_again(tmp_path, capsys):
    files, settings = standin.build("svhn", per_class=6)
    first = next(iter(files))
    root = str(tmp_path / "svhn")
    with standin.serving(files) as server:
        server.ranges = False
        server.serve(first, files[first], cut=True)
        assert run("svhn", root, server, settings) == 2
        server.serve(first, files[first])
        assert run("svhn", root, server, settings) == 0
    assert "does not resume downloads; downloading it again" in capsys.readouterr().out
    with open(os.path.join(root, first), "rb") as f:
        assert f.read() == files[first]
