"""One results format for every evaluation of every system (Meta-Dropout, Bayesian TAML, MetaPerturb).

A record (a JSON file, written whole or not at all) says what was evaluated (system, model, role,
dataset, the episode set or test images and their identity, way/shot/query), how (the meta-test's
inner steps, MC samples, posterior draws, checkpoint selection), which training run (savedir, seed,
iterations, checkpoint, the settings that change a result) and the per-episode (or per-test-image)
accuracies beside their mean, 95% interval and count. docs/usage.md describes every field.

`read` also loads the files written before this format (main.py's results*.json and transfer.py's
results.json of the older shapes), marked `old`: they have no per-episode accuracies, so they take no
part in paired comparisons. The model names of the tables (model_name, taml_name) live here so that
writers and report.py share them. No TensorFlow; numpy (scipy for the t quantile of `paired`).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import os
import re
import sys
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import numpy as np

from data.files import atomic, read_json

FORMAT = 2  # the files before this module are format 1 (read converts them, marked old)
SYSTEMS = ("metadrop", "taml", "metaperturb")
ROLES = ("id", "ood", "file", "target")  # in or out of distribution, a file of episodes, a transfer target
Z95 = 1.96  # the normal quantile of the per-episode interval (the papers' "95% confidence interval")


PUBLISHED = Path(__file__).resolve().parent / "paper" / "published.json"  # Meta-Dropout's Tables 1-3
# display titles of the transfer table where a perturbation's own (an episodic learner's) does not fit
TRANSFER_TITLES = {"none": "Base (no regulariser)"}
FINE_TUNED = " + fine-tuning"  # the title suffix of runs started from a pre-trained network (--fine_tune)


class ResultError(ValueError):
    """A results file or folder that cannot be used; the message names it and says what to do."""


class NothingToReport(ResultError):
    """A folder without a readable result (nothing's message): report.py and plot.py exit 2."""


# ---------------------------------------------------------------------------------------------
# Model names (the tables' rows)

# Bayesian TAML's switches (--alpha_on = metasgd, --omega_on, --gamma_on, --z_on) and their symbols.
SWITCHES = {"metasgd": "alpha", "omega_on": "omega", "gamma_on": "gamma", "z_on": "z"}
TAML_MODELS = {
    (False, False, False, False): "maml",
    (True, False, False, False): "metasgd",
    (True, True, True, True): "taml",
    (True, True, False, False): "alpha+omega",
    (True, False, True, False): "alpha+gamma",
    (True, False, False, True): "alpha+z",
}
# Table 1's names of MAML/Meta-SGD with and without Meta-dropout: (metasgd, noise) -> name
TABLE1_MODELS = {
    (False, "none"): "maml",
    (True, "none"): "metasgd",
    (False, "metadrop"): "metadrop",
    (True, "metadrop"): "metasgd_metadrop",
}
TITLES = {
    "maml": "MAML",
    "metasgd": "Meta-SGD",
    "metadrop": "Meta-dropout",
    "metasgd_metadrop": "Meta-SGD + Meta-dropout",
    "taml": "Bayesian TAML",
}


def noise_name(config: dict[str, Any]) -> str:
    """The perturbation of a run (configs written before --noise say only --maml)."""
    return config.get("noise") or ("none" if config.get("maml") else "metadrop")


def hp_text(hp: dict[str, Any]) -> str:
    return ",".join(f"{k}={v:g}" if number(v) else f"{k}={v}" for k, v in hp.items())


def variant(config: dict[str, Any]) -> str:
    """What sets a run apart from the paper's models of Tables 1-3: adversarial MAML's inner loop
    (Meta-Dropout, Section 4.1) and first-order meta-gradients; "" for neither."""
    out = ""
    if config.get("adv_inner"):
        eps = config.get("adv_eps")
        out += f"+adv({config['adv_inner']},eps={eps:g})" if number(eps) else f"+adv({config['adv_inner']})"
    if config.get("first_order"):
        out += "+first_order"
    return out


def model_name(config: dict[str, Any]) -> str:
    """Table 1 row of a run: maml, metasgd, metadrop, metasgd_metadrop (or base+noise(hp) for other
    perturbations), followed by its variant (adversarial, first-order), if any."""
    noise, metasgd = noise_name(config), bool(config.get("metasgd"))
    name = TABLE1_MODELS.get((metasgd, noise))
    if name is None:
        hp = config.get("noise_hp") or {}
        name = f"{TABLE1_MODELS[metasgd, 'none']}+{noise}" + (f"({hp_text(hp)})" if hp else "")
    return name + variant(config)


def taml_name(config: dict[str, Any]) -> str:
    """Bayesian TAML's model of an any-shot run by its switches: maml, metasgd, taml (all four), the
    ablations alpha+omega/gamma/z, else the symbols of the switches on (e.g. alpha+omega+gamma);
    a perturbation (--noise) and variant are appended."""
    on = tuple(bool(config.get(k)) for k in SWITCHES)
    name = TAML_MODELS.get(on) or "+".join(s for s, o in zip(SWITCHES.values(), on) if o)
    noise = noise_name(config)
    return name + ("" if noise == "none" else f"+{noise}") + variant(config)


def system_of(config: dict[str, Any]) -> str:
    """metaperturb for transfer.py's runs, taml for any-shot (--max_shot) runs, else metadrop."""
    if "phase" in config:
        return "metaperturb"
    return "taml" if config.get("max_shot") else "metadrop"


def name_of(config: dict[str, Any]) -> str:
    """The model name of a run's settings, by its system (model_name or taml_name; a transfer run's
    regulariser)."""
    return {"metadrop": model_name, "taml": taml_name, "metaperturb": lambda c: str(c["noise"])}[
        system_of(config)
    ](config)


# ---------------------------------------------------------------------------------------------
# The record


@dataclass(frozen=True)
class Record:
    """One evaluation. Accuracies in %, `accuracies` one value per episode (per test image for a
    transfer target: 0 or 100), None for files of the older format (old = True)."""

    system: str  # SYSTEMS
    model: str  # model_name / taml_name / the transfer regulariser (none, metaperturb, ...)
    title: str  # display title of the model or perturbation
    role: str  # ROLES
    dataset: str  # the evaluated dataset
    evaluated: str  # what was evaluated, for people: "test split seed 0", "episodes 1a2b3c4d"
    episodes: dict[str, Any]  # what determines the episodes (or test images); equal dicts, equal sets
    way: int | None
    shot: int | None
    max_shot: int | None
    query: int | None
    test: dict[str, Any]  # the evaluation's settings: n_steps, mc_samples, posterior_draws, select, ...
    run: dict[str, Any]  # the training run: savedir, seed, iterations, checkpoint
    settings: dict[str, Any]  # the training settings that change a result (report.py's "settings")
    ids: tuple[str, ...]  # the run's training (in-distribution) datasets
    mean: float
    ci95: float
    n: int
    accuracies: list[float] | None = None
    network: str | None = None  # a transfer target's network (conv4_32, resnet20); None: the 4-conv net
    attack: dict[str, Any] | None = None  # --attack: norm, steps, and per radius mean/ci95/accuracies
    nll: float | None = None  # a transfer target's test negative log-likelihood (nats per image)
    format: int = FORMAT
    path: str = field(default="", compare=False)  # where it was read from (not written)

    @property
    def old(self) -> bool:
        return self.format < FORMAT

    @property
    def episodes_id(self) -> str:
        """The identity of the episode set: two records with equal ids were evaluated on the same
        episodes (or test images), in the same order."""
        return identity(self.episodes)


def nothing(what: str, root: str, command: str) -> str:
    """report.py's and plot.py's one message when a folder holds nothing to report (they exit 2):
    "nothing to report: no WHAT under ROOT (run COMMAND first)"."""
    return f"nothing to report: no {what} under {root} (run {command} first)"


def identity(episodes: dict[str, Any]) -> str:
    """16 hex digits of the SHA-1 of the canonical JSON of what determines an episode set."""
    text = json.dumps(episodes, sort_keys=True, separators=(",", ":"))
    return hashlib.sha1(text.encode()).hexdigest()[:16]


def split_episodes(
    dataset: str,
    split: str,
    rng_key: list[int],
    config: dict[str, Any],
    n: int,
) -> dict[str, Any]:
    """What determines main.py's episodes of a split (data/episodes.py): the data (dataset, its
    --data_root), the split, the numpy seed sequence of the sampler, way, shot or max_shot, query,
    the sampler (and --metabatch for the "original" sampler, whose meta-batches share classes) and
    the number of episodes. The model, its checkpoint and the noise seeds take no part."""
    out: dict[str, Any] = {
        "dataset": dataset,
        "data_root": config.get("data_root"),
        "split": split,
        "rng": list(rng_key),
        "way": config.get("way"),
        "query": config.get("query"),
        "n": n,
    }
    if config.get("max_shot"):
        out["max_shot"] = config["max_shot"]  # any-shot episodes have no sampler
    else:
        out["shot"] = config.get("shot")
        out["sampler"] = config.get("sampler", "independent")
        if out["sampler"] == "original":
            out["metabatch"] = config.get("metabatch")
    return out


def file_episodes(sha1: str, n: int) -> dict[str, Any]:
    """The episodes of a file (get_data.py --episodes): its SHA-1 and how many were evaluated."""
    return {"file_sha1": sha1, "n": n}


def ci95(acc: np.ndarray | list[float]) -> tuple[float, float]:
    """Mean and 95% half-width of accuracies in %: 1.96 * std / sqrt(n) (the papers' interval over
    episodes); ValueError for fewer than 2 values."""
    a = np.asarray(acc, dtype=np.float64)
    if len(a) < 2:
        raise ValueError(f"a confidence interval needs at least 2 episodes, not {len(a)}")
    return float(a.mean()), float(Z95 * a.std() / math.sqrt(len(a)))


def paired(a: list[float] | np.ndarray, b: list[float] | np.ndarray) -> tuple[float, float, int]:
    """The paired difference a - b of accuracies on the same episodes (same order): the mean of the
    per-episode differences ± the 95% t-interval half-width t_{0.975, n-1} * sd / sqrt(n), and n;
    ValueError for unequal lengths or fewer than 2 pairs."""
    from scipy import stats

    d = np.asarray(a, dtype=np.float64) - np.asarray(b, dtype=np.float64)
    if np.shape(a) != np.shape(b) or d.ndim != 1 or len(d) < 2:
        raise ValueError(
            f"a paired difference needs two equal lists of >= 2 values ({np.shape(a)}, {np.shape(b)})"
        )
    half = float(stats.t.ppf(0.975, len(d) - 1) * d.std(ddof=1) / math.sqrt(len(d)))
    return float(d.mean()), half, len(d)


def write(path: str, record: Record) -> None:
    """Write a record as JSON, whole or not at all (data.files.atomic); OSError if it cannot be."""
    check(record, path)
    out = {k: v for k, v in asdict(record).items() if k != "path"}
    with atomic(path) as tmp, open(tmp, "w") as f:
        json.dump(out, f, indent=1)
        f.write("\n")


# ---------------------------------------------------------------------------------------------
# Reading and checking


def number(v: Any, integer: bool = False) -> bool:
    """A JSON number (NaN and infinities are not: json.load reads them as floats)."""
    kinds = (int,) if integer else (int, float)
    return isinstance(v, kinds) and not isinstance(v, bool) and math.isfinite(v)


def _optional_int(v: Any) -> bool:
    return v is None or number(v, True)


CHECKS = {
    "system": lambda v: v in SYSTEMS,
    "model": lambda v: isinstance(v, str) and v != "",
    "title": lambda v: isinstance(v, str),
    "role": lambda v: v in ROLES,
    "dataset": lambda v: isinstance(v, str),
    "evaluated": lambda v: isinstance(v, str),
    "episodes": lambda v: isinstance(v, dict),
    "way": _optional_int,
    "shot": _optional_int,
    "max_shot": _optional_int,
    "query": _optional_int,
    "test": lambda v: isinstance(v, dict),
    "run": lambda v: (
        isinstance(v, dict) and _optional_int(v.get("seed")) and number(v.get("iterations"), True)
    ),
    "settings": lambda v: isinstance(v, dict),
    "ids": lambda v: isinstance(v, (list, tuple)) and all(isinstance(d, str) for d in v),
    "mean": number,
    "ci95": number,
    "n": lambda v: number(v, True) and v >= 1,
    "accuracies": lambda v: v is None or (isinstance(v, list) and all(number(a) for a in v)),
    "network": lambda v: v is None or isinstance(v, str),
    "attack": lambda v: v is None or isinstance(v, dict),
    "nll": lambda v: v is None or number(v),
    "format": lambda v: number(v, True),
}


def check(r: Record, where: str) -> Record:
    bad = [k for k, ok in CHECKS.items() if not ok(getattr(r, k))]
    if r.accuracies is not None and len(r.accuracies) != r.n and "accuracies" not in bad:
        bad.append(f"accuracies ({len(r.accuracies)} values, n = {r.n})")
    if bad:
        raise ResultError(f"{where}: missing, not a finite number, or wrong type: {', '.join(bad)}")
    return r


REWRITE = {  # how the results of each system are written again (in the current format)
    "metadrop": "rerun main.py --mode meta_test for that savedir",
    "taml": "rerun main.py --mode meta_test for that savedir",
    "metaperturb": "rerun the same transfer.py --phase tgt command (it resumes from its checkpoint)",
}


def read(path: str) -> Record:
    """The record of a results file, of this format or an older one (converted, old = True);
    ResultError naming the file and saying what to do if it cannot be used."""
    fix = "fix or delete it, or rerun the command that wrote it (main.py --mode meta_test, transfer.py)"
    try:
        raw = read_json(path)
    except ValueError as e:
        raise ResultError(f"{e}; {fix}") from e
    if not isinstance(raw, dict):
        raise ResultError(f"{path}: not a JSON object; {fix}")
    if "format" in raw:
        if raw["format"] != FORMAT:
            raise ResultError(f"{path}: results format {raw['format']!r}, this code reads {FORMAT}; {fix}")
        known = {f.name for f in fields(Record)} - {"path"}
        unknown = sorted(set(raw) - known)
        if unknown:
            raise ResultError(f"{path}: unknown fields {', '.join(unknown)}; {fix}")
        values = {k: raw.get(k) for k in known}
        values["ids"] = tuple(values["ids"]) if isinstance(values["ids"], list) else values["ids"]
        return check(Record(**values, path=path), path)
    try:
        return _old(path, raw)
    except (KeyError, TypeError, AttributeError) as e:
        raise ResultError(f"{path}: not a results file ({e!r}); {fix}") from e


def _old(path: str, raw: dict[str, Any]) -> Record:
    """A format-1 file: main.py's results*.json (with the savedir's config.json beside it for the
    training settings), or transfer.py's target results.json."""
    config = raw.get("config")
    if not isinstance(config, dict):
        raise ResultError(f"{path}: no 'config' object; {REWRITE['metadrop']}")
    if "phase" in config:
        return _old_transfer(path, raw, config)
    if "adversarial" in raw:  # main.py --attack's robust_<norm>.json
        clean = {"mean": raw["clean"]["mean"], "ci95": raw["clean"]["ci95"]}
        attack = {k: raw.get(k) for k in ("norm", "steps", "step_size_rule")}
        attack["radii"] = list(raw["adversarial"])
        r = _old_meta_test(path, {**raw, **clean}, config)
        return dataclasses.replace(r, attack=attack)
    return _old_meta_test(path, raw, config)


# Training settings that change a result (report.py's "settings" column), and those that name the
# model (model_name, taml_name); a record keeps both (those not set are left out).
TRAIN_SETTINGS = ("meta_lr", "inner_lr", "n_steps", "metabatch", "query", "sampler", "val_split")
MODEL_SETTINGS = ("noise", "noise_hp", "metasgd", *list(SWITCHES)[1:], "adv_inner", "adv_eps", "first_order")


def model_settings(train: dict[str, Any]) -> dict[str, Any]:
    """TRAIN_SETTINGS and MODEL_SETTINGS of a training run's config (noise as noise_name says)."""
    out = {k: train[k] for k in TRAIN_SETTINGS if train.get(k) is not None}
    out.update({k: train[k] for k in MODEL_SETTINGS if train.get(k) not in (None, False)})
    out["noise"] = noise_name(train)
    return out


def _old_meta_test(path: str, raw: dict[str, Any], config: dict[str, Any]) -> Record:
    checks = {
        "mean": number(raw.get("mean")),
        "ci95": number(raw.get("ci95")),
        "n": number(raw.get("n"), True),
        "train_iters": number(raw.get("train_iters"), True),
        "config.dataset": isinstance(config.get("dataset"), str),
        "config.way": number(config.get("way"), True),
        "config.shot": number(config.get("shot"), True),
    }
    bad = [k for k, ok in checks.items() if not ok]
    if bad:
        raise ResultError(
            f"{path}: missing, not a finite number, or wrong type: {', '.join(bad)}; "
            f"fix or delete it, or {REWRITE['metadrop']}"
        )
    train = train_config(path, config)
    ids = config["dataset"].split(",")
    oods = [d for d in (config.get("ood_dataset") or "").split(",") if d]
    m = re.match(r"results_.+_([0-9a-f]{8})\.json$", os.path.basename(path))
    on_file = bool(m) and not os.path.basename(path).startswith("results_test_seed")
    dataset = str(raw.get("dataset") or config["dataset"])
    seed = config.get("seed")
    if on_file:
        evaluated, role = f"episodes {m.group(1)}", "file"
        episodes = {"file_sha1_8": m.group(1), "n": raw["n"]}
    else:
        evaluated = f"test split seed {seed if seed is not None else '—'}"
        role = raw.get("role") or "id"
        names = ids + oods
        i = names.index(dataset) if dataset in names else 0
        key = [seed, 2] if i == 0 else [seed, 2, i]
        episodes = split_episodes(dataset, "test", key, config, raw["n"])
    r = meta_test_record(
        {**config, "savedir": os.path.dirname(path)},
        train,
        None,
        role,
        dataset,
        evaluated,
        episodes,
        raw["train_iters"],
        raw.get("checkpoint"),
        stats=(float(raw["mean"]), float(raw["ci95"]), raw["n"]),
    )
    return check(dataclasses.replace(r, format=1, path=path), path)


def train_config(path: str, config: dict[str, Any]) -> dict[str, Any]:
    """The settings of the training run of a format-1 result: the savedir's config.json beside the
    results file, over the results file's config (meta_test's flags, whose --seed and --n_steps are
    the evaluation's)."""
    saved = os.path.join(os.path.dirname(path), "config.json")
    if os.path.exists(saved):
        try:
            train = read_json(saved)
        except ValueError as e:
            raise ResultError(f"{e}; fix or restore it (the settings of the run that wrote {path})") from e
        if isinstance(train, dict):
            return {**config, **train}
    return config


def meta_test_record(
    config: dict[str, Any],
    saved: dict[str, Any],
    accuracies: np.ndarray | None,
    role: str,
    dataset: str,
    evaluated: str,
    episodes: dict[str, Any],
    iterations: int,
    checkpoint: str | None,
    stats: tuple[float, float, int] | None = None,
) -> Record:
    """The record of one main.py meta-test: `config` its flags, `saved` the training run's
    config.json, `accuracies` [episodes] in % (or None and `stats` = (mean, ci95, n): a file of the
    older format); `evaluated` and `episodes` say what was evaluated."""
    train = {**config, **saved}
    test = {"n_steps": config.get("n_steps"), "mc_samples": config.get("n_test_mc_samp")}
    if config.get("max_shot"):
        test["posterior_draws"] = config.get("n_mc_samples", 0)
    test.update(select=config.get("select"), metabatch=config.get("metabatch"))
    seed = train.get("seed")
    mean, ci, n = stats if accuracies is None else (*ci95(accuracies), len(accuracies))
    return Record(
        system=system_of(train),
        model=name_of(train),
        title=str(train.get("noise_title") or TITLES.get(name_of(train), "—")),
        role=role,
        dataset=dataset,
        evaluated=evaluated,
        episodes=episodes,
        way=config["way"],
        shot=None if config.get("max_shot") else config["shot"],
        max_shot=config.get("max_shot"),
        query=config.get("query"),
        test=test,
        run={
            "savedir": config.get("savedir"),
            "seed": seed if number(seed, True) else None,
            "iterations": iterations,
            "checkpoint": checkpoint,
        },
        settings=model_settings(train),
        ids=tuple(d for d in str(train["dataset"]).split(",") if d),
        mean=mean,
        ci95=ci,
        n=n,
        accuracies=None if accuracies is None else [float(a) for a in accuracies],
    )


def episode_file_dataset(path: str) -> str:
    """The dataset an episode file was drawn from (its `meta`, written by get_data.py --episodes), or
    "" if it does not say; nothing in the file is run (allow_pickle=False)."""
    try:
        with np.load(path, allow_pickle=False) as z:
            meta = json.loads(str(z["meta"])) if "meta" in z.files else {}
    except (OSError, ValueError, KeyError):
        return ""
    return str(meta.get("dataset", "")) if isinstance(meta, dict) else ""


# transfer.py target settings that change a result besides the row (regulariser, phi, pre-trained
# network) and column (target data, network); the same names as transfer.MATCH["tgt"]'s.
TRANSFER_SETTINGS = (
    "train_steps",
    "img_size",
    "batch_size",
    "lr",
    "noise_hp",
    "noise_coeff",
    "clipval",
    "tgt_split",
    "n_per_class",
    "augment",
    "pipeline_version",  # nets.PIPELINE_VERSION: older runs (none) had other inputs, convs and Adam
)


def transfer_record(
    config: dict[str, Any],
    mean: float,
    ci: float,
    n: int,
    accuracies: list[float] | None,
    samples: int,
    iterations: int,
    path: str = "",
    fmt: int = FORMAT,
    nll: float | None = None,
) -> Record:
    """The record of a transfer.py target (or selection) run with settings `config` (its flags)."""
    split = config.get("tgt_split") or (
        config.get("val_split") if config.get("phase") == "select" else "test"
    )
    episodes = {"dataset": config["data"], "data_root": config.get("data_root"), "split": split, "n": n}
    if config.get("tgt_split"):
        episodes["n_per_class"] = config.get("n_per_class")  # the images left for testing
    settings = {k: config.get(k) for k in TRANSFER_SETTINGS}
    settings.update(phi=config.get("phi"), fine_tune=config.get("fine_tune"))
    seed = config.get("seed")
    return Record(
        system="metaperturb",
        model=str(config["noise"]),
        title=str(config.get("noise_title") or config["noise"]),
        role="target",
        dataset=str(config["data"]),
        evaluated=f"{split} split of {config['data']}",
        episodes=episodes,
        way=None,
        shot=None,
        max_shot=None,
        query=None,
        test={"mc_samples": samples},
        run={
            "savedir": os.path.join(
                config.get("save_dir", ""), config.get("phase", "tgt"), config.get("exp_name", "")
            ),
            "seed": seed,
            "iterations": iterations,
            "checkpoint": None,
            "phase": config.get("phase", "tgt"),
        },
        settings=settings,
        ids=(),
        mean=mean,
        ci95=ci,
        n=n,
        accuracies=accuracies,
        network=str(config["model"]),
        nll=nll,
        format=fmt,
        path=path,
    )


def _old_transfer(path: str, raw: dict[str, Any], config: dict[str, Any]) -> Record:
    n = raw.get("n_test")
    r = transfer_record(
        config,
        float(raw["acc"]),
        0.0,
        n if number(n, True) and n >= 1 else 1,
        None,
        raw.get("samples") if number(raw.get("samples"), True) else 1,
        raw.get("steps") if number(raw.get("steps"), True) else 0,
        path=path,
        fmt=1,
        nll=raw.get("nll") if number(raw.get("nll")) else None,
    )
    return check(r, path)


# ---------------------------------------------------------------------------------------------
# A folder of results (report.py, plot.py)


def setting_name(config: dict[str, Any], settings: dict[str, dict[str, Any]]) -> str:
    """Table 1 column of a run (omni_1shot, ...), or dataset_<way>way_<shot>shot for others."""
    if config.get("max_shot"):  # any-shot (Bayesian TAML): never a Meta-Dropout table's cell
        return "{}_{}way_{}maxshot".format(config["dataset"], config["way"], config["max_shot"])
    key = (config["dataset"], config["way"], config["shot"])
    for name, s in settings.items():
        if key == (s["dataset"], s["way"], s["shot"]):
            return name
    return "{}_{}way_{}shot".format(*key)


def collect(root: str, quiet: bool = False) -> list[Record]:
    """Every results file under root (results.json, results_*.json), read as a record; a file that
    cannot be read is named on stderr ("skipped: ...", unless quiet) and left out."""
    found = []
    for path in sorted(Path(root).rglob("results*.json")):
        if path.name != "results.json" and not path.name.startswith("results_"):
            continue
        try:
            found.append(read(str(path)))
        except ResultError as e:
            if not quiet:
                print(f"skipped: {e}", file=sys.stderr)
    return found


def pretrained_name(fine_tune: str) -> str:
    """A --fine_tune value's run folder name, with the checkpoint where it named one (run/model-<step>)."""
    head, tail = os.path.split(os.path.normpath(fine_tune))
    return f"{os.path.basename(os.path.dirname(head))}/{tail}" if os.path.basename(head) == "ckpt" else tail


def phi_name(phi: str) -> str:
    """A phi file as <source run folder>/<run>/phi_<step>.npz (its last three path parts)."""
    return "/".join(Path(phi).parts[-3:])


def transfer_results(root: str, quiet: bool = False) -> list[dict[str, Any]]:
    """Every target run's record under root (transfer.py --phase tgt) as transfer_runs gives them;
    a file that cannot be read is named on stderr (unless quiet) and skipped; NothingToReport if
    there is none."""
    records = transfer_records(collect(root, quiet))
    if not records:
        raise NothingToReport(nothing("transfer.py target results", root, "transfer.py --phase tgt"))
    return transfer_runs(records, root)


def transfer_records(records: list[Record]) -> list[Record]:
    """The transfer.py target runs among records (not --phase select's runs)."""
    return [r for r in records if r.system == "metaperturb" and r.run.get("phase", "tgt") == "tgt"]


def transfer_label(r: Record) -> str:
    """A transfer run's regulariser, +fine_tune for runs started from a pre-trained network."""
    return r.model + ("+fine_tune" if r.settings.get("fine_tune") else "")


def transfer_runs(records: list[Record], root: str) -> list[dict[str, Any]]:
    """Target runs titled by their regulariser, phi file, pre-trained network and the settings in
    which runs of their (dataset, network) differ; ResultError for two runs of one seed in a row."""
    found = []
    for r in records:
        fine_tuned = bool(r.settings.get("fine_tune"))
        phi = r.settings.get("phi")
        found.append(
            {
                "acc": r.mean,
                "data": r.dataset,
                "model": r.network,
                "seed": r.run.get("seed"),
                "noise": r.model,
                "fine_tuned": fine_tuned,
                # a transferred perturbation's runs are told apart by their phi file, fine-tuned
                # ones by the pre-trained network's run
                "title": TRANSFER_TITLES.get(r.model, r.title)
                + (f" [{phi_name(phi)}]" if phi else "")
                + (f"{FINE_TUNED} [{pretrained_name(r.settings['fine_tune'])}]" if fine_tuned else ""),
                "settings": {k: r.settings.get(k) for k in TRANSFER_SETTINGS},
                "path": r.path,
            }
        )
    seen: dict[tuple, str] = {}
    for r in found:
        column = [q["settings"] for q in found if (q["data"], q["model"]) == (r["data"], r["model"])]
        varied = [k for k in TRANSFER_SETTINGS if len({repr(s[k]) for s in column}) > 1]
        if varied:
            r["title"] += " {" + ", ".join(f"{k}={r['settings'][k]}" for k in varied) + "}"
        key = (r["data"], r["model"], r["title"], r["seed"])
        if key in seen:
            raise ResultError(
                f"{seen[key]} and {r['path']} are two runs of seed {r['seed']} with the same settings: "
                f"one row's seeds must differ; move one out of {root}"
            )
        seen[key] = r["path"]
    return found
