"""get_data.py's downloads against a local HTTP server serving small archives in the real formats."""

import hashlib
import io
import os
import pickle
import re
import urllib.parse
import zipfile

import numpy as np
import pytest
from PIL import Image

import data
import get_data
from data import DataError, mimgnet, omniglot
from data.files import OFFLINE, PARTIAL
from tests import standin
from tests.standin import Server


@pytest.fixture
def server(monkeypatch):
    for var in ("HTTP_PROXY", "HTTPS_PROXY", "http_proxy", "https_proxy", "ALL_PROXY", "all_proxy"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("NO_PROXY", "127.0.0.1")
    s = Server()
    monkeypatch.setenv(omniglot.URL_ENV, s.url)
    monkeypatch.setenv(mimgnet.URL_ENV, s.url)
    yield s
    s.close()


# sources whose raw files have no published checksum (docs/datasets.md)
NO_CHECKSUM = {"aircraft", "mimgnet", "quickdraw", "traffic"}


def leftovers(root) -> list[str]:
    return sorted(f for f in os.listdir(root) if ".part" in f or ".tmp" in f) if os.path.isdir(root) else []


# ---------------------------------------------------------------- Omniglot

# A small Omniglot: 10 characters (IDs 1-10), 6 of them for meta-training, 2 of those for validation.
N_CHARS, N_TRAIN, N_VAL = 10, 6, 2
ARCHIVES = {"images_background": {1: "Alpha", 2: "Alpha", 3: "Alpha", 4: "Beta", 5: "Beta"}}
ARCHIVES["images_evaluation"] = {i: "Gamma" for i in range(6, 11)}


def drawing(cid: int, drawer: int) -> np.ndarray:
    """A 105x105 bool image (True = white background) of 7x7 random 15px blocks, unique per drawing."""
    rng = np.random.default_rng([cid, drawer])
    if (cid, drawer) == (1, 1):
        blocks = np.ones((7, 7), bool)  # blank page
    elif (cid, drawer) == (1, 2):
        blocks = np.zeros((7, 7), bool)  # all ink
    elif cid == 2:
        blocks = np.ones((7, 7), bool)
        blocks[0, 0] = False  # a single top-left stroke
    else:
        blocks = rng.random((7, 7)) < 0.7
    return blocks.repeat(15, 0).repeat(15, 1)


def png(img: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(img).convert("1").save(buf, format="PNG")
    return buf.getvalue()


def omniglot_zip(top: str) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        for cid, alphabet in sorted(ARCHIVES[top].items(), reverse=True):  # not in ID order
            for d in range(1, 21):
                zf.writestr(
                    f"{top}/{alphabet}/character{cid:02d}/{cid:04d}_{d:02d}.png", png(drawing(cid, d))
                )
    return buf.getvalue()


def expected_image(cid: int, drawer: int) -> np.ndarray:
    """Independently: resize to 28x28 with PIL's Lanczos, strokes 1 and background 0."""
    im = Image.fromarray(drawing(cid, drawer)).convert("L").resize((28, 28), Image.Resampling.LANCZOS)
    return 1 - np.asarray(im, np.float64).ravel() / 255


@pytest.fixture
def omni(server, monkeypatch):
    zips = {f"{top}.zip": omniglot_zip(top) for top in ARCHIVES}
    monkeypatch.setattr(omniglot, "ZIPS", {n: hashlib.md5(b).hexdigest() for n, b in zips.items()})
    monkeypatch.setattr(omniglot, "N_CHARACTERS", N_CHARS)
    monkeypatch.setattr(omniglot, "N_TRAIN", N_TRAIN)
    monkeypatch.setattr(omniglot, "N_VAL", N_VAL)
    for name, body in zips.items():
        server.serve(name, body)
    return zips


def test_omniglot_download_and_preprocessing(omni, server, tmp_path):
    root = str(tmp_path / "omni")
    assert get_data.main(["--dataset", "omniglot", "--data_root", root]) == 0
    assert sorted(os.listdir(root)) == [
        "images_background.zip",
        "images_evaluation.zip",
        "test.npy",
        "train.npy",
    ]
    assert server.hits == {"/images_background.zip": 1, "/images_evaluation.zip": 1}
    ds = data.load("omniglot_val", root)  # the view with a validation split (omniglot: train = train + val)
    assert ds.shape == (28, 28, 1) and ds.filters == 64
    sizes = {"train": N_TRAIN - N_VAL, "val": N_VAL, "test": N_CHARS - N_TRAIN}
    first = {"train": 1, "val": N_TRAIN - N_VAL + 1, "test": N_TRAIN + 1}
    for name, split in ds.splits.items():
        assert split.shape == (4 * sizes[name], 20, 784) and split.dtype == np.float32
        assert split.min() >= 0 and split.max() <= 1
        for c in range(sizes[name]):  # characters in ID order, four rotations each
            cid = first[name] + c
            want = np.stack([expected_image(cid, d) for d in range(1, 21)])
            np.testing.assert_allclose(split[4 * c], want, atol=1e-6)
            for k in range(1, 4):
                rotated = np.rot90(split[4 * c].reshape(20, 28, 28), k, axes=(1, 2))
                np.testing.assert_array_equal(split[4 * c + k], rotated.reshape(20, 784))
    train = ds.split("train")
    assert (train[0, 0] == 0).all() and (train[0, 1] == 1).all()  # blank page 0, all ink 1
    # character 2's stroke is top-left; rotated 90 degrees counter-clockwise it is bottom-left
    ink = train[5, 0].reshape(28, 28)
    assert ink[14:, :14].sum() > 0.9 * ink.sum()
    seen = {name: {row.tobytes() for row in split.reshape(-1, 784)} for name, split in ds.splits.items()}
    assert not (seen["train"] & seen["val"] or seen["train"] & seen["test"] or seen["val"] & seen["test"])


def test_omniglot_rerun_after_success_does_no_work(omni, server, tmp_path, capsys):
    root = str(tmp_path / "omni")
    assert get_data.main(["--dataset", "omniglot", "--data_root", root]) == 0
    stamps = {f: os.stat(os.path.join(root, f)).st_mtime_ns for f in os.listdir(root)}
    server.hits.clear()
    assert get_data.main(["--dataset", "omniglot", "--data_root", root]) == 0
    assert sum(server.hits.values()) == 0
    assert {f: os.stat(os.path.join(root, f)).st_mtime_ns for f in os.listdir(root)} == stamps
    assert "already prepared" in capsys.readouterr().out


@pytest.mark.parametrize("fault", ["cut", 404, 500, "corrupt"])
def test_omniglot_failed_download_keeps_nothing_and_rerun_fetches_only_the_rest(
    fault, omni, server, tmp_path, capsys
):
    root = str(tmp_path / "omni")
    good = omni["images_evaluation.zip"]
    if fault == "cut":
        server.serve("images_evaluation.zip", good, cut=True)
    elif fault == "corrupt":
        bad = bytearray(good)
        bad[len(bad) // 2] ^= 0xFF
        server.serve("images_evaluation.zip", bytes(bad))
    else:
        server.serve("images_evaluation.zip", b"oops", status=fault)
    assert get_data.main(["--dataset", "omniglot", "--data_root", root]) == 2
    err = capsys.readouterr().err
    assert "images_evaluation.zip" in err and "python get_data.py --dataset omniglot" in err
    reasons = {
        "cut": ("cut short", "cannot reach"),
        "corrupt": ("corrupt",),
        404: ("HTTP 404",),
        500: ("HTTP 500",),
    }
    assert any(r in err for r in reasons[fault]), err
    # the complete one only, and the part of a cut transfer, to be resumed
    kept = ["images_evaluation.zip" + PARTIAL] if fault == "cut" else []
    assert sorted(os.listdir(root)) == ["images_background.zip", *kept]
    assert leftovers(root) == []
    with pytest.raises(DataError, match="python get_data.py --dataset omniglot"):
        data.load("omniglot", root)
    server.serve("images_evaluation.zip", good)
    server.hits.clear()
    assert get_data.main(["--dataset", "omniglot", "--data_root", root]) == 0
    assert server.hits == {"/images_evaluation.zip": 1}
    assert server.range_hits == ({"/images_evaluation.zip": 1} if fault == "cut" else {})
    assert data.load("omniglot", root).split("test").shape == (16, 20, 784)


def test_omniglot_archive_damaged_on_disk_is_downloaded_again(omni, server, tmp_path):
    root = tmp_path / "omni"
    root.mkdir()
    (root / "images_background.zip").write_bytes(b"not the archive")
    assert get_data.main(["--dataset", "omniglot", "--data_root", str(root)]) == 0
    assert server.hits["/images_background.zip"] == 1
    assert (root / "images_background.zip").read_bytes() == omni["images_background.zip"]


def test_omniglot_unreadable_archive_with_the_expected_checksum(omni, server, monkeypatch, tmp_path, capsys):
    monkeypatch.setitem(omniglot.ZIPS, "images_background.zip", hashlib.md5(b"garbage").hexdigest())
    server.serve("images_background.zip", b"garbage")
    root = str(tmp_path / "omni")
    assert get_data.main(["--dataset", "omniglot", "--data_root", root]) == 2
    err = capsys.readouterr().err
    assert "images_background.zip is not a readable zip" in err and "delete it" in err
    assert not os.path.exists(os.path.join(root, "train.npy"))


def test_original_code_arrays_are_accepted(omni, server, tmp_path, capsys):
    root = tmp_path / "omni"
    root.mkdir()
    rng = np.random.default_rng(0)
    train = rng.random((4 * N_TRAIN, 20, 28, 28))  # float64, another shape of the same size
    test = rng.random((4 * (N_CHARS - N_TRAIN), 20, 784)).astype(np.float32)
    np.save(root / "train.npy", train)
    np.save(root / "test.npy", test)
    assert get_data.main(["--dataset", "omniglot", "--data_root", str(root)]) == 0
    assert sum(server.hits.values()) == 0 and "already prepared" in capsys.readouterr().out
    ds = data.load("omniglot_val", str(root))  # the view that holds characters out for validation
    cut = 4 * (N_TRAIN - N_VAL)
    np.testing.assert_array_equal(ds.split("train"), train.reshape(-1, 20, 784)[:cut].astype(np.float32))
    np.testing.assert_array_equal(ds.split("val"), train.reshape(-1, 20, 784)[cut:].astype(np.float32))
    np.testing.assert_array_equal(ds.split("test"), test)
    paper = data.load("omniglot", str(root))  # the paper's: every training character
    np.testing.assert_array_equal(paper.split("train"), train.reshape(-1, 20, 784).astype(np.float32))
    assert ds.split("train").dtype == np.float32
    np.save(root / "test.npy", test * 255)
    with pytest.raises(DataError, match=r"test.npy holds values in \[.*\], not \[0, 1\]"):
        data.load("omniglot", str(root))
    np.save(root / "test.npy", test[:3])
    with pytest.raises(DataError, match=r"test.npy holds an array of shape \(3, 20, 784\), expected \(16"):
        data.load("omniglot", str(root))


def test_missing_data_names_the_command(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    root = str(tmp_path / "nothing")
    for name in ("omniglot", "mimgnet", "omniglot_small"):
        cmd = f"python get_data.py --dataset {name}"
        with pytest.raises(DataError, match=re.escape(f"is missing; run: {cmd} --data_root {root}") + "$"):
            data.load(name, root)
        with pytest.raises(DataError, match=re.escape(f"is missing; run: {cmd}") + "$"):
            data.load(name)  # the default root ./data/<name>


# ---------------------------------------------------------------- miniImageNet

MIMG_CLASSES = {"train": 3, "val": 2, "test": 2}
MIMG_EXAMPLES = 4


def mimgnet_cache(split: str, protocol: int) -> tuple[bytes, np.ndarray]:
    """A cache pickle as Ren et al.'s: image_data [N, 84, 84, 3] uint8 and class_dict {wnid: indices},
    classes interleaved and not in wnid order; also the expected [classes, examples, 21168] array."""
    n_classes = MIMG_CLASSES[split]
    rng = np.random.default_rng(len(split))
    images = rng.integers(0, 256, (n_classes * MIMG_EXAMPLES, 84, 84, 3), dtype=np.uint8)
    order = rng.permutation(len(images))
    wnids = [f"n0{split}{c}" for c in range(n_classes)]
    class_dict = {wnids[c]: order[c::n_classes].tolist() for c in reversed(range(n_classes))}
    expected = np.stack([images[class_dict[w]].reshape(MIMG_EXAMPLES, -1) for w in sorted(wnids)])
    return pickle.dumps({"image_data": images, "class_dict": class_dict}, protocol=protocol), expected


@pytest.fixture
def mimg(server, monkeypatch):
    monkeypatch.setattr(mimgnet, "CLASSES", MIMG_CLASSES)
    monkeypatch.setattr(mimgnet, "EXAMPLES", MIMG_EXAMPLES)
    expected = {}
    for i, (split, name) in enumerate(mimgnet.FILES.items()):
        body, expected[split] = mimgnet_cache(split, protocol=(2, 4, 5)[i])
        server.serve(name, body)
    return expected


def test_mimgnet_download_convert_and_rerun(mimg, server, tmp_path, capsys):
    root = str(tmp_path / "mimg")
    assert get_data.main(["--dataset", "mimgnet", "--data_root", root]) == 0
    assert sorted(os.listdir(root)) == ["test.npy", "train.npy", "val.npy"]  # pickles deleted
    assert sorted(server.hits.values()) == [1, 1, 1]
    for split, want in mimg.items():
        raw = np.load(os.path.join(root, f"{split}.npy"))
        assert raw.dtype == np.uint8
        np.testing.assert_array_equal(raw, want)
    ds = data.load("mimgnet", root)
    assert ds.shape == (84, 84, 3) and ds.filters == 32 and sorted(ds.splits) == ["test", "train", "val"]
    for split, want in mimg.items():
        x = ds.split(split)
        assert x.dtype == np.float32 and x.shape == want.shape
        np.testing.assert_allclose(x, want / 255.0, rtol=1e-6)
    capsys.readouterr()
    server.hits.clear()
    stamps = {f: os.stat(os.path.join(root, f)).st_mtime_ns for f in os.listdir(root)}
    assert get_data.main(["--dataset", "mimgnet", "--data_root", root]) == 0
    assert sum(server.hits.values()) == 0
    assert {f: os.stat(os.path.join(root, f)).st_mtime_ns for f in os.listdir(root)} == stamps
    assert capsys.readouterr().out.count("already prepared") == 3


def test_mimgnet_interrupted_transfer_then_rerun(mimg, server, tmp_path, capsys):
    root = str(tmp_path / "mimg")
    name = mimgnet.FILES["val"]
    status, body, _ = server.routes[f"/{name}"]
    server.serve(name, body, cut=True)
    assert get_data.main(["--dataset", "mimgnet", "--data_root", root]) == 2
    err = capsys.readouterr().err
    assert name in err and "run `python get_data.py --dataset mimgnet" in err
    assert sorted(os.listdir(root)) == [name + PARTIAL, "train.npy"] and leftovers(root) == []
    server.serve(name, body)
    server.hits.clear()
    assert get_data.main(["--dataset", "mimgnet", "--data_root", root]) == 0
    assert server.hits == {f"/{name}": 1, f"/{mimgnet.FILES['test']}": 1}


def test_mimgnet_http_error(mimg, server, tmp_path, capsys):
    server.serve(mimgnet.FILES["train"], b"", status=404)
    root = str(tmp_path / "mimg")
    assert get_data.main(["--dataset", "mimgnet", "--data_root", root]) == 2
    err = capsys.readouterr().err
    assert f"downloading {mimgnet.FILES['train']} from {server.url}/" in err and "HTTP 404" in err
    assert not os.path.exists(root)  # nothing kept: the folder this run made is gone too


class Exploit:
    def __reduce__(self):
        return (os.system, ("touch pwned",))


@pytest.mark.parametrize(
    "body",
    [
        b"\x80\x04garbage that is no pickle",
        pickle.dumps({"image_data": np.zeros((8, 84, 84, 3), np.uint8), "class_dict": {"a": [0, 1, 2, 3]}}),
        pickle.dumps({"image_data": np.zeros((8, 84, 84), np.uint8), "class_dict": {}}),
        pickle.dumps(Exploit()),
    ],
    ids=["not-a-pickle", "too-few-classes", "wrong-image-shape", "code"],
)
def test_mimgnet_corrupt_cache_is_refused(body, mimg, server, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    server.serve(mimgnet.FILES["train"], body)
    root = str(tmp_path / "mimg")
    assert get_data.main(["--dataset", "mimgnet", "--data_root", root]) == 2
    err = capsys.readouterr().err
    assert f"{mimgnet.FILES['train']} is not a miniImageNet cache" in err and "deleted" in err
    assert not os.path.exists(root) and not os.path.exists(tmp_path / "pwned")


def test_episode_flags_need_episodes(capsys):
    with pytest.raises(SystemExit):
        get_data.parse_args(["--dataset", "omniglot_small", "--way", "5"])
    assert "--way: only with --episodes" in capsys.readouterr().err


def test_failed_preparation_leaves_no_empty_folder_of_its_own(tmp_path, capsys):
    # A download that fails before writing a byte: the data root this run created goes away,
    # a folder that was there before stays.
    root = tmp_path / "cifar"
    assert (
        get_data.main(["--dataset", "cifar", "--data_root", str(root), "--source", "http://127.0.0.1:9"]) == 2
    )
    err = capsys.readouterr().err
    assert (
        "cannot reach 127.0.0.1:9" in err
        and f"pass its folder (or a file:// URL) with --source ({OFFLINE})" in err
    )
    assert sorted(os.listdir(tmp_path)) == []
    (tmp_path / "old").mkdir()
    assert (
        get_data.main(
            ["--dataset", "cifar", "--data_root", str(tmp_path / "old"), "--source", "http://127.0.0.1:9"]
        )
        == 2
    )
    assert sorted(os.listdir(tmp_path)) == ["old"]


@pytest.mark.parametrize("flag", ["--data_root", "--episodes"])
def test_output_in_a_folder_that_is_not_there_is_refused(tmp_path, capsys, flag):
    """A typo'd path once became a tree of new folders: the data root itself is created, its parent
    folder (and that of an --episodes file) must exist."""
    path = tmp_path / "typo" / "deeper" / ("omniglot_small" if flag == "--data_root" else "eps.npz")
    argv = ["--dataset", "omniglot_small" if flag == "--data_root" else "digits", flag, str(path)]
    with pytest.raises(SystemExit) as e:
        get_data.main(argv)
    err = capsys.readouterr().err
    assert e.value.code == 2 and f"{flag} {path}: the folder {path.parent} does not exist" in err
    assert list(tmp_path.iterdir()) == []


def test_omniglot_small_default_source_from_another_folder(tmp_path, monkeypatch, capsys):
    """The default --source is found from the project, not the working directory; where it is not
    there, the message says what the default was and where the archives come from."""
    from data import omniglot_small

    assert os.path.isabs(omniglot_small.SOURCE)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(omniglot_small, "SOURCE", str(tmp_path / "shared"))
    assert get_data.main(["--dataset", "omniglot_small", "--data_root", "os"]) == 2
    err = capsys.readouterr().err
    small1 = tmp_path / "shared" / "images_background_small1.zip"
    assert (
        f"{small1} is missing (the default --source: shared/data/omniglot beside the project folder)" in err
    )
    assert omniglot.BASE_URL in err and not (tmp_path / "os").exists()


# ---------------------------------------------------------------- offline: files downloaded elsewhere


def splits_in(root) -> dict[str, bytes]:
    """The prepared splits under root: {relative path: bytes} of every .npy file."""
    return {
        os.path.relpath(os.path.join(d, f), root): open(os.path.join(d, f), "rb").read()
        for d, _, names in os.walk(root)
        for f in names
        if f.endswith(".npy")
    }


def no_network(monkeypatch):
    import requests

    def refuse(url, *args, **kwargs):
        raise AssertionError(f"a file given with --source was fetched over the network: {url}")

    monkeypatch.setattr(requests, "get", refuse)


def downloads(folder, files: dict[str, bytes]) -> None:
    """The files as a user saves them from their host (quickdraw's URLs %-escape spaces)."""
    folder.mkdir()
    for name, body in files.items():
        (folder / urllib.parse.unquote(name)).write_bytes(body)


@pytest.mark.parametrize("name", standin.sources())
def test_every_dataset_prepares_offline_from_a_folder_or_a_file_url(name, tmp_path, monkeypatch):
    """The same splits as from the host, with nothing fetched over the network, the user's files kept."""
    files, settings = standin.build(name, per_class=6)
    with standin.serving(files) as server, standin.patched(settings):
        assert (
            get_data.main(["--dataset", name, "--data_root", str(tmp_path / "http"), "--source", server.url])
            == 0
        )
    want = splits_in(tmp_path / "http")
    folder = tmp_path / "downloads"
    downloads(folder, files)
    no_network(monkeypatch)
    with standin.patched(settings):
        for kind, source in (("folder", str(folder)), ("url", folder.as_uri())):
            root = str(tmp_path / kind)
            assert get_data.main(["--dataset", name, "--data_root", root, "--source", source]) == 0
            assert splits_in(root).keys() == want.keys() and splits_in(root) == want, kind
    assert {f: (folder / urllib.parse.unquote(f)).read_bytes() for f in files} == files


@pytest.mark.parametrize("name", [n for n in standin.sources() if n not in NO_CHECKSUM])
def test_files_given_with_source_are_checked_by_the_same_checksums(name, tmp_path, monkeypatch, capsys):
    files, settings = standin.build(name, per_class=6)
    folder = tmp_path / "downloads"
    downloads(folder, files)
    first = folder / next(iter(files))
    damaged = bytearray(first.read_bytes())
    damaged[len(damaged) // 2] ^= 0xFF
    first.write_bytes(bytes(damaged))
    no_network(monkeypatch)
    root = tmp_path / name
    with standin.patched(settings):
        assert get_data.main(["--dataset", name, "--data_root", str(root), "--source", folder.as_uri()]) == 2
    err = capsys.readouterr().err
    got = hashlib.md5(damaged).hexdigest()
    assert f"{first} is corrupt (MD5 {got}, expected " in err and "intact copy" in err, err
    assert splits_in(root) == {} and first.read_bytes() == damaged  # nothing prepared, the file kept


def test_omniglot_offline_from_a_folder_or_a_file_url(omni, server, tmp_path, monkeypatch):
    assert get_data.main(["--dataset", "omniglot", "--data_root", str(tmp_path / "http")]) == 0
    want = splits_in(tmp_path / "http")
    folder = tmp_path / "downloads"
    downloads(folder, omni)
    no_network(monkeypatch)
    for kind, source in (("folder", str(folder)), ("url", folder.as_uri())):
        root = str(tmp_path / kind)
        assert get_data.main(["--dataset", "omniglot", "--data_root", root, "--source", source]) == 0
        assert splits_in(root) == want
    assert {f: (folder / f).read_bytes() for f in omni} == omni


def test_omniglot_source_folder_missing_a_file_or_damaged(omni, tmp_path, monkeypatch, capsys):
    folder = tmp_path / "downloads"
    downloads(folder, {"images_background.zip": omni["images_background.zip"]})
    no_network(monkeypatch)
    root = str(tmp_path / "omni")
    argv = ["--dataset", "omniglot", "--data_root", root, "--source"]
    assert get_data.main([*argv, str(folder)]) == 2
    err = capsys.readouterr().err
    assert f"{folder / 'images_evaluation.zip'} is missing: put images_evaluation.zip there" in err
    assert OFFLINE in err
    assert get_data.main([*argv, str(tmp_path / "typo")]) == 2
    assert f"--source: the folder {tmp_path / 'typo'} does not exist" in capsys.readouterr().err
    (folder / "images_evaluation.zip").write_bytes(omni["images_evaluation.zip"][:-1])
    assert get_data.main([*argv, str(folder)]) == 2
    assert "images_evaluation.zip is corrupt (MD5" in capsys.readouterr().err
    assert splits_in(root) == {}


def test_the_offline_help_is_where_the_messages_point():
    """The page the messages name has the section, and it names every dataset and its raw files."""
    from tests.test_docs import REPO, anchors

    page, _, anchor = OFFLINE.partition("#")
    assert anchor in anchors(REPO / page)
    text = (REPO / page).read_text().split("## Offline")[1]
    assert [n for n in data.DATASETS if f"`{n}`" not in text] == []
    named = {n: list(standin.build(n, per_class=1)[0]) for n in standin.sources() if n != "quickdraw"}
    named["omniglot"] = list(omniglot.ZIPS)
    assert {n: [f for f in fs if f"`{f}`" not in text] for n, fs in named.items()} == {n: [] for n in named}
