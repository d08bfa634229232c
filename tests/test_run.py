"""run.py: what both entry points share (Ctrl-C during a long session run, error lines, settings
and folders of a refused run, the messages' flags)."""

import os
import re
import signal
import subprocess
import sys
import time

import pytest

import main
import run
import transfer

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TINY = [
    *("--dataset", "digits", "--way", "5", "--shot", "1", "--query", "5"),
    *("--n_steps", "1", "--metabatch", "1", "--inner_lr", "0.4"),
]


@pytest.fixture(autouse=True)
def _env(monkeypatch):
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")  # main sets it; restored afterwards


def test_ctrl_c_during_a_long_meta_test_episode_acts_within_seconds(tmp_path):
    """A meta-test episode of 1000 noise samples takes 20-80 s on a 2-core CPU; Ctrl-C in it once
    waited for its end (85 s seen). Now the stop is felt within seconds and says what was kept."""
    savedir = str(tmp_path / "run")
    train = ["--mode", "meta_train", "--n_train_iters", "1", "--val_freq", "1", "--n_val_iters", "1"]
    assert main.main([*TINY, "--savedir", savedir, *train]) == 0
    test = ["--mode", "meta_test", "--n_test_iters", "2", "--n_test_mc_samp", "1000"]
    proc = subprocess.Popen(
        [sys.executable, "main.py", *TINY, "--savedir", savedir, *test],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    out = ""
    while "building the meta-test graph ... done" not in out:  # the episodes start after this line
        line = proc.stdout.readline()
        assert line, proc.stderr.read()[-2000:]
        out += line
    time.sleep(3)  # inside the first episode
    t0 = time.time()
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=600)
    waited = time.time() - t0
    assert proc.returncode == 130, err[-2000:]
    assert waited < 8, f"Ctrl-C took {waited:.0f} s to act"
    assert "its result was not written" in err and "Traceback" not in err, err[-2000:]
    assert not [n for n in os.listdir(savedir) if n.startswith("results")]


def test_full_disk_reason_is_the_disk_not_tensorflows_oom_hint():
    message = (
        "Graph execution error:\n\nDetected at node 'save/SaveV2' defined at (most recent call last):\n"
        '  File "main.py", line 1\n'
        "save/ckpt/model-3_temp/part-00000-of-00001.data-00000-of-00001.tempstate1; No space left on device\n"
        "\t [[{{node save/SaveV2}}]]\n"
        "Hint: If you want to see a list of allocated tensors when OOM happens, add "
        "report_tensor_allocations_upon_oom to RunOptions for current allocation info.\n"
    )
    assert run.reason(Exception(message)).endswith("; No space left on device")


def test_unreadable_config_json_of_a_transfer_run_is_one_line(tmp_path):
    """A truncated config.json beside a checkpoint was a raw ValueError from check_config."""
    args = transfer.parse_args(["--phase", "tgt", "--noise", "none", "--save_dir", str(tmp_path)])
    folder = tmp_path / "run"
    (folder / "ckpt").mkdir(parents=True)
    (folder / "ckpt" / "model-3.index").write_text("")
    (folder / "config.json").write_text('{"data": "stl1')
    with pytest.raises(run.UsageError, match="another --exp_name"):
        transfer.check_config(str(folder), args)
    assert (folder / "config.json").read_text() == '{"data": "stl1'  # kept as it was


def test_transfer_messages_name_its_own_flags(tmp_path):
    folder = str(tmp_path / "run")
    with transfer.open_folder(folder, []):
        with pytest.raises(run.UsageError, match=r"use another --exp_name$"):
            with transfer.open_folder(folder, []):
                pass
    (tmp_path / "file").write_text("")
    with pytest.raises(run.UsageError, match="choose another --save_dir"):
        transfer.open_folder(str(tmp_path / "file" / "run"), [])


def test_refused_transfer_run_leaves_no_new_folder(tmp_path, capsys, monkeypatch):
    """A source run refused once its folder was made (here: images that vanish in the network, a
    refusal that the flags' checks now make earlier, so the network says it) left config.json and the
    lock behind."""
    import nets

    def vanish(*args, **kwargs):
        raise ValueError("8x8 inputs vanish after the max-pools of this model")

    monkeypatch.setattr(nets, "Source", vanish)
    flags = [
        *("--phase", "src", "--data", "digits", "--model", "conv4_4", "--img_size", "16"),
        *("--batch_size", "8", "--num_split", "2", "--train_steps", "2", "--save_dir", str(tmp_path)),
    ]
    assert transfer.main(flags) == 2
    assert "raise --img_size" in capsys.readouterr().err
    assert os.listdir(tmp_path / "src") == []


def test_short_transfer_run_writes_its_log_and_shows_progress(tmp_path, capsys):
    """Fewer steps than --print_every once left no train.log and printed nothing for minutes."""
    flags = [
        *("--phase", "tgt", "--data", "digits", "--tgt_split", "test", "--n_per_class", "10"),
        *("--model", "conv4_4", "--img_size", "16", "--batch_size", "8", "--train_steps", "3"),
        *("--noise", "none", "--test_samples", "1", "--save_dir", str(tmp_path), "--exp_name", "t"),
    ]  # --print_every 200 (default)
    assert transfer.main(flags) == 0
    out, err = capsys.readouterr()
    assert out.startswith("transfer.py --phase tgt on digits") and "building the target graph" in out
    assert "3/3" in err and "loss=" in err and "acc=" in err  # the progress bar
    log = (tmp_path / "tgt" / "t" / "train.log").read_text().splitlines()
    assert log[0] == "started: 3 steps" and log[1].startswith("step 3 loss ") and " acc " in log[1]
    assert log[-1].startswith("final test accuracy")


def test_meta_train_says_what_it_builds_and_shows_validation(tmp_path, capsys):
    """The graph built in silence, the final validation sat under the training bar at 19/20, and
    validation accuracy reached only meta_train.log."""
    train = ["--mode", "meta_train", "--n_train_iters", "2", "--val_freq", "1", "--n_val_iters", "2"]
    assert main.main([*TINY, "--savedir", str(tmp_path / "run"), *train]) == 0
    out, err = capsys.readouterr()
    assert re.search(r"^building the meta-training graph \.\.\. done in \d+ s$", out, re.M), out
    shown = re.findall(r"^iter \d val acc .*$", out, re.M)
    assert shown == re.findall(
        r"^iter \d val acc .*$", (tmp_path / "run" / "meta_train.log").read_text(), re.M
    )
    assert len(shown) == 2 and "validation:" in err  # its own progress bar


def test_a_run_that_fails_unforeseen_leaves_no_new_folder(tmp_path, monkeypatch):
    """An error of no known kind (--seed -1 once raised numpy's ValueError in the first step) left
    config.json and the lock; the traceback stays (a bug to report), the folder goes."""

    def broken(*a, **k):
        raise ValueError("unforeseen")

    monkeypatch.setattr(transfer, "source_run", broken)
    flags = [
        *("--phase", "src", "--data", "digits", "--model", "conv4_4", "--img_size", "16"),
        *("--batch_size", "8", "--num_split", "2", "--train_steps", "2", "--save_dir", str(tmp_path)),
    ]
    with pytest.raises(ValueError, match="unforeseen"):
        transfer.main(flags)
    assert os.listdir(tmp_path / "src") == []
