"""Failure cases of issues #14 and #20, tried as a new user would: each works, or exits 2 (130 after
Ctrl-C) with a message saying what to do, and nothing written before is lost. One tiny digits run is
trained once; each case works on its own copy of it. Ctrl-C is sent from hooks at known moments,
not after a delay."""

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
import episodic
import get_data
import main
import report
import results as results_format
import run as run_module
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
    assert json.loads((copy / "results.json").read_text())["run"]["iterations"] == 1
    assert "checkpoint ckpt/model-2)" in (copy / "meta_test.log").read_text()


def test_moved_savedir_resumes_instead_of_retraining(trained, tmp_path, capsys):
    moved = shutil.copytree(trained, tmp_path / "a")
    os.rename(moved, tmp_path / "b")
    savedir = tmp_path / "b"
    train = [*TRAIN]
    train[train.index("2")] = "3"
    assert main.main([*TINY, "--savedir", str(savedir), *train]) == 0
    said = f"{savedir}: resuming from iteration 2 of 3 (ckpt/model-2); for a new run, stop this one (Ctrl-C)"
    assert said in capsys.readouterr().out
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
    assert result["test"]["n_steps"] == 3 and result["shot"] == 2
    assert result["settings"]["n_steps"] == 1
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
    with pytest.raises(SystemExit) as e:  # refused when the flags are read
        get_data.main(argv)
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert f"{tmp_path / 'file'} is a file, not a folder" in err and "Traceback" not in err


# ---- checkpoints: corrupt, unreadable, piling up


def corrupt(savedir, step):
    (data_file,) = glob.glob(f"{savedir}/ckpt/model-{step}.data-*")
    with open(data_file, "r+b") as f:
        f.truncate(100)


def test_corrupt_newest_checkpoint_falls_back_to_an_older_one(run, capsys):
    corrupt(run, 2)
    assert main.main([*TINY, "--savedir", str(run), *TEST]) == 0
    err = capsys.readouterr().err
    assert "using the older checkpoint" in err and "Graph execution error" not in err
    assert json.loads((run / "results.json").read_text())["run"]["iterations"] == 1
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
    assert "File too large" in err and "Graph execution error" not in err  # the line that says why
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


# ---- issue #20: every flag is checked when the flags are read, before TensorFlow and any file

FLAG_CASES = [
    (["--seed", "-1"], "--seed must be an integer from 0"),
    (["--way", "0"], "--way must be at least 1"),
    (["--n_test_iters", "1"], "--n_test_iters must be at least 2"),
    (["--noise", "mixup", "--noise_hp", "gamma=x"], "gamma='x' is not a float"),
    (["--noise", "mixup", "--noise_hp", "beta=1"], "mixup has no hyperparameter 'beta'"),
    (["--mode", "meta_test", "--attack", "l3", "--attack_eps", "0"], "--attack l3: choose one of"),
    (["--adv_inner", "l3", "--adv_eps", "0.1"], "--adv_inner l3: choose one of"),
    (["--xla", "on", "--xla_cache", "{file}/cache"], "--xla_cache {file}/cache: {file} is a file"),
]


def test_flag_errors_come_before_tensorflow_and_any_file(tmp_path):
    """In a fresh process: each bad flag exits 2 naming the flag, TensorFlow never imported, no
    savedir made (the XLA cache under a file and --seed -1 once failed only in TensorFlow or numpy,
    after config.json was written)."""
    (tmp_path / "file").write_text("x")
    cases = [
        ([a.format(file=tmp_path / "file") for a in f], m.format(file=tmp_path / "file"))
        for f, m in FLAG_CASES
    ]
    script = f"""
import contextlib, io, json, sys
sys.path.insert(0, {ROOT!r})
import main
out = []
for flags, _ in {cases!r}:
    err = io.StringIO()
    with contextlib.redirect_stderr(err):
        try:
            main.main([*{TINY!r}, "--savedir", {str(tmp_path / "s")!r}, *flags])
            code = 0
        except SystemExit as e:
            code = e.code
    out.append([code, err.getvalue(), "tensorflow" in sys.modules])
print(json.dumps(out))
"""
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    for (flags, message), (code, err, tf) in zip(cases, json.loads(proc.stdout)):
        assert code == 2 and message in err and "Traceback" not in err, (flags, err)
        assert not tf, f"{flags}: TensorFlow was imported before the flag error"
    assert not (tmp_path / "s").exists()


@pytest.mark.parametrize(
    "script, argv",
    [
        ("get_data.py", ["--dataset", "digits", "--episodes", "e.npz", "--seed", "-1"]),
        ("plot.py", ["--savedir", ".", "--layer", "0"]),
        ("report.py", [".", "--markdown", "."]),
    ],
)
def test_other_entry_points_check_their_flags(script, argv, capsys):
    module = __import__(script[:-3])
    with pytest.raises(SystemExit) as e:
        module.main(argv)
    assert e.value.code == 2 and "error:" in capsys.readouterr().err


# ---- Ctrl-C at any moment: one line, exit 130, nothing half-written

# Sends SIGINT to the process when `module` is imported: Ctrl-C while the modules load.
CTRL_C_AT_IMPORT = """
import os, signal, sys, runpy
class Hook:
    def find_spec(self, name, path=None, target=None):
        if name == {module!r}:
            os.kill(os.getpid(), signal.SIGINT)
        return None
sys.meta_path.insert(0, Hook())
sys.argv = {argv!r}
runpy.run_path(sys.argv[0], run_name="__main__")
"""


@pytest.mark.parametrize(
    "module, argv",
    [
        ("numpy", ["main.py", *TINY, "--savedir", "{savedir}", *TEST]),
        ("tensorflow", ["main.py", *TINY, "--savedir", "{savedir}", *TEST]),
        ("numpy", ["get_data.py", "--dataset", "digits"]),
        ("numpy", ["plot.py", "--savedir", "{savedir}"]),
        ("data.files", ["report.py", "{savedir}"]),
    ],
)
def test_ctrl_c_while_modules_load(run, module, argv):
    """Ctrl-C in the first second (the flags being read, TensorFlow being imported)."""
    argv = [a.format(savedir=run) for a in argv]
    script = CTRL_C_AT_IMPORT.format(module=module, argv=argv)
    proc = subprocess.run(
        [sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 130 and "Traceback" not in proc.stderr, proc.stderr[-2000:]
    assert re.search(r"^stopped", proc.stderr, re.M)
    assert results(run) == [] and not (run / "meta_test.log").exists()


def interrupt():
    os.kill(os.getpid(), signal.SIGINT)  # KeyboardInterrupt at the next bytecode, as after Ctrl-C


def stopped_line(err):
    """The one line main prints after Ctrl-C, and no traceback."""
    lines = [line for line in err.splitlines() if line.startswith("stopped")]
    assert len(lines) == 1 and "Traceback" not in err, err[-2000:]
    return lines[0]


def interrupt_first_call(monkeypatch, owner, name, before=True):
    """Ctrl-C at the first call of owner.name (before it runs, or once it returns)."""
    real, calls = getattr(owner, name), []

    def hooked(*a, **k):
        calls.append(1)
        if before and len(calls) == 1:
            interrupt()
        out = real(*a, **k)
        if not before and len(calls) == 1:
            interrupt()
        return out

    monkeypatch.setattr(owner, name, hooked)


def resume_to(n):
    train = [*TRAIN]
    train[train.index("2")] = str(n)
    return train


def test_ctrl_c_while_the_graph_is_built_leaves_no_new_savedir(tmp_path, monkeypatch, capsys):
    import model

    # Ctrl-C's KeyboardInterrupt raised at the first call that builds the training graph, in the
    # main thread itself: a real SIGINT is handled at some later bytecode, which on a busy machine
    # can be inside a finalizer, where Python prints it and goes on.
    real = model.Model.objective

    def interrupted(self, *a, **k):
        monkeypatch.setattr(model.Model, "objective", real)
        raise KeyboardInterrupt

    monkeypatch.setattr(model.Model, "objective", interrupted)
    savedir = tmp_path / "new"
    assert main.main([*TINY, "--savedir", str(savedir), *TRAIN]) == 130
    stopped_line(capsys.readouterr().err)
    assert not savedir.exists()  # it held only the lock and config.json


def test_ctrl_c_while_the_prefetch_thread_waits_on_a_full_queue(run, monkeypatch, capsys):
    class Blocked(episodic.Prefetcher):
        """The second next() waits until the worker has filled the queue and blocks, then Ctrl-C."""

        calls = 0

        def __next__(self):
            Blocked.calls += 1
            if Blocked.calls == 2:
                while not self._queue.full():
                    time.sleep(0.01)
                time.sleep(0.3)  # the worker is now blocked in put()
                interrupt()
            return super().__next__()

    monkeypatch.setattr(episodic, "Prefetcher", Blocked)
    t0 = time.time()
    assert main.main([*TINY, "--savedir", str(run), *resume_to(5)]) == 130
    assert time.time() - t0 < 60
    assert stopped_line(capsys.readouterr().err).startswith("stopped at iteration 3;")
    assert ckpt_steps(run)[-1] == 3


def test_ctrl_c_during_validation_saves_the_iteration(run, monkeypatch, capsys):
    real = episodic.Runner.evaluator

    def evaluator(self, n_tasks):
        run_ = real(self, n_tasks)

        def interrupted(*a):
            interrupt()
            return run_(*a)

        return interrupted

    monkeypatch.setattr(episodic.Runner, "evaluator", evaluator)
    assert main.main([*TINY, "--savedir", str(run), *resume_to(4)]) == 130  # validation at 4
    assert stopped_line(capsys.readouterr().err).startswith("stopped at iteration 4;")
    assert ckpt_steps(run)[-1] == 4
    assert "iter 4 val acc" not in (run / "meta_train.log").read_text()


def test_ctrl_c_during_a_checkpoint_write(run, monkeypatch, capsys):
    import tensorflow as tf

    interrupt_first_call(monkeypatch, tf.compat.v1.train.Saver, "save", before=False)
    assert main.main([*TINY, "--savedir", str(run), *resume_to(5)]) == 130
    assert stopped_line(capsys.readouterr().err).startswith("stopped at iteration 3;")
    assert (
        ckpt_steps(run)[-1] == 3
        and 'model_checkpoint_path: "model-3"' in (run / "ckpt" / "checkpoint").read_text()
    )
    assert main.main([*TINY, "--savedir", str(run), *resume_to(4)]) == 0
    assert "resumed from iteration 3" in (run / "meta_train.log").read_text()


@pytest.mark.parametrize("moment", ["evaluation", "results write"])
def test_ctrl_c_during_meta_test(run, monkeypatch, capsys, moment):
    if moment == "evaluation":
        interrupt_first_call(monkeypatch, episodic, "evaluate")
    else:  # half of the JSON written, then Ctrl-C

        def dump(obj, f, **kw):
            f.write("{")
            interrupt()

        monkeypatch.setattr(json, "dump", dump)
    assert main.main([*TINY, "--savedir", str(run), *TEST]) == 130
    stopped_line(capsys.readouterr().err)
    assert results(run) == [] and not glob.glob(f"{run}/*.part*")
    log = run / "meta_test.log"
    assert not log.exists() or "results.json" not in log.read_text()  # no line names a result not written


def test_ctrl_c_during_export(run, monkeypatch, capsys):
    interrupt_first_call(monkeypatch, episodic.Runner, "restore", before=False)
    assert main.main([*TINY, "--savedir", str(run), "--mode", "export"]) == 130
    stopped_line(capsys.readouterr().err)
    assert not (run / "export.npz").exists()


def test_prefetch_close_returns_when_the_worker_cannot(monkeypatch):
    """A KeyboardInterrupt can leave the queue's lock taken (between its acquire and the `with`);
    the worker then blocks in put() for good, and close() must not wait for it."""
    from data import prefetch

    monkeypatch.setattr(prefetch, "JOIN_TIMEOUT", 1.0, raising=False)
    ahead = prefetch.Prefetcher(iter(range(100)))
    next(ahead)
    ahead._queue.mutex.acquire()  # as left by the interrupted consumer
    try:
        closer = __import__("threading").Thread(target=ahead.close, daemon=True)
        closer.start()
        closer.join(10)
        assert not closer.is_alive(), "close() waited for a worker that cannot finish"
    finally:
        ahead._queue.mutex.release()


# ---- silent wrong states


def test_relative_savedir_checkpoint_state_and_no_deprecation_warning(tmp_path):
    """tf.train.latest_checkpoint finds a relative savedir's checkpoint (it named "../../model-1"),
    and TensorFlow's update_checkpoint_state deprecation warning no longer shows (fresh process:
    TensorFlow warns once)."""
    script = f"""
import os, sys
sys.path.insert(0, {ROOT!r})
import tensorflow as tf
from run import Checkpoints
g = tf.Graph()
with g.as_default():
    tf.compat.v1.get_variable("v", [3])
    saver = tf.compat.v1.train.Saver()
    init = tf.compat.v1.global_variables_initializer()
os.makedirs("rel/run/ckpt")
with tf.compat.v1.Session(graph=g) as sess:
    sess.run(init)
    Checkpoints("rel/run").save(saver, sess, 1)
print(tf.train.latest_checkpoint("rel/run/ckpt"))
"""
    proc = subprocess.run(
        [sys.executable, "-c", script], cwd=tmp_path, capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.split()[-1] == "rel/run/ckpt/model-1"
    assert "deprecated" not in proc.stderr, proc.stderr[-2000:]


@pytest.mark.parametrize("stop", [True, False])
def test_divergence_is_named_with_what_was_meant(tmp_path, monkeypatch, capsys, stop):
    """--meta_lr 3e4 (for 3e-4) trained to the end at chance with no word: now a stop naming the
    typo. The warning below the stop is seen by lowering its threshold under the first loss."""
    lr = "3e4" if stop else "1e-3"
    if not stop:
        monkeypatch.setattr(run_module, "WARN_GROWTH", 1.0)  # the first loss (~2.7) is above ln 5 = 1.61
    savedir = tmp_path / "s"
    assert code([*TINY, "--savedir", str(savedir), *resume_to(3), "--meta_lr", lr]) == (2 if stop else 0)
    err = capsys.readouterr().err
    if stop:
        assert "--meta_lr 30000 is an Adam step above 1 (did you mean 3e-04?)" in err
        assert "the run diverged and was stopped" in err and "Traceback" not in err
    else:
        assert err.count("probably diverging") == 1 and "Lower --meta_lr or --inner_lr" in err
    assert "the meta-training loss is" in (savedir / "meta_train.log").read_text()


def test_step_warnings():
    args = main.parse_args(["--savedir", "x", "--inner_lr", "50", "--meta_lr", "1e-3"])
    assert episodic.step_warnings(args) == [
        "--inner_lr 50 is an inner SGD step above 1 (did you mean 5e-01?)"
    ]


def test_an_older_checkpoint_never_replaces_a_newer_result(run, capsys):
    assert main.main([*TINY, "--savedir", str(run), *TEST]) == 0
    before = (run / "results.json").read_text()
    corrupt(run, 2)
    err = refused(capsys, [*TINY, "--savedir", str(run), *TEST], "holds the result of iteration 2")
    assert "move results.json out of the savedir" in err
    assert (run / "results.json").read_text() == before


def test_failed_results_write_names_the_file_and_logs_nothing(run, monkeypatch, capsys):
    def full(path, obj):
        raise OSError(errno.ENOSPC, "No space left on device", path)

    monkeypatch.setattr(results_format, "write", full)
    err = refused(capsys, [*TINY, "--savedir", str(run), *TEST], f"could not write {run}/results.json")
    assert "the disk is full" in err and "was not saved" in err
    log = run / "meta_test.log"
    assert not log.exists() or "results.json" not in log.read_text()


def test_one_episode_has_no_interval(run, tmp_path, capsys):
    split = data.load("digits").split("test")
    write_file(str(tmp_path / "one.npz"), split, 5, 1, 5, 1, 0, {"dataset": "digits"})
    refused(
        capsys,
        [*TINY, "--savedir", str(run), *TEST, "--episodes", str(tmp_path / "one.npz")],
        "holds 1 episode",
    )
    assert results(run) == []
    assert episodic.accuracy_line(np.array([0.4]))[1] == "40.00 (1 episode: no interval)"
    with pytest.raises(ValueError):
        episodic.ci95(np.array([0.4]))


# ---- messages that mislead


def test_dataset_and_data_root_that_do_not_match(tmp_path, capsys, monkeypatch):
    """omniglot_small's prepared splits given as omniglot's: the pair of flags is named; nothing is
    deleted or written over, by main.py or by get_data.py."""
    root = tmp_path / "omniglot_small"
    root.mkdir()
    for s in ("train", "test"):
        np.save(root / f"{s}.npy", np.zeros((4, 20, 784), np.float32))
    before = {p: p.read_bytes() for p in root.iterdir()}
    argv = ["--dataset", "omniglot", "--data_root", str(root), "--savedir", str(tmp_path / "s")]
    err = refused(capsys, [*argv, *TRAIN[:2]], "--dataset and --data_root do not match")
    assert "delete" not in err
    monkeypatch.setenv("METADROP_OMNIGLOT_URL", "http://127.0.0.1:9")  # nothing may be fetched
    assert get_data.main(["--dataset", "omniglot", "--data_root", str(root)]) == 2
    err = capsys.readouterr().err
    assert "--dataset and --data_root do not match" in err and "delete" not in err
    assert {p: p.read_bytes() for p in root.iterdir()} == before


@pytest.mark.parametrize("error", [MemoryError(), OSError(errno.EACCES, "Permission denied")])
def test_mimgnet_cache_kept_on_resource_errors(tmp_path, monkeypatch, error):
    from data import mimgnet

    pkl = tmp_path / "mini-imagenet-cache-test.pkl"
    pkl.write_bytes(b"a valid cache")

    def load(self):
        raise error

    monkeypatch.setattr(mimgnet.ArraysOnly, "load", load)
    with pytest.raises(data.DataError) as e:
        mimgnet._convert(str(pkl), "test", str(tmp_path / "test.npy"), "python get_data.py --dataset mimgnet")
    assert pkl.exists() and "it is kept" in str(e.value) and "not a miniImageNet cache" not in str(e.value)
    assert ("memory" if isinstance(error, MemoryError) else "permission denied") in str(e.value)


def test_resource_names_what_ran_out():
    from data.files import resource

    e = OSError(errno.ENOSPC, "No space left on device", "/x/results.json")
    assert resource(e) == "/x/results.json: No space left on device (the disk is full: free space)"
    assert "out of memory" in resource(OSError(errno.ENOMEM, "Cannot allocate memory"))


def test_tensorflow_errors_show_the_line_that_says_why():
    from run import reason

    class OpError(Exception):
        message = (
            "Graph execution error:\n\nDetected at node 'save/SaveV2' defined at (most recent call last):\n"
            "    File \"main.py\", line 7, in <module>\nNode: 'save/SaveV2'\n"
            "/r/ckpt/model-3.data-00000-of-00001.tempstate1; File too large\n\t [[{{node save/SaveV2}}]]"
        )

    assert reason(OpError()) == "/r/ckpt/model-3.data-00000-of-00001.tempstate1; File too large"


def test_config_json_of_the_wrong_type(run, capsys):
    config = json.loads((run / "config.json").read_text())
    (run / "config.json").write_text(json.dumps({**config, "way": "5"}))
    err = refused(
        capsys, [*TINY, "--savedir", str(run), *TEST], 'config.json: way is "5", which is not an integer'
    )
    assert "--way 5 there, --way 5 now" not in err


@pytest.mark.parametrize("mode", [TRAIN, TEST])
def test_savedir_that_lost_its_config_json(run, capsys, mode):
    (run / "config.json").unlink()
    err = refused(capsys, [*TINY, "--savedir", str(run), *mode], "holds checkpoints but")
    assert "restore config.json from a copy" in err and "run --mode meta_train" not in err
    assert ckpt_steps(run) == [1, 2]


def test_savedir_that_is_a_file(tmp_path, capsys):
    (tmp_path / "run").write_text("x")
    refused(capsys, [*TINY, "--savedir", str(tmp_path / "run"), *TEST], "is a file, not a folder")


# ---- rough edges


def test_already_trained_is_answered_before_the_graph(run, monkeypatch, capsys):
    def no_graph(*a, **k):
        raise AssertionError("the graph was built")

    monkeypatch.setattr(episodic, "Runner", no_graph)
    assert main.main([*TINY, "--savedir", str(run), *TRAIN]) == 0
    out = capsys.readouterr().out
    assert (
        f"{run}: already trained for 2 iterations (--n_train_iters 2); evaluate it with --mode meta_test"
        in out
    )
    assert "a larger --n_train_iters" in out and "another --savedir" in out


def test_refused_run_leaves_no_new_savedir(tmp_path, capsys):
    root = tmp_path / "empty"
    root.mkdir()
    argv = prepared_split_argv(root, tmp_path)
    refused(capsys, [*argv, *TRAIN[:2]], "omniglot_small is not prepared in")  # an empty folder
    assert not (tmp_path / "s").exists()


@pytest.mark.parametrize("reader", ["split", "archive"])
def test_unreadable_is_not_malformed(tmp_path, monkeypatch, reader):
    """An I/O or permission error on a prepared split or an Omniglot archive keeps the file and names
    the resource; it once said "not a readable ...; delete it"."""
    from data import files, omniglot

    def denied(*a, **k):
        raise OSError(errno.EACCES, "Permission denied", str(tmp_path / "x.npy"))

    path = tmp_path / "x.npy"
    if reader == "split":
        np.save(path, np.zeros((2, 20, 784), np.float32))
        monkeypatch.setattr(files.np, "load", denied)
        call = lambda: files.open_split(str(path), (2, 20, 784), ("float32",), "retry")  # noqa: E731
    else:
        path.write_bytes(b"PK\x03\x04")
        monkeypatch.setattr(omniglot.zipfile, "ZipFile", denied)
        call = lambda: omniglot.read_characters([str(path)], "retry")  # noqa: E731
    with pytest.raises(data.DataError) as e:
        call()
    assert (
        "it is kept" in str(e.value) and "permission denied" in str(e.value) and "delete" not in str(e.value)
    )


@pytest.mark.parametrize(
    "error, deleted",
    [
        (MemoryError(), False),
        (OSError(errno.EIO, "Input/output error"), False),
        ("unavailable", False),  # as tar_members raises it
        (ValueError("not a tar"), True),  # shown malformed
    ],
)
def test_downloaded_archive_deleted_only_when_malformed(tmp_path, error, deleted):
    from data.archives import unreadable

    path = tmp_path / "images.tar"
    path.write_bytes(b"an archive")
    if error == "unavailable":
        error = data.Unavailable("cannot read x (disk)")
    e = unreadable(str(path), True, "images.tar", "retry", error)
    assert isinstance(e, data.DataError) and path.exists() != deleted
    assert ("it is kept" in str(e) or "(disk)" in str(e)) != deleted


# ---- a new user's first commands (paths, signs, resumes)


@pytest.mark.parametrize(
    "flags, message",
    [
        (
            ["--data_root", "{tmp}/typo"],
            "--data_root {tmp}/typo does not exist: prepare omniglot_small there with: "
            "python get_data.py --dataset omniglot_small --data_root {tmp}/typo",
        ),
        (
            [],
            "--dataset omniglot_small: {tmp}/data/omniglot_small does not exist: prepare omniglot_small "
            "there with: python get_data.py --dataset omniglot_small (or give its folder with --data_root)",
        ),
        (
            ["--ood_dataset", "svhn", "--data_root", "{tmp}"],
            "--ood_dataset svhn: {tmp}/data/svhn does not exist",
        ),
    ],
)
def test_missing_data_folder_is_named_before_the_savedir(tmp_path, monkeypatch, capsys, flags, message):
    """A typo'd --data_root (or a dataset not prepared) once surfaced only after the savedir was made."""
    monkeypatch.setenv("METADROP_DATA", str(tmp_path / "data"))

    def no_savedir(*a, **k):
        raise AssertionError("the savedir was made before the data folder was checked")

    monkeypatch.setattr(episodic, "check_writable", no_savedir)
    argv = ["--dataset", "omniglot_small", "--way", "5", "--savedir", str(tmp_path / "s"), *TRAIN[:2]]
    refused(capsys, [*argv, *(f.format(tmp=tmp_path) for f in flags)], message.format(tmp=tmp_path))
    assert not (tmp_path / "s").exists()


ATTACK = ["--attack", "linf", "--attack_eps"]


@pytest.mark.parametrize(
    "flags, message",
    [
        ([*ATTACK, "-0.1"], "--attack_eps -0.1: the radius -0.1 is negative; give radii of at least 0"),
        ([*ATTACK, "-0.1,0.2"], "--attack_eps -0.1,0.2: the radius -0.1 is negative"),
        ([*ATTACK, "0,-.5"], "--attack_eps 0,-0.5: the radius -0.5 is negative"),
        ([*ATTACK, "0,nan"], "the radius nan is not a number"),
        (["--inner_lr", "-1e-3"], "--inner_lr must be a positive number, not -0.001"),
    ],
)
def test_negative_values_are_named_not_taken_for_flags(tmp_path, capsys, flags, message):
    """argparse alone read -0.1,0.2 and -1e-3 as flags ("expected one argument")."""
    refused(capsys, [*TINY, "--savedir", str(tmp_path / "s"), *TEST, *flags], message)
    assert not (tmp_path / "s").exists()


def test_vib_run_of_the_earlier_scale_is_refused_and_others_resume(run, monkeypatch, capsys):
    """VIB's sigma once started at softplus(0) with the KL summed over units; a config.json without
    noise_version is of that scale for VIB, and of the only one for every other perturbation."""

    def no_graph(*a, **k):
        raise AssertionError("the graph was built")

    monkeypatch.setattr(episodic, "Runner", no_graph)
    config = json.loads((run / "config.json").read_text())
    old = {k: v for k, v in config.items() if k != "noise_version"}
    vib = {**old, "noise": "vib", "noise_hp": {"beta": 0.001}}
    (run / "config.json").write_text(json.dumps(vib))
    for mode in (TRAIN, TEST):
        err = refused(
            capsys,
            [*TINY, "--noise", "vib", "--savedir", str(run), *mode],
            "holds a Variational information bottleneck run of parametrisation version 1; this code's is "
            "version 2 (sigma starts at softplus(-5)",
        )
        assert "another --savedir" in err and len(err.strip().splitlines()) == 1
    assert results(run) == [] and ckpt_steps(run) == [1, 2]
    (run / "config.json").write_text(json.dumps({**vib, "noise_version": 2}))
    assert main.main([*TINY, "--noise", "vib", "--savedir", str(run), *TRAIN]) == 0
    (run / "config.json").write_text(json.dumps(old))  # a Meta-dropout run's config before versions
    assert main.main([*TINY, "--savedir", str(run), *TRAIN]) == 0
    assert capsys.readouterr().out.count("already trained for 2 iterations") == 2
    assert json.loads((run / "config.json").read_text()) == old  # an answered run rewrites nothing
