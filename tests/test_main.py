"""main.py end to end on the offline digits data: training, testing, resuming, bad input."""

import json
import os
import re
import signal
import subprocess
import sys
import time

import pytest

import main

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TINY = ["--dataset", "digits", "--way", "5", "--shot", "1", "--query", "5", "--n_steps", "1"]


def run_main(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    proc = subprocess.run(
        [sys.executable, "main.py", *args], cwd=ROOT, capture_output=True, text=True, timeout=1800
    )
    if check:
        assert proc.returncode == 0, proc.stderr[-3000:]
    return proc


@pytest.mark.slow  # 80 iterations, then 60 test episodes: minutes on 2 cores
def test_meta_train_then_meta_test_beats_chance(tmp_path):
    savedir = str(tmp_path / "md")
    common = [*TINY, "--savedir", savedir, "--n_steps", "2", "--inner_lr", "0.4", "--metabatch", "2"]
    run_main(
        *common,
        "--mode",
        "meta_train",
        "--n_train_iters",
        "80",
        "--meta_lr",
        "3e-3",
        "--val_freq",
        "40",
        "--n_val_iters",
        "10",
        "--log_freq",
        "20",
    )
    log = open(os.path.join(savedir, "meta_train.log")).read()
    assert len(re.findall(r"^iter \d+ loss", log, re.M)) == 4
    assert len(re.findall(r"^iter \d+ val acc", log, re.M)) == 2
    proc = run_main(*common, "--mode", "meta_test", "--n_test_iters", "60", "--n_test_mc_samp", "4")
    mean, ci = map(float, re.search(r"accuracy: ([\d.]+) \+- ([\d.]+)", proc.stdout).groups())
    result = json.load(open(os.path.join(savedir, "results.json")))
    assert result["n"] == 60 and result["run"]["iterations"] == 80
    assert result["mean"] == pytest.approx(mean, abs=0.01) and result["ci95"] == pytest.approx(ci, abs=0.01)
    assert result["test"]["mc_samples"] == 4 and len(result["accuracies"]) == 60
    # 5-way chance is 20%; a short meta-training is clearly above it.
    assert mean - ci > 35.0, (mean, ci)


@pytest.mark.slow  # a main.py process killed mid-training, then resumed
def test_killed_run_resumes_from_its_checkpoint(tmp_path):
    savedir = tmp_path / "resume"
    args = [
        *TINY,
        "--metabatch",
        "1",
        "--savedir",
        str(savedir),
        "--mode",
        "meta_train",
        "--n_train_iters",
        "400",
        "--save_freq",
        "5",
        "--val_freq",
        "1000",
        "--n_val_iters",
        "1",
    ]
    proc = subprocess.Popen(
        [sys.executable, "main.py", *args], cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    ckpt = savedir / "ckpt" / "checkpoint"
    deadline = time.time() + 900
    while not ckpt.exists() and time.time() < deadline and proc.poll() is None:
        time.sleep(0.2)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert ckpt.exists(), "no checkpoint written before the kill"
    saved = int(re.search(r"model-(\d+)", ckpt.read_text()).group(1))
    assert 5 <= saved < 400
    args[args.index("400")] = str(saved + 10)
    run_main(*args)
    log = (savedir / "meta_train.log").read_text()
    resumed = int(re.search(r"resumed from iteration (\d+)", log).group(1))
    assert resumed >= saved  # nothing saved was lost, the run did not start over
    final = int(re.search(r"model-(\d+)", ckpt.read_text()).group(1))
    assert final == saved + 10
    # a re-run of a finished command does no work
    assert "already trained" in run_main(*args).stdout


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--way", "21", "--mode", "meta_train"], "--way 21 is larger than the 20 classes"),
        (["--shot", "100", "--query", "100"], "larger than the 174 examples per class"),
        (["--mode", "meta_test"], "run --mode meta_train with this --savedir first"),
        (["--dataset", "nosuch"], "unknown dataset"),
    ],
)
def test_bad_input_exits_2_with_a_clear_message(tmp_path, capsys, argv, message):
    base = ["--dataset", "digits", "--savedir", str(tmp_path / "s"), "--way", "5"]
    try:
        code = main.main([*base, *argv])
    except SystemExit as e:  # a flag error (argparse's exit)
        code = e.code
    assert code == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "s" / "ckpt").exists()


def test_unknown_flag_and_bad_values_exit_2():
    for argv in (["--savedir", "x", "--nosuch", "1"], ["--savedir", "x", "--way", "0"], ["--way", "5"]):
        with pytest.raises(SystemExit) as e:
            main.parse_args(argv)
        assert e.value.code == 2


def test_resume_with_other_settings_is_refused(tmp_path):
    savedir = str(tmp_path / "s")
    base = [
        *TINY,
        "--metabatch",
        "1",
        "--savedir",
        savedir,
        "--n_train_iters",
        "2",
        "--val_freq",
        "2",
        "--n_val_iters",
        "1",
    ]
    assert main.main(base) == 0
    before = open(os.path.join(savedir, "config.json")).read()
    assert main.main([*base[:-6], "--n_train_iters", "4", "--inner_lr", "0.3", *base[-4:]]) == 2
    assert main.main([*base, "--sampler", "original"]) == 2
    assert open(os.path.join(savedir, "config.json")).read() == before
    # A config written before --noise_hp and --sampler existed resumes with their defaults.
    config = json.loads(before)
    del config["noise_hp"], config["sampler"]
    with open(os.path.join(savedir, "config.json"), "w") as f:
        json.dump(config, f)
    assert main.main([*base[:-6], "--n_train_iters", "3", *base[-4:]]) == 0
