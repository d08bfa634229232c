"""Every result beside the published numbers: Meta-Dropout's Tables 1-3, Bayesian TAML's Table 1,
MetaPerturb's transfer table, and paired differences of models evaluated on the same episodes.

    python report.py results/ [--baseline MODEL] [--markdown FILE]
    python report.py --transfer checkpoints/tgt [--baseline none] [--markdown FILE]

Reads every results.json and results_<name>.json under a folder as records of the results format
(results.py; files of the older format are converted and marked "(old format)"). A file that cannot
be read is named on stderr and skipped; a folder without a readable result is "nothing to report"
(exit 2, as plot.py). docs/usage.md describes the format and the paired view.

Meta-Dropout (Tables 1-3): the cell of a result comes from its record (dataset, way, shot, model),
not from its path; a Table 2/3 row takes the MAML (not Meta-SGD) runs of its perturbation whose
hyperparameters include the row's. Adversarial MAML (--adv_inner) and first-order MAML
(--first_order) are models of their own (e.g. maml+adv(linf,eps=0.1), maml+first_order): never in
Tables 1-3. Each result is one row, its seed the training seed. Within a cell, results are grouped
by what was evaluated ("evaluated on": the test split and its episode seed, or a file of fixed
episodes by its hash) and by every other setting that changes a result ("settings": the training's
meta_lr, inner_lr, n_steps, metabatch, query, sampler and perturbation hyperparameters, then the
meta-test's inner steps, MC samples and posterior draws); a group of several results, which then
differ in their training seed only, gets an extra row with the mean over them, ± the standard
deviation across them. Cells without a result show "—"; a table appears once one of its cells has
a result. Results in none of them go to a last table, with the perturbation's title. The
published numbers live in paper/published.json with their sources.

Bayesian TAML (Lee et al., ICLR 2020): any-shot runs (--max_shot) write one results file per
evaluated dataset; a table per experiment (the runs' ID datasets: the paper's three, or any other)
has a row per model (by the switches --alpha_on, --omega_on, --gamma_on, --z_on: MAML, Meta-SGD,
Bayesian TAML, the ablations) and training run, a column per evaluated dataset (ID, then OOD), and
the published rows of paper/published_taml.json.

MetaPerturb: transfer.py's target runs (rows: regularisers, from scratch or fine-tuned; columns:
target dataset and network), mean ± sd over seeds and the seed-paired differences from --baseline.
"""

from __future__ import annotations

import cli

if __name__ == "__main__":
    cli.quiet_ctrl_c()  # Ctrl-C while the modules below load: one line, exit 130

import argparse
import json
import math
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from data.files import atomic, read_json, resource
from results import (
    PUBLISHED,
    REWRITE,
    TITLES,
    TRAIN_SETTINGS,
    NothingToReport,
    Record,
    ResultError,
    collect,
    hp_text,
    model_name,
    nothing,
    number,
    paired,
    setting_name,
    transfer_label,
    transfer_records,
    transfer_runs,
    variant,
)

# tests and other scripts name these through report.py
__all__ = ["NothingToReport", "model_name"]

TRANSFER_PUBLISHED = PUBLISHED.with_name("metaperturb.json")
PUBLISHED_TAML = PUBLISHED.with_name("published_taml.json")
MISSING = "—"
RUN_COLUMNS = ["model", "setting", "seed", "ours", "episodes", "iterations", "evaluated on", "settings"]
PAPER_COLUMNS = RUN_COLUMNS + ["paper", "orig. repo", "ours − paper", "file"]
TABLE23_COLUMNS = ["model", "hyperparameter", *RUN_COLUMNS[1:], "paper", "ours − paper", "file"]
OTHER_COLUMNS = [*RUN_COLUMNS[:1], "title", *RUN_COLUMNS[1:], "file"]
PAIRED_COLUMNS = [
    "evaluated on",
    "dataset",
    "model",
    "baseline",
    "seed",
    "model − baseline",
    "n",
    "model alone",
    "baseline alone",
]
# the model the paired differences are taken from, by system (--baseline overrides it)
BASELINES = {"metadrop": "maml", "taml": "maml", "metaperturb": "none"}


ReportError = ResultError  # a folder or file that cannot be reported; the message says what to do


@dataclass(frozen=True)
class Result:
    """A record of main.py's meta-test as the Meta-Dropout tables use it."""

    record: Record
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
    evaluated: str  # "test split seed S" or "episodes <hash>": what was evaluated
    settings: str  # the other settings that change a result, as text


# the meta-test's settings shown beside the training's: record.test key -> short name
TEST_SETTINGS = {"n_steps": "n_steps", "mc_samples": "mc", "posterior_draws": "draws"}


def settings_text(r: Record) -> str:
    """The training settings of results.TRAIN_SETTINGS with every hyperparameter of the perturbation
    (a Table 2/3 row names only the one it varies), then the meta-test's (its inner steps, MC
    samples, posterior draws), which may differ from training's."""
    train = " ".join(
        f"{k}={v:g}" if number(v) else f"{k}={v}"
        for k in TRAIN_SETTINGS
        if (v := r.settings.get(k)) is not None
    )
    hp = r.settings.get("noise_hp")
    train = f"{train} {hp_text(hp)}".strip() if isinstance(hp, dict) and hp else train
    return "; ".join(filter(None, [train, test_text(r)]))


def test_text(r: Record) -> str:
    """The meta-test's settings, "meta-test n_steps=10 mc=1 draws=10" ("" if the file has none)."""
    test = " ".join(f"{short}={r.test[k]}" for k, short in TEST_SETTINGS.items() if r.test.get(k) is not None)
    return f"meta-test {test}" if test else ""


def as_result(r: Record, settings: dict[str, dict[str, Any]]) -> Result:
    """A Meta-Dropout record as a row of Tables 1-3 (its cell from the record's dataset, way, shot)."""
    cell = {"dataset": r.dataset, "way": r.way, "shot": r.shot, "max_shot": r.max_shot}
    return Result(
        record=r,
        path=r.path,
        model=r.model,
        setting=setting_name(cell, settings),
        mean=r.mean,
        ci95=r.ci95,
        n=r.n,
        train_iters=r.run["iterations"],
        seed=r.run.get("seed"),
        noise=str(r.settings.get("noise", "metadrop")),
        noise_hp=r.settings.get("noise_hp") if isinstance(r.settings.get("noise_hp"), dict) else {},
        metasgd=bool(r.settings.get("metasgd")),
        title=r.title,
        variant=variant(r.settings),
        evaluated=r.evaluated,
        settings=settings_text(r),
    )


def pm(mean: float, spread: float) -> str:
    return f"{mean:.2f} ± {spread:.2f}"


def cell_rows(results: list[Result], root: str, paper: float | None = None) -> list[dict[str, str]]:
    """The rows of a cell, group by group: results of one evaluation (the test split first, then
    files of fixed episodes) and the same settings, which differ in their training seed only."""
    groups: dict[tuple[str, str], list[Result]] = {}
    key = lambda r: (not r.evaluated.startswith("test split"), r.evaluated, r.settings)  # noqa: E731
    for r in sorted(results, key=key):
        groups.setdefault((r.evaluated, r.settings), []).append(r)
    return [row for runs in groups.values() for row in evaluation_rows(runs, root, paper)]


def evaluation_rows(results: list[Result], root: str, paper: float | None = None) -> list[dict[str, str]]:
    """One row per result of one group (cell_rows), plus a mean-over-runs row when there are several;
    ours − paper if given."""
    results = sorted(results, key=lambda r: (r.seed is None, r.seed or 0, r.path))
    means = [r.mean for r in results]
    group = {"evaluated on": results[0].evaluated, "settings": results[0].settings or MISSING}
    rows = [
        {
            "seed": MISSING if r.seed is None else str(r.seed),
            "ours": pm(r.mean, r.ci95),
            "episodes": str(r.n),
            "iterations": str(r.train_iters),
            "file": os.path.relpath(r.path, root) + (" (old format)" if r.record.old else ""),
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


def report(root: str, published: Path = PUBLISHED, baseline: str | None = None) -> str:
    """The markdown report of every results file under `root`, of all three systems: Tables 1-3
    and other Meta-Dropout results, Bayesian TAML's tables, MetaPerturb's transfer table, and the
    paired differences of models evaluated on the same episodes (from `baseline`, else BASELINES).
    NothingToReport if no file could be read."""
    if not os.path.isdir(root):
        raise ReportError(f"{root}: not a folder; give the folder holding the runs' savedirs (e.g. results/)")
    records = collect(root)
    transfer = transfer_records(records)
    out = metadrop_tables([r for r in records if r.system == "metadrop"], root, published)
    out += taml_tables([r for r in records if r.system == "taml"], root)
    if transfer:
        try:
            out += [
                "",
                transfer_table(transfer_runs(transfer, root), root, baseline or BASELINES["metaperturb"]),
            ]
        except ReportError as e:  # one system's refusal never hides the others' tables
            print(f"skipped the transfer table: {e}", file=sys.stderr)
    out += paired_section(records, root, baseline)
    if not out:
        raise NothingToReport(
            nothing("results files", root, "main.py --mode meta_test or transfer.py --phase tgt")
        )
    return "\n".join(out).lstrip("\n") + "\n"


def metadrop_tables(records: list[Record], root: str, published: Path = PUBLISHED) -> list[str]:
    """Meta-Dropout's Tables 1, 2 and 3 (markdown lines), each once one of its cells has a result,
    and the other results (no published numbers)."""
    with open(published) as f:
        pub = json.load(f)
    settings, table1, repo = pub["settings"], pub["table1"], pub["readme_repo"]
    found: dict[tuple[str, str], list[Result]] = {}
    for rec in records:
        r = as_result(rec, settings)
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
    other_rows = [
        {**row, "model": model, "setting": setting, "title": runs[0].title}
        for (model, setting), runs in sorted(found.items())
        if not used.issuperset(r.path for r in runs)
        for row in cell_rows([r for r in runs if r.path not in used], root)
    ]

    out = []
    if n_paper:  # Table 1 appears once there is a result for one of its cells
        out += [
            "",
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
    if other_rows:
        out += [
            "",
            "## Other results (no published numbers)",
            "",
            table(OTHER_COLUMNS, other_rows),
        ]
    return out


def transfer_report(root: str, baseline: str = "none", published: Path = TRANSFER_PUBLISHED) -> str:
    """report.py --transfer: MetaPerturb's tables of the target runs under root, then the paired
    per-image differences of runs tested on the same images."""
    records = transfer_records(collect(root))
    if not records:
        raise NothingToReport(nothing("transfer.py target results", root, "transfer.py --phase tgt"))
    table_text = transfer_table(transfer_runs(records, root), root, baseline, published)
    return "\n".join([table_text, *paired_section(records, root, baseline)]) + "\n"


def transfer_table(
    results: list[dict[str, Any]], root: str, baseline: str = "none", published: Path = TRANSFER_PUBLISHED
) -> str:
    """MetaPerturb's transfer table (rows: regularisers, each from scratch and, if run, fine-tuned;
    columns: target datasets): mean ± std over seeds (n), the paper's Table 1 (empty until copied
    into paper/metaperturb.json), and each row's paired difference from `baseline` trained from
    scratch over the seeds they share, ± the 95% t-interval."""
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
            both = [r for r in cell[row_key, c] if r["seed"] in base]
            if len(both) < 2:
                row[name] = MISSING
                continue
            mean, half, n = paired([r["acc"] for r in both], [base[r["seed"]] for r in both])
            row[name] = f"{mean:+.2f} ± {half:.2f} (n={n})"
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
        ]
    )


def label(r: Record) -> str:
    """A record's model as the paired differences name it (a fine-tuned transfer run apart)."""
    return transfer_label(r) if r.system == "metaperturb" else r.model


def paired_section(records: list[Record], root: str, baseline: str | None = None) -> list[str]:
    """The paired differences (markdown lines): for every episode set (records.episodes_id) with
    per-episode accuracies of the baseline model and of others, each other model minus the
    baseline of the same training seed (or the only baseline run there), per episode: mean ± 95%
    t-interval (results.paired), beside each one's own interval; where a model has pairs of several
    seeds on the same episodes, a row over the seeds (their mean differences, t-interval over
    seeds). Then the files of the older format, which have no per-episode accuracies."""
    groups: dict[tuple[str, str], list[Record]] = {}
    for r in records:
        if r.accuracies is not None and r.run.get("phase", "tgt") == "tgt":
            groups.setdefault((r.system, r.episodes_id), []).append(r)
    rows = []
    for (system, _), group in sorted(groups.items(), key=lambda kv: (kv[1][0].evaluated, kv[1][0].dataset)):
        base_name = baseline or BASELINES[system]
        bases = [r for r in group if label(r) == base_name]
        by_model: dict[str, list[tuple[Record, Record]]] = {}
        for r in sorted(
            group, key=lambda r: (label(r), r.run.get("seed") is None, r.run.get("seed") or 0, r.path)
        ):
            same_seed = [b for b in bases if b.run.get("seed") == r.run.get("seed")]
            b = (same_seed or (bases if len(bases) == 1 else [None]))[0]
            if label(r) == base_name or b is None:
                continue
            by_model.setdefault(label(r), []).append((r, b))
            mean, half, n = paired(r.accuracies, b.accuracies)
            seed, bseed = r.run.get("seed"), b.run.get("seed")
            rows.append(
                {
                    "evaluated on": r.evaluated,
                    "dataset": r.dataset,
                    "model": label(r),
                    "baseline": label(b),
                    "seed": str(seed) if seed == bseed else f"{seed} vs {bseed}",
                    "model − baseline": f"{mean:+.2f} ± {half:.2f}",
                    "n": str(n),
                    "model alone": pm(r.mean, r.ci95),
                    "baseline alone": pm(b.mean, b.ci95),
                }
            )
        for model, pairs in by_model.items():
            seeds = {r.run.get("seed") for r, _ in pairs}
            if len(pairs) < 2 or len(seeds) < len(pairs):
                continue
            mean, half, n = paired([r.mean for r, _ in pairs], [b.mean for _, b in pairs])
            rows.append(
                {
                    "evaluated on": pairs[0][0].evaluated,
                    "dataset": pairs[0][0].dataset,
                    "model": model,
                    "baseline": base_name,
                    "seed": f"over {n} seeds",
                    "model − baseline": f"{mean:+.2f} ± {half:.2f}",
                    "n": f"{n} seeds",
                }
            )
    out = []
    if rows:
        out += [
            "",
            "## Paired differences (same episodes)",
            "",
            "Accuracy of a model minus its baseline's on the same episodes (test images for a transfer "
            "target), episode by episode: mean ± 95% t-interval (n − 1 degrees of freedom); 'over k "
            "seeds' rows: the seeds' mean differences, ± the t-interval across seeds. Beside them, each "
            "one's own interval.",
            "",
            table(PAIRED_COLUMNS, rows),
        ]
    old = [r for r in records if r.old]
    if old:
        out += [
            "",
            "## Results files of the older format",
            "",
            "They have no per-episode accuracies, so no paired differences; to rewrite one, "
            + "; ".join(sorted({f"{s}: {REWRITE[s]}" for s in {r.system for r in old}}))
            + ":",
            "",
            *[f"- {os.path.relpath(r.path, root)}" for r in sorted(old, key=lambda r: r.path)],
        ]
    return out


def taml_tables(records: list[Record], root: str, published: Path = PUBLISHED_TAML) -> list[str]:
    """Bayesian TAML's tables (markdown lines), one per experiment (the runs' ID datasets): a row per
    model and training run (MAML, Meta-SGD, Bayesian TAML, the ablations), a column per evaluated
    dataset, ID then OOD, as in the paper's Table 1; mean-over-runs rows for runs that differ in
    their training seed only; the published rows (paper, orig. repo) for the paper's experiments."""
    with open(published) as f:
        pub = json.load(f)
    paper, repo = pub["table1"], pub["readme_repo"]
    experiments = [(tuple(e["id"]), e) for e in pub["experiments"].values()]
    for ids in sorted({r.ids for r in records} - {ids for ids, _ in experiments}):
        oods = sorted({r.dataset for r in records if r.ids == ids and r.role == "ood"})
        experiments.append(
            (
                ids,
                {"label": f"{', '.join(ids)} / {', '.join(oods) or 'no OOD'}", "id": list(ids), "ood": oods},
            )
        )
    out: list[str] = []
    for ids, exp in experiments:
        runs = [r for r in records if r.ids == ids]
        if not runs:
            continue
        columns = list(exp["id"]) + list(exp["ood"])
        columns += sorted({taml_column(r) for r in runs} - set(columns))
        names = {d: pub["columns"].get(d, d) + (" (OOD)" if d in exp["ood"] else "") for d in columns}
        rows = []
        for model in [*TAML_ORDER, *sorted({r.model for r in runs} - set(TAML_ORDER))]:
            published_row = paper["rows"].get(model, {})
            rows += taml_rows(
                [r for r in runs if r.model == model], model, columns, names, root, published_row
            )
            if published_row and any(d in published_row for d in columns):
                title = published_row.get("label", model)
                rows.append(
                    {
                        "model": title,
                        "seed": "paper",
                        **{names[d]: published_cell(paper["rows"], model, d) for d in columns},
                    }
                )
                rows.append(
                    {
                        "model": title,
                        "seed": "orig. repo",
                        **{names[d]: published_cell(repo["rows"], model, d) for d in columns},
                    }
                )
        source = (
            f"paper = {paper['source']}; orig. repo = {repo['source']}. "
            if any(d in pub["columns"] for d in columns)
            else ""
        )
        out += [
            "",
            f"## Bayesian TAML, {exp['label']}: ours vs. published",
            "",
            f"{source}Accuracy in %, mean ± 95% interval over episodes (mean-over-runs rows: ± sd across "
            "runs; in brackets: ours − paper); seed = the training seed; settings: training's, then the "
            "meta-test's inner steps, MC samples and posterior draws; ablations (alpha + one balancing "
            "variable) have no published numbers.",
            "",
            table(
                [
                    "model",
                    "seed",
                    *names.values(),
                    "episodes",
                    "iterations",
                    "evaluated on",
                    "settings",
                    "files",
                ],
                rows,
            ),
        ]
    return out


def taml_column(r: Record) -> str:
    """A Bayesian TAML result's column: its dataset, or for an episode file of unknown dataset (files
    of the older format name the run's first dataset) what it evaluated."""
    return r.dataset if r.role in ("id", "ood") else r.evaluated


TAML_ORDER = ("maml", "metasgd", "taml", "alpha+omega", "alpha+gamma", "alpha+z")  # the paper's rows first


def taml_rows(
    runs: list[Record],
    model: str,
    columns: list[str],
    names: dict[str, str],
    root: str,
    published: dict[str, Any],
) -> list[dict[str, str]]:
    """The rows of one model: one per training run and evaluation (its results files side by side,
    one per evaluated dataset), then a mean row per group of runs evaluated alike; each cell with
    its difference from the `published` row's number, where there is one."""

    def text(mean: float, spread: float, d: str) -> str:
        paper = published.get(d)
        return pm(mean, spread) + (f" ({mean - paper['mean']:+.2f})" if isinstance(paper, dict) else "")

    title = TITLES.get(model, model)
    by_run: dict[tuple[str, str, str], dict[str, Record]] = {}
    for r in sorted(runs, key=lambda r: (r.run.get("seed") is None, r.run.get("seed") or 0, r.path)):
        kind = r.evaluated if r.evaluated.startswith("test split") else "episode files"
        by_run.setdefault((r.run.get("savedir", ""), kind, settings_text(r)), {})[taml_column(r)] = r
    groups: dict[tuple[str, str], list[dict[str, Record]]] = {}
    for (_, _kind, settings), cells in by_run.items():
        evaluated = ", ".join(sorted({r.evaluated for r in cells.values()}))
        groups.setdefault((evaluated, settings), []).append(cells)
    rows = []
    for (evaluated, settings), group in groups.items():
        for cells in group:
            first = next(iter(cells.values()))
            seed = first.run.get("seed")
            rows.append(
                {
                    "model": title,
                    "seed": MISSING if seed is None else str(seed),
                    **{
                        names[d]: text(cells[d].mean, cells[d].ci95, d) if d in cells else MISSING
                        for d in columns
                    },
                    "episodes": ", ".join(sorted({str(r.n) for r in cells.values()})),
                    "iterations": ", ".join(sorted({str(r.run["iterations"]) for r in cells.values()})),
                    "evaluated on": evaluated,
                    "settings": settings,
                    "files": ", ".join(
                        os.path.relpath(r.path, root) + (" (old format)" if r.old else "")
                        for r in cells.values()
                    ),
                }
            )
        if len(group) > 1:
            row = {
                "model": title,
                "seed": f"mean of {len(group)} (± sd)",
                "evaluated on": evaluated,
                "settings": settings,
            }
            for d in columns:
                means = [cells[d].mean for cells in group if d in cells]
                row[names[d]] = (
                    text(float(np.mean(means)), float(np.std(means, ddof=1)), d)
                    if len(means) > 1
                    else MISSING
                )
            rows.append(row)
    return rows


def main(argv: list[str] | None = None) -> int:
    try:
        cli.ctrl_c_raises()
        return run(argv)
    except KeyboardInterrupt:
        print("stopped; nothing was written", file=sys.stderr)
        return cli.STOPPED


def run(argv: list[str] | None) -> int:
    p = cli.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("root", help="folder searched for results files (e.g. results/)")
    p.add_argument("--markdown", metavar="FILE", help="also write the tables to FILE")
    p.add_argument(
        "--transfer", action="store_true", help="only MetaPerturb's transfer tables (transfer.py target runs)"
    )
    p.add_argument(
        "--baseline",
        default=None,
        help="the model paired differences are taken from (default: maml; none for transfer runs)",
    )
    args = p.parse_args(argv)
    if not os.path.isdir(args.root):
        p.error(f"{args.root} is not a folder: give the folder the runs wrote into (e.g. results/)")
    if args.markdown and os.path.isdir(args.markdown):
        p.error(f"--markdown {args.markdown} is a folder: give a file name")
    if args.markdown and (why := cli.missing_parent(args.markdown)):
        p.error(f"--markdown {args.markdown}: {why}")
    try:
        if args.transfer:
            text = transfer_report(args.root, args.baseline or BASELINES["metaperturb"])
        else:
            text = report(args.root, baseline=args.baseline)
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
