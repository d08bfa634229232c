"""get_data.py for MetaPerturb's datasets against a local HTTP server (with HTTP Range) serving
small archives in the real formats (tests/metaperturb_archives.py)."""

import hashlib
import os
import re

import numpy as np
import pytest

import data
import get_data
from data import DataError, Ragged
from data.files import PARTIAL
from tests import standin
from tests.metaperturb_archives import ARCHIVES

NAMES = sorted(ARCHIVES)


def files_in(root: str) -> list[str]:
    """The files a run left in root; none when a failed run removed the folder it made."""
    return sorted(os.listdir(root)) if os.path.isdir(root) else []


@pytest.fixture
def server(monkeypatch):
    for var in ("HTTP_PROXY", "HTTPS_PROXY", "http_proxy", "https_proxy", "ALL_PROXY", "all_proxy"):
        monkeypatch.delenv(var, raising=False)
    with standin.serving({}) as s:
        yield s


SMALL = {"tiny_imagenet": (3, 3), "stl10": (10, 2), "stanford_dogs": (3, 2), "stanford_cars": (4, 1)}


@pytest.fixture(params=NAMES)
def dataset(request, server, monkeypatch):
    """(name, module, archives, expected): the module's URL and MD5s pointed at small archives."""
    name = request.param
    module, _ = data.entry(name)
    classes, per_class = SMALL[name]
    files, expected = ARCHIVES[name](classes, per_class)
    monkeypatch.setattr(module, "CLASSES", classes)
    monkeypatch.setenv(module.URL_ENV, server.url)
    monkeypatch.setattr(module, "MD5", {f: hashlib.md5(b).hexdigest() for f, b in files.items()})
    for f, body in files.items():
        server.serve(f, body)
    return name, module, files, expected


def check_prepared(name: str, root: str, expected: dict) -> None:
    ds = data.load(name, root)
    module, _ = data.entry(name)
    assert ds.name == name and ds.shape == module.SHAPE and sorted(ds.splits) == ["test", "train"]
    for split, (images, sizes) in expected.items():
        x = ds.split(split)
        np.testing.assert_array_equal(data.sizes(x), sizes)
        if (sizes == sizes[0]).all():  # equal classes: [classes, n, D]
            assert isinstance(x, np.ndarray) and x.shape == (len(sizes), sizes[0], images.shape[1])
        else:
            assert isinstance(x, Ragged)
        stored, labels = data.labelled(x)
        assert stored.dtype == np.uint8
        np.testing.assert_array_equal(stored, images)
        np.testing.assert_array_equal(labels, np.repeat(np.arange(len(sizes)), sizes))


def test_download_prepare_and_rerun(dataset, server, tmp_path, capsys):
    name, _, files, expected = dataset
    root = str(tmp_path / name)
    assert get_data.main(["--dataset", name, "--data_root", root]) == 0
    assert server.hits == {f"/{f}": 1 for f in files}
    assert sorted(os.listdir(root)) == ["test.npy", "test.offsets.npy", "train.npy", "train.offsets.npy"]
    check_prepared(name, root, expected)
    server.hits.clear()
    stamps = {f: os.stat(os.path.join(root, f)).st_mtime_ns for f in os.listdir(root)}
    assert get_data.main(["--dataset", name, "--data_root", root]) == 0
    assert sum(server.hits.values()) == 0 and "already prepared" in capsys.readouterr().out
    assert {f: os.stat(os.path.join(root, f)).st_mtime_ns for f in os.listdir(root)} == stamps


def test_interrupted_download_resumes(dataset, server, tmp_path, capsys):
    name, _, files, expected = dataset
    big = max(files, key=lambda f: len(files[f]))
    server.serve(big, files[big], cut=True)
    root = str(tmp_path / name)
    assert get_data.main(["--dataset", name, "--data_root", root]) == 2
    err = capsys.readouterr().err
    assert big in err and "resume" in err and f"python get_data.py --dataset {name}" in err
    half = len(files[big]) // 2
    assert os.path.getsize(os.path.join(root, big + PARTIAL)) == half
    assert not [f for f in files_in(root) if f.endswith(".npy")]
    with pytest.raises(DataError, match="is missing; run: python get_data.py"):
        data.load(name, root)
    server.serve(big, files[big])
    assert get_data.main(["--dataset", name, "--data_root", root]) == 0
    assert server.range_hits == {f"/{big}": 1}
    check_prepared(name, root, expected)


@pytest.mark.parametrize("checksum", ["known", "unknown"])
def test_corrupt_archive_leaves_nothing_prepared(checksum, dataset, server, tmp_path, capsys, monkeypatch):
    name, module, files, _ = dataset
    big = max(files, key=lambda f: len(files[f]))
    if checksum == "known":  # one byte flipped: the MD5 catches it
        bad = bytearray(files[big])
        bad[len(bad) // 2] ^= 0xFF
        bad = bytes(bad)
    else:  # no MD5 to check: a truncated archive cannot be read
        monkeypatch.setattr(module, "MD5", {})
        bad = files[big][: len(files[big]) // 2]
    server.serve(big, bad)
    root = str(tmp_path / name)
    assert get_data.main(["--dataset", name, "--data_root", root]) == 2
    err = capsys.readouterr().err
    want = ("is corrupt", "nothing was kept") if checksum == "known" else ("is not a readable", "deleted")
    assert all(w in err for w in want), err
    assert f"python get_data.py --dataset {name}" in err
    assert files_in(root) == sorted(f for f in files if f != big)  # the intact ones only
    with pytest.raises(DataError):
        data.load(name, root)


def test_server_without_ranges_restarts_the_download(dataset, server, tmp_path):
    name, _, files, expected = dataset
    big = max(files, key=lambda f: len(files[f]))
    root = tmp_path / name
    root.mkdir()
    (root / (big + PARTIAL)).write_bytes(b"\0" * 7)  # not the archive's first bytes
    server.ranges = False
    assert get_data.main(["--dataset", name, "--data_root", str(root)]) == 0
    check_prepared(name, str(root), expected)


def test_source_folder_is_used_in_place(dataset, server, tmp_path):
    name, _, files, expected = dataset
    folder = tmp_path / "archives"
    folder.mkdir()
    for f, body in files.items():
        (folder / f).write_bytes(body)
    root = str(tmp_path / name)
    assert get_data.main(["--dataset", name, "--data_root", root, "--source", str(folder)]) == 0
    assert sum(server.hits.values()) == 0
    assert sorted(os.listdir(folder)) == sorted(files)  # the user's copies are kept
    check_prepared(name, root, expected)


def test_archives_already_in_the_data_root_are_used_and_kept(dataset, server, tmp_path, capsys):
    name, _, files, expected = dataset
    root = tmp_path / name
    root.mkdir()
    for f, body in files.items():
        (root / f).write_bytes(body)
    assert get_data.main(["--dataset", name, "--data_root", str(root)]) == 0
    assert sum(server.hits.values()) == 0 and "already downloaded" in capsys.readouterr().out
    assert set(files) < set(os.listdir(root))
    check_prepared(name, str(root), expected)


def test_source_folder_with_a_wrong_file(dataset, tmp_path, capsys):
    name, _, files, _ = dataset
    folder = tmp_path / "archives"
    folder.mkdir()
    for f in files:
        (folder / f).write_bytes(b"something else")
    root = str(tmp_path / name)
    assert get_data.main(["--dataset", name, "--data_root", root, "--source", str(folder)]) == 2
    err = capsys.readouterr().err
    assert "is corrupt" in err and "intact copy" in err
    assert sorted(os.listdir(folder)) == sorted(files)


def test_missing_or_damaged_splits_name_the_command(tmp_path, monkeypatch):
    for name in NAMES:
        root = tmp_path / name
        with pytest.raises(
            DataError, match=re.escape(f"run: python get_data.py --dataset {name} --data_root")
        ):
            data.load(name, str(root))
    from data import stl10

    monkeypatch.setattr(stl10, "CLASSES", 2)
    root = tmp_path / "stl10"
    root.mkdir()
    dim = 96 * 96 * 3
    np.save(root / "train.npy", np.zeros((6, dim), np.uint8))
    np.save(root / "test.npy", np.zeros((6, dim), np.uint8))
    np.save(root / "train.offsets.npy", np.array([0, 3, 6]))
    np.save(root / "test.offsets.npy", np.array([0, 4, 2]))
    with pytest.raises(DataError, match="test.offsets.npy is not a list of class offsets"):
        data.load("stl10", str(root))
    np.save(root / "test.offsets.npy", np.array([0, 2, 7]))
    with pytest.raises(
        DataError, match=r"test.npy holds an array of shape \(6, 27648\), expected \(7, 27648\)"
    ):
        data.load("stl10", str(root))
    np.save(root / "test.offsets.npy", np.array([0, 2, 6]))
    ds = data.load("stl10", str(root))
    assert ds.split("train").shape == (2, 3, dim) and ds.split("train").dtype == np.uint8
    assert isinstance(ds.split("test"), Ragged)
    monkeypatch.setattr(stl10, "CLASSES", 10)  # another number of classes than prepared
    with pytest.raises(DataError, match="train.offsets.npy holds an array of shape"):
        data.load("stl10", str(root))


def test_http_error_and_the_stanford_cars_hint(server, tmp_path, monkeypatch, capsys):
    from data import stanford_cars

    monkeypatch.delenv(stanford_cars.URL_ENV, raising=False)
    monkeypatch.setattr(stanford_cars, "URL", server.url + "/gone")  # serves nothing: HTTP 404
    root = str(tmp_path / "cars")
    assert get_data.main(["--dataset", "stanford_cars", "--data_root", root]) == 2
    err = capsys.readouterr().err
    assert "cars_annos.mat" in err and "HTTP 404" in err and "Internet Archive" in err
    assert "--source FOLDER_OR_URL" in err and stanford_cars.MD5["car_ims.tgz"] in err
    assert files_in(root) == []


def test_tiny_imagenet_bad_image_leaves_no_split(server, tmp_path, monkeypatch, capsys):
    import io
    import zipfile

    from data import tiny_imagenet

    files, _ = ARCHIVES["tiny_imagenet"](3, 3)
    monkeypatch.setattr(tiny_imagenet, "CLASSES", 3)
    good = zipfile.ZipFile(io.BytesIO(files[tiny_imagenet.ZIP]))
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        for info in good.infolist():  # a val image (decoded after the training images) is no JPEG
            zf.writestr(info, b"garbage" if info.filename.endswith("val_3.JPEG") else good.read(info))
    body = buf.getvalue()
    monkeypatch.setenv(tiny_imagenet.URL_ENV, server.url)
    monkeypatch.setattr(tiny_imagenet, "MD5", {tiny_imagenet.ZIP: hashlib.md5(body).hexdigest()})
    server.serve(tiny_imagenet.ZIP, body)
    root = str(tmp_path / "tiny")
    assert get_data.main(["--dataset", "tiny_imagenet", "--data_root", root]) == 2
    err = capsys.readouterr().err
    assert "val_3.JPEG is not a readable image" in err and "deleted" in err
    assert files_in(root) == []
