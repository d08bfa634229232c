"""A run's life, shared by the entry points (main.py: meta_train, meta_test, export; transfer.py:
src, tgt, select): its folder (settings in config.json, the lock, checkpoints and the selection
rules), the session, the training loop, evaluation with its progress, the result files, and what an
entry point's main() answers for each error.

Nothing here loses what a run wrote: checkpoints are named relative to their folder (a copied or
moved folder uses its own weights), the newest KEEP are kept across resumes, an unreadable newest
checkpoint falls back to an older one, a failed save leaves the previous ones as they were, and
result files are written whole or not at all. Messages name the folder by the entry point's own
flag (main.py's --savedir, transfer.py's --save_dir/--exp_name), passed in as `flag`.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import errno
import glob
import json
import math
import os
import re
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

import numpy as np

from cli import STOPPED
from data.files import atomic, read_json, resource

if TYPE_CHECKING:
    from tensorflow.compat.v1 import Graph, Session, Variable
    from tensorflow.compat.v1.train import Saver

    from results import Record

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
    """Bad flags or run folder; the message says what to do."""


class Stopped(Exception):
    """Ctrl-C: the message says where the run stopped and what was kept."""


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


LOCK = "meta_train.lock"  # the name main.py's savedirs always had; transfer.py's folders share it


@contextlib.contextmanager
def locked(savedir: str, flag: str = "--savedir", who: str = "meta_train") -> Iterator[None]:
    """Hold savedir/meta_train.lock: one training run (`who`) per folder. The kernel drops the lock
    when its process ends, however it ends, so a killed run's lock file does not block the next run."""
    import fcntl

    path = os.path.join(savedir, LOCK)
    with open(path, "a+") as f:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError as e:
            f.seek(0)
            pid = f.read().strip() or "?"
            raise UsageError(
                f"another {who} (pid {pid}) is running on {savedir}; wait for it to finish, "
                f"stop it, or use another {flag}"
            ) from e
        f.seek(0)
        f.truncate()
        f.write(f"{os.getpid()}\n")
        f.flush()
        yield


def discard_unused(savedir: str) -> None:
    """Remove a folder that a refused or stopped run created and left with nothing but its lock and
    settings (no checkpoint, log or result), and so each of its sub-folders (transfer.py's run_<r>);
    one another run holds is left alone."""
    import fcntl
    import shutil

    try:
        for sub in os.listdir(savedir):
            if os.path.isdir(os.path.join(savedir, sub)) and not os.path.islink(os.path.join(savedir, sub)):
                discard_unused(os.path.join(savedir, sub))
        left = set(os.listdir(savedir))
        if not left:
            os.rmdir(savedir)
        elif left <= {LOCK, "config.json"}:
            with open(os.path.join(savedir, LOCK), "a+") as f:
                fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
                shutil.rmtree(savedir)
    except OSError:  # held by another run, or already gone: nothing to tidy
        return


# Lines of TensorFlow's error messages that say where, or give advice of their own, not why (its
# "Hint: If you want to see a list of allocated tensors when OOM happens, ..." follows any failed
# write, a full disk's included).
NOISE = re.compile(
    r"^(Graph execution error:|Detected at node|File \"|Node: |Original stack trace|\[\[|Hint: |"
    r"\[Op:)"
)
# Words of the operating system's errors that say a resource ran out: a line holding one says why.
RESOURCES = ("No space left", "File too large", "Disk quota", "Read-only file system", "Permission denied")


def reason(e: BaseException) -> str:
    """The line of an error that says why (for TensorFlow's, e.g. "...; No space left on device",
    not its "Graph execution error:" header, the Python stack or the OOM hint it appends)."""
    text = getattr(e, "message", None) or str(e)
    lines = [line.strip() for line in text.splitlines()]
    useful = [line for line in lines if line and not NOISE.match(line)]
    if not useful:
        return type(e).__name__
    why = [line for line in useful if any(r in line for r in RESOURCES)]
    return re.sub(r"\s*\[\[\{\{node [^}]*\}\}\]\]", "", (why or useful)[-1]) or type(e).__name__


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


# ---------------------------------------------------------------------------------------------
# Settings of a transfer.py run (main.py's are read_config and check_settings above)


def check_config(folder: str, settings: dict, keys: tuple[str, ...], added: dict, flag: str) -> None:
    """Write folder/config.json, or, for a run with checkpoints, first check that its `keys` there
    equal `settings` (a config.json older than a setting holds `added`'s value for it). UsageError
    naming each that differs, or saying that config.json cannot be read."""
    path = os.path.join(folder, "config.json")
    if Checkpoints(folder).steps() and os.path.exists(path):
        fix = f"restore it from a copy of the folder, or start a new run with another {flag}"
        try:
            saved = read_json(path)
        except ValueError as e:
            raise UsageError(f"{e}; {fix}") from e
        if not isinstance(saved, dict):
            raise UsageError(f"{path} does not hold a run's settings (a JSON object); {fix}")
        saved = {**added, **saved}
        diff = [k for k in keys if saved.get(k) != settings.get(k)]
        if diff:
            there = ", ".join(f"{k} {saved.get(k)} there, {settings.get(k)} now" for k in diff)
            raise UsageError(
                f"{folder} was trained with other settings ({there}); use the same flags to resume, "
                f"or another {flag}"
            )
    write_json(path, settings)


# ---------------------------------------------------------------------------------------------
# Files


def write_json(path: str, obj: dict | list) -> None:
    """Write a JSON file whole or not at all."""
    with atomic(path) as tmp, open(tmp, "w") as f:
        json.dump(obj, f, indent=2)
        f.write("\n")


def save_result(path: str, record: Record, what: str) -> None:
    """results.write, or UsageError naming the file and saying that `what` was not saved."""
    from results import write

    try:
        write(path, record)
    except OSError as e:
        raise UsageError(f"could not write {path} ({resource(e)}): {what} was not saved") from e


def log(path: str, line: str) -> None:
    with open(path, "a") as f:
        f.write(line + "\n")


@contextlib.contextmanager
def building(what: str) -> Iterator[None]:
    """Say what is being built while it is built, and its time when done (graph building takes
    minutes for the larger settings on a CPU)."""
    print(f"building {what} ...", end=" ", flush=True)
    t0 = time.time()
    yield
    print(f"done in {time.time() - t0:.0f} s", flush=True)


# ---------------------------------------------------------------------------------------------
# Session


def session(graph: Graph, xla: bool = False) -> Session:
    """A session of `graph` whose run() is interruptible (Interruptible): Ctrl-C is felt within a
    fraction of a second even during a minute-long meta-test episode."""
    import tensorflow as tf

    config = tf.compat.v1.ConfigProto()
    config.gpu_options.allow_growth = True
    if xla or not tf.config.list_physical_devices("GPU"):
        # On a CPU, grappler's rewrites of the second-order graph cost ~25 s at start-up for a
        # few percent per iteration (bench/RESULTS.md); with XLA, XLA optimises the clusters
        # itself; on a GPU without XLA they are kept.
        config.graph_options.rewrite_options.disable_meta_optimizer = True
    return interruptible()(graph=graph, config=config)


def wait(done: threading.Event | None) -> None:
    """Wait for `done` in short interruptible waits. (Not Thread.join: a join that Ctrl-C interrupts
    marks the thread as ended while it still runs, in Python 3.11.)"""
    while done is not None and not done.wait(0.1):
        pass


_SESSION: list[type] = []  # the class below, made once TensorFlow is imported


def interruptible() -> type:
    """tf.compat.v1.Session whose run() does its work in a background thread while the main thread
    waits, so that KeyboardInterrupt reaches the main thread at once. The work Ctrl-C left running
    is finished by the next run() before it starts (a training step's update is whole when its
    checkpoint is written); close() leaves a session that is still working to the process's end."""
    if _SESSION:
        return _SESSION[0]
    import tensorflow as tf

    class Interruptible(tf.compat.v1.Session):
        busy: threading.Event | None = None  # set when the work in hand is done

        def run(
            self, fetches: Any, feed_dict: Any = None, options: Any = None, run_metadata: Any = None
        ) -> Any:
            wait(self.busy)
            out: dict[str, Any] = {}
            done = self.busy = threading.Event()

            def work() -> None:
                try:
                    out["value"] = tf.compat.v1.Session.run(self, fetches, feed_dict, options, run_metadata)
                except BaseException as e:  # raised in the main thread below
                    out["error"] = e
                finally:
                    done.set()

            threading.Thread(target=work, daemon=True).start()
            wait(done)
            if "error" in out:
                raise out["error"]
            return out["value"]

        def close(self) -> None:
            if self.busy is None or self.busy.is_set():
                super().close()

    _SESSION.append(Interruptible)
    return Interruptible


# ---------------------------------------------------------------------------------------------
# The training loop

# Divergence: the training loss against a uniform guess's, where every run starts.
WARN_GROWTH = 100  # a warning, once
STOP_GROWTH = 10_000  # a stop: logits of thousands; no run was seen to come back from this

Step = tuple[float, "float | None", dict[str, float]]  # loss, accuracy in [0, 1] (or None), other scalars
Lines = list[tuple[str, dict[str, float]]]  # a validation's lines, each with its TensorBoard scalars


@dataclasses.dataclass
class Loop:
    """What a training run passes to train(): its folder, counts and the parts that differ between
    runs (Meta-Dropout's and Bayesian TAML's meta-batch step and validation, MetaPerturb's source
    and target steps and periodic test). Steps count from 1."""

    folder: str
    flag: str  # the entry point's flag that names the folder (messages)
    log_name: str  # the training log in folder
    unit: str  # "iteration" or "step"
    label: str  # the log lines' first word ("iter", "step")
    total: int
    log_every: int
    save_every: int
    step: Callable[[int], Step]
    validate_every: int = 0
    validate: Callable[[int], Lines] | None = None
    validate_last: bool = True  # validate after the last step too
    save_validated: bool = True  # checkpoint every validated step (meta_test's --select candidates)
    keep: Callable[[], set[int]] = set  # steps whose checkpoints are kept beside the newest KEEP
    chance: float = 0.0  # a uniform guess's loss; 0: only a non-finite loss stops the run
    loss_name: str = "training loss"
    advice: str = ""  # what to do when the run diverges, before "Start again with another <flag>"

    @property
    def log_path(self) -> str:
        return os.path.join(self.folder, self.log_name)

    def validates(self, step: int) -> bool:
        return self.validate is not None and (
            step % self.validate_every == 0 or (self.validate_last and step == self.total)
        )


def resume(sess: Session, loop: Loop, saver: Saver, step_var: Variable) -> int:
    """Restore the folder's newest readable checkpoint (logged, and said on the terminal); the steps
    already done (0 for a new run, whose start is logged)."""
    latest = Checkpoints(loop.folder).restore(saver, sess)
    done = int(sess.run(step_var))
    if latest:
        ckpt = os.path.relpath(latest, loop.folder)
        log(loop.log_path, f"resumed from {loop.unit} {done} ({ckpt})")
        if done < loop.total:
            print(
                f"{loop.folder}: resuming from {loop.unit} {done} of {loop.total} ({ckpt}); for a new run, "
                f"stop this one (Ctrl-C) and use another {loop.flag}"
            )
    elif done == 0:
        log(loop.log_path, f"started: {loop.total} {loop.unit}s")
    return done


def train(sess: Session, loop: Loop, saver: Saver, step_var: Variable, start: int) -> None:
    """Run loop.step for steps start+1..total with a progress bar (loss and accuracy), a log line
    and TensorBoard scalars every loop.log_every steps and at the end, validation and checkpoints;
    a diverging loss is a warning, then a stop (UsageError); Ctrl-C saves the steps done and raises
    Stopped."""
    import tensorflow as tf
    from tqdm import tqdm

    ckpts = Checkpoints(loop.folder)
    with sess.graph.as_default():
        writer = tf.compat.v1.summary.FileWriter(loop.folder)

    def scalars(step: int, **values: float) -> None:
        summary = tf.compat.v1.Summary(
            value=[tf.compat.v1.Summary.Value(tag=k, simple_value=v) for k, v in values.items()]
        )
        writer.add_summary(summary, step)
        writer.flush()

    saved, window, warned = start, [], False
    bar = tqdm(total=loop.total, initial=start, unit=loop.unit[:4], dynamic_ncols=True)
    t0 = time.time()
    try:
        for step in range(start + 1, loop.total + 1):
            loss, acc, extra = loop.step(step)
            warned = diverging(loop, loss, step, saved, warned, bar) or warned
            window.append((loss, acc, extra))
            bar.update(1)
            bar.set_postfix(loss=f"{loss:.3f}", **({"acc": f"{100 * acc:.1f}"} if acc is not None else {}))
            if step % loop.log_every == 0 or step == loop.total:
                ml = float(np.mean([w[0] for w in window]))
                accs = [w[1] for w in window if w[1] is not None]
                ma = 100 * float(np.mean(accs)) if accs else None
                means = {k: float(np.mean([w[2][k] for w in window])) for k in window[0][2]}
                window = []
                acc_text = f" acc {ma:.2f}" if ma is not None else ""
                extra_text = "".join(f" {k} {v:.4f}" for k, v in means.items())
                log(
                    loop.log_path,
                    f"{loop.label} {step} loss {ml:.4f}{acc_text}{extra_text} ({time.time() - t0:.1f}s)",
                )
                train_acc = {"train_acc": ma} if ma is not None else {}
                scalars(step, train_loss=ml, **train_acc, **{f"train_{k}": v for k, v in means.items()})
            validated = loop.validates(step)
            if validated:
                for line, values in loop.validate(step):  # type: ignore[misc]
                    log(loop.log_path, line)
                    bar.write(line)
                    scalars(step, **values)
            if (validated and loop.save_validated) or step % loop.save_every == 0 or step == loop.total:
                ckpts.save(saver, sess, step, keep=loop.keep())
                saved = step
    except KeyboardInterrupt:
        bar.close()
        step = int(sess.run(step_var))  # the steps that were applied (the one in hand finishes first)
        if step > saved:
            ckpts.save(saver, sess, step)
        log(loop.log_path, f"stopped at {loop.unit} {step}")
        raise Stopped(f"stopped at {loop.unit} {step}; re-run the same command to resume") from None
    finally:
        bar.close()
        writer.close()


def diverging(loop: Loop, loss: float, step: int, saved: int, warned: bool, bar: Any) -> bool:
    """Whether a warning was given now: a loss WARN_GROWTH times a uniform guess's warns once, a
    non-finite one or STOP_GROWTH times stops the run (UsageError, logged)."""
    high = loop.chance > 0 and loss > WARN_GROWTH * loop.chance
    if math.isfinite(loss) and not high:
        return False
    guess = f" (a uniform guess's: {loop.chance:.2f})" if loop.chance > 0 else ""
    news = f"the {loop.loss_name} is {loss:.4g} at {loop.unit} {step}{guess}"
    if not math.isfinite(loss) or (loop.chance > 0 and loss > STOP_GROWTH * loop.chance):
        log(loop.log_path, f"stopped at {loop.unit} {step}: {news}")
        kept = (
            f"its checkpoints up to {loop.unit} {saved} are kept"
            if saved
            else "no checkpoint had been written"
        )
        raise UsageError(
            f"{news}: the run diverged and was stopped ({kept}). {loop.advice}Start again with another "
            f"{loop.flag}"
        )
    if warned:
        return False
    log(loop.log_path, f"warning: {news}")
    bar.write(
        f"warning: {news}: the run is probably diverging. {loop.advice}Start again with another {loop.flag}",
        file=sys.stderr,
    )
    return True


# ---------------------------------------------------------------------------------------------
# Evaluation


def evaluate(
    sess: Session,
    run: Callable[[Session, dict[str, np.ndarray], np.ndarray], np.ndarray],
    batches: Iterator[dict[str, np.ndarray]],
    n: int,
    seed: int,
    desc: str | None = None,
    leave: bool = True,
) -> np.ndarray:
    """Accuracies of the first n episodes of `batches` (prepared in the background), the noise of
    episode i seeded from (seed, i) alone (episode_seeds): the same whatever the meta-batch size; a
    progress bar when `desc` is given (cleared when done unless `leave`)."""
    from tqdm import tqdm

    from data.prefetch import Prefetcher

    accs: list[float] = []
    with Prefetcher(batches) as ahead, tqdm(total=n, desc=desc, disable=desc is None, leave=leave) as bar:
        while len(accs) < n:
            batch = next(ahead)
            out = run(sess, batch, episode_seeds(seed, len(accs), len(batch["xtr"])))
            accs.extend(out)
            bar.update(min(len(out), n - bar.n))
    return np.array(accs[:n])


def episode_seeds(seed: int, first: int, n: int) -> np.ndarray:
    """The noise seeds [n, 2] of episodes first..first+n-1 (their index in the file or in the sampled
    sequence), each from (seed, index) alone."""
    return np.stack(
        [np.random.default_rng([seed, 3, i]).integers(2**31 - 1, size=2) for i in range(first, first + n)]
    )


# ---------------------------------------------------------------------------------------------
# An entry point's main()


def entry(work: Callable[[list[str]], None]) -> int:
    """Run an entry point's command, work(made), where `made` collects the run folders the command
    creates; its exit status: 0; 2 with one line "error: ..." on stderr for bad flags, files or data
    (UsageError, DataError), an OSError (a full disk, a lost mount) or a TensorFlow error; 130 after
    Ctrl-C, with the Stopped message (where it stopped, what was kept). A refused or stopped run's
    new folders are removed if they hold nothing but their lock and settings."""
    made: list[str] = []
    code = 2
    try:
        code = status(work, made)
    finally:  # an error of no kind above (a traceback) too
        if code:
            for folder in made:
                discard_unused(folder)
    return code


def status(work: Callable[[list[str]], None], made: list[str]) -> int:
    """work(made)'s exit status (entry)."""
    from data import DataError

    try:
        work(made)
        return 0
    except (UsageError, DataError) as e:
        print(f"error: {e}", file=sys.stderr)
    except (Stopped, KeyboardInterrupt) as e:
        print(str(e) or "stopped; re-run the same command to start again", file=sys.stderr)
        return STOPPED
    except OSError as e:  # anything the checks did not foresee: a full disk, a lost mount, ...
        print(f"error: {resource(e)}", file=sys.stderr)
    except Exception as e:
        tf = sys.modules.get("tensorflow")
        if tf is None or not isinstance(e, tf.errors.OpError):
            raise
        print(f"error: TensorFlow: {reason(e)}", file=sys.stderr)
    return 2
