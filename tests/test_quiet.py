"""quiet.py: TensorFlow's C++ start-up lines stay off the terminal of the scripts unless asked for;
main.py says once what it runs on; a --gpu_id TensorFlow cannot see is a warning."""

import os
import re
import subprocess
import sys
from types import SimpleNamespace

import pytest

import quiet

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CPP_LINE = re.compile(r"^[IWEF]\d{4} |absl::InitializeLog|oneDNN custom operations|cpu_feature_guard", re.M)


def test_tensorflow_does_print_cpp_lines_when_asked():
    """The check below can fail: with METADROP_VERBOSE=1 (--verbose: test_verbose) the lines come."""
    env = {k: v for k, v in os.environ.items() if k != "TF_CPP_MIN_LOG_LEVEL"}
    script = "import sys, quiet; quiet.start(sys.argv[1:]); import tensorflow"
    p = subprocess.run(
        [sys.executable, "-c", script],
        cwd=ROOT,
        env={**env, "PYTHONPATH": ROOT, quiet.VERBOSE_ENV: "1"},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert p.returncode == 0, p.stderr
    assert CPP_LINE.search(p.stderr), p.stderr


@pytest.mark.parametrize(
    "argv, env, expected",
    [
        ([], {}, False),
        (["--verbose"], {}, True),
        (["--verb"], {}, True),  # argparse takes unambiguous prefixes
        (["--v"], {}, True),  # a prefix of --verbose only in get_data.py and plot.py; main.py refuses it
        (["--", "--x"], {}, False),
        (["--seed", "1"], {quiet.VERBOSE_ENV: "1"}, True),
        ([], {quiet.VERBOSE_ENV: "0"}, False),
    ],
)
def test_verbose(argv, env, expected, monkeypatch):
    monkeypatch.delenv(quiet.VERBOSE_ENV, raising=False)
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    assert quiet.verbose(argv) is expected


def fake_tf(gpus: list[str]) -> SimpleNamespace:
    devices = [SimpleNamespace(name=f"/physical_device:GPU:{i}") for i in range(len(gpus))]
    details = dict(zip(map(id, devices), gpus))
    return SimpleNamespace(
        config=SimpleNamespace(
            list_physical_devices=lambda kind: devices if kind == "GPU" else [],
            experimental=SimpleNamespace(get_device_details=lambda d: {"device_name": details[id(d)]}),
        )
    )


def test_start_line_and_missing_gpu_warning(capsys):
    threads = len(os.sched_getaffinity(0))
    assert quiet.device(fake_tf([]), None, False) == f"running on CPU ({threads} threads), XLA off"
    assert capsys.readouterr().err == ""  # no --gpu_id given: nothing to warn about
    assert quiet.device(fake_tf([]), "--gpu_id 3", True) == f"running on CPU ({threads} threads), XLA on"
    err = capsys.readouterr().err
    assert "--gpu_id 3" in err and "continues on the CPU" in err
    assert (
        quiet.device(fake_tf(["NVIDIA H100 80GB HBM3"]), "--gpu_id 1", True)
        == "running on GPU 1 (NVIDIA H100 80GB HBM3), XLA on"
    )
    assert quiet.device(fake_tf(["NVIDIA A100"]), None, False) == "running on GPU 0 (NVIDIA A100), XLA off"
    assert (
        quiet.device(fake_tf(["NVIDIA A100"]), "--gpus 2,3", False)
        == "running on GPU 2 (NVIDIA A100), XLA off"
    )
    assert capsys.readouterr().err == ""
    quiet.device(fake_tf([]), "--gpus 5", False)
    assert (
        capsys.readouterr().err
        == "warning: --gpus 5: TensorFlow sees no such GPU; the run continues on the CPU\n"
    )


def test_main_py_says_once_where_it_runs_and_nothing_from_cpp(tmp_path):
    tiny = ["--dataset", "digits", "--way", "2", "--shot", "1", "--query", "1", "--n_steps", "1"]
    tiny += ["--metabatch", "1", "--n_train_iters", "1", "--val_freq", "100", "--savedir", str(tmp_path)]
    env = {k: v for k, v in os.environ.items() if k not in ("TF_CPP_MIN_LOG_LEVEL", quiet.VERBOSE_ENV)}
    p = subprocess.run(
        [sys.executable, "main.py", *tiny, "--gpu_id", "99", "--xla", "off", "--maml"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert p.returncode == 0, p.stderr
    assert re.findall(r"^running on .*$", p.stdout, re.M) == [
        f"running on CPU ({len(os.sched_getaffinity(0))} threads), XLA off"
    ]
    # Python's stderr still reaches the terminal; TensorFlow's C++ lines do not.
    assert "warning: --gpu_id 99: TensorFlow sees no such GPU; the run continues on the CPU" in p.stderr
    assert CPP_LINE.findall(p.stderr) == [], p.stderr


def test_transfer_py_error_is_one_line_without_cpp_lines(tmp_path):
    # transfer.py (and run.sh over it) keeps TensorFlow's C++ lines off the terminal as main.py does;
    # this refusal comes after TensorFlow is loaded (--verbose shows the lines: the test can fail).
    flags = ["--phase", "tgt", "--data", "digits", "--tgt_split", "test", "--model", "conv4_4"]
    flags += ["--img_size", "16", "--noise", "none", "--fine_tune", str(tmp_path / "nonexistent")]
    env = {k: v for k, v in os.environ.items() if k not in ("TF_CPP_MIN_LOG_LEVEL", quiet.VERBOSE_ENV)}
    p = subprocess.run(
        [sys.executable, "transfer.py", *flags, "--save_dir", str(tmp_path)],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert p.returncode == 2
    assert p.stderr.splitlines() == [p.stderr.strip()] and p.stderr.startswith("error: --fine_tune"), p.stderr
    assert os.listdir(tmp_path) == []
