"""Compare meta-test results with the paper's Tables 1, 2 and 3; MetaPerturb's transfer table.

    python report.py results/ [--markdown FILE]
    python report.py --transfer checkpoints/tgt [--baseline none] [--markdown FILE]

Reads every results.json under a folder (written by `main.py --mode meta_test` for the test split;
results_<name>.json for other evaluations, e.g. a file of fixed episodes) and prints markdown
tables: Table 1, and Tables 2 and 3 (MAML with other perturbations). The cell of a result comes from
its config (dataset, way, shot, maml/noise/noise_hp, metasgd), not from its path; a Table 2/3 row
takes the MAML (not Meta-SGD) runs of its perturbation whose hyperparameters include the row's.
The training settings come from the savedir's config.json (the results file's own config, written by
meta_test, where there is none). Adversarial MAML (--adv_inner) and first-order MAML (--first_order)
are models of their own (e.g. maml+adv(linf,eps=0.1), maml+first_order): never in Tables 1-3.
Each result is one row, its seed the training seed. Within a cell, results are grouped by what was
evaluated ("evaluated on": the test split and its episode seed, or a file of fixed episodes by its
hash, whatever the results file's name) and by every other setting that changes a result
("settings": meta_lr, inner_lr, n_steps, metabatch, query, sampler, MC samples at meta-test, the
perturbation's hyperparameters); a
group of several results, which then differ in their training seed only, gets an extra row with the
mean over them, ± the standard deviation across them.
Cells without a result show "—"; a table appears once one of its cells has a result. Results in
none of them (other datasets, perturbations or hyperparameters) go to a last table, with the
perturbation's title. A results file that cannot be read stops the report with an error naming it.
The published numbers live in paper/published.json with their sources.

Bayesian TAML (Lee et al., ICLR 2020): any-shot runs (--max_shot) write one results file per evaluated dataset
(results_id_<name>.json, results_ood_<name>.json); their table puts each beside Bayesian TAML's
Table 1 and the authors' re-run (paper/published_taml.json), by experiment (the run's ID datasets),
model (the switches --alpha_on, --omega_on, --gamma_on, --z_on: MAML, Meta-SGD, Bayesian TAML and
the ablations alpha + one of omega, gamma, z) and evaluated dataset.
"""

from __future__ import annotations

import cli

if __name__ == "__main__":
    cli.quiet_ctrl_c()  # Ctrl-C while the modules below load: one line, exit 130

import argparse
import json
import math
import os
import re
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from data.files import atomic, read_json, resource

PUBLISHED = Path(__file__).resolve().parent / "paper" / "published.json"
TRANSFER_PUBLISHED = Path(__file__).resolve().parent / "paper" / "metaperturb.json"
# display titles of the transfer table where a perturbation's own (an episodic learner's) does not fit
TRANSFER_TITLES = {"none": "Base (no regulariser)"}
FINE_TUNED = " + fine-tuning"  # the title suffix of runs started from a pre-trained network (--fine_tune)
PUBLISHED_TAML = PUBLISHED.with_name("published_taml.json")
MISSING = "—"
RUN_COLUMNS = ["model", "setting", "seed", "ours", "episodes", "iterations", "evaluated on", "settings"]
PAPER_COLUMNS = RUN_COLUMNS + ["paper", "orig. repo", "ours − paper", "file"]
TABLE23_COLUMNS = ["model", "hyperparameter", *RUN_COLUMNS[1:], "paper", "ours − paper", "file"]
OTHER_COLUMNS = [*RUN_COLUMNS[:1], "title", *RUN_COLUMNS[1:], "file"]
TAML_COLUMNS = ["model", "dataset", *RUN_COLUMNS[2:], "paper", "orig. repo", "ours − paper", "file"]
# Bayesian TAML's models by their switches (--alpha_on = metasgd, --omega_on, --gamma_on, --z_on).
SWITCHES = ("metasgd", "omega_on", "gamma_on", "z_on")
TAML_MODELS = {
    (False, False, False, False): "maml",
    (True, False, False, False): "metasgd",
    (True, True, True, True): "taml",
    (True, True, False, False): "alpha+omega",
    (True, False, True, False): "alpha+gamma",
    (True, False, False, True): "alpha+z",
}


class ReportError(Exception):
    """A results.json that cannot be used; the message names it and says what to do."""


@dataclass(frozen=True)
class Result:
    path: str
    model: str
    setting: str
    mean: float
    ci95: float
    n: int
    train_iters: int
    seed: int | None
    noise: str
    noise_hp: dict[str, Any]
    metasgd: bool
    title: str
    variant: str  # "" for the paper's models; adversarial or first-order MAML otherwise
    evaluated: tuple[str, str]  # ("test split", "seed S") or ("episodes", hash): what was evaluated
    settings: str  # the other settings that change a result, as text
    tested: str  # the dataset evaluated (a TAML run's results file names one of its datasets)
    ids: tuple[str, ...]  # the run's training (ID) datasets
    taml: str | None  # TAML_MODELS name of an any-shot run without perturbation, else None


# Training settings (config.json) and meta-test settings (the results file's config) that change a
# result; each shown in the "settings" column and separating groups of rows.
TRAIN_SETTINGS = ("meta_lr", "inner_lr", "n_steps", "metabatch", "query", "sampler", "val_split")
TEST_SETTINGS = {"n_test_mc_samp": "mc"}
EPISODES_FILE = re.compile(r"results_.+_([0-9a-f]{8})\.json$")


def noise_name(config: dict[str, Any]) -> str:
    """The perturbation of a run (configs written before --noise say only --maml)."""
    return config.get("noise") or ("none" if config.get("maml") else "metadrop")


def variant(config: dict[str, Any]) -> str:
    """What sets a run apart from the paper's models of Tables 1-3: adversarial MAML's inner loop
    (Section 4.1) and first-order meta-gradients; "" for neither."""
    out = ""
    if config.get("adv_inner"):
        eps = config.get("adv_eps")
        out += f"+adv({config['adv_inner']},eps={eps:g})" if _number(eps) else f"+adv({config['adv_inner']})"
    if config.get("first_order"):
        out += "+first_order"
    return out


def model_name(config: dict[str, Any]) -> str:
    """Table 1 row of a run: maml, metasgd, metadrop, metasgd_metadrop (or base+noise(hp) for others),
    followed by its variant (adversarial, first-order), if any."""
    noise = noise_name(config)
    base = "metasgd" if config.get("metasgd") else "maml"
    if noise == "none":
        name = base
    elif noise == "metadrop":
        name = "metadrop" if base == "maml" else "metasgd_metadrop"
    else:
        hp = config.get("noise_hp") or {}
        name = f"{base}+{noise}" + (f"({hp_text(hp)})" if hp else "")
    return name + variant(config)


def evaluated(path: Path, r: dict[str, Any], config: dict[str, Any]) -> tuple[str, str]:
    """What a result evaluated: a file of fixed episodes (by the hash main.py puts in the file
    name), or the test split with the meta-test's seed (results.json, results_test_seed<S>.json)."""
    m = EPISODES_FILE.match(path.name)
    if m and not path.name.startswith("results_test_seed"):
        return "episodes", m.group(1)
    return "test split", f"seed {config.get('seed', MISSING)}"


def settings_text(train: dict[str, Any], test: dict[str, Any]) -> str:
    """The settings of TRAIN_SETTINGS and TEST_SETTINGS, and every hyperparameter of the perturbation
    (a Table 2/3 row names only the one it varies)."""
    values = [(k, train.get(k, test.get(k))) for k in TRAIN_SETTINGS]
    values += [(short, test.get(k)) for k, short in TEST_SETTINGS.items()]
    text = " ".join(f"{k}={v:g}" if _number(v) else f"{k}={v}" for k, v in values if v is not None)
    hp = train.get("noise_hp")
    return f"{text} {hp_text(hp)}".strip() if isinstance(hp, dict) and hp else text


def hp_text(hp: dict[str, Any]) -> str:
    return ",".join(f"{k}={v:g}" if _number(v) else f"{k}={v}" for k, v in hp.items())


def setting_name(config: dict[str, Any], settings: dict[str, dict[str, Any]]) -> str:
    """Table 1 column of a run (omni_1shot, ...), or dataset_<way>way_<shot>shot for others."""
    if config.get("max_shot"):  # any-shot (Bayesian TAML): never a Meta-Dropout table's cell
        return "{}_{}way_{}maxshot".format(config["dataset"], config["way"], config["max_shot"])
    key = (config["dataset"], config["way"], config["shot"])
    for name, s in settings.items():
        if key == (s["dataset"], s["way"], s["shot"]):
            return name
    return "{}_{}way_{}shot".format(*key)


def _number(v: Any, integer: bool = False) -> bool:
    """A JSON number (NaN and infinities are not: json.load reads them as floats)."""
    kinds = (int,) if integer else (int, float)
    return isinstance(v, kinds) and not isinstance(v, bool) and math.isfinite(v)


def load_result(path: Path, settings: dict[str, dict[str, Any]]) -> Result:
    fix = "fix or delete it, or rerun main.py --mode meta_test for that savedir"
    try:
        r = read_json(str(path))
    except ValueError as e:
        raise ReportError(f"{e}; {fix}") from e
    config = r.get("config") if isinstance(r, dict) else None
    if not isinstance(config, dict):
        raise ReportError(f"{path}: no 'config' object; {fix}")
    checks = {
        "mean": _number(r.get("mean")),
        "ci95": _number(r.get("ci95")),
        "n": _number(r.get("n"), True),
        "train_iters": _number(r.get("train_iters"), True),
        "config.dataset": isinstance(config.get("dataset"), str),
        "config.way": _number(config.get("way"), True),
        "config.shot": _number(config.get("shot"), True),
    }
    bad = [k for k, ok in checks.items() if not ok]
    if bad:
        raise ReportError(f"{path}: missing, not a finite number, or wrong type: {', '.join(bad)}; {fix}")
    train = train_config(path, config)
    seed = train.get("seed")
    return Result(
        path=str(path),
        model=model_name(train),
        setting=setting_name(config, settings),
        mean=float(r["mean"]),
        ci95=float(r["ci95"]),
        n=r["n"],
        train_iters=r["train_iters"],
        seed=seed if _number(seed, True) else None,
        noise=noise_name(train),
        noise_hp=train.get("noise_hp") if isinstance(train.get("noise_hp"), dict) else {},
        metasgd=bool(train.get("metasgd")),
        title=str(config.get("noise_title", MISSING)),
        variant=variant(train),
        evaluated=evaluated(path, r, config),
        settings=settings_text(train, config),
        tested=str(r.get("dataset") or config["dataset"]),
        ids=tuple(config["dataset"].split(",")),
        taml=TAML_MODELS.get(tuple(bool(config.get(k)) for k in SWITCHES))
        if config.get("max_shot") and noise_name(config) == "none"
        else None,
    )


def train_config(path: Path, config: dict[str, Any]) -> dict[str, Any]:
    """The settings of the training run: the savedir's config.json beside the results file, over
    the results file's config (meta_test's flags, whose --seed is the evaluation's)."""
    saved = path.parent / "config.json"
    if saved.exists():
        try:
            train = read_json(str(saved))
        except ValueError as e:
            raise ReportError(f"{e}; fix or restore it (the settings of the run that wrote {path})") from e
        if isinstance(train, dict):
            return {**config, **train}
    return config


def pm(mean: float, spread: float) -> str:
    return f"{mean:.2f} ± {spread:.2f}"


def cell_rows(results: list[Result], root: str, paper: float | None = None) -> list[dict[str, str]]:
    """The rows of a cell, group by group: results of one evaluation (the test split first, then
    files of fixed episodes) and the same settings, which differ in their training seed only."""
    groups: dict[tuple[tuple[str, str], str], list[Result]] = {}
    for r in sorted(results, key=lambda r: (r.evaluated[0] != "test split", r.evaluated, r.settings)):
        groups.setdefault((r.evaluated, r.settings), []).append(r)
    return [row for runs in groups.values() for row in evaluation_rows(runs, root, paper)]


def evaluation_rows(results: list[Result], root: str, paper: float | None = None) -> list[dict[str, str]]:
    """One row per result of one group (cell_rows), plus a mean-over-runs row when there are several;
    ours − paper if given."""
    results = sorted(results, key=lambda r: (r.seed is None, r.seed or 0, r.path))
    means = [r.mean for r in results]
    group = {"evaluated on": " ".join(results[0].evaluated), "settings": results[0].settings or MISSING}
    rows = [
        {
            "seed": MISSING if r.seed is None else str(r.seed),
            "ours": pm(r.mean, r.ci95),
            "episodes": str(r.n),
            "iterations": str(r.train_iters),
            "file": os.path.relpath(r.path, root),
            **group,
        }
        for r in results
    ]
    if len(results) > 1:
        mean = sum(means) / len(means)
        sd = math.sqrt(sum((m - mean) ** 2 for m in means) / (len(means) - 1))
        iters = sorted({r.train_iters for r in results})
        rows.append(
            {
                "seed": f"mean of {len(results)} (± sd)",
                "ours": pm(mean, sd),
                "episodes": str(sum(r.n for r in results)),
                "iterations": ", ".join(map(str, iters)),
                "file": "",
                **group,
            }
        )
        means.append(mean)
    if paper is not None:
        for row, m in zip(rows, means):
            row["ours − paper"] = f"{m - paper:+.2f}"
    return rows


def table(columns: list[str], rows: list[dict[str, str]]) -> str:
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(row.get(c, "") for c in columns) + " |" for row in rows]
    return "\n".join(lines)


def published_cell(rows: dict[str, dict[str, Any]], model: str, setting: str) -> str:
    cell = rows.get(model, {}).get(setting)
    return pm(cell["mean"], cell["ci95"]) if cell else MISSING


def in_row(r: Result, spec: dict[str, Any]) -> bool:
    """Whether a result belongs to a Table 2/3 row: MAML (not adversarial, not first-order) with the
    row's perturbation and hyperparameters."""
    hp = spec["noise_hp"]
    same_hp = all(r.noise_hp.get(k) == v for k, v in hp.items())
    return not r.metasgd and not r.variant and r.noise == spec["noise"] and same_hp


def report(root: str, published: Path = PUBLISHED) -> str:
    """The markdown report for all results.json under `root`."""
    if not os.path.isdir(root):
        raise ReportError(f"{root}: not a folder; give the folder holding the runs' savedirs (e.g. results/)")
    with open(published) as f:
        pub = json.load(f)
    settings, table1, repo = pub["settings"], pub["table1"], pub["readme_repo"]
    found: dict[tuple[str, str], list[Result]] = {}
    for path in sorted(Path(root).rglob("results*.json")):
        if path.name != "results.json" and not path.name.startswith("results_"):
            continue
        r = load_result(path, settings)
        found.setdefault((r.model, r.setting), []).append(r)

    results = [r for runs in found.values() for r in runs]
    used: set[str] = set()  # paths of results in a paper table
    paper_rows = []
    for setting in settings:
        for model in table1["rows"]:
            paper = table1["rows"][model][setting]
            extra = {
                "model": model,
                "setting": setting,
                "paper": pm(paper["mean"], paper["ci95"]),
                "orig. repo": published_cell(repo["rows"], model, setting),
            }
            runs = found.get((model, setting), [])
            used.update(r.path for r in runs)
            rows = cell_rows(runs, root, paper["mean"]) or [dict.fromkeys(PAPER_COLUMNS, MISSING)]
            paper_rows += [{**row, **extra} for row in rows]
    n_paper = bool(paper_rows) and any(found.get((m, s)) for m in table1["rows"] for s in settings)
    tables23 = {}
    for name in ("table2", "table3"):
        rows, n_found = [], 0
        for setting in settings:
            for spec in pub[name]["rows"].values():
                runs = [r for r in results if r.setting == setting and in_row(r, spec)]
                used.update(r.path for r in runs)
                n_found += len(runs)
                paper = spec[setting]
                extra = {
                    "model": spec["label"],
                    "hyperparameter": hp_text(spec["noise_hp"]) or MISSING,
                    "setting": setting,
                    "paper": pm(paper["mean"], paper["ci95"]),
                }
                cell = cell_rows(runs, root, paper["mean"]) or [dict.fromkeys(TABLE23_COLUMNS, MISSING)]
                rows += [{**row, **extra} for row in cell]
        if n_found:
            tables23[name] = rows
    taml_out, taml_used = taml_tables(results, root)
    used |= taml_used
    other_rows = [
        {**row, "model": model, "setting": setting, "title": runs[0].title}
        for (model, setting), runs in sorted(found.items())
        if not used.issuperset(r.path for r in runs)
        for row in cell_rows([r for r in runs if r.path not in used], root)
    ]

    out = []
    if n_paper:  # Table 1 appears once there is a result for one of its cells
        out += [
            "## Table 1: ours vs. published",
            "",
            f"paper = {table1['source']}; orig. repo = {repo['source']}. "
            "Accuracy in %, mean ± 95% interval over episodes (mean-over-runs rows: ± sd across runs); "
            "seed = the training seed.",
            "",
            table(PAPER_COLUMNS, paper_rows),
        ]
    for name, rows in tables23.items():
        out += [
            "",
            f"## Table {name[5:]}: ours vs. published",
            "",
            f"paper = {pub[name]['source']}. Accuracy in %, as in Table 1.",
            "",
            table(TABLE23_COLUMNS, rows),
        ]
    out += taml_out
    if other_rows:
        out += [
            "",
            "## Other results (no published numbers)",
            "",
            table(OTHER_COLUMNS, other_rows),
        ]
    if not out:
        out = [f"No results.json under {root}: run main.py --mode meta_test first."]
    return "\n".join(out) + "\n"


def pretrained_name(fine_tune: str) -> str:
    """A --fine_tune value's run folder name, with the checkpoint where it named one (run/model-<step>)."""
    head, tail = os.path.split(os.path.normpath(fine_tune))
    return f"{os.path.basename(os.path.dirname(head))}/{tail}" if os.path.basename(head) == "ckpt" else tail


def phi_name(phi: str) -> str:
    """A phi file as <source run folder>/<run>/phi_<step>.npz (its last three path parts)."""
    return "/".join(Path(phi).parts[-3:])


def transfer_results(root: str) -> list[dict[str, Any]]:
    """Every target run's results.json under root (transfer.py --phase tgt), titled by its
    regulariser, phi file, pre-trained network and the settings in which runs of its (dataset,
    model) differ; ReportError for a file that is not a result, or two runs of one seed in a row."""
    from transfer import MATCH

    # what changes a result besides the row (regulariser, phi, pre-trained run) and column (data, model)
    settings = [k for k in MATCH["tgt"] if k not in ("data", "model", "noise", "phi", "fine_tune", "seed")]
    found = []
    for path in sorted(Path(root).rglob("results.json")):
        try:
            r = read_json(str(path))
            c = r["config"]
            if c.get("phase") != "tgt":
                continue
            fine_tuned = bool(c.get("fine_tune"))
            found.append(
                {
                    "acc": float(r["acc"]),
                    "data": c["data"],
                    "model": c["model"],
                    "seed": c["seed"],
                    "noise": c["noise"],
                    "fine_tuned": fine_tuned,
                    # a transferred perturbation's runs are told apart by their phi file, fine-tuned
                    # ones by the pre-trained network's run
                    "title": TRANSFER_TITLES.get(c["noise"], c["noise_title"])
                    + (f" [{phi_name(c['phi'])}]" if c.get("phi") else "")
                    + (f"{FINE_TUNED} [{pretrained_name(c['fine_tune'])}]" if fine_tuned else ""),
                    "settings": {k: c.get(k) for k in settings},
                    "path": str(path),
                }
            )
        except (ValueError, KeyError, TypeError) as e:
            raise ReportError(
                f"{path} is not a transfer.py result ({e!r}); rerun transfer.py --phase tgt"
            ) from e
    seen: dict[tuple, str] = {}
    for r in found:
        column = [q["settings"] for q in found if (q["data"], q["model"]) == (r["data"], r["model"])]
        varied = [k for k in settings if len({repr(s[k]) for s in column}) > 1]
        if varied:
            r["title"] += " {" + ", ".join(f"{k}={r['settings'][k]}" for k in varied) + "}"
        key = (r["data"], r["model"], r["title"], r["seed"])
        if key in seen:
            raise ReportError(
                f"{seen[key]} and {r['path']} are two runs of seed {r['seed']} with the same settings: "
                f"one row's seeds must differ; move one out of {root}"
            )
        seen[key] = r["path"]
    return found


def transfer_report(root: str, baseline: str = "none", published: Path = TRANSFER_PUBLISHED) -> str:
    """MetaPerturb's transfer table (rows: regularisers, each from scratch and, if run, fine-tuned;
    columns: target datasets): mean ± std over seeds (n), the paper's Table 1 (empty until copied
    into paper/metaperturb.json), and each row's paired difference from `baseline` trained from
    scratch over the seeds they share, ± the 95% t-interval."""
    from scipy import stats

    results = transfer_results(root)
    if not results:
        return f"No transfer.py target results.json under {root}: run transfer.py --phase tgt first.\n"
    cols = sorted({(r["data"], r["model"]) for r in results})
    base_row = (baseline, False)  # (noise, fine-tuned) of the rows the differences are taken from
    rows = sorted(
        {(r["noise"], r["fine_tuned"], r["title"]) for r in results},
        key=lambda n: (n[:2] != base_row, n[2]),  # a fine-tuned row follows its from-scratch one
    )
    names = [f"{d} ({m})" for d, m in cols]
    cell = {
        (row, c): [
            r
            for r in results
            if (r["data"], r["model"]) == c and (r["noise"], r["fine_tuned"], r["title"]) == row
        ]
        for row in rows
        for c in cols
    }
    ours = []
    for row_key in rows:
        row = {"regulariser": row_key[2]}
        for c, name in zip(cols, names):
            accs = [r["acc"] for r in cell[row_key, c]]
            sd = float(np.std(accs, ddof=1)) if len(accs) > 1 else 0.0
            row[name] = f"{np.mean(accs):.2f} ± {sd:.2f} (n={len(accs)})" if accs else MISSING
        ours.append(row)
    paper = read_json(str(published))["accuracy"]
    datasets = sorted({d for v in paper.values() for d in v})
    paper_rows = [
        {"regulariser": n, **{d: MISSING if v.get(d) is None else f"{v[d]:.2f}" for d in datasets}}
        for n, v in paper.items()
    ]
    diffs = []
    for row_key in rows:
        if row_key[:2] == base_row:
            continue
        row = {"regulariser": f"{row_key[2]} − {baseline}"}
        for c, name in zip(cols, names):
            base = {
                r["seed"]: r["acc"]
                for r in results
                if (r["noise"], r["fine_tuned"]) == base_row and (r["data"], r["model"]) == c
            }
            d = [r["acc"] - base[r["seed"]] for r in cell[row_key, c] if r["seed"] in base]
            if len(d) < 2:
                row[name] = MISSING
                continue
            half = stats.t.ppf(0.975, len(d) - 1) * np.std(d, ddof=1) / math.sqrt(len(d))
            row[name] = f"{np.mean(d):+.2f} ± {half:.2f} (n={len(d)})"
        diffs.append(row)
    return "\n".join(
        [
            f"### Transfer: test accuracy (%) of target networks trained from scratch, or fine-tuned "
            f"where the row says so ({root})",
            "",
            table(["regulariser", *names], ours),
            "",
            f"### Paired differences from {baseline} trained from scratch (same seed), ± 95% t-interval",
            "",
            table(["regulariser", *names], diffs),
            "",
            f"### The paper's Table 1 (ResNet-20; {published.name}; empty until copied from the paper)",
            "",
            table(["regulariser", *datasets], paper_rows),
            "",
        ]
    )


def taml_tables(
    results: list[Result], root: str, published: Path = PUBLISHED_TAML
) -> tuple[list[str], set[str]]:
    """Bayesian TAML's tables (markdown lines), one per experiment with a result, and the paths of
    the results they show."""
    with open(published) as f:
        pub = json.load(f)
    paper, repo = pub["table1"], pub["readme_repo"]
    out: list[str] = []
    used: set[str] = set()
    for exp in pub["experiments"].values():
        runs = [r for r in results if r.taml is not None and list(r.ids) == exp["id"]]
        if not runs:
            continue
        rows = []
        for model in TAML_MODELS.values():
            for d in exp["id"] + exp["ood"]:
                cell = [r for r in runs if r.taml == model and r.tested == d]
                used.update(r.path for r in cell)
                published = paper["rows"].get(model, {}).get(d)
                extra = {
                    "model": paper["rows"].get(model, {}).get("label", model),
                    "dataset": pub["columns"][d] + (" (OOD)" if d in exp["ood"] else ""),
                    "paper": pm(published["mean"], published["ci95"]) if published else MISSING,
                    "orig. repo": published_cell(repo["rows"], model, d),
                }
                if not cell and not published:
                    continue  # an ablation without runs: no row
                mean = published["mean"] if published else None
                rows += [
                    {**row, **extra}
                    for row in cell_rows(cell, root, mean) or [dict.fromkeys(TAML_COLUMNS, MISSING)]
                ]
        out += [
            "",
            f"## Bayesian TAML, {exp['label']}: ours vs. published",
            "",
            f"paper = {paper['source']}; orig. repo = {repo['source']}. Accuracy in %, as in Table 1; "
            "ablations (alpha + one balancing variable) have no published numbers here.",
            "",
            table(TAML_COLUMNS, rows),
        ]
    return out, used


def main(argv: list[str] | None = None) -> int:
    try:
        cli.ctrl_c_raises()
        return run(argv)
    except KeyboardInterrupt:
        print("stopped; nothing was written", file=sys.stderr)
        return cli.STOPPED


def run(argv: list[str] | None) -> int:
    p = cli.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("root", help="folder searched for results.json (e.g. results/)")
    p.add_argument("--markdown", metavar="FILE", help="also write the tables to FILE")
    p.add_argument("--transfer", action="store_true", help="root holds transfer.py target runs")
    p.add_argument(
        "--baseline", default="none", help="--transfer: the regulariser differences are taken from"
    )
    args = p.parse_args(argv)
    if not os.path.isdir(args.root):
        p.error(f"{args.root} is not a folder: give the folder the runs wrote into (e.g. results/)")
    if args.markdown and os.path.isdir(args.markdown):
        p.error(f"--markdown {args.markdown} is a folder: give a file name")
    if args.markdown and (why := cli.missing_parent(args.markdown)):
        p.error(f"--markdown {args.markdown}: {why}")
    try:
        text = transfer_report(args.root, args.baseline) if args.transfer else report(args.root)
    except ReportError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(text, end="")
    if args.markdown:
        try:
            with atomic(args.markdown) as tmp, open(tmp, "w") as f:
                f.write(text)
        except OSError as e:
            print(
                f"error: cannot write --markdown {args.markdown} ({resource(e)}): the tables were "
                "not saved (they are printed above)",
                file=sys.stderr,
            )
            return 2
    return 0


if __name__ == "__main__":
    cli.run(main)
