"""MetaPerturb's transfer protocol (Ryu et al. 2020; spec section 2): source and target training.

    python transfer.py --phase src --data tiny_imagenet --model resnet20 --num_split 10 --exp_name E
    python transfer.py --phase tgt --data stl10 --model resnet20 --src_name E --src_steps 750

Source (`--phase src`): --num_split tasks from class groups of the source data's train split, each
with its own network, Adam and theta; each step every task takes an Adam step on a training batch,
then phi one Adam step on the mean over tasks of its gradient on a validation batch at the new theta's
(first order, spec 2.3; --second_order differentiates through each task's Adam step on theta, Q5).
--num_run independent runs, each writing phi_<step>.npz. Target
(`--phase tgt`): a fresh network trained from scratch with the regulariser of --noise; a transferred
perturbation (MetaPerturb) has its phi loaded (--phi_from, or --src_name/--src_steps) and frozen,
its noise ramped in over the first 40 % of the steps; the learning rate drops x0.3 at 40/70/90 %;
test accuracy averages the softmax of 5 noise samples every --print_every steps and 100 at the end.
Selection (`--phase select`, spec 2.3 and Q9): for every source run of --src_name that has
phi_<src_steps>.npz, a short target run (--train_steps, default 1000) with that phi frozen, trained on
the validation dataset's train split (default small_cifar_100) and tested on its --val_split (default
val: CIFAR-100 images disjoint from s-CIFAR100); the accuracies and the best run (the first of equal
ones) go to save_dir/src/<src_name>/selection_<src_steps>.json, and `--phase tgt --src_run best`
loads that run's phi.

    python transfer.py --phase select --src_name E --src_steps 750 --model resnet20
    python transfer.py --phase tgt --data stl10 --src_name E --src_steps 750 --src_run best

Fine-tuning (`--fine_tune RUN`, spec 2.4): the target network starts from the conv weights of a
pre-trained network, the newest checkpoint of a previous `--phase tgt` run of the same --model (e.g.
`--data tiny_imagenet --noise none`); batch norm and the dense head start fresh, and --noise (e.g.
MetaPerturb) acts on top as without it.

    python transfer.py --phase tgt --data tiny_imagenet --noise none --train_steps 100000 \\
        --exp_name tiny_imagenet_resnet20_pretrain
    python transfer.py --phase tgt --data stl10 --src_name E --src_steps 750 \\
        --fine_tune checkpoints/tgt/tiny_imagenet_resnet20_pretrain

All phases checkpoint and resume (re-run the same command); bad input exits 2 with a message.
"""

from __future__ import annotations

import cli
import quiet

if __name__ == "__main__":
    cli.quiet_ctrl_c()  # Ctrl-C while the modules below load: one line, exit 130

import argparse
import math
import os
import re
import sys
from collections.abc import Callable
from contextlib import AbstractContextManager
from typing import TYPE_CHECKING

import numpy as np

import run
from cli import STOPPED  # noqa: F401 (the exit status after Ctrl-C, for callers)
from noise import build as build_noise
from phi_io import from_torch, read_npz, write_phi
from run import Checkpoints, UsageError, check_writable, log, write_json

if TYPE_CHECKING:
    import tensorflow as tf

    from nets import Network

PHASES = ("src", "tgt", "select")  # source meta-training, target training, source-run selection (RUNS)
SCHEMES = ("paper", "code")  # source class groups (spec Q1)
AUGMENTS = ("crop_flip", "crop", "none")
LR_MILESTONES = (0.4, 0.7, 0.9)  # x LR_GAMMA at these fractions of --train_steps (spec 2.4)
LR_GAMMA = 0.3
EVAL_BATCH = (
    256  # test images per run of the test graph (all of them are tested: no partial batch dropped, Q10)
)
ANNEAL = 0.4  # lambda reaches --noise_coeff at this fraction of --train_steps
DEFAULT_STEPS = {"src": 2000, "tgt": 10000, "select": 1000}  # select: a short target run (our choice)
DEFAULT_DATA = {"src": "tiny_imagenet", "tgt": "stl10", "select": "small_cifar_100"}
# Settings a resumed run must share with the run that wrote its folder.
MATCH = {
    "src": (
        "data",
        "model",
        "img_size",
        "batch_size",
        "lr",
        "num_split",
        "split_scheme",
        "augment",
        "clipval",
        "noise_hp",
        "seed",
        "second_order",
        "pipeline_version",
    ),
    "tgt": (
        "data",
        "model",
        "train_steps",  # the annealing and learning-rate schedules are fractions of it
        "img_size",
        "batch_size",
        "lr",
        "noise",
        "noise_hp",
        "noise_coeff",
        "clipval",
        "tgt_split",
        "n_per_class",
        "augment",
        "phi",
        "fine_tune",
        "seed",
        "pipeline_version",
    ),
}
MATCH["select"] = (*MATCH["tgt"], "val_split")  # one target run per source run
ADDED = {"second_order": False, "pipeline_version": 1}  # settings newer than some config.json files


# ---------------------------------------------------------------------------------------------
# Command line

# Flags whose value is a count: (least, most) (cli.out_of_range; docs/failures.md#counts); the
# data's sizes bound --batch_size, --num_split and --n_per_class further (check_data).
MAX_RUNS = 1000  # --num_run, --num_split: each source task is a network in the graph
MAX_SAMPLES = 10_000  # --eval_samples, --test_samples: noise samples of one test
MAX_BATCH = 10**5  # --batch_size, --n_per_class: images
MAX_IMG = 1024  # --img_size: the side of the images in the graph
COUNTS = {
    "batch_size": (2, MAX_BATCH),
    "train_steps": (1, cli.MAX_ITERS),
    "img_size": (1, MAX_IMG),
    "num_run": (1, MAX_RUNS),
    "num_split": (1, MAX_RUNS),
    "n_per_class": (0, MAX_BATCH),
    "src_steps": (1, cli.MAX_ITERS),
    "print_every": (1, cli.MAX_ITERS),
    "save_every": (1, cli.MAX_ITERS),
    "eval_samples": (1, MAX_SAMPLES),
    "test_samples": (1, MAX_SAMPLES),
}
WHY_LEAST = {
    "batch_size": "batch norm and MetaPerturb's scale need a batch",
    "n_per_class": "0: all of the train split",
}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = cli.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument(
        "--phase",
        choices=PHASES,
        required=True,
        help="source meta-training, target training, or the choice of the best source run",
    )
    p.add_argument("--batch_size", type=int, default=128)
    p.add_argument(
        "--train_steps", type=int, default=None, help="default: 2000 (src), 10000 (tgt), 1000 (select)"
    )
    p.add_argument("--lr", type=float, default=1e-3, help="Adam's learning rate (theta and phi)")
    p.add_argument(
        "--model", default="resnet20", help="conv4_<width>, conv6_<width>, vgg9, resnet20/32/44/56"
    )
    p.add_argument("--clipval", type=float, default=100.0, help="upper clip of the perturbed features")
    p.add_argument("--img_size", type=int, default=32, help="images are resized to this side in the graph")
    p.add_argument(
        "--data",
        default=None,
        help="dataset name (default: tiny_imagenet (src), stl10 (tgt), small_cifar_100 (select))",
    )
    p.add_argument("--data_root", default=None, help="dataset folder (default ./data/<data>)")
    p.add_argument("--num_run", type=int, default=1, help="independent source runs")
    p.add_argument("--num_split", type=int, default=10, help="source tasks")
    p.add_argument(
        "--split_scheme",
        choices=SCHEMES,
        default="paper",
        help="paper: num_split disjoint class groups; code: num_split/2 groups, two tasks each "
        "with swapped image halves (the original code)",
    )
    p.add_argument(
        "--second_order",
        action="store_true",
        help="src: phi's gradient through each task's Adam step on theta (exact one-step second "
        "order); default: first order, as paper and code (spec Q5)",
    )
    p.add_argument("--noise_coeff", type=float, default=1.0, help="final annealing coefficient lambda (tgt)")
    p.add_argument(
        "--noise", default="metaperturb", help="target regulariser: none, metaperturb, infodrop, ..."
    )
    p.add_argument("--noise_hp", default="", metavar="K=V[,K=V]", help="its hyperparameters (as main.py)")
    p.add_argument(
        "--phi_from",
        default=None,
        help="tgt: the perturbation's phi, a phi_<step>.npz of a source run or the authors' .pth",
    )
    p.add_argument("--src_name", default="", help="tgt, select: the source --exp_name whose phi to load")
    p.add_argument("--src_steps", type=int, default=None, help="tgt, select: the source step of that phi")
    p.add_argument(
        "--src_run",
        type=src_run,
        default=0,
        help="tgt: the source run of that phi, or best: the run chosen by --phase select",
    )
    p.add_argument(
        "--fine_tune",
        default=None,
        metavar="RUN",
        help="tgt: start from the conv weights of a pre-trained network: a transfer.py --phase tgt run "
        "folder (its newest checkpoint) or a checkpoint <run>/ckpt/model-<step>; batch norm and the "
        "head start fresh (default: from scratch)",
    )
    p.add_argument(
        "--val_split",
        default="val",
        help="select: the split the candidates are tested on (without --tgt_split)",
    )
    p.add_argument(
        "--tgt_split",
        default=None,
        help="tgt: train and test on the classes of this split, divided per class (for datasets "
        "whose splits hold different classes, e.g. digits); default: the train and test splits",
    )
    p.add_argument(
        "--n_per_class",
        type=int,
        default=0,
        help="tgt: training images per class (0: all of the train split; with --tgt_split, half of "
        "the smallest class; the rest of the split is the test set)",
    )
    p.add_argument("--augment", choices=AUGMENTS, default="crop_flip", help="training-batch augmentation")
    p.add_argument("--save_dir", default="./checkpoints")
    p.add_argument("--exp_name", default="", help="run folder name (default: from the settings)")
    p.add_argument("--print_every", type=int, default=200, help="log (and, tgt, test) every N steps")
    p.add_argument("--save_every", type=int, default=1000, help="checkpoint every N steps")
    p.add_argument("--eval_samples", type=int, default=5, help="noise samples of the periodic tests")
    p.add_argument("--test_samples", type=int, default=100, help="noise samples of the final test")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--gpus", default="", help="CUDA_VISIBLE_DEVICES")
    p.add_argument(
        "--verbose", action="store_true", help=f"show TensorFlow's C++ log lines ({quiet.VERBOSE_ENV}=1)"
    )
    args = p.parse_args(argv)
    if args.train_steps is None:
        args.train_steps = DEFAULT_STEPS[args.phase]
    args.data = args.data or DEFAULT_DATA[args.phase]
    wrong = cli.out_of_range(args, COUNTS, WHY_LEAST)
    if wrong:
        p.error(wrong)
    if not 0 <= args.seed <= cli.MAX_SEED:
        p.error(f"--seed must be an integer from 0 to {cli.MAX_SEED}, not {args.seed}")
    for name in ("lr", "clipval"):
        if not (math.isfinite(getattr(args, name)) and getattr(args, name) > 0):
            p.error(f"--{name} must be a positive number, not {getattr(args, name)}")
    if not (math.isfinite(args.noise_coeff) and args.noise_coeff >= 0):
        p.error(f"--noise_coeff must be a number >= 0, not {args.noise_coeff}")
    if args.second_order and args.phase != "src":
        p.error(f"--second_order is an option of the source phase (--phase src), not of --phase {args.phase}")
    if args.phase == "src" and args.split_scheme == "code" and args.num_split % 2:
        p.error(f"--split_scheme code pairs tasks: --num_split must be even, not {args.num_split}")
    try:
        from nets import architecture

        arch = architecture(args.model)
    except ValueError as e:
        p.error(f"--model: {e}")
    least = 2 ** sum(getattr(arch, "pools", ()))  # each max-pool of a plain network halves the side
    if args.img_size < least:
        p.error(
            f"--model {args.model}: {args.img_size}x{args.img_size} inputs vanish after its max-pools; "
            f"raise --img_size to {least} or more"
        )
    if args.phi_from is not None and not args.phi_from.strip():
        p.error(
            "--phi_from is empty: name a phi file (a phi_<step>.npz of a source run or the authors' .pth)"
        )
    if args.fine_tune is not None and (args.phase != "tgt" or not args.fine_tune):
        p.error("--fine_tune takes the folder (or a checkpoint) of a pre-trained run, with --phase tgt only")
    try:
        hp = dict(build_noise(args.noise, args.noise_hp).hp())
        if "clipval" in hp:
            hp["clipval"] = args.clipval
        perturbation = build_noise(args.noise, hp)
    except ValueError as e:
        p.error(f"--noise: {e}")
    if args.phase == "src" and not perturbation.transferred:
        p.error(
            f"--noise {args.noise}: the source phase meta-learns a transferred perturbation (metaperturb)"
        )
    args.noise_hp, args.noise_title = perturbation.hp(), perturbation.title
    args.phi = None
    if args.phase == "select":
        if not perturbation.transferred or args.phi_from or not (args.src_name and args.src_steps):
            p.error(
                "--phase select tests the phi of every source run: give --src_name and --src_steps "
                "(not --phi_from) with a transferred --noise (metaperturb)"
            )
    transferred_best = perturbation.transferred and args.src_run == "best"
    if args.phase == "tgt" and transferred_best and args.phi_from is None and args.src_name:
        if not args.src_steps:
            p.error("--src_run best needs --src_steps")
        path = selection_path(args.save_dir, args.src_name, args.src_steps)
        if not os.path.isfile(path):
            p.error(
                f"--src_run best: no selection {path}; run --phase select with the same --src_name, "
                "--src_steps and --save_dir first, or give --src_run N"
            )
        from data.files import read_json

        try:
            best = int(read_json(path)["best"])
        except (OSError, ValueError, KeyError, TypeError) as e:
            p.error(f"--src_run best: cannot read the chosen run from {path} ({e}); run --phase select again")
    else:
        best = args.src_run
    if args.phase == "tgt":
        if perturbation.transferred:
            if args.phi_from is None and not (args.src_name and args.src_steps):
                p.error(
                    f"--noise {args.noise} is transferred: give --phi_from FILE, or --src_name and "
                    "--src_steps"
                )
            args.phi = args.phi_from or os.path.join(
                args.save_dir, "src", args.src_name, f"run_{best}", f"phi_{args.src_steps}.npz"
            )
        elif args.phi_from:  # (--src_name is ignored: run.sh passes it for every regulariser)
            p.error(f"--noise {args.noise} learns no transferred phi: drop --phi_from")
    if args.exp_name in (".", "..") or os.sep in args.exp_name:
        p.error(f"--exp_name {args.exp_name}: give a folder name (no {os.sep}), made under --save_dir")
    args.exp_name = args.exp_name or default_name(args)
    from nets import PIPELINE_VERSION

    args.pipeline_version = PIPELINE_VERSION  # config.json: a run of another version does not resume
    return args


def src_run(value: str) -> int | str:
    """--src_run: a run number >= 0, or "best"."""
    if value == "best":
        return value
    if not value.isdigit():
        raise argparse.ArgumentTypeError(f"{value!r} is neither a run number (0, 1, ...) nor best")
    return int(value)


def selection_path(save_dir: str, src_name: str, src_steps: int) -> str:
    return os.path.join(save_dir, "src", src_name, f"selection_{src_steps}.json")


def default_name(args: argparse.Namespace) -> str:
    if args.phase == "src":
        return f"{args.data}_{args.model}" + ("_second_order" if args.second_order else "")
    if args.phase == "select":
        return f"{args.src_name}_{args.src_steps}_{args.data}_{args.model}_seed{args.seed}"
    fine_tuned = "_finetune" if args.fine_tune else ""
    return f"{args.data}_{args.model}_{args.noise}{fine_tuned}_seed{args.seed}"


def check_data(args: argparse.Namespace) -> None:
    """UsageError if --data cannot be opened or cannot give what the flags ask (check_source,
    check_target), from the files' headers only (data.headers.peek), or --fine_tune names no
    pre-trained run: before the data and the graph are loaded (and, but for a --fine_tune folder's
    checkpoint, before TensorFlow), in about a second."""
    from data import DataError
    from data.headers import peek

    try:
        _, n = peek(args.data, args.data_root)
    except DataError as e:
        raise UsageError(f"--data {args.data}: {e}") from None
    (check_source if args.phase == "src" else check_target)(args, n)
    if args.phi and not os.path.isfile(args.phi):
        raise UsageError(no_phi(args.phi))
    folder = os.path.join(args.save_dir, args.phase, args.exp_name)
    if args.fine_tune and not Checkpoints(folder).steps():  # as run_target: a resumed run needs none
        pretrained(args.fine_tune, args.model)


def check_source(args: argparse.Namespace, n: dict[str, np.ndarray]) -> None:
    """UsageError unless the source data (split -> [classes] examples per class) make --num_split
    tasks of at least --batch_size training and validation images each (source_tasks)."""
    if "train" not in n:
        raise UsageError(f"{args.data} has no train split to make source tasks from")
    labels = np.repeat(np.arange(len(n["train"])), n["train"])
    tasks = source_tasks(labels, args.num_split, args.split_scheme, args.seed)
    small = min(min(len(a), len(b)) for a, b, _ in tasks)
    if small < args.batch_size:
        raise UsageError(
            f"a source task has {small} training images, fewer than --batch_size {args.batch_size}"
        )


def check_target(args: argparse.Namespace, n: dict[str, np.ndarray]) -> None:
    """UsageError unless the target data (split -> [classes] examples per class) give the splits
    target_data takes, a test image of every class, and at least --batch_size training images."""
    if args.tgt_split is not None:
        if args.tgt_split not in n:
            raise UsageError(f"--tgt_split {args.tgt_split}: {args.data} has splits {', '.join(n)}")
        sizes = n[args.tgt_split]
        per = args.n_per_class or int(sizes.min()) // 2
        if per >= sizes.min():
            raise UsageError(
                f"--n_per_class {per} leaves a class of {args.tgt_split} without test images: "
                f"give at most {int(sizes.min()) - 1}"
            )
        train = int(np.minimum(sizes, per).sum())
    else:
        test_split = args.val_split if args.phase == "select" else "test"
        missing = [s for s in ("train", test_split) if s not in n]
        if missing:
            raise UsageError(f"{args.data} has no {' or '.join(missing)} split; name one with --tgt_split")
        train = int(np.minimum(n["train"], args.n_per_class or n["train"].max()).sum())
    if train < args.batch_size:
        raise UsageError(
            f"the target training set has {train} images, fewer than --batch_size {args.batch_size}"
        )


# ---------------------------------------------------------------------------------------------
# Schedules and data (numpy)


def anneal(step: int, steps: int, coeff: float) -> float:
    """lambda at step `step` (counted from 1): coeff * min(1, step / floor(0.4 steps)) (spec 2.4)."""
    return coeff * min(1.0, step / max(1, math.floor(ANNEAL * steps)))


def lr_factor(step: int, steps: int) -> float:
    """The learning-rate factor of step `step`: x0.3 after each of 40 %, 70 % and 90 % of the steps."""
    return LR_GAMMA ** sum(step > math.floor(m * steps) for m in LR_MILESTONES)


def source_tasks(
    labels: np.ndarray, num_split: int, scheme: str, seed: int
) -> list[tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """num_split source tasks from the labels [N] of the source train split (spec 2.2, Q1), each as
    (train indices, validation indices, its classes in label order).

    paper: the classes in num_split equal groups (the remainder dropped); each class's images are
    shuffled and halved (so every class is in both halves), train on one half, validate on the
    other. code: num_split/2 groups, tasks 2i and 2i+1 share group i with the halves swapped (the
    original code). Seeded."""
    classes = np.unique(labels)
    n_groups = num_split if scheme == "paper" else num_split // 2
    per = len(classes) // n_groups
    if per < 2:
        raise UsageError(
            f"{len(classes)} source classes cannot make {n_groups} groups of 2 or more: lower --num_split"
        )
    rng = np.random.default_rng([seed, 7])
    tasks = []
    for g in range(n_groups):
        group = classes[g * per : (g + 1) * per]
        halves = [rng.permutation(np.flatnonzero(labels == c)) for c in group]
        a = rng.permutation(np.concatenate([h[: len(h) // 2] for h in halves]))
        b = rng.permutation(np.concatenate([h[len(h) // 2 : 2 * (len(h) // 2)] for h in halves]))
        tasks.append((a, b, group))
        if scheme == "code":
            tasks.append((b, a, group))
    return tasks


def batch_indices(n: int, batch: int, seed: list[int], step: int) -> np.ndarray:
    """Step `step`'s batch (0-based) of an epoch-wise shuffle of n examples, the last partial batch
    dropped; a function of (seed, step) only, so a resumed run sees the same batches."""
    per_epoch = n // batch
    epoch, pos = divmod(step, per_epoch)
    perm = np.random.default_rng([*seed, epoch]).permutation(n)
    return perm[pos * batch : (pos + 1) * batch]


def target_data(args: argparse.Namespace) -> tuple[tuple[int, int, int], tuple, tuple, int]:
    """(image shape, (train images, labels), (test images, labels), classes) of the target; the
    test images of --phase select are its --val_split."""
    import data
    from data.headers import split_sizes

    ds = data.load(args.data, args.data_root)
    check_target(args, split_sizes(ds))
    if args.tgt_split is not None:
        x, y = data.labelled(ds.split(args.tgt_split))
        n = args.n_per_class or int(data.sizes(ds.split(args.tgt_split)).min()) // 2
        first = np.concatenate([np.flatnonzero(y == c)[:n] for c in np.unique(y)])
        rest = np.setdiff1d(np.arange(len(y)), first)
        train, test = (x[first], y[first]), (x[rest], y[rest])
    else:
        test_split = args.val_split if args.phase == "select" else "test"
        train, test = data.labelled(ds.split("train")), data.labelled(ds.split(test_split))
        if args.n_per_class:
            keep = np.concatenate(
                [np.flatnonzero(train[1] == c)[: args.n_per_class] for c in np.unique(train[1])]
            )
            train = (train[0][keep], train[1][keep])
    return ds.shape, train, test, int(max(train[1].max(), test[1].max()) + 1)


# ---------------------------------------------------------------------------------------------
# Loops


FLAG = "--exp_name"  # the flag that names a run's folder, save_dir/<phase>/<exp_name> (messages)


def session(graph: tf.Graph) -> tf.compat.v1.Session:
    return run.session(graph)


def check_config(folder: str, args: argparse.Namespace) -> None:
    """Write folder/config.json, or check a resumed run's settings against it (run.check_config)."""
    run.check_config(folder, vars(args), MATCH[args.phase], ADDED, FLAG)


def open_folder(folder: str, made: list[str]) -> AbstractContextManager:
    """The run folder, made writable and locked (main()'s `made` lists it if this run creates it)."""
    if not os.path.lexists(folder):
        made.append(folder)
    check_writable(folder, "--save_dir")
    return run.locked(folder, FLAG, "transfer.py run")


def train_loop(
    folder: str,
    args: argparse.Namespace,
    graph: tf.Graph,
    saver_vars: list,
    step_var: tf.Variable,
    init_fn: Callable,
    step_fn: Callable[[tf.compat.v1.Session, int], run.Step],
    every_fn: Callable[[tf.compat.v1.Session, int], str] | None,
    final_fn: Callable,
    chance: float,
) -> None:
    """A run's session: init_fn(sess), restore, run.train with step_fn(sess, step) (1-based),
    every_fn(sess, step) every --print_every steps (a line for the log and terminal), then
    final_fn(sess) once all steps are done. `chance`: a uniform guess's loss (divergence)."""
    import tensorflow as tf

    Checkpoints(folder).clean()
    with graph.as_default():
        saver = tf.compat.v1.train.Saver(var_list=saver_vars, max_to_keep=None)
        init = tf.compat.v1.global_variables_initializer()
    with run.session(graph) as sess:
        loop = run.Loop(
            folder=folder,
            flag=FLAG,
            log_name="train.log",
            unit="step",
            label="step",
            total=args.train_steps,
            log_every=args.print_every,
            save_every=args.save_every,
            step=lambda step: step_fn(sess, step),
            validate_every=args.print_every,
            validate=(lambda step: [(f"step {step} {every_fn(sess, step)}", {})]) if every_fn else None,
            validate_last=False,  # final_fn tests at the end
            save_validated=False,
            chance=chance,
            advice="Lower --lr and ",
        )
        sess.run(init)
        init_fn(sess)
        start = run.resume(sess, loop, saver, step_var)
        run.train(sess, loop, saver, step_var, start)
        final_fn(sess)


def say_device(args: argparse.Namespace) -> None:
    """A training phase's start-up line (quiet.device): where it runs; a warning if --gpus names a GPU
    that TensorFlow does not see."""
    import tensorflow as tf

    print(quiet.device(tf, f"--gpus {args.gpus}" if args.gpus else None, False))


def run_source(args: argparse.Namespace, made: list[str]) -> None:
    import data
    from data.headers import split_sizes

    say_device(args)
    ds = data.load(args.data, args.data_root)
    check_source(args, split_sizes(ds))
    x, y = data.labelled(ds.split("train"))
    tasks = source_tasks(y, args.num_split, args.split_scheme, args.seed)
    for r in range(args.num_run):
        folder = os.path.join(args.save_dir, "src", args.exp_name, f"run_{r}")
        with open_folder(folder, made):
            check_config(folder, args)
            source_run(args, folder, args.seed * 1000 + r, ds.shape, x, y, tasks)


def source_run(
    args: argparse.Namespace,
    folder: str,
    seed: int,
    shape: tuple[int, int, int],
    x: np.ndarray,
    y: np.ndarray,
    tasks: list[tuple[np.ndarray, np.ndarray, np.ndarray]],
) -> None:
    """One source run into folder: phi_init.npz, phi_<step>.npz every --print_every steps and at the end."""
    import tensorflow as tf

    import nets
    from data import as_float

    graph = tf.Graph()
    with graph.as_default(), run.building(f"the source graph of {folder}"):
        tf.compat.v1.set_random_seed(seed)
        try:
            g = nets.Source(
                args, shape, [len(c) for _, _, c in tasks], build_noise(args.noise, args.noise_hp)
            )
        except ValueError as e:
            raise UsageError(f"--model {args.model}: {e}; raise --img_size") from None
        step_var = tf.compat.v1.train.get_or_create_global_step()
        bump = step_var.assign_add(1)
    remap = [np.searchsorted(cls, y) for _, _, cls in tasks]  # task t's label of each image (where in t)

    def feed(which: int, step: int) -> dict:
        """Every task's training (which = 0) or validation (1) batch of step `step`."""
        fd: dict = {}
        for t, task in enumerate(tasks):
            idx = task[which][batch_indices(len(task[which]), args.batch_size, [seed, which, t], step - 1)]
            i = (g.train_in, g.val_in)[which][t]
            fd[i.x], fd[i.y] = as_float(x[idx]), remap[t][idx]
            fd[i.seed] = np.random.default_rng([seed, which, t, step]).integers(2**31 - 1, size=2)
        return fd

    def step_fn(sess: tf.compat.v1.Session, step: int) -> run.Step:
        if g.second_order:  # one run: phi's gradient reads each theta_t before its step
            losses = sess.run([g.phi_op, g.train_losses, bump], {**feed(0, step), **feed(1, step)})[1]
        else:
            _, losses = sess.run([g.theta_op, g.train_losses], feed(0, step))
            sess.run([g.phi_op, bump], feed(1, step))  # at the new theta's (spec 2.3)
        return float(np.mean(losses)), None, {}

    def save_phi(sess: tf.compat.v1.Session, step: int) -> str:
        write_phi(os.path.join(folder, f"phi_{step}.npz"), sess.run(g.phi))
        return f"phi_{step}.npz"

    def init_fn(sess: tf.compat.v1.Session) -> None:
        if not os.path.exists(os.path.join(folder, "phi_init.npz")):
            write_phi(os.path.join(folder, "phi_init.npz"), sess.run(g.phi))

    def final(sess: tf.compat.v1.Session) -> None:
        save_phi(sess, args.train_steps)
        print(f"{folder}: phi_{args.train_steps}.npz")

    variables = graph.get_collection(tf.compat.v1.GraphKeys.GLOBAL_VARIABLES)
    chance = float(np.mean([math.log(len(c)) for _, _, c in tasks]))  # a uniform guess's loss
    train_loop(folder, args, graph, variables, step_var, init_fn, step_fn, save_phi, final, chance)


def no_phi(path: str) -> str:
    """What to do when the phi file `path` (--phi_from, or the source run's) does not exist."""
    return (
        f"no phi file {path}: run the source phase first (--phase src), or give --phi_from an "
        "existing phi file (ours .npz or the authors' .pth)"
    )


def read_phi(path: str, expected: dict[str, list[int]]) -> dict[str, np.ndarray]:
    """phi from our .npz or the authors' legacy PyTorch file (.pth, phi_io.py); shapes and finite values
    checked."""
    if not os.path.isfile(path):
        raise UsageError(no_phi(path))
    try:
        phi = read_npz(path, expected) if path.endswith(".npz") else from_torch(path)
    except (OSError, ValueError) as e:
        raise UsageError(
            f"cannot read phi from {path} ({e}); give a phi_<step>.npz or the authors' .pth"
        ) from e
    shapes = {k: list(v.shape) for k, v in phi.items()}
    if shapes != expected:
        raise UsageError(f"{path} holds {shapes}, not this perturbation's phi {expected}")
    return phi


def pretrained(path: str, model: str) -> str:
    """The checkpoint --fine_tune names: a transfer.py run folder's newest readable checkpoint, or a
    checkpoint prefix <run>/ckpt/model-<step>. UsageError if there is none, or if the run's
    config.json names another --model."""
    from data.files import read_json

    pretrain = (
        "pre-train one with python transfer.py --phase tgt --data tiny_imagenet --noise none "
        f"--model {model} and give its folder <save_dir>/tgt/<exp_name>"
    )
    if os.path.isdir(path):
        run, ckpts = path, Checkpoints(path)
        step = ckpts.trained()
        if not step:
            raise UsageError(f"--fine_tune {path}: no readable checkpoint in {ckpts.dir}; {pretrain}")
        ckpt = ckpts.path(step)
    elif os.path.isfile(path + ".index"):
        run, ckpt, step = os.path.dirname(os.path.dirname(path)), path, None
    else:
        raise UsageError(f"--fine_tune {path}: no such run folder or checkpoint; {pretrain}")
    config = os.path.join(run, "config.json")
    try:
        settings = read_json(config) if os.path.isfile(config) else {"model": model}
        trained = settings["model"]
    except (ValueError, KeyError, TypeError) as e:
        raise UsageError(f"--fine_tune: {config} names no --model ({e!r}); {pretrain}") from e
    if settings.get("phase", "tgt") != "tgt":
        raise UsageError(
            f"--fine_tune {path} is a --phase {settings['phase']} run (MetaPerturb's source training), not a "
            f"pre-trained network; {pretrain}"
        )
    planned = settings.get("train_steps")
    if step is not None and isinstance(planned, int) and step < planned:
        print(
            f"warning: --fine_tune {path} stopped at step {step} of its --train_steps {planned}: "
            "fine-tuning from that step (finish it first with its own command to use the whole run)",
            file=sys.stderr,
        )
    if trained != model:
        raise UsageError(
            f"--fine_tune {path} is a {trained} network, not --model {model}: fine-tune --model {trained} "
            f"or {pretrain}"
        )
    return ckpt


def pretrained_convs(ckpt: str, net: Network) -> dict[str, np.ndarray]:
    """The pre-trained values of net's conv kernels and biases by their theta key (not batch norm,
    not the head; spec 2.4), read from checkpoint ckpt; UsageError if one is missing or of another
    shape."""
    import tensorflow as tf

    try:
        reader = tf.train.load_checkpoint(ckpt)
        shapes = reader.get_variable_to_shape_map()
        values = {}
        for k in net.conv_keys:
            v = net.theta[k]
            name, shape = v.op.name, v.shape.as_list()
            if name not in shapes:
                raise UsageError(
                    f"--fine_tune {ckpt} has no {name}: give a transfer.py --phase tgt run of this --model"
                )
            if shapes[name] != shape:
                raise UsageError(
                    f"--fine_tune: {name} is {shapes[name]} in {ckpt} but {shape} here; pre-train on "
                    "images with as many channels as the target's, with the same --model"
                )
            values[k] = reader.get_tensor(name)
    except (tf.errors.OpError, ValueError) as e:
        raise UsageError(f"--fine_tune: cannot read {ckpt} ({e}); give another run or checkpoint") from e
    return values


def run_target(args: argparse.Namespace, made: list[str]) -> None:
    import tensorflow as tf

    import nets

    say_device(args)
    folder = os.path.join(args.save_dir, args.phase, args.exp_name)
    perturbation = build_noise(args.noise, args.noise_hp)
    shape, train, test, n_classes = target_data(args)
    graph = tf.Graph()
    with graph.as_default(), run.building(f"the target graph of {folder}"):
        tf.compat.v1.set_random_seed(args.seed)
        try:
            g = nets.Target(args, shape, n_classes, perturbation)
        except ValueError as e:
            raise UsageError(f"--model {args.model}: {e}; raise --img_size") from None
    phi = None
    if args.phi:
        phi = read_phi(args.phi, {k: v.shape.as_list() for k, v in g.phi_vars.items()})
    ckpt, convs = None, {}
    if args.fine_tune and not Checkpoints(folder).steps():  # a resumed run restores its own checkpoint
        ckpt = pretrained(args.fine_tune, args.model)
        convs = pretrained_convs(ckpt, g.net)
    with open_folder(folder, made):
        check_config(folder, args)
        if ckpt:
            log(
                os.path.join(folder, "train.log"),
                f"fine-tuning: {len(convs)} conv tensors from {ckpt}; batch norm and the head start fresh",
            )
        curve_path = os.path.join(folder, "curve.json")
        import data

        def test_acc(
            sess: tf.compat.v1.Session, samples: int, lam: float, key: int
        ) -> tuple[float, float, np.ndarray]:
            """Accuracy (%), NLL and per-image correctness [test images] (bool) of the mean of `samples`
            softmax vectors, over the whole test set."""
            samples = samples if perturbation.stochastic else 1
            rng = np.random.default_rng([args.seed, 2, key])
            probs = np.zeros((len(test[1]), n_classes))
            for _ in range(samples):
                seed = rng.integers(2**31 - 1, size=2)
                for i in range(0, len(test[1]), EVAL_BATCH):
                    xb = data.as_float(test[0][i : i + EVAL_BATCH])
                    probs[i : i + len(xb)] += sess.run(
                        g.probs, {g.test_in.x: xb, g.test_in.seed: seed, g.lam: lam}
                    )
            probs /= samples
            correct = probs.argmax(1) == test[1]
            nll = float(-np.mean(np.log(probs[np.arange(len(probs)), test[1]] + 1e-12)))
            return 100.0 * float(np.mean(correct)), nll, correct

        def init_fn(sess: tf.compat.v1.Session) -> None:
            # Each variable's initializer fed the value: no new op, and not the deprecated Variable.load.
            # Before train_loop's restore: a resumed run's checkpoint wins.
            start = [(g.phi_vars[k], v) for k, v in (phi or {}).items()]
            start += [(g.net.theta[k], v) for k, v in convs.items()]
            for var, value in start:
                sess.run(var.initializer, {var.initial_value: value})

        def step_fn(sess: tf.compat.v1.Session, step: int) -> run.Step:
            idx = batch_indices(len(train[1]), args.batch_size, [args.seed, 0], step - 1)
            seed = np.random.default_rng([args.seed, 1, step]).integers(2**31 - 1, size=2)
            fd = {
                g.train_in.x: data.as_float(train[0][idx]),
                g.train_in.y: train[1][idx],
                g.train_in.seed: seed,
                g.lam: anneal(step, args.train_steps, args.noise_coeff),
                g.lr: args.lr * lr_factor(step, args.train_steps),
            }
            _, loss, acc = sess.run([g.train_op, g.loss, g.acc], fd)
            return float(loss), float(acc), {}

        def every(sess: tf.compat.v1.Session, step: int) -> str:
            acc, nll, _ = test_acc(
                sess, args.eval_samples, anneal(step, args.train_steps, args.noise_coeff), step
            )
            from data.files import read_json

            curve = read_json(curve_path) if os.path.exists(curve_path) else []
            curve = [c for c in curve if c["step"] < step] + [{"step": step, "acc": acc, "nll": nll}]
            write_json(curve_path, curve)
            samples = args.eval_samples if perturbation.stochastic else 1
            return f"test acc {acc:.2f} nll {nll:.4f} ({samples} samples)"

        def final(sess: tf.compat.v1.Session) -> None:
            import results

            acc, nll, correct = test_acc(sess, args.test_samples, args.noise_coeff, 0)
            samples = args.test_samples if perturbation.stochastic else 1
            line = f"final test accuracy {acc:.2f} nll {nll:.4f} ({samples} samples, {len(test[1])} images)"
            print(f"{folder}: {line}")
            log(os.path.join(folder, "train.log"), line)
            per_image = 100.0 * correct  # one accuracy (0 or 100 %) per test image
            mean, ci = results.ci95(per_image)
            record = results.transfer_record(
                vars(args), mean, ci, len(per_image), per_image.tolist(), samples, args.train_steps, nll=nll
            )
            results.write(os.path.join(folder, "results.json"), record)

        variables = graph.get_collection(tf.compat.v1.GraphKeys.GLOBAL_VARIABLES)
        chance = math.log(n_classes)  # a uniform guess's loss
        train_loop(folder, args, graph, variables, g.step, init_fn, step_fn, every, final, chance)


def run_select(args: argparse.Namespace, made: list[str]) -> None:
    """Spec 2.3, Q9: a target run per source run into save_dir/select/<exp_name>/run_<r>, then the
    per-run accuracies (%) and the best run into selection_path(...), written whole or not at all."""
    import results

    src = os.path.join(args.save_dir, "src", args.src_name)
    runs = sorted(
        int(m.group(1))
        for m in (re.fullmatch(r"run_(\d+)", d) for d in (os.listdir(src) if os.path.isdir(src) else []))
        if m and os.path.isfile(os.path.join(src, m.group(0), f"phi_{args.src_steps}.npz"))
    )
    if not runs:
        raise UsageError(
            f"no source run of {src} has phi_{args.src_steps}.npz: run --phase src --exp_name "
            f"{args.src_name} first, or check --src_name, --src_steps and --save_dir"
        )
    acc = {}
    for r in runs:
        one = argparse.Namespace(**vars(args))
        one.exp_name = os.path.join(args.exp_name, f"run_{r}")
        one.phi = os.path.join(src, f"run_{r}", f"phi_{args.src_steps}.npz")
        run_target(one, made)
        acc[r] = results.read(os.path.join(args.save_dir, "select", one.exp_name, "results.json")).mean
    best = max(runs, key=lambda r: (acc[r], -r))  # the first of equal accuracies
    path = selection_path(args.save_dir, args.src_name, args.src_steps)
    write_json(
        path,
        {
            "best": best,
            "acc": {str(r): acc[r] for r in runs},
            "data": args.data,
            "val_split": args.tgt_split or args.val_split,
            "select_dir": os.path.join(args.save_dir, "select", args.exp_name),
            "config": vars(args),
        },
    )
    print(f"{path}: best run {best} ({acc[best]:.2f} % on {args.data})")


RUNS = {"src": run_source, "tgt": run_target, "select": run_select}


def main(argv: list[str] | None = None) -> int:
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    args = parse_args(argv)  # loads modules: Ctrl-C until here is quiet_ctrl_c's one line
    if args.gpus:
        os.environ["CUDA_VISIBLE_DEVICES"] = args.gpus
    cli.ctrl_c_raises()

    def work(made: list[str]) -> None:
        check_data(args)  # what the data cannot give, from their headers, before TensorFlow
        folder = os.path.join(args.save_dir, args.phase, args.exp_name)
        if args.phase != "tgt" and not os.path.lexists(folder):  # it holds the run folders
            made.append(folder)
        print(f"transfer.py --phase {args.phase} on {args.data}, --model {args.model}: {folder}")
        RUNS[args.phase](args, made)

    return run.entry(work)


if __name__ == "__main__":
    quiet.start(sys.argv[1:])
    cli.run(main)
