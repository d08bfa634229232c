"""Meta-Dropout's and Bayesian TAML's episodic protocol: the modes of main.py's command line.

Layers, top to bottom: what the modes read from the flags (dataset names, the perturbation, episode
checks, XLA's cache); the graph and session (Runner); the training loop (meta_train); evaluation
(meta_test); export (its graph is model.export_graph). main.py reads and checks the flags and calls
one mode; the savedir's settings, lock, checkpoints, session, training loop and errors are in run.py.
Nothing here builds a graph or imports TensorFlow at import time.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import re
import sys
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING

import numpy as np

import quiet
import run
from data.files import atomic, file_hash, resource
from data.prefetch import Prefetcher
from noise import build as build_noise
from run import (
    Checkpoints,
    Loop,
    Stopped,
    UsageError,
    best_steps,
    check_settings,
    check_writable,
    evaluate,
    locked,
    log,
    read_config,
    save_result,
    select_step,
    write_json,
)

if TYPE_CHECKING:
    from tensorflow.compat.v1 import Session

    from data import Split
    from noise import Perturbation
    from results import Record

Batch = dict[str, np.ndarray]  # xtr/ytr/xte/yte with a leading task axis
Evaluator = Callable[["Session", Batch, np.ndarray], np.ndarray]  # (session, batch, seeds [T, 2]) -> accs


# ---------------------------------------------------------------------------------------------
# What the modes read from the flags


def dataset_names(text: str | None) -> list[str]:
    """The datasets of a comma list ("aircraft, quickdraw" -> ["aircraft", "quickdraw"])."""
    return [n.strip() for n in (text or "").split(",") if n.strip()]


def make_noise(args: argparse.Namespace) -> Perturbation:
    """The perturbation of --noise and --noise_hp (the one place it is built)."""
    try:
        return build_noise(args.noise, args.noise_hp)
    except ValueError as e:
        raise UsageError(f"--noise: {e}") from e


def check_split(args: argparse.Namespace, n: np.ndarray, name: str) -> None:
    """DataError unless a split of n [classes] examples per class holds an episode of this run
    (fixed-shot or any-shot)."""
    from data.episodes import check, check_anyshot

    if args.max_shot:
        check_anyshot(n, args.way, args.max_shot, args.query, name=name)
    else:
        check(n, args.way, args.shot, args.query, name=name)


MAX_STEP = 1.0  # --meta_lr (Adam moves each weight by up to meta_lr), --inner_lr (an SGD step)


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


def xla_cache(args: argparse.Namespace) -> None:
    """Before TensorFlow starts: keep compiled XLA clusters in args.xla_cache (TF_XLA_FLAGS), so that
    a resumed run, meta_test after meta_train, or another run of the same shapes skips compilation."""
    key = "--tf_xla_persistent_cache_directory="
    flags = [f for f in os.environ.get("TF_XLA_FLAGS", "").split() if not f.startswith(key)]  # the flag wins
    if args.xla != "off" and args.xla_cache:
        flags.append(key + args.xla_cache)
    os.environ["TF_XLA_FLAGS"] = " ".join(flags)


# ---------------------------------------------------------------------------------------------
# Graph and session


def episode_batch(args: argparse.Namespace, split: Split, n_tasks: int, rng: np.random.Generator) -> Batch:
    """n_tasks episodes of a split: any-shot with --max_shot, else --shot with --sampler."""
    from data.episodes import sample_anyshot_batch, sample_batch

    if args.max_shot:
        return sample_anyshot_batch(split, n_tasks, args.way, args.max_shot, args.query, rng)
    return sample_batch(split, n_tasks, args.way, args.shot, args.query, rng, args.sampler)


class Runner:
    """The graph, session and data for one invocation. `splits` are loaded and checked; with none
    (fixed episodes from a file), the network's image shape comes from the training run's config."""

    def __init__(self, args: argparse.Namespace, splits: tuple[str, ...], saved: dict | None = None) -> None:
        import tensorflow as tf

        import data
        import model

        self.tf, self.args = tf, args
        perturbation = make_noise(args)
        self.ids, self.oods = dataset_names(args.dataset), dataset_names(args.ood_dataset)
        self.datasets: dict[str, data.Dataset] = {}
        if splits:
            for i, name in enumerate(self.ids + self.oods):  # --data_root: the (single) ID dataset's
                self.datasets[name] = data.load(name, args.data_root if i == 0 else None)
            self.dataset = self.datasets[self.ids[0]]
            for name, d in self.datasets.items():
                if d.shape != self.dataset.shape:
                    raise data.DataError(
                        f"{name} has {'x'.join(map(str, d.shape))} images, {self.ids[0]} "
                        f"{'x'.join(map(str, self.dataset.shape))}: one network needs one image shape"
                    )
                for s in splits:
                    # OOD datasets may lack a training split, any dataset a validation split
                    if (name in self.ids and s != "val") or s in d.splits:
                        check_split(args, data.sizes(d.split(s)), f"{name} {s}")
            shape, filters = self.dataset.shape, self.dataset.filters
        else:
            assert saved is not None
            shape, filters = saved["image_shape"], saved["filters"]
        self.graph = tf.Graph()
        with self.graph.as_default():
            tf.compat.v1.set_random_seed(args.seed)
            self.model = model.build(
                model.Arch(hw=shape[0], channels=shape[2], filters=filters, way=args.way),
                perturbation,
                args.inner_lr,
                args.n_steps,
                metasgd=args.metasgd,
                first_order=args.first_order,
                omega=args.omega_on,
                gamma=args.gamma_on,
                z=args.z_on,
                shot=args.shot,
                max_shot=args.max_shot,
            )
            if args.adv_inner:  # adversarial MAML (Section 4.1): inner steps on PGD examples
                from attack import Adversary

                self.model.adversary = Adversary(self.model, args.adv_inner, args.adv_eps)
            self.step = tf.compat.v1.train.get_or_create_global_step()
        self.xla = args.xla == "on" or (args.xla == "auto" and bool(tf.config.list_physical_devices("GPU")))
        print(quiet.device(tf, None if args.gpu_id is None else f"--gpu_id {args.gpu_id}", self.xla))
        if os.environ.get("NVIDIA_TF32_OVERRIDE") == "0":  # NVIDIA's switch for cuBLAS/cuDNN: XLA's too
            tf.config.experimental.enable_tensor_float_32_execution(False)

    def compiled(self) -> contextlib.AbstractContextManager:
        """Ops built inside (and their gradients) form one XLA cluster with --xla; the noise draws
        stay outside (Model._eps)."""
        return self.tf.xla.experimental.jit_scope() if self.xla else contextlib.nullcontext()

    def session(self) -> Session:
        return run.session(self.graph, self.xla)

    def evaluator(self, n_tasks: int, n_mc: int = 0) -> Evaluator:
        """A function running the inner loop with n_test_mc_samp noise samples (Algorithm 2) and,
        for Bayesian TAML, n_mc posterior draws of the balancing variables (0: posterior means, E10)."""
        from model import evaluation_graph

        a = self.args
        with self.compiled():
            ph, acc = evaluation_graph(
                self.model, n_tasks, a.shot, a.query, a.max_shot, a.n_test_mc_samp, n_mc
            )

        def run(sess: Session, batch: dict[str, np.ndarray], seeds: np.ndarray) -> np.ndarray:
            return sess.run(acc, {ph[k]: {**batch, "seed": seeds}[k] for k in ph})

        return run

    def attack_evaluator(self, n_tasks: int) -> Evaluator:
        """Clean and adversarial accuracies [n_tasks, 1 + len(--attack_eps)] (--attack): each task's
        inner loop runs once; its theta* is fed back for every radius."""
        from attack import robust_meta_batch

        a = self.args
        ph = self.model.placeholders(n_tasks, a.shot, a.query, "eval", seeded=True)
        eps = self.tf.compat.v1.placeholder(self.model.arch.dtype, [], name="attack_eps")
        thetas, clean, adv = robust_meta_batch(
            self.model, ph, a.n_test_mc_samp, eps, a.attack, a.attack_steps
        )

        def run(sess: Session, batch: dict[str, np.ndarray], seeds: np.ndarray) -> np.ndarray:
            feed = {ph[k]: {**batch, "seed": seeds}[k] for k in ph}
            theta_values, acc = sess.run([thetas, clean], feed)
            for theta, values in zip(thetas, theta_values):
                feed.update({theta[k]: values[k] for k in theta})
            return np.stack([acc] + [sess.run(adv, {**feed, eps: e}) for e in a.attack_eps], axis=1)

        return run

    def restore(self, sess: Session, step: int | None = None) -> str:
        """Load the meta-learned parameters of savedir's checkpoint of iteration `step` (None: the
        newest readable one)."""
        with self.graph.as_default():
            saver = self.tf.compat.v1.train.Saver(var_list=self.model.meta_params + [self.step])
        ckpts = Checkpoints(self.args.savedir)
        path = ckpts.restore(saver, sess, step)
        if path is None:
            raise UsageError(f"no checkpoint in {ckpts.dir}: run --mode meta_train with this --savedir first")
        return path


N_BALANCE_TASKS = 10  # validation tasks of each kind whose balancing variables are logged (spec 2.3)


class Balances:
    """The balancing variables' posterior means on fixed validation tasks, logged as the original
    does (Bayesian TAML's original README): gamma per layer against the task size N on task-imbalance tasks,
    omega per class against the class sizes on class-imbalance tasks; meta_train.log gets the
    tables and savedir/balance.jsonl one JSON line per kind and validation (plot.py --balance)."""

    def __init__(self, r: Runner) -> None:
        a = r.args
        self.args, self.model = a, r.model
        self.ph = r.model.placeholders(N_BALANCE_TASKS, a.shot, a.query, "balance", max_shot=a.max_shot)
        self.out = r.model.balancing(self.ph)

    def log(self, sess: Session, step: int, split: Split, train_log: str) -> None:
        from data.episodes import sample_anyshot_batch

        a = self.args
        wanted = {"gamma": "task", "omega": "class"}
        for k, kind in wanted.items():
            if k not in self.out:
                continue
            rng = np.random.default_rng([a.seed, 5, ("task", "class").index(kind)])
            batch = sample_anyshot_batch(split, N_BALANCE_TASKS, a.way, a.max_shot, a.query, rng, kind)
            values = sess.run(self.out[k], {self.ph[x]: batch[x] for x in self.ph})
            shots = batch["shots"]
            order = np.argsort(shots.sum(1), kind="stable")
            if k == "gamma":
                lines = [f"*** Gamma for task imbalance (iteration {step}) ***"]
                lines.append(
                    " " * 16
                    + " ".join(
                        f"{n:>6}" for n in [*(f"conv{l + 1}" for l in range(values.shape[1] - 1)), "dense"]
                    )
                )
                lines += [
                    f"task {t}: N={shots[t].sum():4d} " + " ".join(f"{v:6.3f}" for v in values[t])
                    for t in order
                ]
            else:
                lines = [f"*** Omega for class imbalance (iteration {step}) ***"]
                lines += [
                    f"task {t}: "
                    + " ".join(f"{n:3d}" for n in shots[t])
                    + " --> "
                    + " ".join(f"{v:.3f}" for v in values[t])
                    for t in order
                ]
            log(train_log, "\n".join(lines))
            record = {
                "iter": step,
                "variable": k,
                "imbalance": kind,
                "shots": shots.tolist(),
                "values": values.tolist(),
            }
            with open(os.path.join(a.savedir, "balance.jsonl"), "a") as f:
                f.write(json.dumps(record) + "\n")


# ---------------------------------------------------------------------------------------------
# Training loop


def ci95(acc: np.ndarray) -> tuple[float, float]:
    """Mean accuracy and 95% confidence half-width over n >= 2 episodes of accuracies in [0, 1], in
    percent (results.ci95; one episode has no interval: ValueError)."""
    import results

    return results.ci95(100.0 * np.asarray(acc, dtype=np.float64))


def accuracy_line(acc: np.ndarray) -> tuple[float, str]:
    """Mean accuracy in percent, and "M +- CI" (n >= 2) or "M (1 episode: no interval)"."""
    if len(acc) < 2:
        mean = float(100.0 * np.mean(acc))
        return mean, f"{mean:.2f} (1 episode: no interval)"
    mean, ci = ci95(acc)
    return mean, f"{mean:.2f} +- {ci:.2f}"


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
                print(already_trained(args, done))
                return
        r = Runner(args, ("train", "val"))
        write_json(
            config_path, {**vars(args), "image_shape": list(r.dataset.shape), "filters": r.dataset.filters}
        )
        train(r)


def already_trained(args: argparse.Namespace, done: int) -> str:
    """What a meta_train on a finished run says, and what to do instead."""
    return (
        f"{args.savedir}: already trained for {done} iterations (--n_train_iters {args.n_train_iters}); "
        "evaluate it with --mode meta_test, train it further with a larger --n_train_iters, or start a "
        "new run with another --savedir"
    )


def train(r: Runner) -> None:
    """Meta-train from savedir's newest checkpoint (Algorithm 1), checkpointing as it goes."""
    from model import training_graph

    args, tf, model = r.args, r.tf, r.model
    with r.graph.as_default(), run.building("the meta-training graph"):
        with r.compiled():
            ph, fetches = training_graph(
                model, args.metabatch, args.shot, args.query, args.max_shot, args.meta_lr, r.step
            )
        validate = r.evaluator(args.metabatch)  # posterior means (spec 1.7)
        balance = Balances(r) if args.max_shot and args.val_split else None
        saver = tf.compat.v1.train.Saver(max_to_keep=None)
        init = tf.compat.v1.global_variables_initializer()
    train_log = os.path.join(args.savedir, "meta_train.log")
    # Several ID datasets take turns, one per meta-batch (spec 2.3, Q15), in the original's order:
    # iteration i (from 1) uses the (i mod n)-th.
    train_splits = [r.datasets[n].split("train") for n in r.ids]
    val_sets = [("id", n, r.datasets[n].split("val")) for n in r.ids if "val" in r.datasets[n].splits]
    val_sets += [("ood", n, r.datasets[n].split("val")) for n in r.oods if "val" in r.datasets[n].splits]

    def episodes(it: int) -> Batch:
        """Iteration `it`'s meta-batch and noise seed: the same on resume."""
        rng = np.random.default_rng([args.seed, 0, it])
        batch = episode_batch(args, train_splits[(it + 1) % len(train_splits)], args.metabatch, rng)
        return {**batch, "noise_seed": rng.integers(2**31 - 1, size=2)}

    def validation(step: int) -> run.Lines:
        """Each validation set's accuracy (the same episodes every time: curves compare like with
        like); `val acc` is the ID datasets' pooled accuracy, `val ood acc` the OOD ones' (the
        checkpoint selection rules read them, spec Q7)."""
        lines: run.Lines = []
        pooled: dict[str, list[np.ndarray]] = {"id": [], "ood": []}
        for i, (role, name, split) in enumerate(val_sets):
            rng = np.random.default_rng([args.seed, 1] if i == 0 else [args.seed, 1, i])
            desc = f"validation {role}/{name}" if len(val_sets) > 1 else "validation"
            accs = evaluate(
                sess, validate, sampled(split, args, rng), args.n_val_iters, args.seed, desc, False
            )
            pooled[role].append(accs)
            if len(val_sets) > 1:
                mean, text = accuracy_line(accs)
                lines.append((f"iter {step} val {role}/{name} acc {text}", {f"val_acc/{role}/{name}": mean}))
        for role, label in (("id", "val acc"), ("ood", "val ood acc")):
            if pooled[role]:
                mean, text = accuracy_line(np.concatenate(pooled[role]))
                lines.append((f"iter {step} {label} {text}", {label.replace(" ", "_"): mean}))
        if balance is not None:
            balance.log(sess, step, r.datasets[r.ids[0]].split("val"), train_log)
        return lines

    if not val_sets:
        note = f"{args.dataset} holds no validation split: meta-training without meta-validation"
        log(train_log, note)
        print(f"{note} (meta_test takes the newest checkpoint, --select last)")

    with r.session() as sess:
        sess.run(init)
        loop = Loop(
            folder=args.savedir,
            flag="--savedir",
            log_name="meta_train.log",
            unit="iteration",
            label="iter",
            total=args.n_train_iters,
            log_every=args.log_freq,
            save_every=args.save_freq,
            step=lambda step: step_fn(next(ahead)),
            validate_every=args.val_freq,
            validate=validation,
            # Any-shot runs (whose meta_test selects by validation, spec Q7) also keep the best
            # under each rule beside the newest (run.best_steps); others the newest only.
            keep=(lambda: best_steps(train_log)) if args.max_shot else set,
            chance=math.log(args.way),  # the loss of a uniform guess, where training starts
            loss_name="meta-training loss",
            advice="".join(f"{w}. " for w in step_warnings(args)) or "Lower --meta_lr or --inner_lr and ",
        )
        start = run.resume(sess, loop, saver, r.step)
        if start >= args.n_train_iters:
            print(already_trained(args, start))
            return

        def step_fn(batch: Batch) -> run.Step:
            feed = {ph[k]: batch[k] for k in ph}
            feed[model.noise_seed] = batch["noise_seed"]
            _, l_, a_, k_ = sess.run(fetches, feed)
            return float(l_), float(np.mean(a_)), ({"kl": float(k_)} if model.learner.enabled else {})

        with Prefetcher(episodes(it) for it in range(start, args.n_train_iters)) as ahead:
            run.train(sess, loop, saver, r.step, start)


# ---------------------------------------------------------------------------------------------
# Evaluation


def sampled(split: Split, args: argparse.Namespace, rng: np.random.Generator) -> Iterator[Batch]:
    """Endless meta-batches of random episodes of a split (any-shot with --max_shot)."""
    while True:
        yield episode_batch(args, split, args.metabatch, rng)


def from_file(episodes: Batch, metabatch: int) -> Iterator[Batch]:
    """The episodes of a file in order, metabatch at a time; the last batch is padded by repetition."""
    n = len(episodes["xtr"])
    for i in range(0, n, metabatch):
        idx = np.arange(i, i + metabatch) % n
        yield {k: v[idx] for k, v in episodes.items()}


def selected_step(args: argparse.Namespace) -> int | None:
    """The checkpoint iteration meta_test's --select chooses from meta_train.log (None: the newest
    readable one, --select last); UsageError if no kept checkpoint has a validation line."""
    ckpts = Checkpoints(args.savedir)
    train_log = os.path.join(args.savedir, "meta_train.log")
    text = open(train_log).read() if os.path.exists(train_log) else ""
    # --select last: the newest readable checkpoint (an unreadable one falls back to an older one)
    step = None if args.select == "last" else select_step(text, args.select, ckpts.steps())
    if step is None and args.select != "last" and ckpts.steps():
        raise UsageError(
            f"--select {args.select}: {train_log} has no validation line of a kept checkpoint "
            f"(kept: {', '.join(f'model-{s}' for s in ckpts.steps())}); use --select last"
        )
    return step


def results_name(args: argparse.Namespace, saved: dict, role: str = "id", name: str = "") -> tuple[str, str]:
    """The savedir file of this evaluation's result, and what it evaluates. Each evaluation source
    has its own file, so one never replaces another: results.json for the test split under the
    training run's seed, results_test_seed<S>.json under another seed, and
    results_<file name>_<first 8 hex digits of its SHA-1>.json for an --episodes file. With
    --ood_dataset or several ID datasets, each dataset's test split has its own file,
    results_<id|ood>_<dataset>.json (results_<id|ood>_<dataset>_seed<S>.json under another seed)."""
    if args.episodes:
        stem = re.sub(r"[^\w.-]", "_", os.path.splitext(os.path.basename(args.episodes))[0])
        return f"results_{stem}_{file_hash(args.episodes, 'sha1')[:8]}.json", f"episodes {args.episodes}"
    source = f"{name or args.dataset} test split, seed {args.seed}"
    seed = "" if args.seed == saved["seed"] else f"_seed{args.seed}"
    if args.ood_dataset or "," in args.dataset:
        return f"results_{role}_{name}{seed}.json", source
    return ("results.json" if not seed else f"results_test_seed{args.seed}.json"), source


def meta_test(args: argparse.Namespace) -> None:
    """Evaluate the checkpoint of --select on the test split of every --id_dataset and --ood_dataset
    (or on the episodes of --episodes), each into a results file of its own (results_name)."""
    saved = read_config(args.savedir)
    check_settings(saved, args)
    check_writable(args.savedir)
    import results

    step = selected_step(args)  # before the data and the graph
    # (results file, source, role, dataset, episodes, meta-batches, what was evaluated, its identity)
    evals: list[tuple[str, str, str, str, int, Iterator[Batch], str, dict]] = []
    if args.episodes:
        from data.episodes import load_file

        x_dim = int(np.prod(saved["image_shape"]))
        episodes = load_file(args.episodes, args.way, args.shot, args.query, x_dim, max_shot=args.max_shot)
        n = len(episodes["xtr"])
        if n < 2:
            raise UsageError(
                f"--episodes {args.episodes} holds {n} episode: a confidence interval needs at least 2 "
                "(write the file with get_data.py --n_episodes 2 or more)"
            )
        r = Runner(args, (), saved)
        name, source = results_name(args, saved)
        sha1, d = file_hash(args.episodes, "sha1"), results.episode_file_dataset(args.episodes)
        role = "id" if d in r.ids else "ood" if d in r.oods else "file"
        batches = from_file(episodes, args.metabatch)
        evals.append(
            (name, source, role, d, n, batches, f"episodes {sha1[:8]}", results.file_episodes(sha1, n))
        )
    else:
        r = Runner(args, ("test",))
        for i, d in enumerate(r.ids + r.oods):
            role = "id" if d in r.ids else "ood"
            key = [args.seed, 2] if i == 0 else [args.seed, 2, i]
            name, source = results_name(args, saved, role, d)
            batches = sampled(r.datasets[d].split("test"), args, np.random.default_rng(key))
            episodes = results.split_episodes(d, "test", key, vars(args), args.n_test_iters)
            evals.append(
                (name, source, role, d, args.n_test_iters, batches, f"test split seed {args.seed}", episodes)
            )
    if args.attack:
        evals = [(name.replace("results", f"robust_{args.attack}", 1), *rest) for name, *rest in evals]
    with r.graph.as_default(), run.building("the meta-test graph"):
        if args.attack:
            evaluator = r.attack_evaluator(args.metabatch)
        else:
            evaluator = r.evaluator(args.metabatch, args.n_mc_samples)
    with r.session() as sess:
        latest = r.restore(sess, step)
        iters = int(sess.run(r.step))
        ckpt = os.path.relpath(latest, args.savedir)
        if step is None:  # the newest readable checkpoint: never replace a newer one's result unasked
            for name, *_ in evals:
                keep_newer(os.path.join(args.savedir, name), iters, latest)
        written: list[str] = []
        for name, source, role, d, n, batches, evaluated, episodes in evals:
            try:
                accs = evaluate(sess, evaluator, batches, n, args.seed, desc=f"meta_test {d}".strip())
            except KeyboardInterrupt:
                kept = f"; written before: {', '.join(written)}" if written else ""
                raise Stopped(
                    f"stopped while meta-testing on {source}: its result was not written (results are "
                    f"written whole, at the end; checkpoints are untouched){kept}; re-run the same "
                    "command to evaluate again"
                ) from None
            written.append(name)
            clean = 100.0 * (accs[:, 0] if args.attack else accs)  # %, one per episode
            record = results.meta_test_record(
                vars(args), saved, clean, role, d or args.dataset, evaluated, episodes, iters, ckpt
            )
            if args.attack:
                write_robust(args, accs, record, name, f"{source}, checkpoint {ckpt}")
                continue
            where = f"{role}/{d} " if len(evals) > 1 else ""
            line = f"{where}accuracy: {record.mean:.2f} +- {record.ci95:.2f}"
            print(line)
            settings = f"{args.n_steps} inner steps, {args.n_test_mc_samp} MC samples"
            if args.max_shot:
                settings += f", {args.n_mc_samples} posterior draws"
            save_result(os.path.join(args.savedir, name), record, f"the result ({line})")
            log(  # after the file is written: the log names only results that exist
                os.path.join(args.savedir, "meta_test.log"),
                f"{line} ({len(accs)} episodes from {source}, {settings}, --select {args.select}, "
                f"checkpoint {ckpt}) -> {name}",
            )


def keep_newer(path: str, iters: int, latest: str) -> None:
    """UsageError, before the evaluation, if `path` holds the result of a newer checkpoint than the
    restored one (the newest could not be read): it is replaced only when the user moves it away."""
    from results import read

    if not os.path.exists(path):
        return
    try:
        held = read(path).run["iterations"]
    except ValueError:  # not a result: nothing to keep
        return
    if isinstance(held, int) and held > iters:
        raise UsageError(
            f"{path} holds the result of iteration {held}, newer than the checkpoint that could be read "
            f"({latest}, iteration {iters}); it is kept. To replace it by this older checkpoint's "
            f"result, move {os.path.basename(path)} out of the savedir and run the same command again"
        )


def write_robust(args: argparse.Namespace, accs: np.ndarray, record: Record, name: str, source: str) -> None:
    """savedir/<name>, robust_<norm>.json for the test split (the clean meta-test's results.json is
    left alone): `record` (the clean accuracies, accs[:, 0]) with the attack's settings and the
    adversarial accuracy per radius of accs [episodes, 1 + radii]."""
    import dataclasses

    from attack import STEP
    from results import ci95

    rows, lines = [], []
    for e, acc in zip(args.attack_eps, 100.0 * accs[:, 1:].T):
        mean, ci = ci95(acc)
        rows.append(
            {
                "eps": e,
                "step_size": STEP * e / args.attack_steps,
                "mean": mean,
                "ci95": ci,
                "accuracies": acc.tolist(),
            }
        )
        lines.append(f"{args.attack} eps {e:g}: accuracy {mean:.2f} +- {ci:.2f}")
        print(lines[-1])
    attack = {
        "norm": args.attack,
        "steps": args.attack_steps,
        "step_size_rule": f"{STEP} * eps / steps",
        "radii": rows,
    }
    save_result(
        os.path.join(args.savedir, name), dataclasses.replace(record, attack=attack), "the robustness result"
    )
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
    with r.graph.as_default(), run.building("the export graph"):
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
