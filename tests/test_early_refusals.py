"""Issue #27, parts 2-4: every refusal that needs only the flags and the data files' headers comes
before TensorFlow is imported (and before anything is written), as one line and exit 2: count flags
out of range (each has a most), transfer.py's --seed, and what the data cannot give (--way, --query,
--max_shot against the classes, --batch_size against the target set, a missing or unprepared
dataset). Each case runs in a fresh process whose sys.modules is read after it."""

import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest

import cli
import data
import get_data
import main
import plot
import transfer
from data.headers import peek
from tests import standin

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
HUGE = "99999999999999999999"  # past 2**63: numpy and TensorFlow overflow on it
MISSING_CUB = "val.offsets.npy is missing; run: python get_data.py --dataset cub"

# Runs each case's main() in turn in one fresh process; prints [exit code, stderr, seconds,
# TensorFlow imported] per case. A refusal must come before TensorFlow: once one case imports it,
# that case and the ones after it show it.
SCRIPT = """
import contextlib, io, json, os, sys, time
sys.path.insert(0, {root!r})
os.chdir({cwd!r})
import {module} as entry
out = []
for argv in {cases!r}:
    err = io.StringIO()
    start = time.perf_counter()
    with contextlib.redirect_stderr(err):
        try:
            code = entry.main(argv)
        except SystemExit as e:
            code = e.code
    out.append([code, err.getvalue(), time.perf_counter() - start, "tensorflow" in sys.modules])
print(json.dumps(out))
"""


def refusals(module: str, cases: list[list[str]], cwd: str, env: dict | None = None) -> list:
    script = SCRIPT.format(root=ROOT, cwd=cwd, module=module, cases=cases)
    proc = subprocess.run(
        [sys.executable, "-c", script],
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "CUDA_VISIBLE_DEVICES": "", **(env or {})},
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout.splitlines()[-1])


def check_refused(module: str, cases: list[tuple[list[str], str]], cwd: str, env: dict | None = None) -> None:
    """Each case (argv, what its message says; "A ... B" for A, then B) exits 2 with one line."""
    results = refusals(module, [argv for argv, _ in cases], cwd, env)
    for (argv, message), (code, err, seconds, tf) in zip(cases, results):
        head, _, tail = message.partition(" ... ")
        assert code == 2 and head in err and tail in err.split(head, 1)[-1], (argv, err)
        assert "Traceback" not in err and len(err.strip().splitlines()) == 1, (argv, err)
        assert not tf, f"{argv}: TensorFlow was imported before the refusal ({seconds:.1f} s)"
    assert not [p for p in os.listdir(cwd) if p not in ("data", "empty")], "a refusal wrote a file"


@pytest.fixture(scope="module")
def prepared(tmp_path_factory):
    """$METADROP_DATA with a tiny CIFAR-FS (24 images per class), an svhn folder that is not
    prepared, and a cub folder whose validation split lost its class offsets."""
    top = tmp_path_factory.mktemp("work")
    root = top / "data"
    standin.prepare("cifar", str(root / "cifar"), per_class=20)
    standin.prepare("cub", str(root / "cub"), per_class=20)
    os.remove(root / "cub" / "val.offsets.npy")
    (root / "svhn").mkdir()
    (top / "empty").mkdir()
    return top


# ---- count flags: every one has a most, refused when the flags are read


def test_every_count_flag_has_a_most(tmp_path):
    """main.py --mode meta_test --n_mc_samples HUGE once overflowed while the graph was built; each
    count flag of main.py and transfer.py is refused past its most, naming it."""
    mains = [
        (
            [*("--savedir", "s", "--mode", "meta_test", "--max_shot", "5", f"--{k}", HUGE)],
            f"--{k} must be at most",
        )
        for k in main.COUNTS
    ]
    check_refused("main", mains, str(tmp_path))
    tgt = ["--phase", "tgt", "--data", "digits", "--noise", "none", "--tgt_split", "test"]
    transfers = [([*tgt, f"--{k}", HUGE], f"--{k} must be at most") for k in transfer.COUNTS]
    check_refused("transfer", transfers, str(tmp_path))
    episodes = ["--dataset", "digits", "--episodes", "e.npz"]
    gets = [([*episodes, f"--{k}", HUGE], f"--{k} must be at most") for k in get_data.EPISODE_COUNTS]
    check_refused("get_data", gets, str(tmp_path))


def test_out_of_range_names_the_flag_and_its_range():
    class Args:
        a, b, c = 0, 11, None

    bounds = {"c": (1, 2), "a": (0, 10), "b": (1, 10)}
    assert cli.out_of_range(Args, bounds, {}) == "--b must be at most 10, not 11"
    assert cli.out_of_range(Args, {"a": (1, 3)}, {"a": "why"}) == "--a must be at least 1 (why)"
    assert cli.out_of_range(Args, {"a": (0, 0), "c": (5, 6)}, {}) is None


def test_transfer_seed_is_refused_before_the_data(tmp_path):
    """transfer.py --seed -1 was a numpy traceback after the data had loaded (68 s), leaving a
    config.json and a lock behind; the same kind: --img_size, --exp_name, --fine_tune."""
    tgt = ["--phase", "tgt", "--data", "digits", "--noise", "none", "--tgt_split", "test"]
    cases = [
        ([*tgt, "--seed", "-1"], "--seed must be an integer from 0 to 2147483647, not -1"),
        ([*tgt, "--seed", str(2**31)], "--seed must be an integer from 0"),
        (["--phase", "src", "--data", "digits", "--seed", "-1"], "--seed must be an integer from 0"),
        ([*tgt, "--model", "conv4_4", "--img_size", "8"], "raise --img_size to 16"),
        # a run folder outside --save_dir (once / itself), and a pre-trained run that is not there
        ([*tgt, "--exp_name", "/"], "--exp_name /: give a folder name"),
        ([*tgt, "--exp_name", ".."], "--exp_name ..: give a folder name"),
        ([*tgt, "--fine_tune", "missing"], "--fine_tune missing: no such run folder or checkpoint"),
    ]
    check_refused("transfer", cases, str(tmp_path))


# ---- what the data cannot give: from the headers, before TensorFlow


def test_main_refuses_what_the_data_cannot_give_before_tensorflow(prepared):
    """--way, --query, --max_shot against the classes, image shapes that differ, and a dataset that
    is not prepared (once named only by an internal file, after TensorFlow and the data loaded)."""
    anyshot = ["--savedir", "s", "--max_shot", "5", "--way", "5", "--query", "5"]
    cases = [
        (
            ["--savedir", "s", "--dataset", "digits", "--way", "300"],
            "--way 300 is larger than the 20 classes",
        ),
        ([*anyshot, "--dataset", "cifar", "--query", "24"], "have fewer than --query 24 + 1 examples"),
        (
            [*anyshot, "--dataset", "cifar", "--way", "65"],
            "--way 65 is larger than the 64 classes of the cifar train",
        ),
        (
            [*anyshot, "--dataset", "cifar", "--mode", "meta_test", "--way", "21"],
            "than the 20 classes of the cifar test",
        ),
        ([*anyshot, "--dataset", "cifar", "--max_shot", "25"], "--max_shot 25: give 1 to 24"),
        (
            ["--savedir", "s", "--dataset", "cifar", "--shot", "20"],
            "--shot 20 + --query 15 = 35 is larger than the 24",
        ),
        (
            [*anyshot, "--dataset", "cifar", "--ood_dataset", "svhn"],
            "--ood_dataset svhn: svhn is not prepared in",
        ),
        ([*anyshot, "--dataset", "cub"], "--dataset cub: ... " + MISSING_CUB),
        (
            [*anyshot, "--dataset", "cifar", "--ood_dataset", "cub", "--mode", "meta_test"],
            "--ood_dataset cub: ",
        ),
        (
            [*anyshot, "--dataset", "digits", "--ood_dataset", "cifar"],
            "cifar has 32x32x3 images, digits 16x16x1",
        ),
    ]
    env = {data.DATA_ENV: str(prepared / "data")}
    check_refused("main", cases, str(prepared), env)


def test_transfer_refuses_what_the_data_cannot_give_before_tensorflow(prepared):
    """--batch_size, --n_per_class, --tgt_split, --num_split against the data, and a dataset that is
    not prepared, once refused after TensorFlow started (nets) and the data loaded."""
    tgt = ["--phase", "tgt", "--noise", "none", "--model", "conv4_4", "--img_size", "16"]
    src = ["--phase", "src", "--model", "conv4_4", "--img_size", "16"]
    cases = [
        (
            [*tgt, "--data", "digits", "--tgt_split", "test", "--n_per_class", "10", "--batch_size", "121"],
            "the target training set has 120 images, fewer than --batch_size 121",
        ),
        (
            [*tgt, "--data", "digits", "--tgt_split", "test", "--n_per_class", "174"],
            "--n_per_class 174 leaves a class of test without test images: give at most 173",
        ),
        (
            [*tgt, "--data", "digits", "--tgt_split", "nope"],
            "--tgt_split nope: digits has splits train, val, test",
        ),
        (
            [*tgt, "--data", "cifar", "--batch_size", str(64 * 24 + 1)],
            "has 1536 images, fewer than --batch_size 1537",
        ),
        ([*tgt, "--data", "svhn"], "--data svhn: svhn is not prepared in"),
        ([*tgt, "--data", "cub", "--tgt_split", "test"], "--data cub: ... " + MISSING_CUB),
        ([*tgt, "--data", "stl10"], "--data stl10: stl10 is not prepared in"),
        (
            [
                *tgt[:3],
                "metaperturb",
                *tgt[4:],
                "--data",
                "digits",
                "--tgt_split",
                "test",
                "--phi_from",
                "no.pth",
            ],
            "no phi file no.pth: run the source phase first",
        ),
        (
            [*tgt[:3], "metaperturb", *tgt[4:], "--data", "digits", "--tgt_split", "test", "--phi_from", ""],
            "--phi_from is empty: name a phi file",
        ),
        ([*src, "--data", "digits", "--num_split", "20"], "20 source classes cannot make 20 groups"),
        (
            [*src, "--data", "cifar", "--num_split", "4", "--batch_size", "193"],
            "a source task has 192 training images, fewer than --batch_size 193",
        ),
    ]
    env = {data.DATA_ENV: str(prepared / "data")}
    check_refused("transfer", cases, str(prepared), env)


def test_get_data_refuses_a_max_shot_larger_than_every_class(tmp_path):
    """--max_shot 100000 padded each task to 500,000 rows without a word."""
    argv = ["--dataset", "digits", "--episodes", "e.npz", "--way", "2", "--n_episodes", "2"]
    cases = [
        ([*argv, "--max_shot", "175"], "--max_shot 175: give 1 to 174, the largest class of the digits test")
    ]
    check_refused("get_data", cases, str(tmp_path))
    assert refusals("get_data", [[*argv, "--max_shot", "174"]], str(tmp_path))[0][0] == 0


# ---- the headers say what the loaded data say


@pytest.mark.parametrize("name", ["digits", "cifar", "cub", "mimgnet"])
def test_peek_matches_the_loaded_dataset(tmp_path, name):
    """data.headers.peek (headers and offsets only) gives the loaded dataset's shape and sizes."""
    root = str(tmp_path / name)
    if name != "digits":
        standin.prepare(name, root, per_class=7)
    shape, sizes = peek(name, root)
    ds = data.load(name, root)
    assert shape == ds.shape and list(sizes) == list(ds.splits)
    for s in ds.splits:
        np.testing.assert_array_equal(sizes[s], data.sizes(ds.split(s)))
    if name == "cub":
        shutil.rmtree(root)
        with pytest.raises(data.DataError, match="cub is not prepared in .*python get_data.py --dataset cub"):
            peek(name, root)


# ---- same kind, found by trying bad values of every flag


@pytest.mark.parametrize(
    "entry, argv, message",
    [
        (main, ["--savedir", "s", "--meta_lr", "-inf"], "--meta_lr must be a positive number, not -inf"),
        (main, ["--savedir", "s", "--inner_lr", "-NaN"], "--inner_lr must be a positive number, not nan"),
        (transfer, ["--phase", "tgt", "--lr", "-infinity"], "--lr must be a positive number, not -inf"),
        (transfer, ["--phase", "tgt", "--noise_coeff", "-inf"], "--noise_coeff must be a number >= 0"),
        (main, ["--savedir", "s", "--gpu_id", "-1"], "--gpu_id must be at least 0"),
        (get_data, ["--dataset", "digits", "--episodes", ""], "--episodes is empty"),
        (plot, ["--savedir", "s", "--perplexity", "nan"], "--perplexity must be a positive number, not nan"),
        (plot, ["--savedir", "s", "--tsne_iter", HUGE], "--tsne_iter must be at most 1000000"),
        (transfer, ["--phase", "src", "--noise", "x"], "--noise: unknown perturbation 'x'"),
    ],
)
def test_flag_values_refused_when_read(entry, argv, message, capsys):
    """-inf and -nan were read as flags ("expected one argument"), --gpu_id -1 hid every GPU,
    get_data.py --episodes '' wrote nothing with exit 0, plot.py took a NaN perplexity and any
    number of t-SNE iterations, transfer.py --phase src --noise x was a ValueError traceback."""
    with pytest.raises(SystemExit) as e:
        entry.parse_args(argv)
    assert e.value.code == 2 and message in capsys.readouterr().err


def test_meta_test_select_without_validation_lines_is_refused_before_tensorflow(tmp_path):
    """--select id on a savedir whose log has no validation line of a kept checkpoint was refused
    only after the data and the graph were loaded."""
    flags = ["--dataset", "digits", "--way", "5", "--max_shot", "5", "--query", "5"]
    savedir = tmp_path / "run"
    (savedir / "ckpt").mkdir(parents=True)
    (savedir / "ckpt" / "model-5.index").write_bytes(b"")
    config = {
        **vars(main.parse_args(["--savedir", str(savedir), *flags])),
        "image_shape": [16, 16, 1],
        "filters": 32,
    }
    (savedir / "config.json").write_text(json.dumps(config))
    argv = ["--savedir", str(savedir), *flags, "--mode", "meta_test", "--select", "id"]
    (tmp_path / "cwd").mkdir()
    check_refused(
        "main",
        [(argv, "--select id: ... has no validation line of a kept checkpoint")],
        str(tmp_path / "cwd"),
    )
