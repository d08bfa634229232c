"""Every runfile's hyperparameters against their sources (paper/hyperparameters.csv): the original
repository's runfile of the same model where there is one, else the paper's text; a value that
departs from its source, or has none, is in paper/departures.csv with the reason."""

import csv
import fnmatch
import inspect
import json
import os
import subprocess
from pathlib import Path

import pytest
from test_runfiles import REPO, run_robust

import main

SOURCES = list(csv.DictReader(open(REPO / "paper" / "hyperparameters.csv")))
DEPARTURES = list(csv.DictReader(open(REPO / "paper" / "departures.csv")))
ORIGINAL = {"maml": "maml", "metadrop": "metadrop"}  # our model -> the original runfiles' model
FLAGS = {  # the flags each mode's results depend on
    "meta_train": ("dataset", "way", "shot", "query", "metabatch", "n_steps", "inner_lr")
    + ("n_train_iters", "meta_lr", "n_test_mc_samp"),
    "meta_test": ("dataset", "way", "shot", "query", "metabatch", "n_steps", "inner_lr")
    + ("n_test_mc_samp", "n_test_iters"),
}
SETTINGS = ("omni_1shot", "omni_5shot", "mimgnet_1shot", "mimgnet_5shot")
RUNFILES = sorted(
    p.relative_to(REPO / "runfiles").as_posix()
    for pattern in ("*_*shot.sh", "table[23]/*.sh")
    for p in (REPO / "runfiles").glob(pattern)
)


# A `python` first on PATH that records its arguments (one call a line, fields split by \x1f).
STUB = """#!/bin/sh
(IFS=$(printf '\\037'); echo "$*") >> "$STUB_LOG"
"""


def calls(tmp_path: Path, runfile: str) -> list[list[str]]:
    """The argument lists of the runfile's python commands (no training runs)."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "python").write_text(STUB)
    (bin_dir / "python").chmod(0o755)
    log = tmp_path / "calls"
    env = {k: v for k, v in os.environ.items() if k not in ("GPU_ID", "DATA_ROOT")}
    env.update(PATH=f"{bin_dir}{os.pathsep}{env['PATH']}", STUB_LOG=str(log))
    subprocess.run(["bash", str(REPO / "runfiles" / runfile)], env=env, check=True)
    return [line.split("\x1f") for line in log.read_text().splitlines()]


def same(a: object, b: str) -> bool:
    try:
        return float(a) == float(b)
    except (TypeError, ValueError):
        return str(a) == b


def source(model: str, setting: str, mode: str, flag: str) -> dict | None:
    """The source row of a flag: the original runfile of the same model, else the paper's text."""
    rows = [
        r
        for r in SOURCES
        if r["flag"] == flag and r["mode"] in (mode, "*") and fnmatch.fnmatch(setting, r["setting"])
    ]
    orig = [r for r in rows if r["source"].startswith("original") and r["model"] == ORIGINAL.get(model)]
    paper = [r for r in rows if r["source"].startswith("paper") and r["model"] in ("*", model)]
    return (orig or paper or [None])[0]


def departure(runfile: str, mode: str, flag: str) -> dict | None:
    rows = [
        r
        for r in DEPARTURES
        if r["flag"] == flag
        and r["mode"] in (mode, "*")
        and any(fnmatch.fnmatch(runfile, p) for p in r["runfiles"].split())
    ]
    assert len(rows) <= 1, f"{runfile} {mode} --{flag}: several departures"
    return rows[0] if rows else None


def expect(runfile: str, model: str, setting: str, mode: str, flag: str, got: object) -> None:
    src, dep = source(model, setting, mode, flag), departure(runfile, mode, flag)
    where = f"runfiles/{runfile} ({mode}) --{flag} {got}"
    if dep is None:
        assert src is not None, f"{where}: no source; add it to paper/departures.csv with the reason"
        assert same(got, src["value"]), f"{where}: {src['source']} says {src['value']}"
        return
    assert dep["why"].strip(), f"{where}: paper/departures.csv gives no reason"
    assert same(got, dep["ours"]), f"{where}: paper/departures.csv says {dep['ours']}"
    # The departure names the value it departs from, and that value is still its source's.
    assert (src["value"] if src else "") == dep["departs_from"], f"{where}: departs from {src}"


@pytest.mark.parametrize("runfile", RUNFILES)
def test_runfile_values_match_their_sources(tmp_path, runfile):
    setting = next(s for s in SETTINGS if runfile.endswith(f"_{s}.sh"))
    stem = Path(runfile).name[: -len(f"_{setting}.sh")]
    model = stem if "/" not in runfile else f"{runfile.split('/')[0]}:{stem}"  # no original runfile
    commands = calls(tmp_path, runfile)
    assert len(commands) == 2 and all(c[0] == "main.py" for c in commands)
    for call in commands:
        args = main.parse_args(call[1:])
        for flag in FLAGS[args.mode]:
            expect(runfile, model, setting, args.mode, flag, getattr(args, flag))


def test_every_departure_is_used():
    used = {
        (d["runfiles"], d["mode"], d["flag"])
        for d in DEPARTURES
        for f in [*RUNFILES, "robust/attack_all.sh"]
        if any(fnmatch.fnmatch(f, p) for p in d["runfiles"].split())
    }
    assert used == {(d["runfiles"], d["mode"], d["flag"]) for d in DEPARTURES}


def test_robustness_runfiles_match_their_sources(tmp_path):
    # One Omniglot model (miniImageNet's radii: tests/test_runfiles.py); flags.py imports TensorFlow.
    root = tmp_path / "results"
    for setting in ("omni_1shot",):
        (root / setting / "ckpt").mkdir(parents=True)
        config = vars(main.parse_args(["--savedir", str(root / setting), "--maml"]))
        (root / setting / "config.json").write_text(json.dumps(config))
        (root / setting / "ckpt" / "checkpoint").write_text("model-1")
    rc, calls = run_robust(tmp_path, "attack_all", ROOT=str(root))
    assert rc == 0
    for c in calls[:-1]:
        a = main.parse_args(c[1:])
        setting = Path(a.savedir).name
        for flag in ("metabatch", "n_test_mc_samp", "n_test_iters", "attack_steps"):
            expect("robust/attack_all.sh", "attack", setting, "meta_test", flag, getattr(a, flag))
        radii = source("maml", setting, "meta_test", f"attack_eps_{a.attack}")
        assert a.attack_eps == [float(v) for v in radii["value"].split(";")], radii["source"]
    assert {main.parse_args(c[1:]).attack for c in calls[:-1]} == {"l1", "l2", "linf"}
    for setting in ("omni_1shot", "mimgnet_1shot"):
        (tmp_path / "calls.jsonl").unlink()
        rc, calls = run_robust(tmp_path, "advmaml", setting)
        assert rc == 0
        trained = [main.parse_args(c[1:]) for c in calls[::2]]
        for norm in ("l1", "l2", "linf"):
            radii = [
                float(v)
                for v in source("maml", setting, "meta_test", f"attack_eps_{norm}")["value"].split(";")
            ]
            # footnote 2: the smallest and largest (nonzero) radius of the attack range
            assert [a.adv_eps for a in trained if a.adv_inner == norm] == [radii[1], radii[-1]]


def test_code_constants_match_their_sources():
    import attack
    import model
    import noise

    def value(flag: str, model_name: str = "*") -> str:
        return source(model_name, "omni_1shot", "meta_train", flag)["value"]

    assert model.CLIP == float(value("clip"))
    assert noise.AdditiveMetaDropout().lam == float(value("lam", "metadrop_add"))
    steps = inspect.signature(attack.Adversary.__init__).parameters["steps"].default
    assert steps == int(value("adv_steps", "advmaml"))
    grids = {"mixup": "gamma", "vib": "beta", "infodrop": "beta"}
    published = json.loads((REPO / "paper" / "published.json").read_text())
    for spec in published["table2"]["rows"].values():
        if spec["noise"] in grids:
            k = grids[spec["noise"]]
            grid = [float(v) for v in value(k, spec["noise"]).split(";")]
            assert spec["noise_hp"][k] in grid, spec
