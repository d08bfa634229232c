"""A run's folder (--savedir): its settings (config.json), the meta_train lock and the checkpoints.

Nothing here loses what a run wrote: checkpoints are named relative to their folder (a copied or
moved savedir uses its own weights), the newest KEEP are kept across resumes, an unreadable newest
checkpoint falls back to an older one, and a failed save leaves the previous ones as they were.
"""

from __future__ import annotations

import argparse
import contextlib
import errno
import glob
import json
import os
import re
import sys
import tempfile
from collections.abc import Iterator
from typing import TYPE_CHECKING

from data.files import atomic, read_json

if TYPE_CHECKING:
    from tensorflow.compat.v1 import Session
    from tensorflow.compat.v1.train import Saver

KEEP = 3  # checkpoints kept in savedir/ckpt (the newest, by iteration)
CKPT = re.compile(r"model-(\d+)\.index$")
# Settings that define the network and its variables: every mode must match the training run.
MODEL_KEYS = ("dataset", "way", "noise", "noise_hp", "metasgd", "omega_on", "gamma_on", "z_on")
# What each mode must share with the run that wrote the savedir; the other flags may change
# (meta_test: --n_test_mc_samp, --metabatch, --n_test_iters, --episodes, --seed, ...).
# Adversarial MAML's inner loop (--adv_inner, --adv_eps) is part of training and meta-testing; a
# config.json written before these flags existed lacks them (None: no adversary).
ADV_KEYS = ("adv_inner", "adv_eps")
MATCH = {
    "meta_train": (
        *MODEL_KEYS,
        "shot",
        "query",
        "metabatch",
        "meta_lr",
        "inner_lr",
        "n_steps",
        "seed",
        "sampler",
        "max_shot",
        "ood_dataset",
        "first_order",
        "val_split",
        *ADV_KEYS,
    ),
    # --n_steps and --shot may differ at meta_test (Bayesian TAML tests with 10 steps); the results
    # file records the values used.
    "meta_test": (*MODEL_KEYS, "max_shot", "query", "inner_lr", *ADV_KEYS),
    "export": MODEL_KEYS,
}
# Settings that configs may predate, and what such a run used.
DEFAULTS = {
    "noise_hp": {},
    "sampler": "independent",
    "first_order": False,
    "max_shot": None,
    "ood_dataset": None,
    **dict.fromkeys(("omega_on", "gamma_on", "z_on"), False),
    "noise_version": 1,  # the perturbation's parametrisation (noise.Perturbation.version)
    "val_split": True,  # classes held out for meta-validation (omniglot trained on 4400 classes)
}
AFTERWARDS = {
    "meta_train": "use the same flags to resume, or another --savedir for a new run",
    "meta_test": "meta_test with the training run's flags",
    "export": "export with the training run's flags",
}


class UsageError(Exception):
    """Bad flags or savedir; the message says what to do."""


def flag(key: str, value: object) -> str:
    if key == "noise" and value == "none":
        return "--maml"
    if key == "val_split":  # from --dataset: the ID datasets hold out validation classes (data.has_val)
        return "classes held out for meta-validation" if value else "no validation split"
    if isinstance(value, bool) or value is None:
        return f"--{key}" if value else f"no --{key}"
    return f"--{key} {value}"


# The type of each setting in config.json (bool before int: a JSON true is not a count).
TYPES: dict[str, tuple[type, ...]] = {
    **dict.fromkeys(("dataset", "noise", "sampler"), (str,)),
    **dict.fromkeys(("way", "shot", "query", "metabatch", "n_steps", "seed", "filters"), (int,)),
    **dict.fromkeys(("meta_lr", "inner_lr"), (int, float)),
    **dict.fromkeys(("metasgd", "first_order"), (bool,)),
    "noise_hp": (dict,),
    "noise_version": (int,),
    "val_split": (bool,),
    "image_shape": (list,),
    "adv_inner": (str, type(None)),
    "adv_eps": (int, float, type(None)),
}
TYPE_NAMES = {
    str: "text",
    int: "an integer",
    float: "a number",
    bool: "true or false",
    dict: "an object",
    list: "a list",
    type(None): "null",
}


def read_config(savedir: str) -> dict:
    """The settings of the run that wrote savedir (config.json); UsageError saying what to do if the
    savedir is not a run's folder or its config.json is missing, unreadable or of the wrong types."""
    path = os.path.join(savedir, "config.json")
    if os.path.lexists(savedir) and not os.path.isdir(savedir):
        raise UsageError(
            f"--savedir {savedir} is a file, not a folder: give the folder that meta_train wrote"
        )
    if not os.path.exists(path):
        ckpts = Checkpoints(savedir)
        if ckpts.steps():
            raise UsageError(
                f"{ckpts.dir} holds checkpoints but {path} is missing: restore config.json from a copy "
                "of the savedir (it holds the run's settings, which neither meta_test nor a resumed "
                "meta_train can do without)"
            )
        raise UsageError(f"no {path}: run --mode meta_train with this --savedir first")
    fix = "restore it from a copy of the savedir, or use another --savedir"
    try:
        config = read_json(path)
    except ValueError as e:
        raise UsageError(f"{e}; {fix}") from e
    need = (*(k for k in MATCH["meta_train"] if k not in ADV_KEYS), "image_shape", "filters")
    missing = [k for k in need if not isinstance(config, dict) or (k not in config and k not in DEFAULTS)]
    if missing:
        raise UsageError(f"{path} lacks the run's settings ({', '.join(missing)}); {fix}")
    for k, types in TYPES.items():
        v = config.get(k, DEFAULTS.get(k))
        if k in config and not (isinstance(v, types) and not (isinstance(v, bool) and bool not in types)):
            want = " or ".join(TYPE_NAMES[t] for t in types)
            raise UsageError(
                f'{path}: {k} is {json.dumps(v)}, which is not {want} (e.g. "way": 5, not "way": "5"); '
                f"correct it, or {fix}"
            )
    return config


def check_settings(saved: dict, args: argparse.Namespace) -> None:
    """UsageError naming every flag of this mode that differs from the training run's."""
    saved = {**DEFAULTS, **saved}
    diff = [k for k in MATCH[args.mode] if saved.get(k) != getattr(args, k)]
    if diff:
        there = ", ".join(flag(k, saved.get(k)) for k in diff)
        now = ", ".join(flag(k, getattr(args, k)) for k in diff)
        raise UsageError(
            f"{args.savedir} was trained with other settings ({', '.join(diff)}: {there} there, {now} now); "
            f"{AFTERWARDS[args.mode]}"
        )
    check_version(saved, args)


def check_version(saved: dict, args: argparse.Namespace) -> None:
    """UsageError if the savedir's perturbation (the same --noise) is of another parametrisation than
    this code's: its checkpoints would be resumed or evaluated under other initial values or scales."""
    import noise

    there, now = saved["noise_version"], args.noise_version
    if there == now:
        return
    cls = noise.PERTURBATIONS[args.noise]
    raise UsageError(
        f"{args.savedir} holds a {cls.title} run of parametrisation version {there}; this code's is "
        f"version {now} ({cls.since}) and cannot resume, evaluate or export it: train a new run with "
        f"another --savedir (a run trained at version {now} before config.json recorded it: add "
        f'"noise_version": {now} to its config.json)'
    )


def check_writable(folder: str, what: str = "--savedir") -> None:
    """Create folder if needed and check that a file can be written there, before any long work."""
    try:
        os.makedirs(folder, exist_ok=True)
        fd, probe = tempfile.mkstemp(dir=folder, prefix=".write-check")
        os.close(fd)
        os.remove(probe)
    except OSError as e:
        why = "a part of the path is a file" if e.errno in (errno.ENOTDIR, errno.EEXIST) else e.strerror
        raise UsageError(f"cannot write to {what} {folder} ({why}): fix it or choose another {what}") from e


@contextlib.contextmanager
def locked(savedir: str) -> Iterator[None]:
    """Hold savedir/meta_train.lock: one meta_train per savedir. The kernel drops the lock when its
    process ends, however it ends, so a killed run's lock file does not block the next run."""
    import fcntl

    path = os.path.join(savedir, "meta_train.lock")
    with open(path, "a+") as f:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError as e:
            f.seek(0)
            pid = f.read().strip() or "?"
            raise UsageError(
                f"another meta_train (pid {pid}) is running on {savedir}; wait for it to finish, "
                "stop it, or use another --savedir"
            ) from e
        f.seek(0)
        f.truncate()
        f.write(f"{os.getpid()}\n")
        f.flush()
        yield


def discard_unused(savedir: str) -> None:
    """Remove a savedir that a refused or stopped run created and left with nothing but its lock and
    settings (no checkpoint, log or result); one another meta_train holds is left alone."""
    import fcntl
    import shutil

    try:
        if not set(os.listdir(savedir)) <= {"meta_train.lock", "config.json"}:
            return
        with open(os.path.join(savedir, "meta_train.lock"), "a+") as f:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
            shutil.rmtree(savedir)
    except OSError:  # held by another run, or already gone: nothing to tidy
        return


# Lines of TensorFlow's error messages that say where, not why.
NOISE = re.compile(r"^(Graph execution error:|Detected at node|File \"|Node: |Original stack trace|\[\[)")


def reason(e: BaseException) -> str:
    """The line of an error that says why (for TensorFlow's, e.g. "...; File too large", not its
    "Graph execution error:" header or the Python stack it appends)."""
    text = getattr(e, "message", None) or str(e)
    lines = [line.strip() for line in text.splitlines()]
    useful = [line for line in lines if line and not NOISE.match(line)]
    if not useful:
        return type(e).__name__
    return re.sub(r"\s*\[\[\{\{node [^}]*\}\}\]\]", "", useful[-1]) or type(e).__name__


class Checkpoints:
    """savedir/ckpt/model-<iteration>.*, and TensorFlow's `checkpoint` file naming them relatively."""

    def __init__(self, savedir: str) -> None:
        self.dir = os.path.join(savedir, "ckpt")

    def steps(self) -> list[int]:
        """Iterations with a checkpoint, newest first (found by file name, not by the state file)."""
        names = os.listdir(self.dir) if os.path.isdir(self.dir) else []
        return sorted((int(m.group(1)) for n in names if (m := CKPT.match(n))), reverse=True)

    def path(self, step: int) -> str:
        return os.path.join(self.dir, f"model-{step}")

    def clean(self) -> None:
        """Remove what an interrupted save left behind (TensorFlow's *_temp folders, *.tmp files)."""
        import shutil

        for p in glob.glob(os.path.join(self.dir, "*_temp*")) + glob.glob(os.path.join(self.dir, "*.tmp*")):
            shutil.rmtree(p) if os.path.isdir(p) else os.remove(p)

    def save(self, saver: Saver, sess: Session, step: int, keep: set[int] = frozenset()) -> None:
        """Checkpoint iteration `step`, then keep the newest KEEP and those of `keep` (the best
        validated ones); a failed save changes nothing."""
        import tensorflow as tf

        try:
            saver.save(sess, self.path(step), write_meta_graph=False, write_state=False)
        except (tf.errors.OpError, OSError) as e:
            self.clean()
            kept = self.steps()
            raise UsageError(
                f"could not write the checkpoint of iteration {step} to {self.dir} ({reason(e)}); "
                f"free disk space and re-run the same command to resume "
                f"(kept: {', '.join(f'model-{s}' for s in kept) or 'no checkpoint'})"
            ) from e
        steps = self.steps()
        self.write_state([f"model-{s}" for s in reversed(steps[:KEEP])])
        for s in steps[KEEP:]:
            if s in keep:
                continue
            for p in glob.glob(glob.escape(self.path(s)) + ".*"):
                os.remove(p)

    def write_state(self, names: list[str]) -> None:
        """TensorFlow's `checkpoint` file (a CheckpointState text proto) naming `names`, oldest first,
        relative to the folder: the savedir can be moved or copied, and tf.train.latest_checkpoint
        reads them whether --savedir was relative or absolute. Written directly: TensorFlow's
        update_checkpoint_state is deprecated (it warned at every first checkpoint) and makes the
        names relative to the working directory when the folder is relative ("../../model-20")."""
        lines = [f"model_checkpoint_path: {json.dumps(names[-1])}"]
        lines += [f"all_model_checkpoint_paths: {json.dumps(n)}" for n in names]
        with atomic(os.path.join(self.dir, "checkpoint")) as tmp, open(tmp, "w") as f:
            f.write("\n".join(lines) + "\n")

    def trained(self) -> int:
        """The iteration of the newest checkpoint whose index can be read, 0 if none (no graph built)."""
        import tensorflow as tf

        for step in self.steps():
            try:
                tf.train.load_checkpoint(self.path(step))
            except (tf.errors.OpError, ValueError):
                continue
            return step
        return 0

    def restore(self, saver: Saver, sess: Session, only: int | None = None) -> str | None:
        """Restore the newest readable checkpoint (None if there is none); older ones are fallbacks.
        With `only`, that iteration's checkpoint or a UsageError."""
        import tensorflow as tf

        failed = []
        graph_vars = sess.graph.get_collection(tf.compat.v1.GraphKeys.GLOBAL_VARIABLES)
        if only is not None and only not in self.steps():
            raise UsageError(f"no checkpoint of iteration {only} in {self.dir}")
        for step in self.steps() if only is None else [only]:
            try:
                shapes = tf.train.load_checkpoint(self.path(step)).get_variable_to_shape_map()
                for v in graph_vars:  # Saver.restore does not compare shapes
                    name, shape = v.op.name, v.shape.as_list()
                    if name in shapes and shapes[name] != shape:
                        raise ValueError(
                            f"{name} has shape {shapes[name]} there, {shape} in this run's network"
                        )
                saver.restore(sess, self.path(step))
            except (tf.errors.OpError, ValueError) as e:
                failed.append(f"model-{step}: {reason(e)}")
                print(f"warning: cannot read checkpoint {self.path(step)} ({reason(e)})", file=sys.stderr)
                continue
            if failed and only is None:
                print(f"warning: using the older checkpoint {self.path(step)}", file=sys.stderr)
            return self.path(step)
        if failed:
            raise UsageError(
                f"no checkpoint in {self.dir} can be restored ({'; '.join(failed)}); were they written with "
                "these flags by this code? Use the training run's flags or another --savedir"
            )
        return None


# Checkpoint selection (spec 2.4, Q7): meta_train.log's validation lines, "iter N val acc M +- C"
# (the ID datasets pooled) and "iter N val ood acc M +- C" (the OOD ones, if they have a validation
# split). Rules: last, the newest checkpoint; id, the best ID accuracy; id+ood (the original's), the
# best sum of the two (of ID alone where no OOD accuracy was logged). Ties go to the earliest.
VAL_LINE = re.compile(r"^iter (\d+) val (ood )?acc (-?[\d.]+)", re.M)


def validation_scores(log_text: str, rule: str) -> dict[int, float]:
    """Iteration -> score under `rule` (id or id+ood), from the text of meta_train.log; a resumed run
    that validated an iteration again counts its last line."""
    acc: dict[str, dict[int, float]] = {"id": {}, "ood": {}}
    for it, ood, value in VAL_LINE.findall(log_text):
        acc["ood" if ood else "id"][int(it)] = float(value)
    if rule == "id":
        return acc["id"]
    if rule == "id+ood":
        return {it: a + acc["ood"].get(it, 0.0) for it, a in acc["id"].items()}
    raise ValueError(f"no score for rule {rule!r}")


def select_step(log_text: str, rule: str, available: list[int]) -> int | None:
    """The iteration whose checkpoint `rule` selects among `available` (None if none is there)."""
    if rule == "last":
        return max(available, default=None)
    scores = validation_scores(log_text, rule)
    candidates = sorted(it for it in scores if it in available)
    if not candidates:
        return None
    return max(candidates, key=lambda it: (scores[it], -it))


def best_steps(train_log: str) -> set[int]:
    """The iterations meta_train keeps for the selection rules: the best under id and under id+ood
    among all validated ones (whether their checkpoint exists or not yet)."""
    text = open(train_log).read() if os.path.exists(train_log) else ""
    out = set()
    for rule in ("id", "id+ood"):
        scores = validation_scores(text, rule)
        if scores:
            out.add(max(sorted(scores), key=lambda it: (scores[it], -it)))
    return out
