"""runfiles/slurm/: table -> job array + dependent report job, requeue-safe, on a real one-node cluster.

The dry-run tests need no Slurm. The cluster test starts runfiles/slurm/local_cluster.sh (root and
Debian's slurmctld, slurmd, slurm-client, munge; .ci/run installs them), submits three tiny `digits`
cells, requeues the longest one mid-training with `scontrol requeue`, and checks that it resumed from
its checkpoint, that every cell has its results.json and that the report job wrote the table.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.test_runfiles import CELLS

REPO = Path(__file__).resolve().parents[1]
SLURM = REPO / "runfiles" / "slurm"
HOLDER = str(os.getpid())  # this pytest's lease on the local cluster


def submit(*argv: str, env: dict[str, str] | None = None, root: Path = REPO) -> subprocess.CompletedProcess:
    full = {k: v for k, v in os.environ.items() if not k.startswith("METADROP_")}
    return subprocess.run(
        ["bash", str(root / "runfiles/slurm/submit.sh"), *argv],
        env={**full, **(env or {})},
        capture_output=True,
        text=True,
        timeout=120,
    )


def dry_run(*argv: str, **kw) -> tuple[list[list[str]], list[str], list[str]]:
    """(cell lines, array sbatch argv, report sbatch argv) that --dry-run prints."""
    p = submit("--dry-run", *argv, **kw)
    assert p.returncode == 0, p.stderr
    lines = p.stdout.splitlines()
    cells = [line.split()[1:] for line in lines if re.match(r"^ *\d+  (todo|done)  ", line)]
    array, report = (line.split() for line in lines[-2:])
    return cells, array, report


# ---------------------------------------------------------------- without a cluster


def test_table1_dry_run():
    cells, array, report = dry_run("table1")
    assert sorted(c[1] for c in cells) == sorted(f"{m}_{s}" for m, s in CELLS)
    assert all(c[2] == f"runfiles/{c[1]}.sh" and len(c) == 3 for c in cells)  # runfiles as they are
    assert array[0] == "sbatch" and "--requeue" in array and "--array=0-15" in array
    assert "--gres=gpu:1" in array and array[-2] == "runfiles/slurm/task.sh"
    out = array[-1]
    assert f"--output={out}/logs/%a.out" in array
    assert "--dependency=afterok:ARRAY_JOB_ID" in report and report[-3:] == [
        "runfiles/slurm/report.sh",
        out,
        "results",
    ]
    assert not any(a.startswith("--gres") for a in report)


def test_overrides():
    env = {"METADROP_GPUS": "a100:2", "METADROP_PARTITION": "gpu", "METADROP_SBATCH_ARGS": "--qos=long -N 1"}
    _, array, report = dry_run("--account", "lab", "--time", "2-00:00:00", "maml_omni_1shot", env=env)
    for a in ("--gres=gpu:a100:2", "--partition=gpu", "--account=lab", "--time=2-00:00:00", "--qos=long"):
        assert a in array
    assert "--partition=gpu" in report and "--account=lab" in report and "--gres=gpu:a100:2" not in report
    _, array, _ = dry_run("--gpus", "none", "--partition", "cpu", "maml_omni_1shot", env=env)  # flags win
    assert "--partition=cpu" in array and not any(a.startswith("--gres") for a in array)


def test_seeds_of_one_cell():
    cells, array, report = dry_run("--seeds", "1 2", "metadrop_omni_5shot", "--", "--n_train_iters", "5")
    assert [c[1:] for c in cells] == [
        [f"metadrop_omni_5shot_seed{s}", "runfiles/metadrop_omni_5shot.sh", "--seed", str(s), "--savedir"]
        + [f"results/metadrop/omni_5shot_seed{s}", "--n_train_iters", "5"]
        for s in (1, 2)
    ]
    assert "--array=0-1" in array and report[-1] == "results/metadrop"


def test_a_table_is_a_folder_of_runfiles(tmp_path):
    """table2/table3 are globs in tables.txt: a runfile dropped into the folder joins the table."""
    shutil.copytree(REPO / "runfiles", tmp_path / "runfiles")
    shutil.rmtree(tmp_path / "runfiles" / "table2", ignore_errors=True)
    p = submit("--dry-run", "table2", root=tmp_path)
    assert p.returncode == 2 and "table2 has no runfiles yet" in p.stderr
    (tmp_path / "runfiles" / "table2").mkdir()
    cell = tmp_path / "runfiles" / "table2" / "gaussian_omni_1shot.sh"
    cell.write_text(
        'cd "$(dirname "$0")/../.."\npython main.py --savedir results/t2/g --mode meta_test "$@"\n'
    )
    cells, _, report = dry_run("table2", root=tmp_path)
    assert cells == [["todo", "gaussian_omni_1shot", "runfiles/table2/gaussian_omni_1shot.sh"]]
    assert report[-1] == "results/t2"


@pytest.mark.parametrize("argv", [["nope"], ["--gpus"], ["--bogus", "1", "table1"], []])
def test_bad_arguments(argv):
    p = submit("--dry-run", *argv)
    assert p.returncode == 2 and p.stderr.startswith("error: ")


def test_done_cell(tmp_path):
    """A cell is done when each savedir it meta-tests has results.json from the iterations it asks for."""
    savedir = tmp_path / "run"
    cell = tmp_path / "cell.sh"
    cell.write_text(
        f'python main.py --mode meta_train --savedir {savedir} --n_train_iters 50 "$@"\n'
        f'python main.py --mode meta_test --savedir {savedir} --n_train_iters 50 "$@"\n'
    )

    def done(*extra: str) -> bool:
        cmd = f'cd {REPO} && source runfiles/slurm/lib.sh && cell_done "$@"'
        return subprocess.run(["bash", "-c", cmd, "-", str(cell), *extra]).returncode == 0

    assert not done()
    savedir.mkdir()
    (savedir / "results.json").write_text(json.dumps({"mean": 50.0, "train_iters": 40}, indent=2))
    assert not done()
    (savedir / "results.json").write_text(json.dumps({"mean": 50.0, "train_iters": 50}, indent=2))
    assert done()
    assert not done("--n_train_iters", "60")  # more iterations asked: train on, test again
    # the results format (results.py) names them run.iterations
    run = {"savedir": str(savedir), "seed": 0, "iterations": 40, "checkpoint": "ckpt/model-40"}
    (savedir / "results.json").write_text(json.dumps({"format": 2, "mean": 50.0, "run": run}, indent=1))
    assert not done()
    (savedir / "results.json").write_text(
        json.dumps({"format": 2, "run": {**run, "iterations": 60}}, indent=1)
    )
    assert done("--n_train_iters", "60")


# ---------------------------------------------------------------- on a one-node cluster

TINY = "--dataset digits --way 5 --shot 1 --query 5 --n_steps 1 --inner_lr 0.4 --meta_lr 1e-3 --log_freq 10"
CELL = """#!/usr/bin/env bash
set -euo pipefail
cd {repo}
python main.py --mode meta_train --savedir {savedir} {tiny} {flags} --metabatch 2 --n_train_iters {iters} \\
  --val_freq 1000 --n_val_iters 5 "$@"
python main.py --mode meta_test --savedir {savedir} {tiny} {flags} --metabatch 1 --n_train_iters {iters} \\
  --n_test_iters 10 --n_test_mc_samp 2 "$@"
"""
LONG = 160  # iterations of the cell that is requeued mid-training


@pytest.fixture
def cluster():
    script = SLURM / "local_cluster.sh"
    env = {**os.environ, "HOLDER": HOLDER}
    p = subprocess.run(["bash", str(script), "start"], env=env, capture_output=True, text=True, timeout=120)
    if p.returncode == 3:
        pytest.skip(f"no local Slurm cluster: {p.stderr.strip()}")
    assert p.returncode == 0, p.stderr
    conf = p.stdout.strip().split("=", 1)[1]
    jobs: list[str] = []
    try:
        yield {**os.environ, "SLURM_CONF": conf}, jobs
    finally:
        for job in jobs:
            subprocess.run(["scancel", job], env={**os.environ, "SLURM_CONF": conf})
        subprocess.run(["bash", str(script), "stop"], env=env, timeout=120)


def slurm(env: dict[str, str], *argv: str) -> str:
    return subprocess.run(argv, env=env, capture_output=True, text=True, check=True, timeout=30).stdout


def wait(what: str, ready, timeout: float, logs: Path) -> None:
    end = time.time() + timeout
    while not ready():
        if time.time() > end:
            dump = "\n".join(f"== {f}\n{f.read_text()[-2000:]}" for f in sorted(logs.glob("*.out")))
            pytest.fail(f"timed out waiting for {what}\n{dump}")
        time.sleep(1)


@pytest.mark.slow
def test_table_on_local_cluster(cluster, tmp_path):
    env, jobs = cluster
    results = tmp_path / "results"
    cells = {  # name -> (meta-training iterations, main.py flags); the long one first, it is requeued
        "metadrop_long": (LONG, "--save_freq 20"),
        "maml": (20, "--maml --save_freq 10"),
        "metadrop": (20, "--noise metadrop --save_freq 10"),
    }
    (tmp_path / "cells").mkdir()
    for name, (iters, flags) in cells.items():
        f = tmp_path / "cells" / f"{name}.sh"
        f.write_text(CELL.format(repo=REPO, savedir=results / name, tiny=TINY, flags=flags, iters=iters))
    out = tmp_path / "run"
    venv = ["--venv", sys.prefix] if (Path(sys.prefix) / "bin" / "activate").exists() else []
    argv = ["--out", str(out), "--gpus", "none", "--cpus", "1", "--container", "nice -n 10", *venv]
    p = submit(*argv, *(str(tmp_path / "cells" / f"{n}.sh") for n in cells), env=env)
    assert p.returncode == 0, p.stderr
    array, report = re.findall(r"job (?:array )?(\d+)", p.stdout)
    jobs += [array, report]
    logs = out / "logs"

    # Requeue the long cell once it has checkpointed (iterations 20, 40) and trained on.
    long_log = results / "metadrop_long" / "meta_train.log"
    trained = lambda: long_log.exists() and "iter 40 " in long_log.read_text()  # noqa: E731
    wait("the long cell to train", trained, 180, logs)
    slurm(env, "scontrol", "requeue", f"{array}_0")
    # Slurm holds a requeued job back for 2 minutes once it is pending again; let it start at once.
    pending = lambda: slurm(env, "squeue", "-h", "-j", f"{array}_0", "-o", "%T").strip() == "PENDING"  # noqa: E731
    wait("the requeued task to be pending", pending, 60, logs)
    slurm(env, "scontrol", "update", f"jobid={array}_0", "starttime=now")

    wait("the report", lambda: (out / "report.md").exists(), 300, logs)
    text = long_log.read_text()
    resumed = [int(n) for n in re.findall(r"resumed from iteration (\d+)", text)]
    assert len(resumed) == 1 and 20 <= resumed[0] < LONG, text
    logged = lambda t: [int(n) for n in re.findall(r"^iter (\d+) loss", t, re.M)]  # noqa: E731
    after = logged(text.split("resumed from")[1])
    assert after[0] == resumed[0] + 10 and after[-1] == LONG  # continued, not started over
    assert set(logged(text)) == set(range(10, LONG + 1, 10))
    assert "DUE TO JOB REQUEUE" in (logs / "metadrop_long.out").read_text()
    assert "start 2" in (logs / "metadrop_long.out").read_text()

    report_md = (out / "report.md").read_text()
    for name, (iters, _) in cells.items():
        r = json.loads((results / name / "results.json").read_text())
        assert r["run"]["iterations"] == iters and r["n"] == 10
        assert f"| {name}/results.json |" in report_md
        assert f"{r['mean']:.2f}" in report_md

    # Submitted again, every cell is done: no task trains or tests again.
    before = {n: (results / n / "results.json").stat().st_mtime_ns for n in cells}
    out2 = tmp_path / "run2"
    argv[1] = str(out2)
    p = submit(*argv, *(str(tmp_path / "cells" / f"{n}.sh") for n in cells), env=env)
    assert p.returncode == 0, p.stderr
    assert p.stdout.count(" done ") == 3
    jobs += re.findall(r"job (?:array )?(\d+)", p.stdout)
    wait("the second report", lambda: (out2 / "report.md").exists(), 120, out2 / "logs")
    for n in cells:
        assert "results already there: skipped" in (out2 / "logs" / f"{n}.out").read_text()
        assert (results / n / "results.json").stat().st_mtime_ns == before[n]
    assert (out2 / "report.md").read_text() == report_md
