"""results.py: the results format round-trips, reads the older files, and its statistics and episode
identities match independent computations."""

import argparse
import dataclasses
import json
import math
import re
from pathlib import Path

import numpy as np
import pytest
from scipy import stats

import results

REPO = Path(__file__).resolve().parents[1]


def full_record(path=""):
    """A record with every field set to something other than its default."""
    accs = [100.0, 80.0, 60.0, 80.0]
    mean, ci = results.ci95(accs)
    return results.Record(
        system="taml",
        model="taml",
        title="Bayesian TAML",
        role="ood",
        dataset="omniglot_small16",
        evaluated="test split seed 3",
        episodes=results.split_episodes(
            "omniglot_small16", "test", [3, 2, 1], {"way": 5, "max_shot": 10, "query": 15}, 4
        ),
        way=5,
        shot=None,
        max_shot=10,
        query=15,
        test={"n_steps": 10, "mc_samples": 1, "posterior_draws": 10, "select": "id", "metabatch": 2},
        run={"savedir": "runs/taml", "seed": 3, "iterations": 400, "checkpoint": "ckpt/model-400"},
        settings={"meta_lr": 0.001, "n_steps": 5, "noise": "none", "metasgd": True, "omega_on": True},
        ids=("digits",),
        mean=mean,
        ci95=ci,
        n=4,
        accuracies=accs,
        network="conv4",
        attack={"norm": "linf", "steps": 3, "radii": [{"eps": 0.1, "mean": 50.0, "ci95": 1.0}]},
        nll=0.25,
        path=path,
    )


def test_every_field_round_trips(tmp_path):
    path = str(tmp_path / "r.json")
    record = full_record(path)
    defaults = {
        f.name: f.default for f in dataclasses.fields(results.Record) if f.default is not dataclasses.MISSING
    }
    assert all(getattr(record, k) != v for k, v in defaults.items() if k not in ("format", "path"))
    results.write(path, record)
    raw = json.loads(Path(path).read_text())
    assert set(raw) == {f.name for f in dataclasses.fields(results.Record)} - {"path"}
    back = results.read(path)
    for f in dataclasses.fields(results.Record):
        assert getattr(back, f.name) == getattr(record, f.name), f.name
    assert not back.old and back.episodes_id == record.episodes_id


def test_a_bad_record_is_not_written(tmp_path):
    path = tmp_path / "r.json"
    with pytest.raises(results.ResultError, match="accuracies"):
        results.write(str(path), dataclasses.replace(full_record(), accuracies=[1.0]))
    assert not path.exists()


def test_docs_describe_every_field():
    text = (REPO / "docs" / "usage.md").read_text()
    section = text[text.index("## The results format") :]
    for f in dataclasses.fields(results.Record):
        if f.name != "path":
            assert f"`{f.name}`" in section, f.name


def test_ci95_and_paired_difference_against_loops_and_scipy():
    rng = np.random.default_rng(0)
    a = rng.integers(0, 76, 300) / 75 * 100
    b = np.clip(a - rng.integers(-10, 20, 300) / 75 * 100, 0, 100)
    # ci95: 1.96 * population sd / sqrt(n), by loops
    m = sum(a) / len(a)
    sd = math.sqrt(sum((x - m) ** 2 for x in a) / len(a))
    assert results.ci95(a) == pytest.approx((m, 1.96 * sd / math.sqrt(len(a))), rel=1e-12)
    mean, half, n = results.paired(a, b)
    d = [x - y for x, y in zip(a, b)]
    dm = sum(d) / len(d)
    assert n == 300 and mean == pytest.approx(dm, rel=1e-12)
    low, high = stats.ttest_rel(a, b).confidence_interval(0.95)
    assert (mean - half, mean + half) == pytest.approx((low, high), rel=1e-9)
    with pytest.raises(ValueError):
        results.paired(a, b[:-1])
    with pytest.raises(ValueError):
        results.ci95([50.0])


def test_equal_settings_give_equal_episodes_whatever_the_model():
    """The identity leaves out the model, and data/episodes.py agrees: the same sampler settings and
    seed give the same episodes; the "original" sampler's meta-batches share classes, so there the
    meta-batch size counts too."""
    import episodic

    rng = np.random.default_rng(0)
    split = rng.integers(0, 256, (12, 8, 4)).astype(np.uint8)
    base = {"way": 3, "shot": 1, "query": 2, "max_shot": None, "sampler": "independent"}

    def episodes(metabatch, **change):
        args = argparse.Namespace(**{**base, **change, "metabatch": metabatch})
        it = episodic.sampled(split, args, np.random.default_rng([0, 2]))
        batches = [next(it) for _ in range(12 // metabatch)]
        return np.concatenate([b["xtr"] for b in batches]), results.split_episodes(
            "d", "test", [0, 2], vars(args), 12
        )

    (x1, id1), (x4, id4) = episodes(1), episodes(4)
    assert np.array_equal(x1, x4) and id1 == id4
    (o1, oid1), (o4, oid4) = episodes(1, sampler="original"), episodes(4, sampler="original")
    assert not np.array_equal(o1, o4) and oid1 != oid4
    model = {"metasgd": True, "noise": "metadrop", "n_steps": 7, "inner_lr": 0.5, "savedir": "x"}
    assert results.split_episodes("d", "test", [0, 2], {**base, **model}, 12) == id1
    for change in ({"way": 4}, {"query": 3}, {"shot": 2}, {"data_root": "other"}):
        assert results.split_episodes("d", "test", [0, 2], {**base, **change}, 12) != id1
    assert results.split_episodes("d", "test", [1, 2], base, 12) != id1
    assert results.split_episodes("d", "test", [0, 2], base, 13) != id1


def old_meta_test_file(folder, mean=61.5, dataset="digits", role="id", **flags):
    """A results.json exactly as main.py's meta_test wrote it before this format (its keys and config)."""
    config = {
        "mode": "meta_test",
        "savedir": str(folder),
        "dataset": dataset,
        "way": 5,
        "shot": 1,
        "query": 15,
        "metabatch": 1,
        "n_steps": 5,
        "inner_lr": 0.4,
        "meta_lr": 0.001,
        "n_test_mc_samp": 30,
        "maml": False,
        "metasgd": False,
        "noise": "metadrop",
        "noise_hp": {},
        "noise_title": "Meta-dropout",
        "seed": 0,
        "sampler": "independent",
        "max_shot": None,
        "n_mc_samples": 0,
        "select": "last",
        **flags,
    }
    result = {
        "mean": mean,
        "ci95": 1.25,
        "n": 300,
        "train_iters": 300,
        "source": f"{dataset} test split, seed 0",
        "role": role,
        "dataset": dataset,
        "checkpoint": "ckpt/model-300",
        "select": "last",
        "test": {k: config[k] for k in ("n_steps", "shot", "max_shot", "n_mc_samples")},
        "train": {"n_steps": 5, "shot": 1, "max_shot": None},
        "config": config,
    }
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "config.json").write_text(json.dumps({**config, "mode": "meta_train"}))
    (folder / "results.json").write_text(json.dumps(result, indent=2))
    return folder / "results.json"


def old_transfer_file(folder, acc=55.0, seed=0, noise="none"):
    """A results.json exactly as transfer.py's target run wrote it before this format."""
    config = {
        "phase": "tgt",
        "data": "digits",
        "model": "conv4_32",
        "seed": seed,
        "noise": noise,
        "noise_hp": {},
        "noise_title": "None",
        "noise_coeff": 1.0,
        "phi": None,
        "fine_tune": None,
        "train_steps": 100,
        "save_dir": "checkpoints",
        "exp_name": folder.name,
    }
    result = {
        "acc": acc,
        "nll": 1.5,
        "samples": 1,
        "n_test": 500,
        "n_train": 100,
        "steps": 100,
        "config": config,
    }
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "results.json").write_text(json.dumps(result, indent=2))
    return folder / "results.json"


def test_old_files_load_marked_old(tmp_path):
    r = results.read(str(old_meta_test_file(tmp_path / "md")))
    assert r.old and r.accuracies is None and r.format == 1
    assert (r.system, r.model, r.title, r.role, r.dataset) == (
        "metadrop",
        "metadrop",
        "Meta-dropout",
        "id",
        "digits",
    )
    assert (r.mean, r.ci95, r.n, r.run["iterations"], r.run["seed"]) == (61.5, 1.25, 300, 300, 0)
    assert r.test["n_steps"] == 5 and r.test["mc_samples"] == 30 and r.evaluated == "test split seed 0"
    t = results.read(str(old_transfer_file(tmp_path / "tgt")))
    assert (
        t.old
        and t.accuracies is None
        and (t.system, t.model, t.network, t.role)
        == (
            "metaperturb",
            "none",
            "conv4_32",
            "target",
        )
    )
    assert (t.mean, t.n, t.nll, t.run["seed"]) == (55.0, 500, 1.5, 0)


def test_taml_names_come_from_the_switches():
    on = dict(metasgd=True, omega_on=True, gamma_on=True, z_on=True, max_shot=10, noise="none")
    assert results.name_of(on) == "taml" and results.system_of(on) == "taml"
    assert results.name_of({**on, "z_on": False, "gamma_on": False}) == "alpha+omega"
    assert results.name_of({**on, "z_on": False}) == "alpha+omega+gamma"  # not a named model
    assert results.name_of({"max_shot": 10, "noise": "none"}) == "maml"
    assert results.name_of({"max_shot": 10, "noise": "none", "metasgd": True}) == "metasgd"
    assert results.name_of({"noise": "metadrop", "metasgd": True}) == "metasgd_metadrop"
    assert results.name_of({"phase": "tgt", "noise": "metaperturb"}) == "metaperturb"


def test_nothing_message_shape():
    text = results.nothing("results files", "res", "main.py --mode meta_test")
    assert re.fullmatch(r"nothing to report: no .+ under res \(run .+ first\)", text)


def test_transfer_settings_are_those_a_target_run_must_match():
    """The settings that tell transfer rows apart are transfer.py's resume settings, less the row's
    and column's own (data, network, regulariser, phi, pre-trained run) and the seed."""
    import transfer

    own = {"data", "model", "noise", "phi", "fine_tune", "seed"}
    assert set(results.TRANSFER_SETTINGS) == set(transfer.MATCH["tgt"]) - own


def test_robustness_records_of_both_formats_read_alike(tmp_path):
    """main.py --attack's robust_<norm>.json: the older shape converts to a record with the attack."""
    import plot

    rows = [{"eps": 0.1, "step_size": 0.025, "mean": 40.0, "ci95": 2.0}]
    config = {"dataset": "digits", "way": 5, "shot": 1, "query": 15, "seed": 0, "noise": "none", "maml": True}
    old = {
        "norm": "linf",
        "steps": 10,
        "step_size_rule": "2.5 * eps / steps",
        "clean": {"mean": 60.0, "ci95": 1.5},
    }
    old.update(adversarial=rows, n=300, train_iters=50, source="digits test split, seed 0", config=config)
    (tmp_path / "robust_linf.json").write_text(json.dumps(old))
    r = results.read(str(tmp_path / "robust_linf.json"))
    assert r.old and (r.model, r.mean, r.ci95, r.n, r.run["iterations"]) == ("maml", 60.0, 1.5, 300, 50)
    assert r.attack["radii"] == rows and r.attack["norm"] == "linf"
    new = dataclasses.replace(r, format=results.FORMAT, accuracies=[60.0] * 300, path="")
    results.write(str(tmp_path / "new" / "robust_linf.json"), new)
    a, b = (
        plot.robust_curve(str(p))
        for p in (tmp_path / "robust_linf.json", tmp_path / "new" / "robust_linf.json")
    )
    assert a == b and a["points"] == [(0.0, 60.0, 1.5), (0.1, 40.0, 2.0)]
    assert a["label"] == "maml (10 steps, 300 episodes)"
