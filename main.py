"""Meta-train, meta-test (and export) Meta-Dropout or MAML: the original code's command line.

Layers, top to bottom: the command line (parse_args); the graph and session (Runner); the training
loop (meta_train); evaluation (meta_test); export (its graph is model.export_graph). The savedir's
settings, lock and checkpoints are in savedir.py.
"""

from __future__ import annotations

import cli

if __name__ == "__main__":
    cli.quiet_ctrl_c()  # Ctrl-C while the modules below load: one line, exit 130

import argparse
import contextlib
import json
import math
import os
import re
import sys
import time
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING

import numpy as np

import quiet
from cli import STOPPED
from data import DataError
from data.episodes import SAMPLERS
from data.files import atomic, file_hash, read_json, resource
from data.prefetch import Prefetcher
from savedir import (
    Checkpoints,
    UsageError,
    check_settings,
    check_writable,
    discard_unused,
    locked,
    read_config,
    reason,
)

if TYPE_CHECKING:
    from tensorflow.compat.v1 import Session

    from noise import Perturbation

MODES = ("meta_train", "meta_test", "export")

Batch = dict[str, np.ndarray]  # xtr/ytr/xte/yte with a leading task axis
Evaluator = Callable[["Session", Batch, np.ndarray], np.ndarray]
XLA_CACHE = os.path.join(
    os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "metadrop", "xla"
)


class Stopped(Exception):
    """Ctrl-C: the message says where the run stopped."""


# ---------------------------------------------------------------------------------------------
# Command line


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = cli.ArgumentParser(description=__doc__)
    p.add_argument(
        "--gpu_id", type=int, default=None, help="GPU to use (sets CUDA_VISIBLE_DEVICES; default 0)"
    )
    p.add_argument(
        "--verbose", action="store_true", help=f"show TensorFlow's C++ log lines ({quiet.VERBOSE_ENV}=1)"
    )
    p.add_argument("--mode", choices=MODES, default="meta_train")
    p.add_argument("--savedir", default=None, help="checkpoints, logs and results go here")
    p.add_argument("--save_freq", type=int, default=1000, help="checkpoint every N iterations")
    p.add_argument("--n_train_iters", type=int, default=60000)
    p.add_argument("--n_test_iters", type=int, default=1000, help="meta-test episodes")
    p.add_argument("--dataset", default="omniglot")
    p.add_argument("--way", type=int, default=20)
    p.add_argument("--shot", type=int, default=1)
    p.add_argument("--query", type=int, default=15)
    p.add_argument("--metabatch", type=int, default=4, help="tasks per iteration (or per meta-test run)")
    p.add_argument("--meta_lr", type=float, default=1e-3)
    p.add_argument("--inner_lr", type=float, default=0.1)
    p.add_argument("--n_steps", type=int, default=5, help="inner gradient steps")
    p.add_argument(
        "--n_test_mc_samp",
        type=int,
        default=1,
        help="noise samples per inner step when meta-testing (meta-training uses 1)",
    )
    p.add_argument("--maml", action="store_true", help="base MAML: no perturbation")
    p.add_argument("--metasgd", action="store_true", help="Meta-SGD: meta-learned inner step sizes")
    p.add_argument(
        "--first_order",
        action="store_true",
        help="first-order MAML (Finn et al. 2017, Section 5.2): the meta-gradient treats the inner"
        " gradients as constants (less memory and time; phi gets only its direct part)",
    )
    p.add_argument("--noise", default=None, help="perturbation by name (default: metadrop; README, noise.py)")
    p.add_argument(
        "--noise_hp",
        default="",
        metavar="K=V[,K=V]",
        help="the perturbation's hyperparameters, e.g. gamma=0.2 (mixup), beta=1e-4 (vib, infodrop), "
        "lam=0.1 (metadrop_add); unset ones take their defaults",
    )
    p.add_argument(
        "--sampler",
        choices=SAMPLERS,
        default="independent",
        help="meta-batches of independent tasks, or, as the original code, tasks sharing one class set",
    )
    p.add_argument("--data_root", default=None, help="dataset folder (default ./data/<dataset>)")
    p.add_argument("--episodes", default=None, help="meta_test on the fixed episodes of this .npz file")
    p.add_argument("--seed", type=int, default=0, help="seeds initialisation, episodes and noise")
    p.add_argument("--log_freq", type=int, default=50, help="log line every N iterations")
    p.add_argument("--val_freq", type=int, default=1000, help="meta-validation every N iterations")
    p.add_argument("--n_val_iters", type=int, default=100, help="meta-validation episodes")
    p.add_argument(
        "--xla",
        choices=("auto", "on", "off"),
        default="auto",
        help="compile the training, validation and meta-test graphs with XLA, each as one cluster"
        " (auto: on when a GPU is visible; on a CPU XLA is slower)",
    )
    p.add_argument(
        "--xla_cache",
        default=XLA_CACHE,
        help="persistent cache of XLA compilations, shared by runs and resumes of the same shapes"
        " ('' for none; default %(default)s)",
    )
    add_attack_flags(p)
    args = p.parse_args(argv)
    try:
        check_flags(args)
    except UsageError as e:
        p.error(str(e))
    xla_cache(args)  # TF_XLA_FLAGS, before TensorFlow is imported
    return args


# Flags whose value is a count: at least 1 (at least 2 for a 95% interval over episodes).
COUNTS = {
    "save_freq": 1,
    "n_train_iters": 1,
    "n_test_iters": 2,
    "way": 1,
    "shot": 1,
    "query": 1,
    "metabatch": 1,
    "n_test_mc_samp": 1,
    "log_freq": 1,
    "val_freq": 1,
    "n_val_iters": 1,
    "attack_steps": 1,
}
MAX_SEED = 2**31 - 1
# Divergence: the meta-training loss against a uniform guess's, ln(way), where every run starts.
WARN_GROWTH = 100  # a warning, once
STOP_GROWTH = 10_000  # a stop: logits of thousands; no run was seen to come back from this
MAX_STEP = 1.0  # --meta_lr (Adam moves each weight by up to meta_lr), --inner_lr (an SGD step)


def check_flags(args: argparse.Namespace) -> None:
    """Every flag's value, alone and with the others, without TensorFlow and before anything is
    written; fills in the perturbation's hyperparameters. UsageError saying what to do."""
    for name, least in COUNTS.items():
        if getattr(args, name) < least:
            why = " (a confidence interval needs two episodes)" if least == 2 else ""
            raise UsageError(f"--{name} must be at least {least}{why}")
    if args.n_steps < 1:
        # Without an inner step there is no adaptation, and Meta-dropout's noise (which acts only in
        # the inner loop, Algorithm 1) would have nothing to perturb: refused for every model alike.
        raise UsageError("--n_steps must be at least 1 (the inner loop needs a step)")
    for name in ("meta_lr", "inner_lr"):
        if not (math.isfinite(getattr(args, name)) and getattr(args, name) > 0):
            raise UsageError(f"--{name} must be a positive number, not {getattr(args, name)}")
    if not 0 <= args.seed <= MAX_SEED:
        raise UsageError(f"--seed must be an integer from 0 to {MAX_SEED}, not {args.seed}")
    if args.episodes is not None and args.mode != "meta_test":
        raise UsageError(f"--episodes is for --mode meta_test only (not {args.mode})")
    if args.savedir is None:
        raise UsageError("--savedir is required")
    if args.savedir.strip() == "":
        raise UsageError("--savedir is empty: name a folder")
    check_attack_flags(args)
    if args.maml and args.noise not in (None, "none"):
        raise UsageError(
            f"--maml is MAML without perturbation; it cannot be combined with --noise {args.noise}"
        )
    args.noise = "none" if args.maml else (args.noise or "metadrop")
    try:  # all hyperparameters, defaults filled in, for config.json and the settings checks
        perturbation = build_noise(args.noise, args.noise_hp)
    except ValueError as e:
        raise UsageError(f"--noise: {e}") from e
    args.noise_hp, args.noise_title = perturbation.hp(), perturbation.title
    check_xla_cache(args)


def add_attack_flags(p: argparse.ArgumentParser) -> None:
    """Flags of the adversarial-robustness experiment (Section 4.1, Figures 5-6; attack.py)."""
    p.add_argument("--attack", default=None, help="meta_test under PGD of this norm: l1, l2 or linf")
    p.add_argument("--attack_eps", default=None, help="--attack radii, comma-separated (0 = clean)")
    p.add_argument("--attack_steps", type=int, default=200, help="--attack PGD steps")
    p.add_argument("--adv_inner", default=None, help="adversarial MAML: inner steps on PGD examples (norm)")
    p.add_argument("--adv_eps", type=float, default=None, help="--adv_inner radius")


def step_warnings(args: argparse.Namespace) -> list[str]:
    """Step sizes above MAX_STEP, each with what was probably meant: weights start at a scale of 0.02
    (layers.variable), so such a step overwrites them (--meta_lr 3e4 for 3e-4 trains at chance)."""
    warnings = []
    for name, what in (("meta_lr", "an Adam step"), ("inner_lr", "an inner SGD step")):
        value = getattr(args, name)
        if value > MAX_STEP:
            exp = math.floor(math.log10(value))
            meant = f" (did you mean {value / 10**exp:g}e-{exp:02d}?)" if exp > 0 else ""
            warnings.append(f"--{name} {value:g} is {what} above {MAX_STEP:g}{meant}")
    return warnings


def check_attack_flags(args: argparse.Namespace) -> None:
    """The attack flags' values (check_flags)."""
    from attack import NORMS

    for name in ("attack", "adv_inner"):
        if getattr(args, name) not in (None, *NORMS):
            raise UsageError(f"--{name} {getattr(args, name)}: choose one of {', '.join(NORMS)}")
    if (args.attack is None) != (args.attack_eps is None):
        raise UsageError("--attack and --attack_eps go together: e.g. --attack linf --attack_eps 0,0.01,0.02")
    if args.attack is not None:
        if args.mode != "meta_test":
            raise UsageError("--attack evaluates a trained model: use it with --mode meta_test")
        try:
            args.attack_eps = [float(e) for e in args.attack_eps.split(",")]
        except ValueError:
            raise UsageError(
                f"--attack_eps {args.attack_eps}: give numbers separated by commas, e.g. 0,0.1,0.2"
            ) from None
        if not all(math.isfinite(e) and e >= 0 for e in args.attack_eps):
            raise UsageError("--attack_eps: every radius must be a number, at least 0")
    if (args.adv_inner is None) != (args.adv_eps is None):
        raise UsageError("--adv_inner and --adv_eps go together: e.g. --adv_inner linf --adv_eps 0.005")
    if args.adv_eps is not None and not (math.isfinite(args.adv_eps) and args.adv_eps > 0):
        raise UsageError("--adv_eps must be a positive number")


def check_xla_cache(args: argparse.Namespace) -> None:
    """--xla_cache must be a folder that can be created or written: TensorFlow would only fail at the
    first compilation. The default is dropped with a warning when unusable and XLA is not forced on."""
    if args.xla == "off" or not args.xla_cache:
        return
    why = unwritable(args.xla_cache)
    if why is None:
        return
    if args.xla_cache == XLA_CACHE and args.xla == "auto":
        print(
            f"warning: --xla_cache {XLA_CACHE}: {why}; compiled XLA clusters are not cached", file=sys.stderr
        )
        args.xla_cache = ""
        return
    raise UsageError(
        f"--xla_cache {args.xla_cache}: {why}; choose another folder, or --xla_cache '' for none"
    )


def unwritable(folder: str) -> str | None:
    """Why `folder` cannot be created or written to, None if it can; creates nothing."""
    path = os.path.abspath(folder)
    while not os.path.exists(path):
        path = os.path.dirname(path)
    if not os.path.isdir(path):
        return f"{path} is a file, not a folder"
    if not os.access(path, os.W_OK | os.X_OK):
        return f"{path} is not writable"
    return None


def write_json(path: str, obj: dict) -> None:
    """Write a JSON file whole or not at all."""
    with atomic(path) as tmp, open(tmp, "w") as f:
        json.dump(obj, f, indent=2)
        f.write("\n")


def ci95(acc: np.ndarray) -> tuple[float, float]:
    """Mean accuracy and 95% confidence half-width over n >= 2 episodes, in percent:
    1.96 * std / sqrt(n) (one episode has no interval: ValueError)."""
    acc = 100.0 * np.asarray(acc, dtype=np.float64)
    if len(acc) < 2:
        raise ValueError(f"a confidence interval needs at least 2 episodes, not {len(acc)}")
    return float(acc.mean()), float(1.96 * acc.std() / math.sqrt(len(acc)))


def accuracy_line(acc: np.ndarray) -> tuple[float, str]:
    """Mean accuracy in percent, and "M +- CI" (n >= 2) or "M (1 episode: no interval)"."""
    if len(acc) < 2:
        mean = float(100.0 * np.mean(acc))
        return mean, f"{mean:.2f} (1 episode: no interval)"
    mean, ci = ci95(acc)
    return mean, f"{mean:.2f} +- {ci:.2f}"


def save_result(path: str, result: dict, what: str) -> None:
    """write_json, or UsageError naming the file and saying that `what` was not saved."""
    try:
        write_json(path, result)
    except OSError as e:
        raise UsageError(f"could not write {path} ({resource(e)}): {what} was not saved") from e


def log(path: str, line: str) -> None:
    with open(path, "a") as f:
        f.write(line + "\n")


# ---------------------------------------------------------------------------------------------
# Graph and session


def build_noise(name: str, hp: str | dict) -> Perturbation:
    """The perturbation `name` with --noise_hp (K=V[,K=V] text, or a dict); ValueError if bad."""
    import noise

    if isinstance(hp, str):
        items = [item.partition("=") for item in hp.split(",") if item.strip()]
        if any(not sep for _, sep, _ in items):
            raise ValueError(f"--noise_hp {hp!r}: write K=V[,K=V], e.g. gamma=0.2")
        hp = {k.strip(): v.strip() for k, _, v in items}
    return noise.get(name, **hp)


def make_noise(args: argparse.Namespace) -> Perturbation:
    """The perturbation of --noise and --noise_hp (the one place it is built)."""
    try:
        return build_noise(args.noise, args.noise_hp)
    except ValueError as e:
        raise UsageError(f"--noise: {e}") from e


class Runner:
    """The graph, session and data for one invocation. `splits` are loaded and checked; with none
    (fixed episodes from a file), the network's image shape comes from the training run's config."""

    def __init__(self, args: argparse.Namespace, splits: tuple[str, ...], saved: dict | None = None) -> None:
        import tensorflow as tf

        import data
        from data.episodes import check
        from model import Arch, Model

        self.tf, self.args = tf, args
        perturbation = make_noise(args)
        if splits:
            self.dataset = data.load(args.dataset, args.data_root)
            for s in splits:
                check(self.dataset.split(s), args.way, args.shot, args.query, name=f"{args.dataset} {s}")
            shape, filters = self.dataset.shape, self.dataset.filters
        else:
            assert saved is not None
            shape, filters = saved["image_shape"], saved["filters"]
        self.graph = tf.Graph()
        with self.graph.as_default():
            tf.compat.v1.set_random_seed(args.seed)
            arch = Arch(hw=shape[0], channels=shape[2], filters=filters, way=args.way)
            self.model = Model(
                arch,
                perturbation,
                args.inner_lr,
                args.n_steps,
                metasgd=args.metasgd,
                first_order=args.first_order,
            )
            if args.adv_inner:
                from attack import Adversary

                self.model.adversary = Adversary(self.model, args.adv_inner, args.adv_eps)
            self.step = tf.compat.v1.train.get_or_create_global_step()
        self.xla = args.xla == "on" or (args.xla == "auto" and bool(tf.config.list_physical_devices("GPU")))
        print(quiet.device(tf, args.gpu_id, self.xla))
        if os.environ.get("NVIDIA_TF32_OVERRIDE") == "0":  # NVIDIA's switch for cuBLAS/cuDNN: XLA's too
            tf.config.experimental.enable_tensor_float_32_execution(False)

    def compiled(self) -> contextlib.AbstractContextManager:
        """Ops built inside (and their gradients) form one XLA cluster with --xla; the noise draws
        stay outside (Model._eps)."""
        return self.tf.xla.experimental.jit_scope() if self.xla else contextlib.nullcontext()

    def session(self) -> Session:
        config = self.tf.compat.v1.ConfigProto()
        config.gpu_options.allow_growth = True
        if self.xla or not self.tf.config.list_physical_devices("GPU"):
            # On a CPU, grappler's rewrites of the second-order graph cost ~25 s at start-up for a
            # few percent per iteration (bench/RESULTS.md); with XLA, XLA optimises the clusters
            # itself; on a GPU without XLA they are kept.
            config.graph_options.rewrite_options.disable_meta_optimizer = True
        return self.tf.compat.v1.Session(graph=self.graph, config=config)

    def evaluator(self, n_tasks: int) -> Evaluator:
        """A function running the inner loop with n_test_mc_samp samples (Algorithm 2)."""
        with self.compiled():
            ph = self.model.placeholders(n_tasks, self.args.shot, self.args.query, "eval")
            _, acc = self.model.meta_batch(ph, self.args.n_test_mc_samp)

        def run(sess: Session, batch: dict[str, np.ndarray], seed: np.ndarray) -> np.ndarray:
            feed = {ph[k]: batch[k] for k in ph}
            feed[self.model.noise_seed] = seed
            return sess.run(acc, feed)

        return run

    def attack_evaluator(self, n_tasks: int) -> Evaluator:
        """Clean and adversarial accuracies [n_tasks, 1 + len(--attack_eps)] (--attack): each task's
        inner loop runs once; its theta* is fed back for every radius."""
        from attack import robust_meta_batch

        a = self.args
        ph = self.model.placeholders(n_tasks, a.shot, a.query, "eval")
        eps = self.tf.compat.v1.placeholder(self.model.arch.dtype, [], name="attack_eps")
        thetas, clean, adv = robust_meta_batch(
            self.model, ph, a.n_test_mc_samp, eps, a.attack, a.attack_steps
        )

        def run(sess: Session, batch: dict[str, np.ndarray], seed: np.ndarray) -> np.ndarray:
            feed = {ph[k]: batch[k] for k in ph}
            feed[self.model.noise_seed] = seed
            theta_values, acc = sess.run([thetas, clean], feed)
            for theta, values in zip(thetas, theta_values):
                feed.update({theta[k]: values[k] for k in theta})
            return np.stack([acc] + [sess.run(adv, {**feed, eps: e}) for e in a.attack_eps], axis=1)

        return run

    def restore(self, sess: Session) -> str:
        """Load the meta-learned parameters of savedir's newest readable checkpoint."""
        with self.graph.as_default():
            saver = self.tf.compat.v1.train.Saver(var_list=self.model.meta_params + [self.step])
        ckpts = Checkpoints(self.args.savedir)
        path = ckpts.restore(saver, sess)
        if path is None:
            raise UsageError(f"no checkpoint in {ckpts.dir}: run --mode meta_train with this --savedir first")
        return path


# ---------------------------------------------------------------------------------------------
# Training loop


def meta_train(args: argparse.Namespace) -> None:
    for warning in step_warnings(args):
        print(f"warning: {warning}", file=sys.stderr)
    check_writable(args.savedir)
    with locked(args.savedir):
        ckpts = Checkpoints(args.savedir)
        ckpts.clean()
        config_path = os.path.join(args.savedir, "config.json")
        if ckpts.steps():
            check_settings(read_config(args.savedir), args)  # names a missing config.json
            done = ckpts.trained()
            if done >= args.n_train_iters:  # before the graph is built
                print(f"{args.savedir}: already trained for {done} iterations")
                return
        r = Runner(args, ("train", "val"))
        write_json(
            config_path, {**vars(args), "image_shape": list(r.dataset.shape), "filters": r.dataset.filters}
        )
        train(r, ckpts)


def train(r: Runner, ckpts: Checkpoints) -> None:
    """Meta-train from savedir's newest checkpoint (Algorithm 1), checkpointing as it goes."""
    from tqdm import tqdm

    from data.episodes import sample_batch

    args, tf, model = r.args, r.tf, r.model
    with r.graph.as_default():
        with r.compiled():
            ph = model.placeholders(args.metabatch, args.shot, args.query, "train")
            loss, acc = model.meta_batch(ph, 1)  # one noise sample when meta-training (Section 3.1)
            train_op = model.train_op(loss, args.meta_lr, r.step)
        validate = r.evaluator(args.metabatch)
        saver = tf.compat.v1.train.Saver(max_to_keep=None)
        init = tf.compat.v1.global_variables_initializer()
        writer = tf.compat.v1.summary.FileWriter(args.savedir)
    train_log = os.path.join(args.savedir, "meta_train.log")
    train_split, val_split = r.dataset.split("train"), r.dataset.split("val")

    def scalars(step: int, **values: float) -> None:
        summary = tf.compat.v1.Summary(
            value=[tf.compat.v1.Summary.Value(tag=k, simple_value=v) for k, v in values.items()]
        )
        writer.add_summary(summary, step)
        writer.flush()

    def episodes(it: int) -> Batch:
        """Iteration `it`'s meta-batch and noise seed: the same on resume."""
        rng = np.random.default_rng([args.seed, 0, it])
        batch = sample_batch(train_split, args.metabatch, args.way, args.shot, args.query, rng, args.sampler)
        return {**batch, "noise_seed": rng.integers(2**31 - 1, size=2)}

    with r.session() as sess:
        sess.run(init)
        latest = ckpts.restore(saver, sess)
        start = saved = int(sess.run(r.step))
        if latest:
            log(train_log, f"resumed from iteration {start} ({os.path.relpath(latest, args.savedir)})")
        if start >= args.n_train_iters:
            print(f"{args.savedir}: already trained for {start} iterations")
            writer.close()
            return
        window: list[tuple[float, float]] = []
        chance, warned = math.log(args.way), False  # the loss of a uniform guess, where training starts
        advice = "".join(f"{w}. " for w in step_warnings(args)) or "Lower --meta_lr or --inner_lr and "
        bar = tqdm(range(start, args.n_train_iters), initial=start, total=args.n_train_iters)
        t0 = time.time()
        try:
            with Prefetcher(episodes(it) for it in range(start, args.n_train_iters)) as ahead:
                for it, batch in zip(bar, ahead):
                    feed = {ph[k]: batch[k] for k in ph}
                    feed[model.noise_seed] = batch["noise_seed"]
                    _, l_, a_ = sess.run([train_op, loss, acc], feed)
                    step = it + 1
                    if not math.isfinite(l_) or l_ > WARN_GROWTH * chance:
                        news = (
                            f"the meta-training loss is {l_:.4g} at iteration {step} "
                            f"(a uniform guess's: {chance:.2f})"
                        )
                        if not math.isfinite(l_) or l_ > STOP_GROWTH * chance:
                            log(train_log, f"stopped at iteration {step}: {news}")
                            kept = (
                                f"its checkpoints up to iteration {saved} are kept"
                                if saved
                                else "no checkpoint had been written"
                            )
                            raise UsageError(
                                f"{news}: the run diverged and was stopped ({kept}). {advice}Start again "
                                "with another --savedir"
                            )
                        if not warned:
                            warned = True
                            log(train_log, f"warning: {news}")
                            bar.write(
                                f"warning: {news}: the run is probably diverging. {advice}Start again with "
                                "another --savedir",
                                file=sys.stderr,
                            )
                    window.append((float(l_), float(np.mean(a_))))
                    bar.set_postfix(loss=f"{l_:.3f}", acc=f"{100 * np.mean(a_):.1f}")
                    if step % args.log_freq == 0:
                        ml, ma = np.mean(window, axis=0)
                        window = []
                        log(
                            train_log,
                            f"iter {step} loss {ml:.4f} acc {100 * ma:.2f} ({time.time() - t0:.1f}s)",
                        )
                        scalars(step, train_loss=ml, train_acc=100 * ma)
                    if step % args.val_freq == 0 or step == args.n_train_iters:
                        # The same validation episodes every time: curves compare like with like.
                        val = sampled(val_split, args, np.random.default_rng([args.seed, 1]))
                        noise_rng = np.random.default_rng([args.seed, 3])
                        accs = evaluate(sess, validate, val, args.n_val_iters, noise_rng)
                        mean, text = accuracy_line(accs)
                        log(train_log, f"iter {step} val acc {text}")
                        scalars(step, val_acc=mean)
                    if step % args.save_freq == 0 or step == args.n_train_iters:
                        ckpts.save(saver, sess, step)
                        saved = step
        except KeyboardInterrupt:
            bar.close()
            step = int(sess.run(r.step))  # the iterations that were applied
            if step > saved:
                ckpts.save(saver, sess, step)
            log(train_log, f"stopped at iteration {step}")
            raise Stopped(f"stopped at iteration {step}; re-run the same command to resume") from None
        finally:
            writer.close()


# ---------------------------------------------------------------------------------------------
# Evaluation


def sampled(split: np.ndarray, args: argparse.Namespace, rng: np.random.Generator) -> Iterator[Batch]:
    """Endless meta-batches of random episodes of a split."""
    from data.episodes import sample_batch

    while True:
        yield sample_batch(split, args.metabatch, args.way, args.shot, args.query, rng, args.sampler)


def from_file(episodes: Batch, metabatch: int) -> Iterator[Batch]:
    """The episodes of a file in order, metabatch at a time; the last batch is padded by repetition."""
    n = len(episodes["xtr"])
    for i in range(0, n, metabatch):
        idx = np.arange(i, i + metabatch) % n
        yield {k: v[idx] for k, v in episodes.items()}


def evaluate(
    sess: Session,
    run: Evaluator,
    batches: Iterator[Batch],
    n: int,
    rng: np.random.Generator,
    desc: str | None = None,
) -> np.ndarray:
    """Accuracies of the first n episodes of `batches` (prepared in the background), noise seeded
    from rng; a progress bar when `desc` is given."""
    from tqdm import tqdm

    accs: list[float] = []
    with Prefetcher(batches) as ahead, tqdm(total=n, desc=desc, disable=desc is None) as bar:
        while len(accs) < n:
            out = run(sess, next(ahead), rng.integers(2**31 - 1, size=2))
            accs.extend(out)
            bar.update(min(len(out), n - bar.n))
    return np.array(accs[:n])


def results_name(args: argparse.Namespace, saved: dict) -> tuple[str, str]:
    """The savedir file of this evaluation's result, and what it evaluates. Each evaluation source
    has its own file, so one never replaces another: results.json for the test split under the
    training run's seed, results_test_seed<S>.json under another seed, and
    results_<file name>_<first 8 hex digits of its SHA-1>.json for an --episodes file."""
    if args.episodes:
        stem = re.sub(r"[^\w.-]", "_", os.path.splitext(os.path.basename(args.episodes))[0])
        return f"results_{stem}_{file_hash(args.episodes, 'sha1')[:8]}.json", f"episodes {args.episodes}"
    source = f"{args.dataset} test split, seed {args.seed}"
    return ("results.json" if args.seed == saved["seed"] else f"results_test_seed{args.seed}.json"), source


def meta_test(args: argparse.Namespace) -> None:
    saved = read_config(args.savedir)
    check_settings(saved, args)
    check_writable(args.savedir)
    if args.episodes:
        from data.episodes import load_file

        shape = saved["image_shape"]
        episodes = load_file(args.episodes, args.way, args.shot, args.query, int(np.prod(shape)))
        n, batches = len(episodes["xtr"]), from_file(episodes, args.metabatch)
        if n < 2:
            raise UsageError(
                f"--episodes {args.episodes} holds {n} episode: a confidence interval needs at least 2 "
                "(write the file with get_data.py --n_episodes 2 or more)"
            )
        r = Runner(args, (), saved)
    else:
        r = Runner(args, ("test",))
        rng = np.random.default_rng([args.seed, 2])
        n, batches = args.n_test_iters, sampled(r.dataset.split("test"), args, rng)
    name, source = results_name(args, saved)
    if args.attack:
        name = name.replace("results", f"robust_{args.attack}", 1)
    with r.graph.as_default():
        run = r.attack_evaluator(args.metabatch) if args.attack else r.evaluator(args.metabatch)
    with r.session() as sess:
        latest = r.restore(sess)
        iters = int(sess.run(r.step))
        keep_newer(os.path.join(args.savedir, name), iters, latest)
        accs = evaluate(sess, run, batches, n, np.random.default_rng([args.seed, 3]), desc="meta_test")
    ckpt = os.path.relpath(latest, args.savedir)
    if args.attack:
        return write_robust(args, accs, iters, name, f"{source}, checkpoint {ckpt}")
    mean, ci = ci95(accs)
    line = f"accuracy: {mean:.2f} +- {ci:.2f}"
    print(line)
    result = {
        "mean": mean,
        "ci95": ci,
        "n": len(accs),
        "train_iters": iters,
        "source": source,
        "config": vars(args),
    }
    save_result(os.path.join(args.savedir, name), result, f"the result ({line})")
    log(  # after the file is written: the log names only results that exist
        os.path.join(args.savedir, "meta_test.log"),
        f"{line} ({len(accs)} episodes from {source}, {args.n_test_mc_samp} MC samples, checkpoint {ckpt}) "
        f"-> {name}",
    )


def keep_newer(path: str, iters: int, latest: str) -> None:
    """UsageError, before the evaluation, if `path` holds the result of a newer checkpoint than the
    restored one (the newest could not be read): it is replaced only when the user moves it away."""
    try:
        held = read_json(path).get("train_iters")
    except (ValueError, AttributeError):  # none there, or not a result: nothing to keep
        return
    if isinstance(held, int) and held > iters:
        raise UsageError(
            f"{path} holds the result of iteration {held}, newer than the checkpoint that could be read "
            f"({latest}, iteration {iters}); it is kept. To replace it by this older checkpoint's "
            f"result, move {os.path.basename(path)} out of the savedir and run the same command again"
        )


def write_robust(args: argparse.Namespace, accs: np.ndarray, iters: int, name: str, source: str) -> None:
    """savedir/<name>, robust_<norm>.json for the test split (the clean meta-test's results.json is
    left alone): clean and adversarial accuracy per radius of accs [episodes, 1 + radii], with the
    attack's settings."""
    from attack import STEP

    rows, lines = [], []
    for e, acc in zip(args.attack_eps, accs[:, 1:].T):
        mean, ci = ci95(acc)
        rows.append({"eps": e, "step_size": STEP * e / args.attack_steps, "mean": mean, "ci95": ci})
        lines.append(f"{args.attack} eps {e:g}: accuracy {mean:.2f} +- {ci:.2f}")
        print(lines[-1])
    mean, ci = ci95(accs[:, 0])
    result = {
        "norm": args.attack,
        "steps": args.attack_steps,
        "step_size_rule": f"{STEP} * eps / steps",
        "clean": {"mean": mean, "ci95": ci},
        "adversarial": rows,
        "n": len(accs),
        "train_iters": iters,
        "source": source,
        "config": vars(args),
    }
    save_result(os.path.join(args.savedir, name), result, "the robustness result")
    for line in lines:  # after the file is written
        log(
            os.path.join(args.savedir, "meta_test.log"),
            f"{line} ({len(accs)} episodes from {source}) -> {name}",
        )


# ---------------------------------------------------------------------------------------------
# Export


N_EXPORT_TASKS = 10  # two-way meta-test tasks traced by --mode export
N_PERTURBED = 10  # noisy feature samples of each training example per step
N_FMAP_SAMPLES = 2  # noise samples of the feature maps (Figure 8: "With Noise1", "With Noise2")
N_FMAP_PER_CLASS = 3  # query images per class whose feature maps are kept


def export(args: argparse.Namespace) -> None:
    """Trace the inner loop on two-way meta-test tasks into savedir/export.npz for plot.py.

    Each task is a two-way episode (--shot, --query) of the test split; its two classes take two
    random columns c1, c2 of the meta-learned last layer (Appendix C), and only this two-way
    classifier is adapted, with --n_test_mc_samp noise samples per step (Figure 4: only the two
    classes' examples take part). Arrays, with T tasks, K = --n_steps and F features:
    htr [T, K+1, 2*shot, F], hte [T, K+1, 2*query, F] (deterministic features before the first and
    after every step), htr_samp [T, K+1, S, 2*shot, F] (S = 10 noisy samples; 0 for MAML),
    w [T, K+1, F, 2], b [T, K+1, 2] (columns c1, c2), ytr [T, 2*shot], yte [T, 2*query]
    (0 = c1, 1 = c2), cols [T, 2] = (c1, c2); for Figure 8, fmap_x [n, H, W, C] query images of the
    first task and fmap<l> [1+S', n, h, w, C] (l = 1..4) the output of conv block l under the
    meta-learned theta: index 0 without noise, then S' = 2 noise samples (0 for MAML), with the
    batch-norm statistics of that task's whole query set; fmap_idx their rows in hte[0, 0];
    meta, a JSON string of the settings.
    """
    from tqdm import tqdm

    from data.episodes import sample
    from model import export_graph

    check_settings(read_config(args.savedir), args)
    check_writable(args.savedir)
    r = Runner(args, ("test",))
    model, a = r.model, r.model.arch
    with r.graph.as_default():
        ph, trace, fmaps = export_graph(model, args.n_test_mc_samp, N_PERTURBED, N_FMAP_SAMPLES)
    rng = np.random.default_rng([args.seed, 4])
    split = r.dataset.split("test")
    feeds, labels = [], []
    for _ in range(N_EXPORT_TASKS):
        xtr, ytr, xte, yte = sample(split, 2, args.shot, args.query, rng)
        c = rng.choice(args.way, 2, replace=False)
        seed = rng.integers(2**31 - 1, size=2)
        feeds.append({ph["xtr"]: xtr, ph["ytr"]: ytr, ph["xte"]: xte, ph["cols"]: c, model.noise_seed: seed})
        labels.append({"ytr": ytr.argmax(1), "yte": yte.argmax(1), "cols": c})
    with r.session() as sess:
        latest = r.restore(sess)
        traced = [{**sess.run(trace, feed), **lab} for feed, lab in zip(tqdm(feeds, desc="export"), labels)]
        fmaps_out = sess.run(fmaps, feeds[0])  # Figure 8: the first task's query images
        iters = int(sess.run(r.step))
    arrays = {k: np.stack([t[k] for t in traced]) for k in traced[0]}
    xte = feeds[0][ph["xte"]]
    idx = np.array([c * args.query + j for c in range(2) for j in range(min(N_FMAP_PER_CLASS, args.query))])
    arrays["fmap_idx"] = idx
    arrays["fmap_x"] = xte[idx].reshape(-1, a.hw, a.hw, a.channels)
    for l in range(a.n_blocks):  # [samples * images, h, w, C] -> [samples, kept images, h, w, C]
        parts = [fm[l].reshape(-1, len(xte), *fm[l].shape[1:])[:, idx] for fm in fmaps_out]
        arrays[f"fmap{l + 1}"] = np.concatenate(parts)
    ckpt = os.path.relpath(latest, args.savedir)
    meta = {
        **{
            k: getattr(args, k)
            for k in ("dataset", "noise", "noise_hp", "noise_title", "way", "shot", "query")
        },
        "n_steps": args.n_steps,
        **{k: getattr(args, k) for k in ("inner_lr", "n_test_mc_samp", "metasgd", "seed")},
        "checkpoint": ckpt,
        "train_iters": iters,
    }
    arrays["meta"] = np.array(json.dumps(meta))
    path = os.path.join(args.savedir, "export.npz")
    try:
        with atomic(path) as tmp, open(tmp, "wb") as f:
            np.savez_compressed(f, **arrays)
    except OSError as e:
        raise UsageError(f"could not write {path} ({resource(e)}): the export was not saved") from e
    print(f"wrote {path}: {N_EXPORT_TASKS} two-way tasks, {args.n_steps} inner steps (checkpoint {ckpt})")


# ---------------------------------------------------------------------------------------------


def xla_cache(args: argparse.Namespace) -> None:
    """Before TensorFlow starts: keep compiled XLA clusters in args.xla_cache (TF_XLA_FLAGS), so that
    a resumed run, meta_test after meta_train, or another run of the same shapes skips compilation."""
    key = "--tf_xla_persistent_cache_directory="
    flags = [f for f in os.environ.get("TF_XLA_FLAGS", "").split() if not f.startswith(key)]  # the flag wins
    if args.xla != "off" and args.xla_cache:
        flags.append(key + args.xla_cache)
    os.environ["TF_XLA_FLAGS"] = " ".join(flags)


MODES = {"meta_train": meta_train, "meta_test": meta_test, "export": export}


def main(argv: list[str] | None = None) -> int:
    made = None  # the savedir, when this run is the one creating it
    try:
        cli.ctrl_c_raises()
        os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # before TensorFlow is imported
        args = parse_args(argv)
        os.environ["CUDA_VISIBLE_DEVICES"] = str(args.gpu_id or 0)
        made = None if os.path.lexists(args.savedir) else args.savedir
        MODES[args.mode](args)
        return 0
    except (UsageError, DataError) as e:
        print(f"error: {e}", file=sys.stderr)
        code = 2
    except (Stopped, KeyboardInterrupt) as e:
        print(str(e) or "stopped; re-run the same command to start again", file=sys.stderr)
        code = STOPPED
    except OSError as e:  # anything the checks above did not foresee: a full disk, a lost mount, ...
        print(f"error: {resource(e)}", file=sys.stderr)
        code = 2
    except Exception as e:
        tf = sys.modules.get("tensorflow")
        if tf is None or not isinstance(e, tf.errors.OpError):
            raise
        print(f"error: TensorFlow: {reason(e)}", file=sys.stderr)
        code = 2
    if made:
        discard_unused(made)
    return code


if __name__ == "__main__":
    quiet.start(sys.argv[1:])
    cli.run(main)
