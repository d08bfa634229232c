"""runfiles/quickstart.sh run with a stub `python` first on PATH that records its arguments and
answers a meta-test with an accuracy line, so no training runs: the commands' flags, parsed by
main.parse_args, and the labels of the accuracy lines."""

import json
import os
import subprocess
import sys
from pathlib import Path

import main

REPO = Path(__file__).resolve().parents[1]
STUB = """#!{python}
import json, os, sys
with open(os.environ["STUB_LOG"], "a") as f:
    f.write(json.dumps(sys.argv[1:]) + "\\n")
if sys.argv[1:2] == ["main.py"] and "meta_test" in sys.argv:
    print("accuracy: 50.00 +- 1.00")
"""
# what decides a meta-test's episodes (data/episodes' sampler, seeded by --seed)
EPISODES = ("dataset", "way", "shot", "query", "n_test_iters", "seed", "metabatch", "max_shot", "episodes")


TRAINING = ("dataset", "way", "shot", "query", "metabatch", "n_steps", "inner_lr", "meta_lr", "n_train_iters")


def run(tmp_path, *extra, script="quickstart.sh"):
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir(exist_ok=True)
    (bin_dir / "python").write_text(STUB.format(python=sys.executable))
    (bin_dir / "python").chmod(0o755)
    log = tmp_path / f"{script.replace('/', '_')}.jsonl"
    env = {**os.environ, "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}", "STUB_LOG": str(log)}
    env["OUT"] = str(tmp_path / "out")
    p = subprocess.run(
        ["bash", str(REPO / "runfiles" / script), *extra], env=env, capture_output=True, text=True
    )
    assert p.returncode == 0, p.stderr
    return p.stdout, [json.loads(line) for line in log.read_text().splitlines()]


def test_both_models_are_meta_tested_on_the_same_episodes_and_compared_by_report_py(tmp_path):
    out, calls = run(tmp_path)
    assert [c[0] for c in calls] == ["main.py"] * 4 + ["report.py"]
    assert calls[-1] == ["report.py", str(tmp_path / "out")]  # the paired comparison is report.py's
    args = [main.parse_args(c[1:]) for c in calls[:4]]
    assert [(a.mode, a.maml) for a in args] == [
        ("meta_train", True),
        ("meta_test", True),
        ("meta_train", False),
        ("meta_test", False),
    ]
    assert args[0].savedir == args[1].savedir != args[2].savedir == args[3].savedir
    maml, metadrop = args[1], args[3]
    assert {k: getattr(maml, k) for k in EPISODES} == {k: getattr(metadrop, k) for k in EPISODES}
    assert maml.n_test_iters == 300 and maml.noise == "none" and metadrop.noise == "metadrop"
    # each accuracy line says whose it is
    assert [x for x in out.splitlines() if "accuracy" in x] == [
        "MAML accuracy: 50.00 +- 1.00",
        "Meta-dropout accuracy: 50.00 +- 1.00",
    ]


def test_extra_flags_reach_every_command(tmp_path):
    _, calls = run(tmp_path, "--n_test_mc_samp", "2", "--n_train_iters", "4")
    args = [main.parse_args(c[1:]) for c in calls[:4]]
    assert [(a.n_test_mc_samp, a.n_train_iters) for a in args] == [(2, 4)] * 4


def test_the_robustness_demo_trains_its_adversarial_maml_as_the_quickstart_trains_maml(tmp_path):
    _, quick = run(tmp_path)
    _, robust = run(tmp_path, script="robust/quickstart.sh")
    maml, adv = main.parse_args(quick[0][1:]), main.parse_args(robust[0][1:])
    assert (adv.mode, adv.adv_inner, adv.savedir) == ("meta_train", "linf", str(tmp_path / "out" / "advmaml"))
    assert {k: getattr(adv, k) for k in TRAINING} == {k: getattr(maml, k) for k in TRAINING}
