"""report.py over a tree of all three systems' results; Bayesian TAML's rows; paired differences; one
rule for "nothing to report" in report.py and plot.py. The fixtures write files as main.py and
transfer.py write them (older-format files as the code before the results format wrote them)."""

import json
import re
from pathlib import Path

import numpy as np
import pytest
from scipy import stats

import plot
import report

SWITCHES = ("metasgd", "omega_on", "gamma_on", "z_on")


def old_taml_results(savedir, accs=((62.0, 1.1), (41.0, 1.3)), seed=0, on=SWITCHES):
    """A Bayesian TAML any-shot run (digits in, omniglot_small16 out of distribution) trained with 5
    inner steps and 1 MC sample, meta-tested with 10 steps and 10 posterior draws, written as
    main.py's meta_test wrote it before the results format: config.json, results_id_digits.json,
    results_ood_omniglot_small16.json."""
    train = {
        "mode": "meta_train",
        "savedir": str(savedir),
        "dataset": "digits",
        "ood_dataset": "omniglot_small16",
        "way": 5,
        "shot": 1,
        "max_shot": 10,
        "query": 15,
        "metabatch": 2,
        "n_steps": 5,
        "n_test_mc_samp": 1,
        "n_mc_samples": 1,
        "inner_lr": 0.01,
        "meta_lr": 0.001,
        "maml": False,
        "noise": "none",
        "noise_hp": {},
        "noise_title": "MAML",
        "seed": seed,
        "sampler": "independent",
        "select": "id",
        **{k: k in on for k in SWITCHES},
    }
    savedir.mkdir(parents=True)
    (savedir / "config.json").write_text(json.dumps(train))
    test = {**train, "mode": "meta_test", "n_steps": 10, "n_mc_samples": 10}
    for (role, d), (mean, ci) in zip((("id", "digits"), ("ood", "omniglot_small16")), accs):
        result = {
            "mean": mean,
            "ci95": ci,
            "n": 300,
            "train_iters": 400,
            "source": f"{d} test split, seed {seed}",
            "role": role,
            "dataset": d,
            "checkpoint": "ckpt/model-400",
            "select": "id",
            "test": {"n_steps": 10, "shot": 1, "max_shot": 10, "n_mc_samples": 10},
            "train": {"n_steps": 5, "shot": 1, "max_shot": 10},
            "config": test,
        }
        (savedir / f"results_{role}_{d}.json").write_text(json.dumps(result, indent=2))


def taml_table(text, label="digits / omniglot_small16"):
    heading = next(line for line in text.splitlines() if line.startswith("## Bayesian TAML"))
    assert heading.startswith(f"## Bayesian TAML, {label}:")
    block = text[text.index(heading) :].split("\n\n")[2]
    header, _, *rows = block.splitlines()
    names = [c.strip() for c in header.strip("|").split("|")]
    return [dict(zip(names, [c.strip() for c in row.strip("|").split("|")])) for row in rows]


def test_a_bayesian_taml_run_is_named_by_its_switches(tmp_path):
    """It was labelled metasgd (Meta-SGD's alpha alone) in an "Other results" table."""
    old_taml_results(tmp_path / "taml")
    old_taml_results(tmp_path / "msgd", ((60.0, 1.0), (40.0, 1.0)), on=("metasgd",))
    text = report.report(str(tmp_path))
    assert "Other results" not in text
    rows = taml_table(text)
    assert [r["model"] for r in rows] == ["Meta-SGD", "Bayesian TAML"]


def test_id_and_ood_results_are_columns_of_one_row_not_two_seeds(tmp_path):
    """They were averaged into one "mean of 2 (± sd)" row as if they were two seeds."""
    old_taml_results(tmp_path / "taml")
    text = report.report(str(tmp_path))
    assert "mean of 2" not in text
    (row,) = taml_table(text)
    assert row["digits"] == "62.00 ± 1.10" and row["omniglot_small16 (OOD)"] == "41.00 ± 1.30"
    assert row["seed"] == "0" and row["episodes"] == "300" and row["iterations"] == "400"


def test_the_meta_tests_settings_are_shown(tmp_path):
    """The training settings (5 steps, 1 sample) were shown instead of the meta-test's (10 steps,
    10 posterior draws)."""
    old_taml_results(tmp_path / "taml")
    (row,) = taml_table(report.report(str(tmp_path)))
    train, test = row["settings"].split("; ")
    assert "n_steps=5" in train
    assert test == "meta-test n_steps=10 mc=1 draws=10"


def old_results_json(folder, mean, **flags):
    """A Meta-Dropout results.json (omniglot 20-way 1-shot) as main.py wrote it before the results format."""
    config = {"dataset": "omniglot", "way": 20, "shot": 1, "query": 15, "seed": 0, "maml": False}
    config.update({"noise": "metadrop", "noise_title": "Meta-dropout", "n_steps": 5, "n_test_mc_samp": 30})
    config.update(flags)
    folder.mkdir(parents=True)
    (folder / "results.json").write_text(
        json.dumps(
            {"mean": mean, "ci95": 0.2, "n": 1000, "train_iters": 60000, "role": "id", "config": config}
        )
    )


def old_transfer_results(folder, acc, seed, noise="none"):
    """A transfer.py target run's results.json as transfer.py wrote it before the results format."""
    config = {"phase": "tgt", "data": "digits", "model": "conv4_32", "seed": seed, "noise": noise}
    config.update({"noise_title": noise.upper(), "phi": None, "fine_tune": None, "train_steps": 100})
    folder.mkdir(parents=True)
    (folder / "results.json").write_text(
        json.dumps({"acc": acc, "nll": 1.0, "samples": 1, "n_test": 500, "steps": 100, "config": config})
    )


def test_a_transfer_target_folder_does_not_hide_the_other_tables(tmp_path, capsys):
    """A MetaPerturb target folder under results/ once made report.py print no table at all (exit 2)."""
    old_results_json(tmp_path / "metadrop", 96.0)
    old_transfer_results(tmp_path / "tgt" / "none0", 50.0, 0)
    old_transfer_results(tmp_path / "tgt" / "none1", 52.0, 1)
    assert report.main([str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "| metadrop | omni_1shot | 0 | 96.00 ± 0.20 |" in out
    assert "| Base (no regulariser) | 51.00 ± 1.41 (n=2) |" in out


@pytest.mark.parametrize(
    "command",
    [
        lambda root: report.main([root]),
        lambda root: report.main(["--transfer", root]),
        lambda root: plot.main(["--transfer", root]),
        lambda root: plot.main(["--robustness", root]),
    ],
    ids=["report", "report --transfer", "plot --transfer", "plot --robustness"],
)
def test_nothing_to_report_is_one_rule(tmp_path, capsys, command):
    """An empty folder: exit 2 and one line 'error: nothing to report: no WHAT under ROOT (run COMMAND
    first)' (report.py --transfer once exited 0 where plot.py --transfer exited 2)."""
    assert command(str(tmp_path)) == 2
    out, err = capsys.readouterr()
    assert out == ""
    assert re.fullmatch(
        rf"error: nothing to report: no .+ under {re.escape(str(tmp_path))} \(run .+ first\)\n", err
    )


def write_new(path, model, accs, seed=0, episodes="same", noise="none", metasgd=False):
    """A digits 5-way 1-shot result as main.py's meta_test now writes it (results.meta_test_record)."""
    import results

    config = {"dataset": "digits", "way": 5, "shot": 1, "query": 15, "seed": seed, "noise": noise}
    config.update({"metasgd": metasgd, "n_steps": 5, "n_test_mc_samp": 1, "savedir": str(path.parent)})
    key = [0, 2] if episodes == "same" else [9, 2]
    identity = results.split_episodes("digits", "test", key, config, len(accs))
    record = results.meta_test_record(
        config, config, np.asarray(accs), "id", "digits", f"test split seed {key[0]}", identity, 300, "ckpt"
    )
    assert record.model == model
    results.write(str(path), record)


def paired_rows(text):
    block = text[text.index("\n## Paired differences") :].split("\n\n")[2]
    header, _, *rows = block.splitlines()
    names = [c.strip() for c in header.strip("|").split("|")]
    return [dict(zip(names, [c.strip() for c in row.strip("|").split("|")])) for row in rows]


def test_paired_differences_of_models_on_the_same_episodes(tmp_path):
    rng = np.random.default_rng(1)
    maml = rng.integers(0, 76, 300) / 75 * 100
    drop = np.clip(maml + rng.integers(-8, 16, 300) / 75 * 100, 0, 100)
    write_new(tmp_path / "maml" / "results.json", "maml", maml)
    write_new(tmp_path / "metadrop" / "results.json", "metadrop", drop, noise="metadrop")
    write_new(tmp_path / "other" / "results.json", "metasgd", drop, episodes="other", metasgd=True)
    old_results_json(tmp_path / "old", 96.0)
    text = report.report(str(tmp_path))
    (row,) = paired_rows(text)  # the other episodes and the old file (no per-episode data) pair with nothing
    d = drop - maml
    half = stats.t.ppf(0.975, len(d) - 1) * np.std(d, ddof=1) / np.sqrt(len(d))
    assert (row["model"], row["baseline"], row["n"], row["seed"]) == ("metadrop", "maml", "300", "0")
    assert row["model − baseline"] == f"{d.mean():+.2f} ± {half:.2f}"
    assert row["model alone"] == f"{drop.mean():.2f} ± {1.96 * drop.std() / np.sqrt(300):.2f}"
    assert "## Results files of the older format" in text and "- old/results.json" in text
    assert "rerun main.py --mode meta_test" in text


def test_paired_differences_over_seeds(tmp_path):
    """Several training seeds on the same episodes: a row per seed, then one over the seeds."""
    rng = np.random.default_rng(2)
    means = {}
    for seed in range(3):
        maml = rng.integers(0, 76, 50) / 75 * 100
        taml = np.clip(maml + rng.integers(-5, 20, 50) / 75 * 100, 0, 100)
        write_new(tmp_path / f"maml{seed}" / "results.json", "maml", maml, seed=seed)
        write_new(tmp_path / f"msgd{seed}" / "results.json", "metasgd", taml, seed=seed, metasgd=True)
        means[seed] = taml.mean() - maml.mean()
    rows = paired_rows(report.report(str(tmp_path)))
    assert [r["seed"] for r in rows] == ["0", "1", "2", "over 3 seeds"]
    d = np.array(list(means.values()))
    half = stats.t.ppf(0.975, 2) * d.std(ddof=1) / np.sqrt(3)
    assert rows[-1]["model − baseline"] == f"{d.mean():+.2f} ± {half:.2f}" and rows[-1]["n"] == "3 seeds"


def test_all_three_systems_in_one_report(tmp_path, capsys):
    import results

    old_results_json(tmp_path / "md", 96.0)
    old_taml_results(tmp_path / "taml")
    for seed, (noise, acc) in enumerate([("none", [100.0, 0.0, 100.0, 100.0]), ("metaperturb", [100.0] * 4)]):
        config = {"phase": "tgt", "data": "digits", "model": "conv4_32", "seed": 0, "noise": noise}
        config.update(noise_title=noise, save_dir=str(tmp_path), exp_name=f"{noise}{seed}")
        record = results.transfer_record(config, *results.ci95(acc), 4, acc, 1, 100, nll=0.5)
        results.write(str(tmp_path / "tgt" / f"{noise}{seed}" / "results.json"), record)
    (tmp_path / "broken").mkdir()
    (tmp_path / "broken" / "results_x.json").write_text("{")
    assert report.main([str(tmp_path)]) == 0
    out, err = capsys.readouterr()
    headings = [line for line in out.splitlines() if line.startswith("#")]
    firsts = [
        "## Table 1: ours vs. published",
        "## Bayesian TAML, digits / omniglot_small16",
        "### Transfer: test accuracy",
        "## Paired differences (same episodes)",
    ]
    where = [next(i for i, h in enumerate(headings) if h.startswith(f)) for f in firsts]
    assert where == sorted(where)
    (row,) = paired_rows(out)  # the transfer targets, image by image
    half = stats.t.ppf(0.975, 3) * np.std([0, 100, 0, 0], ddof=1) / 2
    assert (row["model"], row["baseline"], row["n"]) == ("metaperturb", "none", "4")
    assert row["model − baseline"] == f"+25.00 ± {half:.2f}"
    assert f"skipped: {tmp_path / 'broken' / 'results_x.json'} is not a readable JSON file" in err
    assert Path(tmp_path / "md" / "results.json").exists()


def test_cpu_demo_runs_on_fixed_episode_files(tmp_path):
    """runfiles/cpu/taml_demo.sh's layout: models x seeds, each meta-tested on an ID and an OOD episode
    file: a row per run with both columns, a mean row per model, paired differences per seed and over
    the seeds; older files of the same layout (role "file", both named by the run's dataset) keep
    their two columns apart."""
    import results

    rng = np.random.default_rng(3)
    files = {"digits": "a" * 40, "omniglot_small16": "b" * 40}
    for model, on in (("maml", ()), ("taml", SWITCHES)):
        for seed in range(3):
            config = {"dataset": "digits", "ood_dataset": "omniglot_small16", "way": 5, "max_shot": 10}
            config.update({k: k in on for k in SWITCHES}, query=15, seed=seed, noise="none", n_steps=6)
            config.update(n_mc_samples=5 if on else 0, savedir=str(tmp_path / model / f"seed{seed}"))
            for role, d in (("id", "digits"), ("ood", "omniglot_small16")):
                accs = rng.integers(0, 76, 20) / 75 * 100
                evaluated = f"episodes {files[d][:8]}"
                record = results.meta_test_record(
                    config, config, accs, role, d, evaluated, results.file_episodes(files[d], 20), 400, "c"
                )
                results.write(
                    str(tmp_path / model / f"seed{seed}" / f"results_episodes_{d}_{files[d][:8]}.json"),
                    record,
                )
    text = report.report(str(tmp_path))
    rows = taml_table(text)
    assert [(r["model"], r["seed"]) for r in rows] == [
        *[("MAML", s) for s in ("0", "1", "2", "mean of 3 (± sd)")],
        *[("Bayesian TAML", s) for s in ("0", "1", "2", "mean of 3 (± sd)")],
    ]
    assert all(r["digits"] != "—" and r["omniglot_small16 (OOD)"] != "—" for r in rows)
    assert rows[1]["settings"] == "n_steps=6 query=15; meta-test n_steps=6 draws=0"
    assert rows[5]["settings"] == "n_steps=6 query=15; meta-test n_steps=6 draws=5"
    paired = paired_rows(text)
    assert [(r["dataset"], r["seed"]) for r in paired] == [
        *[("digits", s) for s in ("0", "1", "2", "over 3 seeds")],
        *[("omniglot_small16", s) for s in ("0", "1", "2", "over 3 seeds")],
    ]
    # the older format: both files were written with the run's first dataset and role "file"
    old = tmp_path / "old"
    old_taml_results(old / "run")
    for name, mean in (
        ("results_episodes_digits_aaaaaaaa.json", 61.0),
        ("results_episodes_omni_bbbbbbbb.json", 42.0),
    ):
        raw = json.loads((old / "run" / "results_id_digits.json").read_text())
        raw.update(mean=mean, role="file", dataset="digits")
        (old / "run" / name).write_text(json.dumps(raw))
    for f in ("results_id_digits.json", "results_ood_omniglot_small16.json"):
        (old / "run" / f).unlink()
    (row,) = taml_table(report.report(str(old)), "digits / no OOD")
    assert (row["episodes aaaaaaaa"], row["episodes bbbbbbbb"]) == ("61.00 ± 1.10", "42.00 ± 1.10")
