"""Omniglot's meta-training classes (#28 part 3): `omniglot` is the paper's split (all 1200 background
characters, 4800 classes, no validation split), `omniglot_val` holds the last 100 characters out for
meta-validation (4400 + 400); the runfiles of the paper's Omniglot cells train on the paper's; a run
without a validation split meta-trains without meta-validation; a savedir trained on the held-out
split is not resumed on the paper's."""

import json
import os
import re
import shlex
from pathlib import Path

import numpy as np
import pytest

import data
import main
from data import omniglot

REPO = Path(__file__).resolve().parents[1]
CLASSES = omniglot.N_TRAIN * omniglot.ROTATIONS  # 4800
HELD = omniglot.N_VAL * omniglot.ROTATIONS  # 400
N_TEST = (omniglot.N_CHARACTERS - omniglot.N_TRAIN) * omniglot.ROTATIONS  # 1692


@pytest.fixture(autouse=True)
def _env(monkeypatch):
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")  # main sets it; restored afterwards


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    """A stand-in data root: train.npy and test.npy of the real shapes (sparse, zeros) whose class c
    is marked by pixel 0 of its first drawing = c / 10000 (and a few inked pixels, so that tiny
    trainings see more than blank pages)."""
    folder = tmp_path_factory.mktemp("data") / "omniglot"
    folder.mkdir()
    d = omniglot.DRAWERS
    for split, n in (("train", CLASSES), ("test", N_TEST)):
        arr = np.lib.format.open_memmap(folder / f"{split}.npy", "w+", np.float32, (n, d, 784))
        arr[:, 0, 0] = np.arange(n) / 10000
        arr[:, :, 1 + np.arange(n) % 700] = 1.0
        arr.flush()
        del arr
    return folder


def classes(split: np.ndarray) -> np.ndarray:
    return np.rint(split[:, 0, 0] * 10000).astype(int)


def test_omniglot_trains_on_4800_classes_and_omniglot_val_holds_400_out(root):
    paper, held = data.load("omniglot", str(root)), data.load("omniglot_val", str(root))
    assert set(paper.splits) == {"train", "test"} and not data.has_val("omniglot")
    np.testing.assert_array_equal(classes(paper.split("train")), np.arange(CLASSES))
    assert set(held.splits) == {"train", "val", "test"} and data.has_val("omniglot_val")
    np.testing.assert_array_equal(classes(held.split("train")), np.arange(CLASSES - HELD))
    np.testing.assert_array_equal(classes(held.split("val")), np.arange(CLASSES - HELD, CLASSES))
    for ds in (paper, held):
        np.testing.assert_array_equal(classes(ds.split("test")), np.arange(N_TEST))
    assert data.default_root("omniglot_val") == data.default_root("omniglot")  # one folder


def runfile_commands() -> list[tuple[str, list[str]]]:
    """(runfile, main.py arguments) of every command of the paper's Omniglot runfiles."""
    paths = sorted(REPO.glob("runfiles/*omni*.sh")) + sorted(REPO.glob("runfiles/table[23]/*omni*.sh"))
    out = []
    for path in paths:
        for line in path.read_text().splitlines():
            if line.startswith("python main.py"):
                argv = shlex.split(line.split("${DATA_ROOT")[0].replace("${GPU_ID:-0}", "0"))[2:]
                out.append((str(path.relative_to(REPO)), argv))
    return out


def test_the_papers_omniglot_runfiles_train_on_all_4800_classes():
    commands = runfile_commands()
    assert len(commands) == 2 * (8 + 20 + 12)  # Omniglot cells: Table 1's 8, Table 2's 20, Table 3's 12
    for name, argv in commands:
        args = main.parse_args(argv)
        assert args.dataset == "omniglot" and args.val_split is False, name
        assert args.select == "last", name  # the original meta-tests the last checkpoint


def test_select_by_validation_is_refused_without_a_validation_split(tmp_path, capsys):
    for rule in ("id", "id+ood"):
        argv = ["--dataset", "omniglot", "--mode", "meta_test", "--savedir", str(tmp_path), "--select", rule]
        with pytest.raises(SystemExit) as e:  # a flag error: argparse's exit
            main.main(argv)
        assert e.value.code == 2
        err = capsys.readouterr().err
        assert f"--select {rule} picks a checkpoint by meta-validation" in err and "--select last" in err, err
        assert "Traceback" not in err


TINY = ["--way", "3", "--shot", "1", "--query", "1", "--n_steps", "1", "--metabatch", "1"]


def test_a_run_without_a_validation_split_meta_trains_without_validating(root, tmp_path, capsys):
    savedir = tmp_path / "run"
    common = ["--dataset", "omniglot", "--data_root", str(root), "--savedir", str(savedir), *TINY]
    train = ["--mode", "meta_train", "--n_train_iters", "2", "--val_freq", "1", "--log_freq", "1"]
    assert main.main([*common, *train]) == 0
    note = "omniglot holds no validation split: meta-training without meta-validation"
    assert capsys.readouterr().out.count(note) == 1
    log = (savedir / "meta_train.log").read_text()
    assert log.count(note) == 1 and "iter 2 loss" in log
    assert not re.search(r"val .*acc", log), log
    assert json.loads((savedir / "config.json").read_text())["val_split"] is False


def old_config(savedir: Path, dataset: str) -> None:
    """A savedir as a run of dataset `dataset` wrote it before config.json recorded val_split: its
    config and one checkpoint's index file."""
    args = main.parse_args(["--dataset", dataset, "--savedir", str(savedir), *TINY, "--mode", "meta_train"])
    config = {k: v for k, v in vars(args).items() if k != "val_split"}
    (savedir / "ckpt").mkdir(parents=True)
    (savedir / "config.json").write_text(json.dumps({**config, "image_shape": [28, 28, 1], "filters": 64}))
    (savedir / "ckpt" / "model-10.index").write_bytes(b"")


def test_a_run_trained_on_the_held_out_split_is_not_resumed_on_all_classes(root, tmp_path, capsys):
    savedir = tmp_path / "run"
    old_config(savedir, "omniglot")  # before omniglot trained on all 4800 classes: 4400 of them
    argv = ["--dataset", "omniglot", "--data_root", str(root), "--savedir", str(savedir), *TINY]
    assert main.main([*argv, "--mode", "meta_train", "--n_train_iters", "20"]) == 2
    err = capsys.readouterr().err
    assert "val_split: classes held out for meta-validation there, no validation split now" in err, err
    assert sorted(os.listdir(savedir / "ckpt")) == ["model-10.index"]  # nothing lost
    # the settings check of the held-out view accepts such a config (val_split defaults to held out)
    from run import check_settings, read_config

    config = read_config(str(savedir))
    args = main.parse_args(
        ["--dataset", "omniglot_val", "--savedir", str(savedir), *TINY, "--mode", "meta_train"]
    )
    check_settings({**config, "dataset": "omniglot_val"}, args)


def test_report_shows_whether_classes_were_held_out():
    import dataclasses

    from test_results import full_record

    import report

    for held_out in (False, True):
        r = dataclasses.replace(full_record(), settings={"val_split": held_out})
        assert f"val_split={held_out}" in report.settings_text(r)
