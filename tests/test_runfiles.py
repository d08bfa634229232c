"""runfiles/<model>_<setting>.sh: one per Table 1 cell, with the paper/README hyperparameters.

The scripts run with a stub `python` first on PATH that records its arguments, so no training runs;
the recorded main.py arguments are parsed with main.parse_args.
"""

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

import main

REPO = Path(__file__).resolve().parents[1]

# The hyperparameters, stated once (their sources: paper/hyperparameters.csv, tests/test_hyperparameters.py).
# The original runfiles' --metabatch 4 and 60000 iterations for all models (Section 4: Omniglot B=8 / B=6,
# 40K); meta-lr 1e-3 on Omniglot but for meta-dropout 1-shot (the original README's and runfile's 3e-4).
SETTINGS = {
    "omni_1shot": dict(dataset="omniglot", way=20, shot=1, inner_lr=0.1, meta_lr=1e-3),
    "omni_5shot": dict(dataset="omniglot", way=20, shot=5, inner_lr=0.4, meta_lr=1e-3),
    "mimgnet_1shot": dict(dataset="mimgnet", way=5, shot=1, inner_lr=0.01, meta_lr=1e-4),
    "mimgnet_5shot": dict(dataset="mimgnet", way=5, shot=5, inner_lr=0.01, meta_lr=1e-4),
}
COMMON = dict(n_steps=5, query=15, n_train_iters=60000, gpu_id=0, data_root=None)
MODES = {
    "meta_train": dict(metabatch=4, n_test_mc_samp=1),
    "meta_test": dict(metabatch=1, n_test_mc_samp=30),
}
MODELS = {  # --maml, --metasgd, and the perturbation main.py derives
    "maml": dict(maml=True, metasgd=False, noise="none"),
    "metasgd": dict(maml=True, metasgd=True, noise="none"),
    "metadrop": dict(maml=False, metasgd=False, noise="metadrop"),
    "metasgd_metadrop": dict(maml=False, metasgd=True, noise="metadrop"),
}
CELLS = [(m, s) for m in MODELS for s in SETTINGS]
OWN = {("metadrop", "omni_1shot"): dict(meta_lr=3e-4)}  # a cell's own values

STUB = """#!{python}
import json, os, sys
with open(os.environ["STUB_LOG"], "a") as f:
    f.write(json.dumps({{"cwd": os.getcwd(), "argv": sys.argv[1:]}}) + "\\n")
sys.exit(1 if os.environ.get("STUB_FAIL") in sys.argv else 0)
"""


def run(tmp_path, name, *extra, **env):
    """Run runfiles/<name>.sh with the stub python; the exit code and the recorded calls."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir(exist_ok=True)
    stub = bin_dir / "python"
    stub.write_text(STUB.format(python=sys.executable))
    stub.chmod(0o755)
    log = tmp_path / "calls.jsonl"
    log.unlink(missing_ok=True)
    base = {k: v for k, v in os.environ.items() if k not in ("GPU_ID", "DATA_ROOT", "STUB_FAIL")}
    base.update(PATH=f"{bin_dir}{os.pathsep}{os.environ['PATH']}", STUB_LOG=str(log), **env)
    # Started from elsewhere, to check the script finds the repository itself.
    p = subprocess.run([str(REPO / "runfiles" / f"{name}.sh"), *extra], env=base, cwd=tmp_path)
    calls = [json.loads(line) for line in log.read_text().splitlines()] if log.exists() else []
    return p.returncode, calls


def parsed(call):
    assert call["cwd"] == str(REPO)
    assert call["argv"][0] == "main.py"
    return main.parse_args(call["argv"][1:])


def test_one_runfile_per_table1_cell():
    names = {p.name for p in (REPO / "runfiles").glob("*.sh")}
    expected = {f"{m}_{s}.sh" for m, s in CELLS}
    assert len(expected) == 16
    assert expected <= names
    assert names - expected <= {"quickstart.sh"}


@pytest.mark.parametrize("model, setting", CELLS)
def test_runfile_commands(tmp_path, model, setting):
    path = REPO / "runfiles" / f"{model}_{setting}.sh"
    assert os.access(path, os.X_OK), f"{path} is not executable"
    text = path.read_text()
    assert "set -euo pipefail" in text
    if setting.startswith("omni"):  # the README/paper disagreement is stated
        assert "Section 4" in text and "README" in text

    rc, calls = run(tmp_path, f"{model}_{setting}")
    assert rc == 0
    assert [c["argv"][c["argv"].index("--mode") + 1] for c in calls] == list(MODES)
    for call, (mode, mode_values) in zip(calls, MODES.items()):
        args = parsed(call)
        expected = {**SETTINGS[setting], **OWN.get((model, setting), {}), **COMMON, **mode_values}
        expected.update(MODELS[model], mode=mode)
        got = {k: getattr(args, k, None) for k in expected}
        assert got == expected, f"{path} {mode}"
        assert os.path.normpath(args.savedir) == f"results/{model}/{setting}"


def test_environment_and_extra_arguments(tmp_path):
    root = "/tmp/my data"
    rc, calls = run(
        tmp_path, "metadrop_omni_5shot", "--seed", "7", "--savedir", "x", GPU_ID="3", DATA_ROOT=root
    )
    assert rc == 0 and len(calls) == 2
    for call in calls:
        args = parsed(call)
        assert (args.gpu_id, args.data_root, args.seed, args.savedir) == (3, root, 7, "x")
        assert args.shot == 5  # the script's own flags still apply


def test_stops_when_meta_training_fails(tmp_path):
    rc, calls = run(tmp_path, "maml_mimgnet_1shot", STUB_FAIL="meta_train")
    assert rc == 1
    assert len(calls) == 1 and "meta_train" in calls[0]["argv"]


# ---------------------------------------------------------------- Tables 2 and 3

PUBLISHED = json.loads((REPO / "paper" / "published.json").read_text())
TABLE_CELLS = [
    (table, row, setting)
    for table in ("table2", "table3")
    for row, spec in PUBLISHED[table]["rows"].items()
    if spec["noise"] not in ("none", "metadrop")  # Table 1's runs
    for setting in SETTINGS
]


def test_one_runfile_per_table2_and_table3_cell():
    names = {p.relative_to(REPO / "runfiles").as_posix() for p in (REPO / "runfiles").glob("table[23]/*.sh")}
    expected = {f"{t}/{row}_{s}.sh" for t, row, s in TABLE_CELLS}
    assert len(expected) == (10 + 6) * 4  # Table 2: 3 mixup, 3 VIB, 3 infodrop, additive; Table 3: six
    assert names == expected


def test_table_runfiles_are_what_make_tables_writes():
    spec = importlib.util.spec_from_file_location("make_tables", REPO / "runfiles" / "make_tables.py")
    make_tables = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(make_tables)
    for name, text in make_tables.cells().items():
        assert (REPO / "runfiles" / name).read_text() == text, f"{name}: run python runfiles/make_tables.py"


@pytest.mark.parametrize("table, row, setting", TABLE_CELLS)
def test_table_runfile_commands(tmp_path, table, row, setting):
    spec = PUBLISHED[table]["rows"][row]
    name = f"{table}/{row}_{setting}"
    assert os.access(REPO / "runfiles" / f"{name}.sh", os.X_OK)
    rc, calls = run(tmp_path, name)
    assert rc == 0
    assert [c["argv"][c["argv"].index("--mode") + 1] for c in calls] == list(MODES)
    for call, (mode, mode_values) in zip(calls, MODES.items()):
        args = parsed(call)
        model = dict(maml=False, metasgd=False, noise=spec["noise"])
        expected = {**SETTINGS[setting], **COMMON, **mode_values, **model, "mode": mode}
        assert {k: getattr(args, k, None) for k in expected} == expected, f"{name} {mode}"
        assert {k: args.noise_hp[k] for k in spec["noise_hp"]} == spec["noise_hp"]
        assert os.path.normpath(args.savedir) == f"results/{table}/{row}/{setting}"


ROBUST_STUB = """#!/bin/sh
case "$1" in main.py|plot.py) echo "$*" >> "$STUB_LOG"; exit 0;; esac
exec {python} "$@"
"""


def run_robust(tmp_path, name, *extra, **env):
    """runfiles/robust/<name>.sh with main.py and plot.py recorded (flags.py runs for real)."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir(exist_ok=True)
    (bin_dir / "python").write_text(ROBUST_STUB.format(python=sys.executable))
    (bin_dir / "python").chmod(0o755)
    log = tmp_path / "calls.jsonl"
    base = {k: v for k, v in os.environ.items() if not k.startswith(("EPS_", "GPU_ID", "DATA_ROOT"))}
    base.update(PATH=f"{bin_dir}{os.pathsep}{os.environ['PATH']}", STUB_LOG=str(log), **env)
    p = subprocess.run(
        ["bash", str(REPO / "runfiles" / "robust" / f"{name}.sh"), *extra], env=base, cwd=tmp_path
    )
    return p.returncode, [line.split() for line in log.read_text().splitlines()] if log.exists() else []


FIGURE6 = {
    "l1": [0, 10, 20, 30, 40, 50],
    "l2": [0, 0.1, 0.2, 0.3, 0.4, 0.5],
    "linf": [0, 0.001, 0.002, 0.003, 0.004, 0.005],
}


def test_robust_attack_all_attacks_every_trained_model_as_it_was_trained(tmp_path):
    trained = {
        "maml/mimgnet_1shot": ["--maml", "--dataset", "mimgnet", "--way", "5", "--inner_lr", "0.01"],
        "adv/mimgnet_5shot": ["--maml", "--metasgd", "--dataset", "mimgnet", "--way", "5", "--shot", "5"]
        + ["--adv_inner", "l2", "--adv_eps", "0.5"],
        "untrained/omni_1shot": ["--dataset", "omniglot"],
    }
    root = tmp_path / "results"
    for name, flags in trained.items():
        (root / name / "ckpt").mkdir(parents=True)
        config = vars(main.parse_args(["--savedir", str(root / name), *flags]))
        (root / name / "config.json").write_text(json.dumps({**config, "image_shape": [84, 84, 3]}))
        if "untrained" not in name:
            (root / name / "ckpt" / "checkpoint").write_text("model-1")
    rc, calls = run_robust(tmp_path, "attack_all", "--seed", "3", ROOT=str(root))
    assert rc == 0
    assert calls[-1] == ["plot.py", "--robustness", str(root)]
    attacks = [main.parse_args(c[1:]) for c in calls[:-1]]
    assert [(os.path.relpath(a.savedir, root), a.attack) for a in attacks] == [
        (d, n) for d in ("adv/mimgnet_5shot", "maml/mimgnet_1shot") for n in ("l1", "l2", "linf")
    ]
    for a in attacks:
        want = vars(main.parse_args(["--savedir", a.savedir, *trained[os.path.relpath(a.savedir, root)]]))
        model = ("dataset", "way", "shot", "inner_lr", "noise", "metasgd", "adv_inner", "adv_eps", "n_steps")
        assert {k: getattr(a, k) for k in model} == {k: want[k] for k in model}
        assert (a.mode, a.metabatch, a.n_test_mc_samp, a.n_test_iters, a.attack_steps) == (
            "meta_test",
            1,
            30,
            1000,
            200,
        )
        assert a.attack_eps == FIGURE6[a.attack] and a.seed == 3


def test_robust_advmaml_trains_maml_at_the_legends_radii(tmp_path):
    rc, calls = run_robust(tmp_path, "advmaml", "mimgnet_1shot")
    assert rc == 0
    runs = [main.parse_args(c[1:]) for c in calls]
    assert [a.mode for a in runs] == ["meta_train", "meta_test"] * 6
    radii = {"l1": (10, 50), "l2": (0.1, 0.5), "linf": (0.001, 0.005)}
    assert [(a.adv_inner, a.adv_eps) for a in runs[::2]] == [(n, e) for n, r in radii.items() for e in r]
    for a in runs:
        assert a.savedir == f"./results/advmaml_{a.adv_inner}_{a.adv_eps:g}/mimgnet_1shot"
        expected = {**SETTINGS["mimgnet_1shot"], **COMMON, **MODES[a.mode], **MODELS["maml"]}
        assert {k: getattr(a, k) for k in expected} == expected
    assert run_robust(tmp_path, "advmaml", "nosuch")[0] == 2
