"""Failure cases of issue #14, tried as a new user would: each works, or exits 2 (130 after Ctrl-C)
with a message saying what to do, and nothing written before is lost. One tiny digits run is
trained once; each case works on its own copy of it."""

import errno
import fcntl
import glob
import json
import os
import re
import resource
import shutil
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

import data
import get_data
import main
import report
from data.episodes import write_file
from data.files import atomic

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TINY = [
    *("--dataset", "digits", "--way", "5", "--shot", "1", "--query", "5"),
    *("--n_steps", "1", "--metabatch", "1", "--inner_lr", "0.4"),
]
TRAIN = [
    "--mode",
    "meta_train",
    "--n_train_iters",
    "2",
    "--save_freq",
    "1",
    "--val_freq",
    "2",
    "--n_val_iters",
    "1",
]
TEST = ["--mode", "meta_test", "--n_test_iters", "3"]


@pytest.fixture(autouse=True)
def _env(monkeypatch):
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")  # main sets it; restored afterwards


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A Meta-dropout run of 2 iterations, checkpointed at both, trained under an absolute --savedir
    in a folder "made" and then moved (nothing of it may point back there)."""
    made = tmp_path_factory.mktemp("made") / "run"
    assert main.main([*TINY, "--savedir", str(made), *TRAIN]) == 0
    savedir = tmp_path_factory.mktemp("trained") / "run"
    shutil.move(made, savedir)
    return savedir


@pytest.fixture
def run(trained, tmp_path):
    """This case's own copy of the trained savedir."""
    return shutil.copytree(trained, tmp_path / "run")


def code(argv):
    """main.main's exit code, argparse's included."""
    try:
        return main.main(argv)
    except SystemExit as e:
        return e.code


def refused(capsys, argv, message):
    """Exit 2 with `message` on stderr, no traceback."""
    assert code(argv) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err, err
    return err


def ckpt_steps(savedir):
    return sorted(
        int(re.search(r"model-(\d+)\.index$", p).group(1)) for p in glob.glob(f"{savedir}/ckpt/*.index")
    )


def results(savedir):
    return sorted(n for n in os.listdir(savedir) if n.startswith("results"))


def episodes_file(path, seed):
    split = data.load("digits").split("test")
    write_file(str(path), split, 5, 1, 5, 2, seed, {"dataset": "digits"})
    return str(path)


# ---- savedirs that move, are copied, or hold other settings


def test_checkpoint_state_holds_no_absolute_path(trained):
    state = (trained / "ckpt" / "checkpoint").read_text()
    assert "made" not in state and 'model_checkpoint_path: "model-2"' in state


def test_copied_savedir_evaluates_its_own_weights(run, tmp_path):
    copy = shutil.copytree(run, tmp_path / "copy")
    shutil.rmtree(run)  # the original is gone
    for ext in ("index", "data-00000-of-00001"):  # the copy's newest checkpoint: iteration 1's weights
        shutil.copy(copy / "ckpt" / f"model-1.{ext}", copy / "ckpt" / f"model-2.{ext}")
    assert main.main([*TINY, "--savedir", str(copy), *TEST]) == 0
    assert json.loads((copy / "results.json").read_text())["train_iters"] == 1
    assert "checkpoint ckpt/model-2)" in (copy / "meta_test.log").read_text()


def test_moved_savedir_resumes_instead_of_retraining(trained, tmp_path):
    moved = shutil.copytree(trained, tmp_path / "a")
    os.rename(moved, tmp_path / "b")
    savedir = tmp_path / "b"
    train = [*TRAIN]
    train[train.index("2")] = "3"
    assert main.main([*TINY, "--savedir", str(savedir), *train]) == 0
    assert "resumed from iteration 2" in (savedir / "meta_train.log").read_text()
    assert ckpt_steps(savedir) == [1, 2, 3]


@pytest.mark.parametrize(
    "flags, message",
    [
        (["--maml"], "(noise: --noise metadrop there, --maml now)"),
        (["--way", "3"], "(way: --way 5 there, --way 3 now)"),
        (["--metasgd"], "(metasgd: no --metasgd there, --metasgd now)"),
        (["--max_shot", "3", "--noise", "metadrop"], "(max_shot: no --max_shot there, --max_shot 3 now)"),
    ],
)
def test_meta_test_with_other_settings_is_refused(run, capsys, flags, message):
    err = refused(capsys, [*TINY, "--savedir", str(run), *TEST, *flags], message)
    assert "meta_test with the training run's flags" in err
    assert results(run) == []


def test_meta_dropout_flags_on_a_maml_run_are_refused(run, capsys):
    config = json.loads((run / "config.json").read_text())
    (run / "config.json").write_text(json.dumps({**config, "noise": "none", "maml": True}))
    refused(capsys, [*TINY, "--savedir", str(run), *TEST], "--maml there, --noise metadrop now")


def test_meta_test_may_change_its_own_flags(run):
    flags = ["--n_test_mc_samp", "2", "--metabatch", "2", "--seed", "4", "--meta_lr", "1"]
    assert main.main([*TINY, "--savedir", str(run), *TEST, *flags]) == 0
    assert results(run) == ["results_test_seed4.json"]  # another seed: other episodes, its own file


def test_meta_test_with_other_inner_steps_and_shot_records_them(run):
    """Seed 002 trains with 5 inner steps and tests with 10: every model may; the results file says
    what the evaluation used beside what training used."""
    assert main.main([*TINY, "--savedir", str(run), *TEST, "--n_steps", "3", "--shot", "2"]) == 0
    result = json.loads((run / "results.json").read_text())
    assert result["test"]["n_steps"] == 3 and result["test"]["shot"] == 2
    assert result["train"]["n_steps"] == 1 and result["train"]["shot"] == 1
    assert "3 inner steps" in (run / "meta_test.log").read_text()


# ---- results are never replaced by another evaluation's, and written only where they can be


def test_each_evaluation_keeps_its_own_results(run, tmp_path):
    assert main.main([*TINY, "--savedir", str(run), *TEST]) == 0
    split_result = (run / "results.json").read_text()
    for name, seed in (("a.npz", 1), ("b.npz", 2)):
        eps = episodes_file(tmp_path / name, seed)
        assert main.main([*TINY, "--savedir", str(run), *TEST, "--episodes", eps]) == 0
    names = results(run)
    assert names[0] == "results.json" and (run / "results.json").read_text() == split_result
    assert [n[:10] for n in names[1:]] == ["results_a_", "results_b_"]
    table = report.report(str(run))
    assert table.count("| maml+metadrop |") == 0 and table.count("digits_5way_1shot") == 3


@pytest.fixture
def read_only(monkeypatch):
    """Make writes under a folder fail as on a read-only file system (portable: works as root too)."""
    import builtins

    folders = []
    real_open, real_os_open = builtins.open, os.open

    def denied(path):
        return any(os.path.abspath(path).startswith(str(f)) for f in folders)

    def fake_open(file, mode="r", *a, **k):
        if isinstance(file, str | os.PathLike) and set(mode) & set("wax+") and denied(file):
            raise OSError(errno.EROFS, "Read-only file system", str(file))
        return real_open(file, mode, *a, **k)

    def fake_os_open(path, flags, *a, **k):
        if flags & (os.O_WRONLY | os.O_RDWR | os.O_CREAT) and denied(path):
            raise OSError(errno.EROFS, "Read-only file system", str(path))
        return real_os_open(path, flags, *a, **k)

    monkeypatch.setattr(builtins, "open", fake_open)
    monkeypatch.setattr(os, "open", fake_os_open)
    return folders


@pytest.mark.parametrize("mode", [TRAIN, TEST, ["--mode", "export"]])
def test_read_only_savedir_is_refused_before_the_work(run, read_only, capsys, mode):
    read_only.append(run)
    assert code([*TINY, "--savedir", str(run), *mode]) == 2
    captured = capsys.readouterr()
    assert "cannot write to --savedir" in captured.err and "Read-only file system" in captured.err
    assert "accuracy" not in captured.out and "Traceback" not in captured.err


def test_savedir_under_a_file_is_refused(tmp_path, capsys):
    (tmp_path / "file").write_text("x")
    refused(
        capsys, [*TINY, "--savedir", str(tmp_path / "file" / "run"), *TRAIN], "a part of the path is a file"
    )


# ---- bad numbers and flags


@pytest.mark.parametrize(
    "flags, message",
    [
        (["--meta_lr", "nan"], "--meta_lr must be a positive number, not nan"),
        (["--meta_lr=-1e-3"], "--meta_lr must be a positive number"),
        (["--inner_lr=-0.1"], "--inner_lr must be a positive number"),
        (["--inner_lr", "inf"], "--inner_lr must be a positive number"),
        (["--n_steps", "0"], "--n_steps must be at least 1"),
        (["--n_steps", "0", "--maml"], "--n_steps must be at least 1"),
        (["--episodes", "x.npz"], "--episodes is for --mode meta_test only"),
        (["--noise", "bogus"], "--noise: unknown perturbation 'bogus'"),
    ],
)
def test_bad_flags_are_refused_before_anything_is_written(tmp_path, capsys, flags, message):
    refused(capsys, [*TINY, "--savedir", str(tmp_path / "s"), *TRAIN, *flags], message)
    assert not (tmp_path / "s" / "config.json").exists()


def test_export_refuses_episodes(run, capsys):
    refused(
        capsys, [*TINY, "--savedir", str(run), "--mode", "export", "--episodes", "e.npz"], "meta_test only"
    )


def prepared_split_argv(root, tmp_path):
    """Flags of a meta_train on an omniglot_small folder of prepared splits at root."""
    savedir = str(tmp_path / "s")
    return [*"--dataset omniglot_small --way 5".split(), "--data_root", str(root), "--savedir", savedir]


def test_prepared_split_with_nan_is_refused(tmp_path, capsys):
    root = tmp_path / "omni"
    root.mkdir()
    np.save(root / "train.npy", np.full((544, 20, 784), np.nan, np.float32))
    argv = prepared_split_argv(root, tmp_path)
    refused(capsys, [*argv, *TRAIN[:2]], "train.npy holds NaN or infinite values; delete it and run")


def test_report_refuses_nan_results(tmp_path, capsys):
    config = {"dataset": "digits", "way": 5, "shot": 1, "noise": "metadrop"}
    result = {"mean": float("nan"), "ci95": float("inf"), "n": 2, "train_iters": 1, "config": config}
    (tmp_path / "results.json").write_text(json.dumps(result))
    assert report.main([str(tmp_path)]) == 2
    captured = capsys.readouterr()
    assert "nan" not in captured.out and "not a finite number" in captured.err


# ---- files that are not what they should be


def test_episodes_given_a_npy_file(run, tmp_path, capsys):
    np.save(tmp_path / "x.npy", np.zeros((2, 3), np.float32))
    refused(
        capsys,
        [*TINY, "--savedir", str(run), *TEST, "--episodes", str(tmp_path / "x.npy")],
        "it is a .npy file",
    )


def test_text_files_are_not_called_pickled(run, tmp_path, capsys):
    (tmp_path / "eps.npz").write_text("xtr,ytr\n1,2\n")
    err = refused(
        capsys, [*TINY, "--savedir", str(run), *TEST, "--episodes", str(tmp_path / "eps.npz")], "neither"
    )
    assert "pickle" not in err
    root = tmp_path / "omni"
    root.mkdir()
    (root / "train.npy").write_text("not numpy\n")
    argv = prepared_split_argv(root, tmp_path)
    err = refused(capsys, [*argv, *TRAIN[:2]], "train.npy is not a .npy file: it is neither .npy nor .npz")
    assert "pickle" not in err


@pytest.mark.parametrize("content", ["not numpy\n", "npy"])
def test_plot_names_what_export_npz_is_not(tmp_path, capsys, content):
    import plot

    path = tmp_path / "export.npz"
    if content == "npy":
        with open(path, "wb") as f:
            np.save(f, np.zeros(3))
    else:
        path.write_text(content)
    assert plot.main(["--savedir", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "export.npz is not a .npz file: it is" in err and "pickle" not in err


@pytest.mark.parametrize("mode", [TRAIN, TEST, ["--mode", "export"]])
def test_invalid_config_json_is_refused(run, capsys, mode):
    (run / "config.json").write_text("{not json")
    refused(capsys, [*TINY, "--savedir", str(run), *mode], "config.json is not a readable JSON file")
    assert (run / "config.json").read_text() == "{not json" and ckpt_steps(run) == [1, 2]


def test_get_data_episodes_under_a_file(tmp_path, capsys):
    (tmp_path / "file").write_text("x")
    argv = ["--dataset", "digits", "--episodes", str(tmp_path / "file" / "eps.npz")]
    assert get_data.main(argv) == 2
    err = capsys.readouterr().err
    assert "cannot create" in err and "Traceback" not in err


# ---- checkpoints: corrupt, unreadable, piling up


def corrupt(savedir, step):
    (data_file,) = glob.glob(f"{savedir}/ckpt/model-{step}.data-*")
    with open(data_file, "r+b") as f:
        f.truncate(100)


def test_corrupt_newest_checkpoint_falls_back_to_an_older_one(run, capsys):
    corrupt(run, 2)
    assert main.main([*TINY, "--savedir", str(run), *TEST]) == 0
    assert "using the older checkpoint" in capsys.readouterr().err
    assert json.loads((run / "results.json").read_text())["train_iters"] == 1
    train = [*TRAIN]
    train[train.index("2")] = "3"
    assert main.main([*TINY, "--savedir", str(run), *train]) == 0  # resume too
    assert "resumed from iteration 1" in (run / "meta_train.log").read_text()


@pytest.mark.parametrize("damage", ["corrupt", "other shapes"])
def test_tensorflow_restore_errors_are_messages(run, capsys, damage):
    if damage == "corrupt":
        corrupt(run, 1)
        corrupt(run, 2)
    else:  # a config.json whose network is not the checkpoint's
        config = json.loads((run / "config.json").read_text())
        (run / "config.json").write_text(json.dumps({**config, "filters": 16}))
    eps = episodes_file(run / "e.npz", 0)  # the network's width comes from config.json
    refused(capsys, [*TINY, "--savedir", str(run), *TEST, "--episodes", eps], "can be restored")


def test_checkpoints_do_not_pile_up_across_resumes(run):
    train = [*TRAIN]
    i = train.index("2")
    for n in (3, 4, 5):
        train[i] = str(n)
        assert main.main([*TINY, "--savedir", str(run), *train]) == 0
    assert ckpt_steps(run) == [3, 4, 5]
    assert 'model_checkpoint_path: "model-5"' in (run / "ckpt" / "checkpoint").read_text()


# ---- the lock


def test_two_meta_trains_on_one_savedir(run, capsys):
    train = [*TRAIN]
    train[train.index("2")] = "3"
    with open(run / "meta_train.lock", "a+") as f:  # held as a running meta_train holds it
        fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        refused(capsys, [*TINY, "--savedir", str(run), *train], "another meta_train")
    assert ckpt_steps(run) == [1, 2]
    # A lock file left by a killed run (its process gone) does not block.
    (run / "meta_train.lock").write_text("999999999\n")
    assert main.main([*TINY, "--savedir", str(run), *train]) == 0


# ---- atomic writes


def test_atomic_removes_dead_processes_temporaries_and_syncs(tmp_path, monkeypatch):
    path = str(tmp_path / "f.json")
    dead = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True
    )
    stale, live = f"{path}.part{int(dead.stdout)}", f"{path}.part{os.getppid()}"
    for p in (stale, live):
        open(p, "w").close()
    events = []
    real_fsync, real_replace = os.fsync, os.replace
    monkeypatch.setattr(os, "fsync", lambda fd: events.append("fsync") or real_fsync(fd))
    monkeypatch.setattr(os, "replace", lambda a, b: events.append("replace") or real_replace(a, b))
    with atomic(path) as tmp, open(tmp, "w") as f:
        f.write("new")
    assert events == ["fsync", "replace", "fsync"]  # the file before the rename, its folder after
    assert not os.path.exists(stale) and os.path.exists(live)


def test_atomic_disk_full_at_the_flush_keeps_the_old_file(tmp_path, monkeypatch):
    """A full disk may show only when the data are flushed (delayed allocation, network file systems)."""
    path = tmp_path / "f.json"
    path.write_text("old")

    def full(fd):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "fsync", full)
    with pytest.raises(OSError), atomic(str(path)) as tmp, open(tmp, "w") as f:
        f.write("new")
    assert path.read_text() == "old" and os.listdir(tmp_path) == ["f.json"]


# ---- a real full disk and Ctrl-C (subprocesses)


def popen(*args, limit=None, **kw):
    def setlimit():
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))  # writes past it fail with EFBIG

    return subprocess.Popen(
        [sys.executable, "main.py", *args],
        cwd=ROOT,
        preexec_fn=setlimit if limit else None,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        **kw,
    )


def test_disk_full_during_a_checkpoint(run):
    before = (run / "ckpt" / "checkpoint").read_text()
    train = [*TRAIN]
    train[train.index("2")] = "4"
    proc = popen(*TINY, "--savedir", str(run), *train, limit=64 * 1024)
    _, err = proc.communicate(timeout=600)
    assert proc.returncode == 2, err[-2000:]
    assert "could not write the checkpoint of iteration 3" in err and "Traceback" not in err
    assert "kept: model-2, model-1" in err
    files = [f"model-{s}.{e}" for s in (1, 2) for e in ("data-00000-of-00001", "index")]
    assert sorted(os.listdir(run / "ckpt")) == ["checkpoint", *files]  # no half-written leftovers
    assert (run / "ckpt" / "checkpoint").read_text() == before
    assert main.main([*TINY, "--savedir", str(run), *TEST]) == 0  # still usable


def test_ctrl_c_stops_with_one_line_and_resumes(run):
    train = [*TRAIN]
    train[train.index("2")] = "100000"
    train[train.index("--save_freq") + 1] = "1000"
    proc = popen(*TINY, "--savedir", str(run), *train, "--log_freq", "1")
    log = run / "meta_train.log"
    deadline = time.time() + 300
    while not re.search(r"^iter 4 loss", log.read_text(), re.M) and time.time() < deadline:
        time.sleep(0.2)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=300)
    assert proc.returncode == 130, err[-2000:]
    stopped = re.search(r"^stopped at iteration (\d+); re-run the same command to resume$", err, re.M)
    assert stopped and "Traceback" not in err, err[-2000:]
    n = int(stopped.group(1))
    assert n >= 4 and ckpt_steps(run)[-1] == n  # the iterations done are saved
    train[train.index("100000")] = str(n + 1)
    assert main.main([*TINY, "--savedir", str(run), *train]) == 0
    assert f"resumed from iteration {n}" in log.read_text()
