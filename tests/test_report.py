"""report.py: cells matched by config, differences, missing cells, bad files, several seeds."""

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest

import report
import results

REPO = Path(__file__).resolve().parents[1]

# A few Table 1 / README values, copied here from the paper and README by hand (independent of the JSON).
PAPER = {
    ("metadrop", "omni_1shot"): (96.63, "96.63 ± 0.13"),
    ("metasgd", "mimgnet_5shot"): (65.55, "65.55 ± 0.56"),
    ("metadrop", "omni_5shot"): (98.73, "98.73 ± 0.06"),
}
README_RUN = {("metadrop", "omni_1shot"): "96.24 ± 0.14"}
SETTINGS = {
    "omni_1shot": ("omniglot", 20, 1),
    "omni_5shot": ("omniglot", 20, 5),
    "mimgnet_1shot": ("mimgnet", 5, 1),
    "mimgnet_5shot": ("mimgnet", 5, 5),
}


def spread(mean, ci95, n):
    """n per-episode accuracies (n even) whose mean is `mean` and whose interval 1.96 sd / sqrt(n) is
    `ci95`: half at mean + sd, half at mean - sd."""
    sd = ci95 * math.sqrt(n) / 1.96
    return [mean + sd, mean - sd] * (n // 2)


def write_result(
    root,
    sub,
    mean,
    setting="omni_1shot",
    ci95=0.2,
    n=1000,
    iters=60000,
    seed=0,
    train=None,
    episodes=None,
    **flags,
):
    """A results.json as main.py --mode meta_test writes it (results.meta_test_record, per-episode
    accuracies with this mean and interval); flags: maml/noise/metasgd/dataset/way/shot. With `train`
    (the training run's settings, its seed included), the training run differs from the meta-test's
    flags, and the file is results_test_seed<seed>.json when the evaluation's seed is another. With
    `episodes` (8 hex digits), the result of a file of fixed episodes with that hash."""
    dataset, way, shot = SETTINGS.get(setting, (None, None, None))
    config = {"dataset": dataset, "way": way, "shot": shot, "seed": seed, "maml": False, "noise": "metadrop"}
    if flags.get("maml"):
        config["noise"] = "none"
    config.update(flags)
    saved = {**config, **(train or {})}
    name = "results.json" if saved["seed"] == seed else f"results_test_seed{seed}.json"
    if episodes:
        name, evaluated = f"results_eps_{episodes}.json", f"episodes {episodes}"
        identity = results.file_episodes(episodes * 5, n)
    else:
        evaluated = f"test split seed {seed}"
        identity = results.split_episodes(config["dataset"], "test", [seed, 2], config, n)
    path = Path(root) / sub / name
    accs = spread(mean, ci95, n)
    record = results.meta_test_record(
        {**config, "savedir": str(path.parent)},
        saved,
        accs,
        "id",
        config["dataset"],
        evaluated,
        identity,
        iters,
        "ckpt",
    )
    results.write(str(path), record)
    return path


def tables(text):
    """{heading: [row dict]} for each markdown table in the report."""
    out, heading, header = {}, None, None
    for line in text.splitlines():
        if line.startswith("## "):
            heading, header = line[3:], None
        elif line.startswith("|") and not line.startswith("|---"):
            cells = [c.strip() for c in line.strip("|").split("|")]
            if header is None:
                header = cells
                out[heading] = []
            else:
                out[heading].append(dict(zip(header, cells, strict=True)))
    return out


def paper_rows(root):
    return tables(report.report(str(root)))["Table 1: ours vs. published"]


def cell(rows, model, setting):
    return [r for r in rows if (r["model"], r["setting"]) == (model, setting)]


@pytest.mark.parametrize(
    "config, model",
    [
        ({"maml": True, "noise": "none"}, "maml"),
        ({"maml": True}, "maml"),  # written before --noise existed
        ({"maml": False, "noise": "metadrop"}, "metadrop"),
        ({"maml": False}, "metadrop"),
        ({"maml": True, "noise": "none", "metasgd": True}, "metasgd"),
        ({"maml": False, "noise": "metadrop", "metasgd": True}, "metasgd_metadrop"),
        ({"maml": False, "noise": "additive"}, "maml+additive"),
        ({"maml": False, "noise": "additive", "metasgd": True}, "metasgd+additive"),
    ],
)
def test_model_name(config, model):
    assert report.model_name(config) == model


def test_cells_come_from_config_not_path(tmp_path):
    # Paths name the wrong cells on purpose.
    write_result(tmp_path, "maml/mimgnet_5shot", 96.00, "omni_1shot")
    write_result(
        tmp_path, "metadrop/omni_1shot", 66.10, "mimgnet_5shot", maml=True, metasgd=True, iters=59000
    )
    rows = paper_rows(tmp_path)

    (row,) = cell(rows, "metadrop", "omni_1shot")
    mean, text = PAPER[("metadrop", "omni_1shot")]
    assert row["ours"] == "96.00 ± 0.20"
    assert row["paper"] == text
    assert row["orig. repo"] == README_RUN[("metadrop", "omni_1shot")]
    assert float(row["ours − paper"]) == pytest.approx(96.00 - mean, abs=0.005)
    assert row["ours − paper"] == "-0.63"
    assert row["file"] == "maml/mimgnet_5shot/results.json"
    assert (row["episodes"], row["iterations"], row["seed"]) == ("1000", "60000", "0")

    (row,) = cell(rows, "metasgd", "mimgnet_5shot")
    mean, text = PAPER[("metasgd", "mimgnet_5shot")]
    assert (row["ours"], row["paper"], row["iterations"]) == ("66.10 ± 0.20", text, "59000")
    assert row["ours − paper"] == f"{66.10 - mean:+.2f}" == "+0.55"
    assert row["orig. repo"] == "—"  # the README reports MAML and Meta-dropout only


def test_missing_cells_are_shown_missing(tmp_path):
    write_result(tmp_path, "a", 96.00, "omni_1shot")
    rows = paper_rows(tmp_path)
    cells = {(r["model"], r["setting"]) for r in rows}
    assert len(rows) == len(cells) == 16
    assert cells == {(m, s) for m in ("maml", "metasgd", "metadrop", "metasgd_metadrop") for s in SETTINGS}
    missing = [r for r in rows if (r["model"], r["setting"]) != ("metadrop", "omni_1shot")]
    assert len(missing) == 15
    for r in missing:
        assert r["ours"] == r["episodes"] == r["iterations"] == r["ours − paper"] == "—"
        assert r["paper"] != "—"  # the published value is still shown


def test_empty_folder_and_no_folder(tmp_path, capsys):
    with pytest.raises(report.NothingToReport, match="nothing to report: no results files under"):
        report.report(str(tmp_path))
    assert report.main([str(tmp_path)]) == 2
    out, err = capsys.readouterr()
    assert out == "" and err.startswith(f"error: nothing to report: no results files under {tmp_path} (run ")
    write_result(tmp_path, "a", 96.0, "omni_1shot")  # one Table 1 cell: all 16 rows, 15 missing
    rows = paper_rows(tmp_path)
    assert len(rows) == 16 and sum(r["ours"] == "—" for r in rows) == 15
    with pytest.raises(report.ReportError, match="not a folder"):
        report.report(str(tmp_path / "nope"))


def test_several_seeds_give_rows_and_a_mean_row(tmp_path):
    # Path order differs from seed order on purpose; both evaluated on the test split's seed-0 episodes.
    write_result(tmp_path, "a", 99.10, "omni_5shot", seed=0, n=600, train={"seed": 1})
    write_result(tmp_path, "b", 98.50, "omni_5shot", seed=0)
    rows = cell(paper_rows(tmp_path), "metadrop", "omni_5shot")
    assert [r["seed"] for r in rows] == ["0", "1", "mean of 2 (± sd)"]
    assert [r["ours"] for r in rows[:2]] == ["98.50 ± 0.20", "99.10 ± 0.20"]
    paper_mean, _ = PAPER[("metadrop", "omni_5shot")]
    mean, sd = (98.50 + 99.10) / 2, abs(99.10 - 98.50) / math.sqrt(2)  # sample sd of two values
    assert rows[2]["ours"] == f"{mean:.2f} ± {sd:.2f}" == "98.80 ± 0.42"
    assert rows[2]["ours − paper"] == f"{mean - paper_mean:+.2f}" == "+0.07"
    assert rows[0]["ours − paper"] == "-0.23" and rows[1]["ours − paper"] == "+0.37"
    assert rows[2]["episodes"] == "1600"


def test_results_without_paper_numbers_go_to_other_table(tmp_path):
    write_result(tmp_path, "d", 80.0, "x", dataset="digits", way=5, shot=1)
    write_result(tmp_path, "s", 90.0, "x", dataset="omniglot_small", way=5, shot=1)
    write_result(tmp_path, "w", 97.0, "x", dataset="omniglot", way=5, shot=1)  # not Table 1's 20-way
    write_result(tmp_path, "n", 95.0, "omni_1shot", noise="additive")  # no Table 1 row
    t = tables(report.report(str(tmp_path)))
    assert "Table 1: ours vs. published" not in t  # no Table 1 cell among the results
    other = t["Other results (no published numbers)"]
    assert "paper" not in other[0] and "ours − paper" not in other[0]
    got = {(r["model"], r["setting"], r["ours"]) for r in other}
    assert got == {
        ("metadrop", "digits_5way_1shot", "80.00 ± 0.20"),
        ("metadrop", "omniglot_small_5way_1shot", "90.00 ± 0.20"),
        ("metadrop", "omniglot_5way_1shot", "97.00 ± 0.20"),
        ("maml+additive", "omni_1shot", "95.00 ± 0.20"),
    }


CONFIG = {"dataset": "omniglot", "way": 20, "shot": 1}
BAD_FILES = [
    ("{not json", "not a readable JSON file"),
    ("", "not a readable JSON file"),
    ("[1, 2]", "not a JSON object"),
    (json.dumps({"mean": 1.0, "ci95": 0.1, "n": 10, "train_iters": 5}), "no 'config'"),
    (json.dumps({"ci95": 0.1, "n": 10, "train_iters": 5, "config": CONFIG}), "mean"),
    (
        json.dumps({"mean": 1.0, "ci95": 0.1, "n": 10, "train_iters": 5, "config": {"way": 20}}),
        "config.dataset",
    ),
    (json.dumps({"mean": "96", "ci95": 0.1, "n": True, "train_iters": 5, "config": CONFIG}), "mean, n"),
    # files of the current format
    (json.dumps({"format": 99}), "results format 99, this code reads 2"),
    ("new:accuracies", "accuracies (3 values, n = 1000)"),
    ("new:mean", "wrong type: mean"),
    ("new:extra", "unknown fields colour"),
]


def bad_new_file(path, what):
    """A current-format file with one thing wrong."""
    write_result(path.parent.parent, path.parent.name, 96.0)
    raw = json.loads(path.read_text())
    change = {"accuracies": {"accuracies": [1.0, 2.0, 3.0]}, "mean": {"mean": None}, "extra": {"colour": 1}}
    path.write_text(json.dumps({**raw, **change[what]}))


@pytest.mark.parametrize("content, message", BAD_FILES)
def test_a_bad_results_file_is_named_and_skipped(tmp_path, capsys, content, message):
    """One unreadable file never hides the other results (it once stopped the whole report)."""
    write_result(tmp_path, "good", 96.0)
    bad = tmp_path / "bad" / "results.json"
    bad.parent.mkdir()
    if content.startswith("new:"):
        bad_new_file(bad, content[4:])
    else:
        bad.write_text(content)
    assert report.main([str(tmp_path)]) == 0
    out, err = capsys.readouterr()
    assert "| metadrop | omni_1shot | 0 | 96.00 ± 0.20 |" in out and str(bad) not in out
    (line,) = err.splitlines()
    assert line.startswith(f"skipped: {bad}") and message in line
    bad.unlink()
    (tmp_path / "good" / "results.json").write_text(content if not content.startswith("new:") else "{}")
    with pytest.raises(report.NothingToReport):  # nothing readable is left: nothing to report
        report.report(str(tmp_path))


def test_markdown_file_and_no_tensorflow(tmp_path):
    write_result(tmp_path / "res", "a", 96.0)
    out = tmp_path / "table.md"
    code = (
        "import sys, report; rc = report.main(sys.argv[1:]); "
        "assert 'tensorflow' not in sys.modules, 'report.py imported tensorflow'; sys.exit(rc)"
    )
    p = subprocess.run(
        [sys.executable, "-c", code, str(tmp_path / "res"), "--markdown", str(out)],
        cwd=REPO,
        capture_output=True,
        text=True,
    )
    assert p.returncode == 0, p.stderr
    assert out.read_text() == p.stdout
    assert "| metadrop | omni_1shot | 0 | 96.00 ± 0.20 |" in p.stdout


def test_published_numbers_are_consistent():
    with open(report.PUBLISHED) as f:
        pub = json.load(f)
    settings = set(pub["settings"])
    assert settings == set(SETTINGS)
    for name in ("table1", "readme_repo", "table2", "table3"):
        assert pub[name]["source"]
        for row in pub[name]["rows"].values():
            assert {k for k in row if k in settings} == settings, row["label"]
            for s in settings:
                assert set(row[s]) == {"mean", "ci95"} and 0 < row[s]["ci95"] < 2 < row[s]["mean"] < 100
    t1, t2, t3 = (pub[t]["rows"] for t in ("table1", "table2", "table3"))
    assert set(t1) == {"maml", "metasgd", "metadrop", "metasgd_metadrop"}
    # Tables 2 and 3 repeat Table 1's MAML and Meta-dropout rows.
    for s in settings:
        assert t1["maml"][s] == t2["none"][s] == t3["none"][s]
        assert t1["metadrop"][s] == t2["metadrop"][s] == t3["metadrop"][s]
    for (model, setting), (mean, text) in PAPER.items():
        assert report.pm(t1[model][setting]["mean"], t1[model][setting]["ci95"]) == text
        assert t1[model][setting]["mean"] == mean


# Table 2/3 values copied from the paper by hand.
TABLE2_VIB_1E4_OMNI1 = "93.01 ± 0.20"
TABLE3_MORE_PARAM_MIMG5 = "65.20 ± 0.51"


def test_tables_2_and_3_match_perturbation_and_hyperparameters(tmp_path):
    write_result(tmp_path, "v", 94.0, "omni_1shot", noise="vib", noise_hp={"beta": 1e-4}, noise_title="VIB")
    write_result(tmp_path, "v2", 95.0, "omni_1shot", noise="vib", noise_hp={"beta": 5e-4}, noise_title="VIB")
    write_result(tmp_path, "vs", 96.0, "omni_1shot", noise="vib", noise_hp={"beta": 1e-4}, metasgd=True)
    write_result(tmp_path, "m", 66.0, "mimgnet_5shot", noise="more_param", noise_hp={})
    t = tables(report.report(str(tmp_path)))
    assert "Table 1: ours vs. published" not in t
    t2, t3 = t["Table 2: ours vs. published"], t["Table 3: ours vs. published"]
    (vib,) = [r for r in t2 if r["ours"] != "—"]
    assert (vib["model"], vib["hyperparameter"], vib["setting"]) == (
        "Variational Information Bottleneck",
        "beta=0.0001",
        "omni_1shot",
    )
    assert vib["paper"] == TABLE2_VIB_1E4_OMNI1 and vib["ours − paper"] == "+0.99"
    assert len(t2) == 12 * 4  # every row and setting, missing cells as "—"
    assert sum(r["ours"] == "—" for r in t2) == 12 * 4 - 1
    (more,) = [r for r in t3 if r["ours"] != "—"]
    assert (more["model"], more["paper"], more["ours − paper"]) == (
        "MAML + More param",
        TABLE3_MORE_PARAM_MIMG5,
        "+0.80",
    )
    other = t["Other results (no published numbers)"]
    got = {(r["model"], r["title"], r["ours"]) for r in other}
    assert got == {
        ("maml+vib(beta=0.0005)", "VIB", "95.00 ± 0.20"),
        ("metasgd+vib(beta=0.0001)", "—", "96.00 ± 0.20"),
    }


def test_maml_and_metadrop_runs_are_in_all_three_tables(tmp_path):
    write_result(tmp_path, "a", 95.0, "omni_5shot", maml=True)
    t = tables(report.report(str(tmp_path)))
    for name in ("Table 1", "Table 2", "Table 3"):
        (row,) = [r for r in t[f"{name}: ours vs. published"] if r["ours"] != "—"]
        assert row["paper"] == "98.38 ± 0.07" and row["setting"] == "omni_5shot"
    assert "Other results (no published numbers)" not in t


def write_episodes_result(root, sub, mean, digest, train, **flags):
    """A result on a file of fixed episodes (results_<name>_<hash>.json) of a run trained with `train`."""
    return write_result(root, sub, mean, train=train, episodes=digest, **flags)


def test_adversarial_and_first_order_maml_have_rows_of_their_own(tmp_path):
    write_result(tmp_path, "maml", 95.0, maml=True)
    write_result(tmp_path, "adv", 80.0, maml=True, train={"adv_inner": "linf", "adv_eps": 0.1})
    write_result(tmp_path, "fo", 90.0, maml=True, train={"first_order": True})
    t = tables(report.report(str(tmp_path)))
    for name in ("Table 1", "Table 2", "Table 3"):
        (row,) = [r for r in t[f"{name}: ours vs. published"] if r["ours"] != "—"]
        assert row["ours"] == "95.00 ± 0.20" and row["seed"] == "0"
    other = {r["model"]: r["ours"] for r in t["Other results (no published numbers)"]}
    assert other == {"maml+adv(linf,eps=0.1)": "80.00 ± 0.20", "maml+first_order": "90.00 ± 0.20"}


def test_seed_is_the_training_seed_and_groups_follow_the_evaluation(tmp_path):
    # Three models (training seeds 0, 1, 2) meta-tested on one file of episodes with --seed 0.
    for s, acc in enumerate((96.0, 97.0, 98.0)):
        write_episodes_result(tmp_path, f"s{s}", acc, "0123abcd", train={"seed": s})
    # Another file of episodes, and the test split under two seeds: groups of their own.
    write_episodes_result(tmp_path, "s0", 90.0, "89abcdef", train={"seed": 0})
    write_result(tmp_path, "s1", 91.0, seed=1, train={"seed": 1})
    write_result(tmp_path, "s2", 92.0, seed=1, train={"seed": 2})
    write_result(tmp_path, "s0", 93.0, seed=0, train={"seed": 0})
    rows = cell(paper_rows(tmp_path), "metadrop", "omni_1shot")
    got = [(r["evaluated on"], r["seed"], r["ours"].split(" ")[0]) for r in rows]
    assert got == [
        ("test split seed 0", "0", "93.00"),
        ("test split seed 1", "1", "91.00"),
        ("test split seed 1", "2", "92.00"),
        ("test split seed 1", "mean of 2 (± sd)", "91.50"),
        ("episodes 0123abcd", "0", "96.00"),
        ("episodes 0123abcd", "1", "97.00"),
        ("episodes 0123abcd", "2", "98.00"),
        ("episodes 0123abcd", "mean of 3 (± sd)", "97.00"),
        ("episodes 89abcdef", "0", "90.00"),
    ]


def test_settings_that_change_a_result_separate_rows_and_are_shown(tmp_path):
    base = {
        "meta_lr": 1e-3,
        "inner_lr": 0.1,
        "n_steps": 5,
        "metabatch": 4,
        "query": 15,
        "sampler": "independent",
    }
    write_result(tmp_path, "a", 96.0, train={**base, "seed": 0}, n_test_mc_samp=30)
    write_result(tmp_path, "b", 97.0, train={**base, "seed": 1}, seed=0, n_test_mc_samp=30)
    write_result(tmp_path, "c", 95.0, train={**base, "seed": 2, "meta_lr": 3e-4}, seed=0, n_test_mc_samp=30)
    write_result(tmp_path, "d", 94.0, train={**base, "seed": 3}, seed=0, n_test_mc_samp=1)
    rows = cell(paper_rows(tmp_path), "metadrop", "omni_1shot")
    same = "inner_lr=0.1 n_steps=5 metabatch=4 query=15 sampler=independent"
    assert [(r["seed"], r["settings"]) for r in rows] == [
        ("2", f"meta_lr=0.0003 {same}; meta-test mc=30"),
        ("3", f"meta_lr=0.001 {same}; meta-test mc=1"),
        ("0", f"meta_lr=0.001 {same}; meta-test mc=30"),
        ("1", f"meta_lr=0.001 {same}; meta-test mc=30"),
        ("mean of 2 (± sd)", f"meta_lr=0.001 {same}; meta-test mc=30"),
    ]
    assert rows[-1]["ours"] == "96.50 ± 0.71"


def test_a_perturbation_hyperparameter_outside_the_row_separates_rows(tmp_path):
    # Table 2's information dropout row names beta only; alpha_max changes the result too.
    hp = {"beta": 1e-5, "alpha_max": 0.7}
    write_result(tmp_path, "a", 94.0, noise="infodrop", noise_hp=hp)
    write_result(tmp_path, "b", 93.0, noise="infodrop", noise_hp={**hp, "alpha_max": 0.5}, seed=0)
    rows = tables(report.report(str(tmp_path)))["Table 2: ours vs. published"]
    ours = [r for r in rows if r["ours"] != "—"]
    assert [(r["ours"], r["settings"]) for r in ours] == [
        ("93.00 ± 0.20", "beta=1e-05,alpha_max=0.5"),
        ("94.00 ± 0.20", "beta=1e-05,alpha_max=0.7"),
    ]


@pytest.mark.parametrize("where", ["missing/deeper", "file"])
def test_markdown_in_a_folder_that_is_not_there_is_refused(tmp_path, capsys, where):
    """A typo'd --markdown path once became a tree of new folders."""
    write_result(tmp_path / "res", "a", 96.0, "omni_1shot")
    (tmp_path / "file").write_text("x")
    out = tmp_path / where / "table.md"
    with pytest.raises(SystemExit) as e:
        report.main([str(tmp_path / "res"), "--markdown", str(out)])
    err = capsys.readouterr().err
    parent = tmp_path / where
    said = "does not exist: create it first" if where != "file" else "is a file, not a folder"
    assert e.value.code == 2 and f"--markdown {out}: " in err and f"{parent}" in err and said in err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["file", "res"]
