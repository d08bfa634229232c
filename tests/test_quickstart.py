"""runfiles/quickstart.sh run with a stub `python` first on PATH that records its arguments and
answers a meta-test with an accuracy line, so no training runs: the commands' flags, parsed by
main.parse_args, and the labels of the accuracy lines."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

import main

REPO = Path(__file__).resolve().parents[1]
STUB = """#!{python}
import json, os, signal, sys, time
def note(*what):
    with open(os.environ["STUB_LOG"], "a") as f:
        f.write(json.dumps(list(what)) + "\\n")
note(*sys.argv[1:])
model = "maml" if "--maml" in sys.argv else "metadrop"
role = model + " " + ("meta_test" if "meta_test" in sys.argv else "meta_train")
def stop(signum, frame):  # as main.py: Ctrl-C is handled even in a background job (SIG_IGN there)
    note("SIGINT", role)
    time.sleep(2 if model == "maml" else 0.2)  # saving what it has; MAML's save ends last
    note("ended", role)
    sys.exit(130)
signal.signal(signal.SIGINT, stop)
if role in os.environ.get("STUB_FAIL", "").split(","):
    sys.exit(int(os.environ.get("STUB_STATUS", "3")))
if role == os.environ.get("STUB_SLOW"):
    time.sleep(30)
    note("ended", role)
if sys.argv[1:2] == ["main.py"] and "meta_test" in sys.argv:
    print("accuracy: 50.00 +- 1.00")
"""
# what decides a meta-test's episodes (data/episodes' sampler, seeded by --seed)
EPISODES = ("dataset", "way", "shot", "query", "n_test_iters", "seed", "metabatch", "max_shot", "episodes")


TRAINING = ("dataset", "way", "shot", "query", "metabatch", "n_steps", "inner_lr", "meta_lr", "n_train_iters")


def run(tmp_path, *extra, script="quickstart.sh", check=True, **env_extra):
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir(exist_ok=True)
    (bin_dir / "python").write_text(STUB.format(python=sys.executable))
    (bin_dir / "python").chmod(0o755)
    log = tmp_path / f"{script.replace('/', '_')}.jsonl"
    env = {**os.environ, "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}", "STUB_LOG": str(log)}
    env.update(OUT=str(tmp_path / "out"), **env_extra)
    p = subprocess.run(
        ["bash", str(REPO / "runfiles" / script), *extra], env=env, capture_output=True, text=True
    )
    assert p.returncode == 0 or not check, p.stderr
    calls = [json.loads(line) for line in log.read_text().splitlines()]
    return (p.stdout, calls) if check else (p, calls)


def test_both_models_are_meta_tested_on_the_same_episodes_and_compared_by_report_py(tmp_path):
    out, calls = run(tmp_path)
    assert [c[0] for c in calls] == ["main.py"] * 4 + ["report.py"]
    assert calls[-1] == ["report.py", str(tmp_path / "out")]  # the paired comparison is report.py's
    # MAML runs beside Meta-dropout: the order of the two within a phase is not fixed
    args = sorted((main.parse_args(c[1:]) for c in calls[:4]), key=lambda a: (a.mode, not a.maml))
    assert [(a.mode, a.maml) for a in args] == [
        ("meta_test", True),
        ("meta_test", False),
        ("meta_train", True),
        ("meta_train", False),
    ]
    assert [a.mode for a in map(main.parse_args, (c[1:] for c in calls[:2]))] == ["meta_train"] * 2
    assert args[0].savedir == args[2].savedir != args[1].savedir == args[3].savedir
    maml, metadrop = args[0], args[1]
    assert {k: getattr(maml, k) for k in EPISODES} == {k: getattr(metadrop, k) for k in EPISODES}
    assert maml.n_test_iters == 300 and maml.noise == "none" and metadrop.noise == "metadrop"
    # each accuracy line says whose it is
    assert [x for x in out.splitlines() if "accuracy" in x] == [
        "Meta-dropout accuracy: 50.00 +- 1.00",
        "MAML accuracy: 50.00 +- 1.00",
    ]


def test_extra_flags_reach_every_command(tmp_path):
    _, calls = run(tmp_path, "--n_test_mc_samp", "2", "--n_train_iters", "4")
    args = [main.parse_args(c[1:]) for c in calls if c[0] == "main.py"]
    assert [(a.n_test_mc_samp, a.n_train_iters) for a in args] == [(2, 4)] * 4


def test_the_robustness_demo_trains_its_adversarial_maml_as_the_quickstart_trains_maml(tmp_path):
    _, quick = run(tmp_path)
    _, robust = run(tmp_path, script="robust/quickstart.sh")
    maml, adv = main.parse_args(quick[0][1:]), main.parse_args(robust[0][1:])
    assert (adv.mode, adv.adv_inner, adv.savedir) == ("meta_train", "linf", str(tmp_path / "out" / "advmaml"))
    assert {k: getattr(adv, k) for k in TRAINING} == {k: getattr(maml, k) for k in TRAINING}


@pytest.mark.parametrize("phase", ["meta_train", "meta_test"])
def test_a_failure_of_maml_beside_is_named_with_its_log_and_nothing_is_reported(tmp_path, phase):
    p, calls = run(tmp_path, check=False, STUB_FAIL=f"maml {phase}")
    assert p.returncode == 3
    assert (
        f"error: MAML's {phase} failed (exit status 3); its output: {tmp_path / 'out' / 'maml.log'}"
        in p.stderr
    )
    assert "report.py" not in [c[0] for c in calls]
    assert ("meta_test" in sum(calls, [])) == (phase == "meta_test")  # nothing runs after a failed training


def test_a_failure_of_meta_dropout_stops_maml_and_waits_for_it(tmp_path):
    p, calls = run(tmp_path, check=False, STUB_FAIL="metadrop meta_train", STUB_SLOW="maml meta_train")
    assert p.returncode == 3
    # MAML got one SIGINT (it saves what it has) and had ended when the script returned
    assert [c for c in calls if c[0] in ("SIGINT", "ended")] == [
        ["SIGINT", "maml meta_train"],
        ["ended", "maml meta_train"],
    ]


def test_a_bad_flag_refused_by_both_ends_with_main_pys_status(tmp_path):
    # e.g. `bash runfiles/quickstart.sh --bogus`: MAML has already ended when the script stops it
    p, _ = run(tmp_path, check=False, STUB_FAIL="maml meta_train,metadrop meta_train", STUB_STATUS="2")
    assert p.returncode == 2


def test_ctrl_c_reaches_both_models_once_and_the_script_waits_for_both(tmp_path):
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "python").write_text(STUB.format(python=sys.executable))
    (bin_dir / "python").chmod(0o755)
    log = tmp_path / "log.jsonl"
    env = {**os.environ, "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}", "STUB_LOG": str(log)}
    env.update(OUT=str(tmp_path / "out"), STUB_SLOW="maml meta_train")
    env["STUB_FAIL"] = ""
    # Meta-dropout's training also waits, as a terminal's Ctrl-C would find it
    (bin_dir / "python").write_text(
        STUB.format(python=sys.executable).replace(
            'role == os.environ.get("STUB_SLOW")', 'role in ("maml meta_train", "metadrop meta_train")'
        )
    )
    p = subprocess.Popen(
        ["bash", str(REPO / "runfiles" / "quickstart.sh")],
        env=env,
        start_new_session=True,
        text=True,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    for _ in range(100):  # both trainings started
        if log.exists() and len(log.read_text().splitlines()) >= 2:
            break
        time.sleep(0.1)
    time.sleep(0.5)
    os.killpg(p.pid, signal.SIGINT)  # what a terminal sends to its foreground process group
    p.communicate(timeout=20)
    assert p.returncode != 0
    calls = [json.loads(line) for line in log.read_text().splitlines()]
    stops = sorted(tuple(c) for c in calls if c[0] in ("SIGINT", "ended"))
    assert stops == sorted(
        [(k, r) for k in ("SIGINT", "ended") for r in ("maml meta_train", "metadrop meta_train")]
    )
    assert "meta_test" not in sum(calls, []) and "report.py" not in [c[0] for c in calls]
