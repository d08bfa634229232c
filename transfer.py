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
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

import numpy as np

from cli import STOPPED
from main import Stopped, build_noise, log, write_json
from savedir import Checkpoints, UsageError, check_writable, locked

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
    for name in (
        "batch_size",
        "train_steps",
        "img_size",
        "num_run",
        "num_split",
        "print_every",
        "save_every",
        "eval_samples",
        "test_samples",
    ):
        if getattr(args, name) < 1:
            p.error(f"--{name} must be at least 1")
    if args.n_per_class < 0:
        p.error("--n_per_class must be at least 0")
    if args.batch_size < 2:
        p.error("--batch_size must be at least 2 (batch norm and MetaPerturb's scale need a batch)")
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

        architecture(args.model)
    except ValueError as e:
        p.error(f"--model: {e}")
    if args.fine_tune is not None and (args.phase != "tgt" or not args.fine_tune):
        p.error("--fine_tune takes the folder (or a checkpoint) of a pre-trained run, with --phase tgt only")
    if args.phase == "src" and not build_noise(args.noise, {}).transferred:
        p.error(
            f"--noise {args.noise}: the source phase meta-learns a transferred perturbation (metaperturb)"
        )
    try:
        hp = dict(build_noise(args.noise, args.noise_hp).hp())
        if "clipval" in hp:
            hp["clipval"] = args.clipval
        perturbation = build_noise(args.noise, hp)
    except ValueError as e:
        p.error(f"--noise: {e}")
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

    ds = data.load(args.data, args.data_root)
    if args.tgt_split is not None:
        if args.tgt_split not in ds.splits:
            raise UsageError(f"--tgt_split {args.tgt_split}: {args.data} has splits {', '.join(ds.splits)}")
        x, y = data.labelled(ds.split(args.tgt_split))
        n = args.n_per_class or int(data.sizes(ds.split(args.tgt_split)).min()) // 2
        first = np.concatenate([np.flatnonzero(y == c)[:n] for c in np.unique(y)])
        rest = np.setdiff1d(np.arange(len(y)), first)
        if np.any(np.bincount(y[rest], minlength=y.max() + 1) == 0):
            most = int(data.sizes(ds.split(args.tgt_split)).min()) - 1
            raise UsageError(
                f"--n_per_class {n} leaves a class of {args.tgt_split} without test images: "
                f"give at most {most}"
            )
        train, test = (x[first], y[first]), (x[rest], y[rest])
    else:
        test_split = args.val_split if args.phase == "select" else "test"
        missing = [s for s in ("train", test_split) if s not in ds.splits]
        if missing:
            raise UsageError(f"{args.data} has no {' or '.join(missing)} split; name one with --tgt_split")
        train, test = data.labelled(ds.split("train")), data.labelled(ds.split(test_split))
        if args.n_per_class:
            keep = np.concatenate(
                [np.flatnonzero(train[1] == c)[: args.n_per_class] for c in np.unique(train[1])]
            )
            train = (train[0][keep], train[1][keep])
    if len(train[1]) < args.batch_size:
        raise UsageError(
            f"the target training set has {len(train[1])} images, fewer than --batch_size {args.batch_size}"
        )
    return ds.shape, train, test, int(max(train[1].max(), test[1].max()) + 1)


# ---------------------------------------------------------------------------------------------
# Loops


def session(graph: tf.Graph) -> tf.compat.v1.Session:
    import tensorflow as tf

    config = tf.compat.v1.ConfigProto()
    config.gpu_options.allow_growth = True
    if not tf.config.list_physical_devices("GPU"):  # grappler's start-up costs more than it saves on a CPU
        config.graph_options.rewrite_options.disable_meta_optimizer = True
    return tf.compat.v1.Session(graph=graph, config=config)


def check_config(folder: str, args: argparse.Namespace) -> None:
    """Write folder/config.json, or check a resumed run's settings against it."""
    from data.files import read_json

    path = os.path.join(folder, "config.json")
    if Checkpoints(folder).steps() and os.path.exists(path):
        saved = {**ADDED, **read_json(path)}
        diff = [k for k in MATCH[args.phase] if saved.get(k) != getattr(args, k)]
        if diff:
            there = ", ".join(f"{k} {saved.get(k)} there, {getattr(args, k)} now" for k in diff)
            raise UsageError(
                f"{folder} was trained with other settings ({there}); use the same flags to resume, "
                "or another --exp_name"
            )
    write_json(path, vars(args))


def train_loop(
    folder: str,
    args: argparse.Namespace,
    graph: tf.Graph,
    saver_vars: list,
    step_var: tf.Variable,
    init_fn: Callable,
    step_fn: Callable,
    every_fn: Callable,
    final_fn: Callable,
) -> None:
    """The shared loop: restore, run step_fn(sess, step) for the remaining steps (1-based), log
    and checkpoint, stop cleanly on Ctrl-C; final_fn(sess) once all steps are done."""
    import tensorflow as tf

    ckpts = Checkpoints(folder)
    ckpts.clean()
    with graph.as_default():
        saver = tf.compat.v1.train.Saver(var_list=saver_vars, max_to_keep=None)
        init = tf.compat.v1.global_variables_initializer()
    train_log = os.path.join(folder, "train.log")
    with session(graph) as sess:
        sess.run(init)
        init_fn(sess)
        latest = ckpts.restore(saver, sess)
        start = saved = int(sess.run(step_var))
        if latest:
            log(train_log, f"resumed from step {start}")
        t0, losses = time.time(), []
        try:
            for step in range(start + 1, args.train_steps + 1):
                loss = step_fn(sess, step)
                if not math.isfinite(loss):
                    raise UsageError(
                        f"the training loss is {loss} at step {step}: the run diverged (checkpoints "
                        f"up to step {saved} are kept); lower --lr and use another --exp_name"
                    )
                losses.append(loss)
                if step % args.print_every == 0:
                    line = f"step {step} loss {np.mean(losses):.4f} ({time.time() - t0:.1f}s)"
                    losses = []
                    extra = every_fn(sess, step)
                    log(train_log, line + (f" {extra}" if extra else ""))
                if step % args.save_every == 0 or step == args.train_steps:
                    ckpts.save(saver, sess, step)
                    saved = step
        except KeyboardInterrupt:
            step = int(sess.run(step_var))
            if step > saved:
                ckpts.save(saver, sess, step)
            log(train_log, f"stopped at step {step}")
            raise Stopped(f"stopped at step {step}; re-run the same command to resume") from None
        final_fn(sess)


def run_source(args: argparse.Namespace) -> None:
    import data

    ds = data.load(args.data, args.data_root)
    if "train" not in ds.splits:
        raise UsageError(f"{args.data} has no train split to make source tasks from")
    x, y = data.labelled(ds.split("train"))
    tasks = source_tasks(y, args.num_split, args.split_scheme, args.seed)
    small = min(min(len(a), len(b)) for a, b, _ in tasks)
    if small < args.batch_size:
        raise UsageError(
            f"a source task has {small} training images, fewer than --batch_size {args.batch_size}"
        )
    for r in range(args.num_run):
        folder = os.path.join(args.save_dir, "src", args.exp_name, f"run_{r}")
        check_writable(folder)
        with locked(folder):
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
    with graph.as_default():
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

    def step_fn(sess: tf.compat.v1.Session, step: int) -> float:
        if g.second_order:  # one run: phi's gradient reads each theta_t before its step
            losses = sess.run([g.phi_op, g.train_losses, bump], {**feed(0, step), **feed(1, step)})[1]
        else:
            _, losses = sess.run([g.theta_op, g.train_losses], feed(0, step))
            sess.run([g.phi_op, bump], feed(1, step))  # at the new theta's (spec 2.3)
        return float(np.mean(losses))

    def save_phi(sess: tf.compat.v1.Session, step: int) -> str:
        write_phi(os.path.join(folder, f"phi_{step}.npz"), sess.run(g.phi))
        return ""

    def init_fn(sess: tf.compat.v1.Session) -> None:
        if not os.path.exists(os.path.join(folder, "phi_init.npz")):
            write_phi(os.path.join(folder, "phi_init.npz"), sess.run(g.phi))

    def final(sess: tf.compat.v1.Session) -> None:
        save_phi(sess, args.train_steps)
        print(f"{folder}: phi_{args.train_steps}.npz")

    variables = graph.get_collection(tf.compat.v1.GraphKeys.GLOBAL_VARIABLES)
    train_loop(folder, args, graph, variables, step_var, init_fn, step_fn, save_phi, final)


def write_phi(path: str, phi: dict[str, np.ndarray]) -> None:
    """phi as an .npz of its named arrays, written whole or not at all."""
    from data.files import atomic

    with atomic(path) as tmp, open(tmp, "wb") as f:
        np.savez(f, **phi)


def read_phi(path: str, expected: dict[str, list[int]]) -> dict[str, np.ndarray]:
    """phi from our .npz or the authors' legacy PyTorch file (.pth, phi_io.py); shapes checked."""
    if not os.path.isfile(path):
        raise UsageError(
            f"no phi file {path}: run the source phase first (--phase src), or give --phi_from an "
            "existing phi file (ours .npz or the authors' .pth)"
        )
    try:
        if path.endswith(".npz"):
            with np.load(path) as f:
                phi = {k: f[k] for k in f.files}
        else:
            from phi_io import from_torch

            phi = from_torch(path)
    except (OSError, ValueError, KeyError) as e:
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
        run, ckpt = os.path.dirname(os.path.dirname(path)), path
    else:
        raise UsageError(f"--fine_tune {path}: no such run folder or checkpoint; {pretrain}")
    config = os.path.join(run, "config.json")
    try:
        trained = read_json(config)["model"] if os.path.isfile(config) else model
    except (ValueError, KeyError, TypeError) as e:
        raise UsageError(f"--fine_tune: {config} names no --model ({e!r}); {pretrain}") from e
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


def run_target(args: argparse.Namespace) -> None:
    import tensorflow as tf

    import nets

    folder = os.path.join(args.save_dir, args.phase, args.exp_name)
    perturbation = build_noise(args.noise, args.noise_hp)
    shape, train, test, n_classes = target_data(args)
    graph = tf.Graph()
    with graph.as_default():
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
    check_writable(folder)
    with locked(folder):
        check_config(folder, args)
        if ckpt:
            log(
                os.path.join(folder, "train.log"),
                f"fine-tuning: {len(convs)} conv tensors from {ckpt}; batch norm and the head start fresh",
            )
        curve_path = os.path.join(folder, "curve.json")
        import data

        def test_acc(sess: tf.compat.v1.Session, samples: int, lam: float, key: int) -> tuple[float, float]:
            """Accuracy (%) and NLL of the mean of `samples` softmax vectors, over the whole test set."""
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
            acc = 100.0 * float(np.mean(probs.argmax(1) == test[1]))
            nll = float(-np.mean(np.log(probs[np.arange(len(probs)), test[1]] + 1e-12)))
            return acc, nll

        def init_fn(sess: tf.compat.v1.Session) -> None:
            # Each variable's initializer fed the value: no new op, and not the deprecated Variable.load.
            # Before train_loop's restore: a resumed run's checkpoint wins.
            start = [(g.phi_vars[k], v) for k, v in (phi or {}).items()]
            start += [(g.net.theta[k], v) for k, v in convs.items()]
            for var, value in start:
                sess.run(var.initializer, {var.initial_value: value})

        def step_fn(sess: tf.compat.v1.Session, step: int) -> float:
            idx = batch_indices(len(train[1]), args.batch_size, [args.seed, 0], step - 1)
            seed = np.random.default_rng([args.seed, 1, step]).integers(2**31 - 1, size=2)
            fd = {
                g.train_in.x: data.as_float(train[0][idx]),
                g.train_in.y: train[1][idx],
                g.train_in.seed: seed,
                g.lam: anneal(step, args.train_steps, args.noise_coeff),
                g.lr: args.lr * lr_factor(step, args.train_steps),
            }
            return float(sess.run([g.train_op, g.loss], fd)[1])

        def every(sess: tf.compat.v1.Session, step: int) -> str:
            acc, nll = test_acc(
                sess, args.eval_samples, anneal(step, args.train_steps, args.noise_coeff), step
            )
            from data.files import read_json

            curve = read_json(curve_path) if os.path.exists(curve_path) else []
            curve = [c for c in curve if c["step"] < step] + [{"step": step, "acc": acc, "nll": nll}]
            write_json_list(curve_path, curve)
            samples = args.eval_samples if perturbation.stochastic else 1
            return f"test acc {acc:.2f} nll {nll:.4f} ({samples} samples)"

        def final(sess: tf.compat.v1.Session) -> None:
            acc, nll = test_acc(sess, args.test_samples, args.noise_coeff, 0)
            samples = args.test_samples if perturbation.stochastic else 1
            line = f"final test accuracy {acc:.2f} nll {nll:.4f} ({samples} samples, {len(test[1])} images)"
            print(f"{folder}: {line}")
            log(os.path.join(folder, "train.log"), line)
            write_json(
                os.path.join(folder, "results.json"),
                {
                    "acc": acc,
                    "nll": nll,
                    "samples": samples,
                    "n_test": len(test[1]),
                    "n_train": len(train[1]),
                    "steps": args.train_steps,
                    "config": vars(args),
                },
            )

        variables = graph.get_collection(tf.compat.v1.GraphKeys.GLOBAL_VARIABLES)
        train_loop(folder, args, graph, variables, g.step, init_fn, step_fn, every, final)


def write_json_list(path: str, rows: list) -> None:
    import json

    from data.files import atomic

    with atomic(path) as tmp, open(tmp, "w") as f:
        json.dump(rows, f, indent=1)


def run_select(args: argparse.Namespace) -> None:
    """Spec 2.3, Q9: a target run per source run into save_dir/select/<exp_name>/run_<r>, then the
    per-run accuracies (%) and the best run into selection_path(...), written whole or not at all."""
    from data.files import read_json

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
        run_target(one)
        acc[r] = read_json(os.path.join(args.save_dir, "select", one.exp_name, "results.json"))["acc"]
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
    from data import DataError

    cli.ctrl_c_raises()
    try:
        RUNS[args.phase](args)
    except (UsageError, DataError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except (Stopped, KeyboardInterrupt) as e:
        print(str(e) or "stopped; re-run the same command to resume", file=sys.stderr)
        return STOPPED
    except OSError as e:
        print(f"error: {e}; check that the disk has space and the paths are writable", file=sys.stderr)
        return 2
    except Exception as e:
        tf = sys.modules.get("tensorflow")
        if tf is None or not isinstance(e, tf.errors.OpError):
            raise
        print(f"error: TensorFlow: {' '.join(e.message.split())[:500]}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    quiet.start(sys.argv[1:])
    cli.run(main)
