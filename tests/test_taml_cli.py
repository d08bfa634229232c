"""Bayesian TAML's command line (seed 002): its flags, their checks, checkpoint selection (T11)."""

import glob
import os
import re
import shlex

import numpy as np
import pytest

import main
from run import select_step, validation_scores

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def seed_commands() -> list[list[str]]:
    """The `python main.py ...` commands of seed 002's README, as argv lists (verbatim)."""
    (path,) = glob.glob(os.path.join(ROOT, "..", "shared", "seeds", "002_*.txt")) or [None]
    if path is None:
        pytest.skip("seed 002's README is not in ../shared/seeds")
    text = open(path).read().replace("\\\n", " ")
    return [shlex.split(m)[2:] for m in re.findall(r"^\$ (python main\.py .*)$", text, re.M)]


def refused(capsys, argv, message):
    with pytest.raises(SystemExit) as e:
        main.parse_args(argv)
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert message in err, err
    return err


BASE = ["--savedir", "x", "--dataset", "digits"]


@pytest.mark.parametrize(
    "flags, message",
    [
        (["--max_shot", "0"], "--max_shot must be at least 1"),
        (["--n_mc_samples", "-1"], "--n_mc_samples must be at least 0"),
        (["--select", "best"], "invalid choice: 'best'"),
        (["--id_dataset", "digits,digits"], "a dataset is named twice"),
        (["--ood_dataset", "digits"], "digits is also in distribution"),
        (["--id_dataset", " , "], "names no dataset"),
        (["--id_dataset", "digits,omniglot_small", "--data_root", "d"], "give a single --id_dataset"),
        (["--mode", "export", "--max_shot", "5"], "leave out --max_shot"),
        (["--max_shot", "x"], "--max_shot: invalid int value"),
        (["--n_test_episodes", "1"], "--n_test_iters must be at least 2"),
        (["-meta_lr", "-1"], "--meta_lr must be a positive number"),
    ],
)
def test_bad_taml_flags_exit_2_with_a_message(capsys, flags, message):
    refused(capsys, [*BASE, *flags], message)


def test_seed_flags_are_meta_dropouts_under_other_names():
    args = main.parse_args(
        [
            *(
                "--savedir",
                "x",
                "--id_dataset",
                " digits , omniglot_small",
                "--ood_dataset",
                "'mimgnet'"[1:-1],
            ),
            *("--alpha_on", "-meta_lr", "0.25", "--n_test_episode", "7", "--max_shot", "4"),
        ]
    )
    assert args.dataset == "digits,omniglot_small" and args.ood_dataset == "mimgnet"
    assert args.metasgd and args.meta_lr == 0.25 and args.n_test_iters == 7
    assert args.noise == "none" and args.select == "id+ood"  # any-shot: seed 002's defaults
    assert main.parse_args([*BASE, "--n_test_episodes", "9"]).n_test_iters == 9
    plain = main.parse_args(BASE)
    assert plain.noise == "metadrop" and plain.select == "last" and not plain.metasgd
    assert plain.n_test_iters == 1000 and plain.meta_lr == 1e-3 and plain.dataset == "digits"


def test_every_seed_002_command_parses_verbatim():
    """The one-dash -meta_lr, quoted comma lists with spaces, the --n_test_episode prefix."""
    commands = seed_commands()
    assert len(commands) == 6
    for argv in commands:
        args = main.parse_args(argv)
        assert args.max_shot == 50 and args.query == 15 and args.metasgd and args.omega_on and args.z_on
        assert args.noise == "none" and args.inner_lr == 0.01 and "," not in args.ood_dataset[:3]
    multi = main.parse_args(commands[4])
    assert multi.dataset == "aircraft,quickdraw,vgg_flower" and multi.ood_dataset == "traffic,fashion-mnist"
    assert multi.meta_lr == 1e-3 and main.parse_args(commands[5]).n_test_iters == 1000


def test_seed_002_commands_without_their_data_exit_2_saying_what_to_do(tmp_path, monkeypatch, capsys):
    """Run verbatim in an empty folder with an empty data folder: a clear error, exit 2, nothing
    trained."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("METADROP_DATA", str(tmp_path / "data"))
    for argv in seed_commands()[::2]:  # the meta_train commands
        assert main.main(argv) == 2
        err = capsys.readouterr().err
        assert re.search(r"get_data\.py --dataset|unknown dataset", err), err
    assert not list(tmp_path.rglob("ckpt"))


LOG = """iter 50 loss 1.0 acc 20.00 (1.0s)
iter 100 val acc 40.00 +- 1.00
iter 100 val ood acc 30.00 +- 1.00
iter 200 val id/a acc 50.00 +- 1.00
iter 200 val acc 45.00 +- 1.00
iter 200 val ood acc 20.00 +- 1.00
resumed from iteration 200 (ckpt/model-200)
iter 300 val acc 44.00 +- 1.00
iter 300 val ood acc 33.00 +- 1.00
iter 400 val acc 45.00 +- 1.00
iter 400 val ood acc 20.00 +- 1.00
"""


def test_selection_rule_is_the_argmax_of_its_metric():
    """T11: on a synthetic log, each rule picks the argmax of its metric among kept checkpoints,
    the earliest on ties; per-dataset lines (val id/a) are not the pooled accuracy."""
    ids = validation_scores(LOG, "id")
    assert ids == {100: 40.0, 200: 45.0, 300: 44.0, 400: 45.0}
    both = validation_scores(LOG, "id+ood")
    assert both == {100: 70.0, 200: 65.0, 300: 77.0, 400: 65.0}
    every = [100, 200, 300, 400]
    rng = np.random.default_rng(0)
    for _ in range(20):
        kept = sorted(rng.choice(every, rng.integers(1, 5), replace=False).tolist())
        for rule, scores in (("id", ids), ("id+ood", both)):
            best = max(scores[s] for s in kept)
            assert select_step(LOG, rule, kept) == min(s for s in kept if scores[s] == best)
        assert select_step(LOG, "last", kept) == max(kept)
    assert select_step(LOG, "id", [500]) is None
    assert select_step("iter 5 val acc 1.00 +- 0\n", "id+ood", [5]) == 5  # no OOD line: ID alone


def write_result(path, dataset, role, ids, mean, seed=0, **switches):
    import json

    config = {"dataset": ids, "way": 5, "shot": 1, "max_shot": 50, "noise": "none", "seed": seed}
    config.update({k: False for k in ("metasgd", "omega_on", "gamma_on", "z_on")}, **switches)
    result = {"mean": mean, "ci95": 0.5, "n": 1000, "train_iters": 50000, "dataset": dataset, "role": role}
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({**result, "config": config}))


def test_report_puts_taml_results_beside_both_published_sets(tmp_path):
    import report

    on = dict(metasgd=True, omega_on=True, gamma_on=True, z_on=True)
    for seed, (a, b) in enumerate([(74.0, 50.0), (76.0, 52.0)]):
        run = tmp_path / f"taml{seed}"
        write_result(run / "results_id_cifar.json", "cifar", "id", "cifar", a, seed, **on)
        write_result(run / "results_ood_svhn.json", "svhn", "ood", "cifar", b, seed, **on)
    write_result(
        tmp_path / "abl/results_ood_svhn.json", "svhn", "ood", "cifar", 49.0, metasgd=True, z_on=True
    )
    write_result(tmp_path / "mimg/results_id_mimgnet.json", "mimgnet", "id", "mimgnet", 60.0)
    text = report.report(str(tmp_path))
    assert "## Bayesian TAML, CIFAR-FS / SVHN" in text and "## Bayesian TAML, miniImageNet / CUB" in text
    assert "Multi-dataset" not in text and "## Table 1" not in text and "Other results" not in text
    # a row per training run, its ID and OOD results side by side (ours − paper in brackets)
    row = next(line for line in text.splitlines() if "taml1/results_ood_svhn.json" in line)
    assert row.startswith(
        "| Bayesian TAML | 1 | 76.00 ± 0.50 (+0.85) | 52.00 ± 0.50 (+0.13) | 1000 | 50000 |"
    )
    assert "taml1/results_id_cifar.json" in row
    seed0 = next(line for line in text.splitlines() if "taml0/results_ood_svhn.json" in line)
    assert seed0.startswith("| Bayesian TAML | 0 | 74.00 ± 0.50 (-1.15) | 50.00 ± 0.50 (-1.87) |")
    assert "| Bayesian TAML | paper | 75.15 ± 0.20 | 51.87 ± 0.23 |" in text
    assert "| Bayesian TAML | orig. repo | 74.97 ± 0.62 | 52.25 ± 0.68 |" in text
    abl = next(line for line in text.splitlines() if "abl/results_ood_svhn.json" in line)
    assert abl.startswith("| alpha+z | 0 | — | 49.00 ± 0.50 |")
    mimg = next(line for line in text.splitlines() if "mimg/results_id_mimgnet.json" in line)
    assert mimg.startswith("| MAML | 0 | 60.00 ± 0.50 (-6.64) | — |")


def test_plot_balance_draws_both_tendencies(tmp_path, capsys):
    import json

    import plot

    rng = np.random.default_rng(0)
    with open(tmp_path / "balance.jsonl", "w") as f:
        for it in (10, 20):
            shots = rng.integers(1, 9, (10, 5))
            f.write(
                json.dumps(
                    {
                        "iter": it,
                        "variable": "gamma",
                        "imbalance": "task",
                        "shots": shots.tolist(),
                        "values": rng.random((10, 5)).tolist(),
                    }
                )
                + "\n"
            )
            f.write(
                json.dumps(
                    {
                        "iter": it,
                        "variable": "omega",
                        "imbalance": "class",
                        "shots": shots.tolist(),
                        "values": rng.dirichlet(np.ones(5), 10).tolist(),
                    }
                )
                + "\n"
            )
    records = plot.load_balance(str(tmp_path))
    assert set(records) == {"gamma", "omega"} and all(r["iter"] == 20 for r in records.values())
    assert plot.main(["--balance", str(tmp_path)]) == 0
    assert (tmp_path / "balance.png").stat().st_size > 1000
    (tmp_path / "balance.jsonl").write_text("{not json\n")
    assert plot.main(["--balance", str(tmp_path)]) == 2
    assert "is not main.py's balance log" in capsys.readouterr().err
    assert plot.main(["--balance", str(tmp_path / "none")]) == 2


# ---- runs (slow): tiny trainings through main.main


def omniglot16(tmp_path, monkeypatch):
    """METADROP_DATA in tmp_path with omniglot_small16 prepared (skip without Omniglot's archives)."""
    import get_data
    from data.omniglot_small import SOURCE

    if not os.path.isdir(SOURCE):
        pytest.skip(f"no Omniglot archives in {SOURCE}")
    monkeypatch.setenv("METADROP_DATA", str(tmp_path / "data"))
    assert get_data.main(["--dataset", "omniglot_small16"]) == 0


@pytest.mark.slow
def test_id_and_ood_results_selection_and_balancing_logs(tmp_path, monkeypatch):
    """Any-shot Bayesian TAML on digits (ID) and omniglot_small16 (OOD): each dataset's results file,
    the checkpoint --select id picks from the log, meta_test with other --n_steps and draws, the
    balancing-variable logs and their plot."""
    import json

    import plot

    omniglot16(tmp_path, monkeypatch)
    run = str(tmp_path / "run")
    common = ["--savedir", run, "--id_dataset", "digits", "--ood_dataset", "omniglot_small16"]
    common += ["--way", "3", "--max_shot", "4", "--query", "5", "--metabatch", "2"]
    common += ["--alpha_on", "--omega_on", "--gamma_on", "--z_on"]
    train = ["--mode", "meta_train", "--n_steps", "1", "--n_train_iters", "6", "--save_freq", "100"]
    assert main.main([*common, *train, "--val_freq", "2", "--n_val_iters", "2"]) == 0
    log = open(os.path.join(run, "meta_train.log")).read()
    assert len(re.findall(r"^iter \d+ val ood/omniglot_small16 acc", log, re.M)) == 3
    assert "*** Gamma for task imbalance" in log and "*** Omega for class imbalance" in log
    kept = sorted(
        int(m) for m in re.findall(r"model-(\d+)\.index", " ".join(os.listdir(os.path.join(run, "ckpt"))))
    )
    chosen = select_step(log, "id", kept)
    assert chosen in kept and {2, 4, 6} >= set(kept) >= {4, 6}
    test = ["--mode", "meta_test", "--n_steps", "2", "--n_test_episodes", "4", "--n_mc_samples", "2"]
    assert main.main([*common, *test, "--select", "id"]) == 0
    for role, name in (("id", "digits"), ("ood", "omniglot_small16")):
        r = json.loads(open(os.path.join(run, f"results_{role}_{name}.json")).read())
        assert r["role"] == role and r["dataset"] == name and r["n"] == 4
        assert r["run"]["checkpoint"] == f"ckpt/model-{chosen}" and r["test"]["select"] == "id"
        assert (
            r["test"]["n_steps"] == 2 and r["settings"]["n_steps"] == 1 and r["test"]["posterior_draws"] == 2
        )
        assert (r["system"], r["model"], r["max_shot"], r["shot"]) == ("taml", "taml", 4, None)
    assert plot.main(["--balance", run]) == 0


@pytest.mark.slow
@pytest.mark.parametrize(
    "experiment",
    [0, pytest.param(1, marks=pytest.mark.longest), pytest.param(2, marks=pytest.mark.longest)],
    ids=["cifar", "mimgnet", "multi"],
)
def test_seed_002_commands_run_verbatim_on_stand_in_data(tmp_path, monkeypatch, experiment):
    """Each experiment's two README commands, verbatim plus a few-iteration budget, on stand-in
    datasets served from 127.0.0.1 (tests/standin.py) in an empty folder."""
    import contextlib

    from tests import standin

    train, test = seed_commands()[2 * experiment : 2 * experiment + 2]
    args = main.parse_args(train)
    names = args.dataset.split(",") + args.ood_dataset.split(",")
    missing = [n for n in names if n not in standin.BUILDERS]
    if missing:
        pytest.skip(f"no stand-in (or no module yet) for {', '.join(missing)}")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("METADROP_DATA", str(tmp_path / "data"))
    with contextlib.ExitStack() as stack:
        for n in names:
            import data

            standin.prepare(n, data.default_root(n))
            stack.enter_context(standin.patched(standin.build(n)[1]))
        budget = ["--n_train_iters", "2", "--val_freq", "2", "--n_val_iters", "1", "--log_freq", "1"]
        assert main.main([*train, *budget]) == 0
        assert main.main([*test, "--n_test_episodes", "2", "--n_mc_samples", "2"]) == 0
    for n in names:
        role = "id" if n in args.dataset.split(",") else "ood"
        assert os.path.exists(os.path.join(args.savedir, f"results_{role}_{n}.json"))
