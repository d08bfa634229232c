"""Speed and memory of meta-training and meta-testing, against an idiomatic PyTorch reference.

For Omniglot 20-way 1-shot and miniImageNet 5-way 1-shot (meta-batch 4, 5 inner steps, the runfiles'
inner learning rates), MAML and Meta-Dropout, on synthetic inputs of the right shapes:

- meta-train seconds per iteration and meta-test seconds per episode (30 MC samples, one episode
  per run as in the runfiles), after warm-up, the median over repeats; peak resident memory;
- the same for bench/torch_ref.py (PyTorch, functional weights, autograd.grad(create_graph=True)),
  each measurement in a process of its own, with the same thread count, and our time over its time;
- floating-point operations of one iteration (TensorFlow's profiler over the built graph, cross-
  checked with PyTorch's FlopCounterMode) and the achieved rate next to a large TensorFlow matmul;
- with --levers, the speed levers of bench/RESULTS.md (dynamic shapes, broadcast biases, explicit
  batch norm, grappler, threads, oneDNN, XLA, input overlap, grouped convolutions for batched
  tasks) on the Omniglot 20-way 1-shot Meta-Dropout meta-train step.

Results go to bench/RESULTS.md (the generated blocks only; the text around them is kept).

    python bench/bench.py               # the full benchmark (~30 min on 2 cores)
    python bench/bench.py --levers      # the lever table (~15 min)
    python bench/bench.py --quick       # smaller shapes, few repeats: checks that it all runs
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import functools
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, replace
from typing import Any

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path[:0] = [ROOT]

from data.prefetch import Prefetcher  # noqa: E402

RESULTS = os.path.join(HERE, "RESULTS.md")
MC_SAMPLES = 30  # meta-test noise samples per inner step (the runfiles' --n_test_mc_samp)
Batch = dict[str, np.ndarray]


@dataclass(frozen=True)
class Config:
    """One benchmark setting: the runfiles' flags and the shape of a synthetic data split."""

    title: str
    hw: int
    channels: int
    filters: int
    way: int
    shot: int
    query: int
    metabatch: int
    inner_lr: float
    meta_lr: float
    n_steps: int
    split: tuple[int, int]  # classes, examples of the synthetic split episodes are drawn from

    @property
    def x_dim(self) -> int:
        return self.hw * self.hw * self.channels


CONFIGS = {
    # runfiles/*_omni_1shot.sh; the split has the size of Omniglot's train.npy ([4800, 20, 784]).
    "omni20": Config("Omniglot 20-way 1-shot", 28, 1, 64, 20, 1, 15, 4, 0.1, 3e-4, 5, (4800, 20)),
    # runfiles/*_mimgnet_1shot.sh; a small split (the real one is 3.3 GB: 64 classes x 600 images).
    "mimg5": Config("miniImageNet 5-way 1-shot", 84, 3, 32, 5, 1, 15, 4, 0.01, 1e-4, 5, (16, 32)),
}
MODELS = {"maml": "none", "metadrop": "metadrop"}  # model -> perturbation name (noise.py)


def quick(cfg: Config) -> Config:
    """A smaller version of a setting, to check the script quickly."""
    return replace(cfg, query=2, metabatch=2, n_steps=1, split=(cfg.way, cfg.shot + 2))


@dataclass(frozen=True)
class Options:
    """How the TensorFlow graph is built and run (the levers of bench/RESULTS.md)."""

    intra: int = 0  # intra-op threads (0: the thread count of the run)
    inter: int = 0  # inter-op threads (0: the thread count of the run)
    grappler: bool = False  # grappler's graph rewrites (main.py turns them off on CPU-only machines)
    xla: bool = False  # XLA auto-clustering of the whole graph (global_jit_level ON_1)
    onednn: bool = True  # TensorFlow's oneDNN kernels (TF_ENABLE_ONEDNN_OPTS)
    dynamic: bool = False  # placeholders [T, None, D], the episode size unknown (before static shapes)
    broadcast_bias: bool = False  # biases added by a broadcast `+ b` (before BiasAdd was adopted)
    explicit_bn: bool = False  # layers.explicit_batch_norm everywhere, not the FusedBatchNormV3 kernel
    prefetch: bool = True  # the next meta-batch is sampled in a background thread (data/prefetch.py)


@dataclass(frozen=True)
class Cell:
    """One measurement, run in a process of its own."""

    fw: str  # "tf" or "torch"
    config: str
    model: str
    mode: str  # "train" (meta-train iterations) or "test" (meta-test episodes)
    threads: int
    warmup: int
    repeats: int
    iters: int  # iterations per repeat
    quick: bool = False
    device: str = "cpu"
    options: Options = Options()


# ---------------------------------------------------------------- data


def synthetic_split(cfg: Config) -> np.ndarray:
    """Random float32 images [classes, examples, D] in [0, 1], every page touched."""
    rng = np.random.default_rng(0)
    return rng.random((*cfg.split, cfg.x_dim), dtype=np.float32)


def meta_batches(
    split: np.ndarray, cfg: Config, n_tasks: int, seed: int
) -> Iterator[tuple[Batch, np.ndarray]]:
    """Endless (meta-batch, noise seed) pairs, sampled as main.py samples them."""
    from data.episodes import sample_batch

    it = 0
    while True:
        rng = np.random.default_rng([seed, it])
        batch = sample_batch(split, n_tasks, cfg.way, cfg.shot, cfg.query, rng)
        yield batch, rng.integers(2**31 - 1, size=2)
        it += 1


def sample_seconds(split: np.ndarray, cfg: Config, n_tasks: int, n: int = 10) -> float:
    """Mean time to sample one meta-batch."""
    batches = meta_batches(split, cfg, n_tasks, seed=1)
    next(batches)
    t = time.perf_counter()
    for _ in range(n):
        next(batches)
    return (time.perf_counter() - t) / n


def timed(step: Callable[[], None], cell: Cell) -> dict[str, Any]:
    """First-call time, then median seconds per iteration over repeats, after warm-up."""
    t = time.perf_counter()
    step()
    first = time.perf_counter() - t
    for _ in range(cell.warmup - 1):
        step()
    per_iter = []
    for _ in range(cell.repeats):
        t = time.perf_counter()
        for _ in range(cell.iters):
            step()
        per_iter.append((time.perf_counter() - t) / cell.iters)
    return {"s_per_iter": statistics.median(per_iter), "repeats": per_iter, "first_s": first}


# ---------------------------------------------------------------- TensorFlow


def session_config(opt: Options, threads: int) -> Any:
    """The session's settings. Its thread pools are its own (use_per_session_threads; the intra-op
    pool only where TF_OVERRIDE_GLOBAL_THREADPOOL=1, as in the interleaved lever runs), so that
    sessions with other thread counts can share a process."""
    import tensorflow as tf

    config = tf.compat.v1.ConfigProto()
    config.intra_op_parallelism_threads = opt.intra or threads
    config.inter_op_parallelism_threads = opt.inter or threads
    config.use_per_session_threads = True
    config.graph_options.rewrite_options.disable_meta_optimizer = not opt.grappler
    if opt.xla:
        config.graph_options.optimizer_options.global_jit_level = tf.compat.v1.OptimizerOptions.ON_1
    return config


def dynamic_placeholders(cfg: Config, n_tasks: int) -> dict[str, Any]:
    """xtr/ytr/xte/yte of a meta-batch whose number of examples is left unknown (None)."""
    import tensorflow as tf

    return {
        k: tf.compat.v1.placeholder(
            tf.float32, [n_tasks, None, cfg.x_dim if k[0] == "x" else cfg.way], name=f"dynamic_{k}"
        )
        for k in ("xtr", "ytr", "xte", "yte")
    }


@contextlib.contextmanager
def graph_levers(opt: Options) -> Iterator[None]:
    """Swap in the layers a lever measures (the adopted ones' predecessors) while a graph is built."""
    import tensorflow as tf

    import model as model_module
    import noise
    from layers import explicit_batch_norm

    def conv2d(x: Any, w: Any, b: Any) -> Any:
        return tf.nn.conv2d(x, w, strides=1, padding="SAME") + b

    def dense(x: Any, w: Any, b: Any) -> Any:
        return tf.matmul(x, w) + b

    swaps = [(model_module, "batch_norm", explicit_batch_norm)] if opt.explicit_bn else []
    if opt.broadcast_bias:
        swaps += [(m, "conv2d", conv2d) for m in (model_module, noise)]
        swaps += [(m, "dense", dense) for m in (model_module, noise)]
    saved = [(m, name, getattr(m, name)) for m, name, _ in swaps]
    try:
        for m, name, f in swaps:
            setattr(m, name, f)
        yield
    finally:
        for m, name, f in saved:
            setattr(m, name, f)


def tf_build(cfg: Config, model: str, mode: str, opt: Options) -> dict[str, Any]:
    """The meta-train step (mode "train") or the meta-test accuracy ("test") as a graph."""
    import tensorflow as tf

    import noise
    from model import Arch, Model

    graph = tf.Graph()
    with graph.as_default(), graph_levers(opt):
        tf.compat.v1.set_random_seed(0)
        arch = Arch(hw=cfg.hw, channels=cfg.channels, filters=cfg.filters, way=cfg.way)
        m = Model(arch, noise.get(MODELS[model]), cfg.inner_lr, cfg.n_steps)
        n_tasks = cfg.metabatch if mode == "train" else 1
        if opt.dynamic:
            ph = dynamic_placeholders(cfg, n_tasks)
        else:
            ph = m.placeholders(n_tasks, cfg.shot, cfg.query, mode)
        if mode == "train":
            loss, _ = m.meta_batch(ph, 1)  # one noise sample when meta-training (Section 3.1)
            fetch = [m.train_op(loss, cfg.meta_lr, tf.compat.v1.train.get_or_create_global_step()), loss]
        else:
            fetch = [m.meta_batch(ph, MC_SAMPLES)[1]]
        init = tf.compat.v1.global_variables_initializer()
    return {"graph": graph, "model": m, "ph": ph, "fetch": fetch, "init": init, "n_tasks": n_tasks}


def tf_session(g: dict[str, Any], opt: Options, threads: int) -> Any:
    """A session with the graph's variables initialised."""
    import tensorflow as tf

    sess = tf.compat.v1.Session(graph=g["graph"], config=session_config(opt, threads))
    sess.run(g["init"])
    return sess


def tf_step(sess: Any, g: dict[str, Any], source: Iterator[tuple[Batch, np.ndarray]], **run: Any) -> None:
    """One run of the graph on the next meta-batch (`run`: more arguments of Session.run)."""
    batch, seed = next(source)
    feed = {g["ph"][k]: batch[k] for k in g["ph"]}
    feed[g["model"].noise_seed] = seed
    out = sess.run(g["fetch"], feed, **run)
    if not np.isfinite(np.sum(out[-1])):
        raise FloatingPointError(f"non-finite output {out[-1]}")


def tf_cell(cell: Cell, cfg: Config) -> dict[str, Any]:
    t0 = time.perf_counter()
    g = tf_build(cfg, cell.model, cell.mode, cell.options)
    build = time.perf_counter() - t0
    split = synthetic_split(cfg)
    batches = meta_batches(split, cfg, g["n_tasks"], seed=0)
    with (
        tf_session(g, cell.options, cell.threads) as sess,
        Prefetcher(batches, depth=2) if cell.options.prefetch else _Inline(batches) as source,
    ):
        result = timed(lambda: tf_step(sess, g, source), cell)
    result["build_s"] = build
    result["sample_s"] = sample_seconds(split, cfg, g["n_tasks"])
    return result


def tf_interleaved(spec: dict[str, Any]) -> dict[str, Any]:
    """Variants of the meta-train step in one process (each its own graph, session and thread
    pools), their iterations interleaved round after round, so that the machine's load (shared
    here) weighs on all alike. Per variant: the median seconds per iteration and the median over
    rounds of (baseline time / variant time), the baseline being the first variant."""
    cfg = quick(CONFIGS[spec["config"]]) if spec["quick"] else CONFIGS[spec["config"]]
    split = synthetic_split(replace(cfg, split=(max(cfg.way, 100), cfg.split[1])))
    steps = {}
    with contextlib.ExitStack() as stack:
        for name, o in spec["variants"].items():
            opt = Options(**o)
            t = time.perf_counter()
            g = tf_build(cfg, spec["model"], "train", opt)
            build = time.perf_counter() - t
            sess = stack.enter_context(tf_session(g, opt, spec["threads"]))
            batches = meta_batches(split, cfg, g["n_tasks"], seed=0)
            source = stack.enter_context(Prefetcher(batches, depth=2) if opt.prefetch else _Inline(batches))
            steps[name] = (functools.partial(tf_step, sess, g, source), build)
        return interleave(steps, spec["rounds"])


def interleave(steps: dict[str, tuple[Callable[[], float | None], float]], rounds: int) -> dict[str, Any]:
    """Time each step once (the first call), then once per round in a rotating order."""
    times: dict[str, list[float]] = {name: [] for name in steps}
    out: dict[str, Any] = {}
    for name, (step, build) in steps.items():
        t = time.perf_counter()
        step()
        out[name] = {"first_s": time.perf_counter() - t, "build_s": build}
    names = list(steps)
    for r in range(rounds):
        for name in names[r % len(names) :] + names[: r % len(names)]:
            t = time.perf_counter()
            reported = steps[name][0]()
            times[name].append(reported if reported is not None else time.perf_counter() - t)
    base = times[names[0]]
    for name, ts in times.items():
        out[name].update(
            s_per_iter=statistics.median(ts),
            speedup=statistics.median(b / v for b, v in zip(base, ts)),
            times=ts,
        )
    return out


def worker(spec: dict[str, Any]) -> None:
    """A meta-train step (TensorFlow, or PyTorch where spec["fw"] says "torch") kept ready in this
    process: "step" on stdin runs one and answers its time."""
    opt = Options(**spec["options"])
    cfg = quick(CONFIGS[spec["config"]]) if spec["quick"] else CONFIGS[spec["config"]]
    split = synthetic_split(replace(cfg, split=(max(cfg.way, 100), cfg.split[1])))
    batches = meta_batches(split, cfg, cfg.metabatch, seed=0)
    with contextlib.ExitStack() as stack:
        source = stack.enter_context(Prefetcher(batches, depth=2))
        t = time.perf_counter()
        if spec.get("fw") == "torch":
            import torch

            torch.set_num_threads(spec["threads"])
            step = torch_step(cfg, spec["model"], "train", "cpu", source)
        else:
            g = tf_build(cfg, spec["model"], "train", opt)
            sess = stack.enter_context(tf_session(g, opt, spec["threads"]))
            step = functools.partial(tf_step, sess, g, source)
        print(f"READY {time.perf_counter() - t}", flush=True)
        for line in sys.stdin:
            if line.strip() != "step":
                break
            t = time.perf_counter()
            step()
            print(f"TIME {time.perf_counter() - t}", flush=True)
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print("RESULT " + json.dumps({"peak_rss_mib": rss}), flush=True)


def paired_processes(specs: dict[str, tuple[dict[str, Any], Options]], rounds: int) -> dict[str, Any]:
    """Variants that need a process of their own (environment flags): all started and kept ready
    at once, then stepped in turn as in `interleave`. A variant whose process dies is reported so."""
    procs: dict[str, subprocess.Popen] = {}
    steps = {}
    errors: dict[str, str] = {}

    def ask(name: str) -> float | None:
        proc = procs[name]
        if name in errors:
            return float("nan")
        proc.stdin.write("step\n")
        proc.stdin.flush()
        line = proc.stdout.readline()
        if not line.startswith("TIME "):
            errors[name] = f"the process ended (exit status {proc.wait()})"
            return float("nan")
        return float(line.split()[1])

    for name, (spec, opt) in specs.items():
        env = child_env(opt)
        cmd = [
            sys.executable,
            os.path.abspath(__file__),
            "--worker",
            json.dumps({**spec, "options": asdict(opt)}),
        ]
        t = time.perf_counter()
        proc = subprocess.Popen(cmd, env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        procs[name] = proc
        line = proc.stdout.readline()
        if not line.startswith("READY "):
            errors[name] = f"it failed to start (exit status {proc.wait()})"
        print(f"  worker {name}: ready after {time.perf_counter() - t:.0f} s", flush=True)
        steps[name] = (functools.partial(ask, name), float(line.split()[1]) if name not in errors else 0.0)
    out = interleave(steps, rounds)
    for name, proc in procs.items():
        if name in errors:
            out[name] = {"error": errors[name]}
            continue
        proc.stdin.write("quit\n")
        proc.stdin.flush()
        rest = proc.stdout.read().splitlines()
        proc.wait()
        out[name].update(json.loads(next(x for x in rest if x.startswith("RESULT "))[len("RESULT ") :]))
    return out


class _Inline:
    """The same interface as Prefetcher, sampling on the caller's thread (no overlap)."""

    def __init__(self, items: Iterator[Any]) -> None:
        self.items = items

    def __next__(self) -> Any:
        return next(self.items)

    def __enter__(self) -> _Inline:
        return self

    def __exit__(self, *exc: object) -> None:
        return None


# ---------------------------------------------------------------- PyTorch


def torch_cell(cell: Cell, cfg: Config) -> dict[str, Any]:
    import torch

    torch.set_num_threads(cell.threads)
    n_tasks = cfg.metabatch if cell.mode == "train" else 1
    split = synthetic_split(cfg)
    batches = meta_batches(split, cfg, n_tasks, seed=0)
    with Prefetcher(batches, depth=2) if cell.options.prefetch else _Inline(batches) as source:
        result = timed(torch_step(cfg, cell.model, cell.mode, cell.device, source), cell)
    result["sample_s"] = sample_seconds(split, cfg, n_tasks)
    result["torch_threads"] = torch.get_num_threads()
    return result


def torch_step(
    cfg: Config, model: str, mode: str, device: str, source: Iterator[tuple[Batch, np.ndarray]]
) -> Callable[[], None]:
    """One meta-train iteration or meta-test episode of the PyTorch reference, on the next batch."""
    import torch

    from bench.torch_ref import TorchMetaDrop, as_torch

    dev = torch.device(device)
    ref = TorchMetaDrop(
        cfg.hw,
        cfg.channels,
        cfg.filters,
        cfg.way,
        noise=model == "metadrop",
        inner_lr=cfg.inner_lr,
        n_steps=cfg.n_steps,
        meta_lr=cfg.meta_lr,
        device=dev,
    )

    def step() -> None:
        batch = {k: v.to(dev) for k, v in as_torch(next(source)[0]).items()}
        if mode == "train":
            loss, _ = ref.train_step(batch)
            if not np.isfinite(loss):
                raise FloatingPointError(f"non-finite loss {loss}")
        else:
            ref.evaluate(batch, MC_SAMPLES)
        if dev.type == "cuda":
            torch.cuda.synchronize()

    return step


# ---------------------------------------------------------------- FLOPs and the ceiling


def forward_flops(cfg: Config, model: str, n_images: int) -> int:
    """Analytic FLOPs (2 per multiply-add) of the convolutions and dense layers of one forward pass."""
    side, macs = cfg.hw, 0
    for l in range(4):
        cin = cfg.channels if l == 0 else cfg.filters
        macs += side * side * 9 * cin * cfg.filters * (2 if model == "metadrop" else 1)
        side //= 2
    feat = side * side * cfg.filters
    macs += feat * (cfg.way + (1 if model == "metadrop" else 0))
    return 2 * macs * n_images


def tf_flops(cfg: Config, model: str, mode: str) -> int:
    """Float operations of the built graph, by TensorFlow's profiler (it needs static shapes)."""
    import tensorflow as tf

    g = tf_build(cfg, model, mode, Options())
    opts = tf.compat.v1.profiler.ProfileOptionBuilder.float_operation()
    opts["output"] = "none"
    return int(tf.compat.v1.profiler.profile(g["graph"], options=opts).total_float_ops)


def torch_flops(cfg: Config, model: str, mode: str) -> int:
    """FLOPs PyTorch's FlopCounterMode sees in one step (convolutions and matmuls, all orders)."""
    from torch.utils.flop_counter import FlopCounterMode

    from bench.torch_ref import TorchMetaDrop, as_torch

    ref = TorchMetaDrop(
        cfg.hw, cfg.channels, cfg.filters, cfg.way, model == "metadrop", cfg.inner_lr, cfg.n_steps
    )
    n_tasks = cfg.metabatch if mode == "train" else 1
    batch = as_torch(
        next(meta_batches(synthetic_split(replace(cfg, split=(cfg.way, 20))), cfg, n_tasks, 0))[0]
    )
    with FlopCounterMode(display=False) as counter:
        if mode == "train":
            ref.train_step(batch)
        else:
            ref.evaluate(batch, MC_SAMPLES)
    return int(counter.get_total_flops())


def grouped_probe(threads: int, quick: bool) -> dict[str, Any]:
    """The building block of a batched-tasks graph: the 4 tasks' convolutions as one grouped
    convolution (task t = channel group t, its adapted kernel in filter group t) against 4 separate
    convolutions, at the shape of Omniglot's second conv block (14 x 14 x 64) on the support set (20
    images) and the query set (300), forward, with first-order gradients (kernel and input) and with
    the second-order gradient an inner loop needs. Seconds (median of 3) or the error message."""
    import tensorflow as tf

    n_tasks, side, c = 4, 14, 64
    rng = np.random.default_rng(0)
    out: dict[str, Any] = {}
    for n in (20, 30) if quick else (20, 300):
        graph = tf.Graph()
        with graph.as_default():
            # Variables, not constants: the session would fold a constant graph once and for all.
            xs = [tf.Variable(rng.random((n, side, side, c), dtype=np.float32)) for _ in range(n_tasks)]
            ws = [tf.Variable(rng.standard_normal((3, 3, c, c), dtype=np.float32)) for _ in range(n_tasks)]
            xg, wg = tf.concat(xs, axis=3), tf.concat(ws, axis=3)
            ys = [tf.nn.conv2d(x, w, 1, "SAME") for x, w in zip(xs, ws)]
            yg = tf.nn.conv2d(xg, wg, 1, "SAME")

            def grads(y: list, w: list, x: list) -> tuple[list, list]:
                first = tf.gradients([tf.reduce_sum(tf.square(v)) for v in y], w + x)
                second = tf.gradients(tf.add_n([tf.reduce_sum(tf.square(g)) for g in first[: len(w)]]), w + x)
                return first, second

            sep, grp = grads(ys, ws, xs), grads([yg], [wg], [xg])
            fetches = {
                "forward": (ys, yg),
                "forward+backward": (sep[0], grp[0]),
                "second order": (sep[1], grp[1]),
            }
            init = tf.compat.v1.global_variables_initializer()
            with tf.compat.v1.Session(config=session_config(Options(), threads)) as sess:
                sess.run(init)
                for what, pair in fetches.items():
                    for kind, fetch in zip(("separate", "grouped"), pair):
                        try:
                            sess.run(fetch)
                            times = []
                            for _ in range(3):
                                t = time.perf_counter()
                                sess.run(fetch)
                                times.append(time.perf_counter() - t)
                            out[f"{n} {what} {kind}"] = statistics.median(times)
                        except tf.errors.OpError as e:
                            out[f"{n} {what} {kind}"] = e.message.splitlines()[0][:160]
    return out


def tf_ceiling(threads: int, n: int = 4096, repeats: int = 5) -> dict[str, float]:
    """GFLOP/s of an n x n float32 matmul in TensorFlow: median and best of repeats."""
    import tensorflow as tf

    graph = tf.Graph()
    with graph.as_default():
        a = tf.Variable(tf.random.uniform([n, n]))
        b = tf.Variable(tf.random.uniform([n, n]))
        prod = tf.reduce_sum(tf.matmul(a, b))
        with tf.compat.v1.Session(config=session_config(Options(), threads)) as sess:
            sess.run(tf.compat.v1.global_variables_initializer())
            sess.run(prod)
            times = []
            for _ in range(repeats):
                t = time.perf_counter()
                sess.run(prod)
                times.append(time.perf_counter() - t)
    flops = 2 * n**3
    return {"median": flops / statistics.median(times) / 1e9, "best": flops / min(times) / 1e9}


# ---------------------------------------------------------------- where the time goes


def op_seconds(spec: dict[str, Any]) -> dict[str, Any]:
    """Seconds per op type in one Omniglot 20-way 1-shot Meta-Dropout meta-train step, after two
    warm-up steps. TensorFlow runs each op on one thread (intra-op 1, inter-op = threads), so its
    op-seconds are core-seconds; PyTorch runs one op at a time on all threads (self CPU time)."""
    cfg = quick(CONFIGS["omni20"]) if spec["quick"] else CONFIGS["omni20"]
    batches = meta_batches(synthetic_split(cfg), cfg, cfg.metabatch, seed=0)
    ops: dict[str, float] = {}
    if spec["fw"] == "torch":
        import torch
        from torch.profiler import ProfilerActivity, profile

        torch.set_num_threads(spec["threads"])
        step = torch_step(cfg, "metadrop", "train", "cpu", batches)
        step(), step()
        with profile(activities=[ProfilerActivity.CPU]) as prof:
            step()
        for e in prof.key_averages():
            if e.key.startswith("aten::"):
                ops[e.key[len("aten::") :]] = e.self_cpu_time_total / 1e6
        return {"ops": ops}
    import tensorflow as tf

    opt = Options(intra=1, inter=spec["threads"])
    g = tf_build(cfg, "metadrop", "train", opt)
    with tf_session(g, opt, spec["threads"]) as sess:
        tf_step(sess, g, batches), tf_step(sess, g, batches)
        meta = tf.compat.v1.RunMetadata()
        trace = tf.compat.v1.RunOptions(trace_level=tf.compat.v1.RunOptions.FULL_TRACE)
        tf_step(sess, g, batches, options=trace, run_metadata=meta)
    for node in (n for d in meta.step_stats.dev_stats for n in d.node_stats):
        if " = " in node.timeline_label:  # "name = Type(inputs)"
            kind = node.timeline_label.split(" = ")[1].split("(")[0].replace("_MklNative", "")
            ops[kind] = ops.get(kind, 0.0) + node.all_end_rel_micros / 1e6
    return {"ops": ops}


def op_table(ops: dict[str, float], n: int = 14) -> list[tuple[str, float, float]]:
    """The n costliest op types (name, seconds, share of the total), then the rest as one row."""
    total = sum(ops.values())
    top = sorted(ops.items(), key=lambda kv: -kv[1])[:n]
    rest = total - sum(v for _, v in top)
    return [(k, v, v / total) for k, v in top] + [("(all other ops)", rest, rest / total)]


def profile(args: argparse.Namespace) -> str:
    """The 2x target measured paired (TensorFlow and PyTorch steps alternating, in two processes
    kept ready, so that a change in the machine's speed weighs on both), and where the time goes."""
    load0 = os.getloadavg()[0]
    threads, rounds = args.threads[0], 2 if args.quick else args.rounds
    base = {"config": "omni20", "model": "metadrop", "threads": threads, "quick": args.quick}
    print("paired steps", flush=True)
    pair = paired_processes(
        {"TF": ({**base, "fw": "tf"}, Options()), "PT": ({**base, "fw": "torch"}, Options())}, rounds
    )
    print("op profiles", flush=True)
    ops = {
        fw: run_child({"kind": "ops", "fw": fw, "threads": threads, "quick": args.quick})
        for fw in ("tf", "torch")
    }
    lines = header(args, [load0, os.getloadavg()[0]])
    tf_s, pt_s = (pair[k].get("s_per_iter") for k in ("TF", "PT"))
    ratio = pair["PT"].get("speedup")  # the median over rounds of TF time / PT time
    lines += [
        f"{CONFIGS['omni20'].title}, Meta-Dropout, meta-train step, {threads} threads for both frameworks:"
        f" {rounds} rounds, each one TensorFlow step then one PyTorch step, in two processes kept ready.",
        "",
        "| TF s / step (median) | PT s / step (median) | TF/PT (median over rounds) | 2x target (<= 0.5) |",
        "|---|---|---|---|",
        f"| {fmt(tf_s, 3)} | {fmt(pt_s, 3)} | {fmt(ratio)} | {'met' if ratio and ratio <= 0.5 else 'not met'}"
        " |",
        "",
        "Where the time goes in one step: seconds per op type. TensorFlow: each op on one thread"
        f" (intra-op 1, inter-op {threads}), so the seconds are core-seconds and sum to about {threads}x"
        " the step; PyTorch: self CPU time of its aten ops, run one at a time on all threads.",
        "",
    ]
    tables = {fw: op_table(r.get("ops", {})) for fw, r in ops.items()}
    lines += ["| TensorFlow op | s | share | PyTorch op | s | share |", "|---|---|---|---|---|---|"]
    for (a, sa, pa), (b, sb, pb) in zip(tables["tf"], tables["torch"]):
        lines.append(f"| {a} | {sa:.3f} | {100 * pa:.0f}% | {b} | {sb:.3f} | {100 * pb:.0f}% |")
    totals = {fw: sum(r.get("ops", {}).values()) for fw, r in ops.items()}
    lines += ["", f"Totals: TensorFlow {totals['tf']:.2f} core-s, PyTorch {totals['torch']:.2f} s."]
    return "\n".join(lines)


# ---------------------------------------------------------------- processes


def child(spec: dict[str, Any]) -> dict[str, Any]:
    """Run one measurement in this process; the result carries its peak resident memory."""
    load0 = os.getloadavg()[0]
    kind = spec["kind"]
    if kind in ("tf", "torch"):
        opts = Options(**spec.pop("options"))
        cell = Cell(**{k: v for k, v in spec.items() if k != "kind"}, fw=kind, options=opts)
        cfg = quick(CONFIGS[cell.config]) if cell.quick else CONFIGS[cell.config]
        out = (tf_cell if kind == "tf" else torch_cell)(cell, cfg)
    elif kind == "flops":
        cfg = quick(CONFIGS[spec["config"]]) if spec["quick"] else CONFIGS[spec["config"]]
        fn = tf_flops if spec["fw"] == "tf" else torch_flops
        out = {"flops": fn(cfg, spec["model"], spec["mode"])}
    elif kind == "interleaved":
        out = {"variants": tf_interleaved(spec)}
    elif kind == "grouped":
        out = {"probe": grouped_probe(spec["threads"], spec["quick"])}
    elif kind == "ops":
        out = op_seconds(spec)
    elif kind == "ceiling":
        out = tf_ceiling(spec["threads"], n=1024 if spec["quick"] else 4096)
    else:
        raise ValueError(f"unknown measurement kind {kind!r}")
    out["peak_rss_mib"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    out["load"] = [load0, os.getloadavg()[0]]
    return out


def child_env(options: Options | None) -> dict[str, str]:
    """The environment of a measuring process: the process-wide levers are set here."""
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", PYTHONPATH=ROOT, TF_OVERRIDE_GLOBAL_THREADPOOL="1")
    if options is not None:
        env["TF_ENABLE_ONEDNN_OPTS"] = "1" if options.onednn else "0"
        if options.xla:  # auto-clustering on CPU must be switched on by flag
            env["TF_XLA_FLAGS"] = "--tf_xla_cpu_global_jit"
    return env


def run_child(spec: dict[str, Any], options: Options | None = None, timeout: float = 1800) -> dict[str, Any]:
    """One measurement in a fresh process (its own thread pools and memory high-water mark)."""
    env = child_env(options)
    if options is not None:
        spec = {**spec, "options": asdict(options)}
    cmd = [sys.executable, os.path.abspath(__file__), "--child", json.dumps(spec)]
    label = " ".join(f"{k}={v}" for k, v in spec.items() if k in ("kind", "fw", "config", "model", "mode"))
    print(f"  {label} ...", end="", flush=True)
    t = time.perf_counter()
    try:
        proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        print(f" timed out after {timeout:.0f} s")
        return {"error": f"timed out after {timeout:.0f} s"}
    lines = [line for line in proc.stdout.splitlines() if line.startswith("RESULT ")]
    if proc.returncode != 0 or not lines:
        tail = proc.stderr.strip().splitlines()[-3:]
        print(f" failed: {' | '.join(tail)}")
        return {"error": tail[-1] if tail else f"exit status {proc.returncode}"}
    out = json.loads(lines[-1][len("RESULT ") :])
    out["wall_s"] = time.perf_counter() - t
    shown = {k: round(v, 4) for k, v in out.items() if isinstance(v, float)}
    print(f" {shown}")
    return out


# ---------------------------------------------------------------- report


def machine() -> dict[str, str]:
    import importlib.metadata as md

    cpu = platform.processor()
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    mem = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    versions = {}
    for pkg in ("tensorflow-cpu", "tensorflow", "torch", "numpy"):
        try:
            versions[pkg] = md.version(pkg)
        except md.PackageNotFoundError:
            continue
    return {
        "cpu": f"{cpu}, {os.cpu_count()} logical cores, {mem:.0f} GiB memory",
        "software": f"Python {platform.python_version()}, "
        + ", ".join(f"{k} {v}" for k, v in versions.items()),
        "os": platform.platform(),
    }


def fmt(x: float | None, digits: int = 2) -> str:
    return "-" if x is None else f"{x:.{digits}f}"


def replace_block(text: str, name: str, body: str) -> str:
    """`text` with the generated block `name` set to `body` (appended if it is not there yet)."""
    begin, end = f"<!-- {name}: generated by bench/bench.py -->", f"<!-- /{name} -->"
    block = f"{begin}\n{body.rstrip()}\n{end}"
    if begin in text and end in text:
        return text[: text.index(begin)] + block + text[text.index(end) + len(end) :]
    return text.rstrip() + "\n\n" + block + "\n"


def write_results(path: str, name: str, body: str) -> None:
    """Replace one generated block of the results file, atomically."""
    text = open(path).read() if os.path.exists(path) else "# Benchmark results\n"
    tmp = f"{path}.tmp{os.getpid()}"
    with open(tmp, "w") as f:
        f.write(replace_block(text, name, body))
    os.replace(tmp, path)


def header(args: argparse.Namespace, load: list[float]) -> list[str]:
    m = machine()
    now = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC")
    return [
        f"Run {now}: `python bench/bench.py {' '.join(args.argv)}`",
        "",
        f"- Machine: {m['cpu']}; {m['os']}",
        f"- Software: {m['software']}",
        f"- Threads: {' and '.join(map(str, args.threads))}, the same for both frameworks (TensorFlow:"
        " intra- and inter-op pools of that size; PyTorch: torch.set_num_threads)",
        f"- Load average (1 min) at the start / end: {load[0]:.2f} / {load[1]:.2f}"
        + " (other processes share these cores)",
        "- GPU rows: not measured, no GPU available in this session.",
        "",
    ]


# ---------------------------------------------------------------- main runs


def cell_spec(
    fw: str, config: str, model: str, mode: str, threads: int, args: argparse.Namespace
) -> dict[str, Any]:
    """A measurement: the first call (graph optimisation, caches) is the warm-up, then single-step
    repeats (an Omniglot meta-train step takes seconds here, PyTorch's up to a minute under load)."""
    return {
        "kind": fw,
        "config": config,
        "model": model,
        "mode": mode,
        "threads": threads,
        "warmup": 1,
        "repeats": 2 if args.quick else args.repeats,
        "iters": 1,
        "quick": args.quick,
        "device": args.device,
    }


def passes(cfg: Config, model: str, mode: str) -> int:
    """Images through the network (forward) in one meta-train iteration or meta-test episode; MAML
    has no noise, so its meta-test adapts on one copy of the support set."""
    if mode == "train":
        return cfg.metabatch * (cfg.n_steps * cfg.way * cfg.shot + cfg.way * cfg.query)
    samples = MC_SAMPLES if model == "metadrop" else 1
    return cfg.n_steps * samples * cfg.way * cfg.shot + cfg.way * cfg.query


def benchmark(args: argparse.Namespace) -> str:
    load0 = os.getloadavg()[0]
    proposed = Options(**dict.fromkeys(args.tf_options, True))
    # (column, measurement kind, options): TensorFlow as main.py builds it, with the proposed graph
    # levers (--tf_options), and the PyTorch reference.
    columns = [("TF", "tf", Options())]
    columns += [("TF+", "tf", proposed)] if args.tf_options else []
    columns += [("PT", "torch", Options())]
    cells = [(c, m, mode) for c in args.configs for m in args.models for mode in ("train", "test")]
    flops: dict[tuple[str, str, str], dict[str, int | None]] = {}
    for config, model, mode in cells:
        spec = {"kind": "flops", "config": config, "model": model, "mode": mode, "quick": args.quick}
        flops[config, model, mode] = {
            fw: run_child({**spec, "fw": fw}).get("flops") for fw in ("tf", "torch")
        }
    ceiling, results = {}, {}
    for i, threads in enumerate(args.threads):
        ceiling[threads] = run_child({"kind": "ceiling", "threads": threads, "quick": args.quick}, Options())
        for config, model, mode in cells:
            if i > 0 and mode != "train":  # further thread counts: meta-train only
                continue
            for col, kind, opt in columns:
                spec = cell_spec(kind, config, model, mode, threads, args)
                results[threads, config, model, mode, col] = run_child(spec, opt)
    load1 = os.getloadavg()[0]
    lines = header(args, [load0, load1])
    lines += [
        "- TF: the graph of main.py as it is (model.Model, grappler off)."
        + (
            f" TF+: the same with {', '.join(args.tf_options)} (see the levers below)."
            if args.tf_options
            else ""
        ),
        "",
        "Meta-train: seconds per iteration (meta-batch 4, 5 second-order inner steps with one noise sample,"
        f" Adam). Meta-test: seconds per episode ({MC_SAMPLES} noise samples per inner step, one episode per"
        " run, as the runfiles do). Synthetic inputs; median of the repeats after a warm-up call; each"
        " measurement in a process of its own; the thread counts after the first: meta-train only."
        " X/PT = our time over PyTorch's (0.5 or less meets the 2x target). GFLOP/s: TensorFlow's graph"
        " count over the time. Peak RSS: the process's high-water mark; Omniglot processes hold a"
        " [4800, 20, 784] float32 split (0.3 GB) as the real data would, miniImageNet ones a small split"
        " (the real train split adds 3.3 GB). Load: the 1-minute load average as the measurement began.",
        "",
        "| threads | setting | model | phase | "
        + " | ".join(f"{c} s" for c, _, _ in columns)
        + " | "
        + " | ".join(f"{c}/PT" for c, _, _ in columns[:-1])
        + " | TF GFLOP/s | PT GFLOP/s | TF % of ceiling | peak RSS "
        + " / ".join(c for c, _, _ in columns)
        + " MiB | load "
        + " / ".join(c for c, _, _ in columns)
        + " |",
        "|---|---|---|---|" + "---|" * (2 * len(columns) - 1) + "---|---|---|---|---|",
    ]
    for threads in args.threads:
        peak = ceiling[threads].get("median")
        for config, model, mode in cells:
            if (threads, config, model, mode, "TF") not in results:
                continue
            res = [results[threads, config, model, mode, c] for c, _, _ in columns]
            secs = [r.get("s_per_iter") for r in res]
            ts, ps = secs[0], secs[-1]
            gflop = (flops[config, model, mode]["tf"] or 0) / 1e9 or None
            rate = gflop / ts if gflop and ts else None
            lines.append(
                f"| {threads} | {CONFIGS[config].title} | {model} | {mode} | "
                + " | ".join(fmt(x, 3) for x in secs)
                + " | "
                + " | ".join(fmt(x / ps if x and ps else None) for x in secs[:-1])
                + f" | {fmt(rate, 1)} | {fmt(gflop / ps if gflop and ps else None, 1)}"
                f" | {fmt(100 * rate / peak if rate and peak else None, 0)}"
                f" | {' / '.join(fmt(r.get('peak_rss_mib'), 0) for r in res)}"
                f" | {' / '.join(_load(r) for r in res)} |"
            )
            for (col, _, _), r in zip(columns, res):
                if "error" in r:
                    lines.append(
                        f"| {threads} | {CONFIGS[config].title} | {model} | {mode}"
                        f" | {col} failed: {r['error']} |"
                    )
    lines += [
        "",
        f"Ceiling: a {1024 if args.quick else 4096}^2 float32 matmul in TensorFlow, GFLOP/s (median / best of"
        " 5): "
        + ", ".join(
            f"{t} threads {fmt(ceiling[t].get('median'), 1)} / {fmt(ceiling[t].get('best'), 1)}"
            for t in args.threads
        )
        + ".",
        "",
        "FLOPs of one step: analytic forward passes (2 x multiply-adds of the convolutions and dense"
        " layers, every image through the network once per inner step and once for the query set);"
        " TensorFlow's profiler over the built graph (float_operation: convolutions and their"
        " gradients, matmuls, and the elementwise ops and reductions it has a count for); PyTorch's"
        " FlopCounterMode over one step (convolutions and matmuls, in all orders of differentiation).",
        "",
        "| setting | model | phase | images through the net | forward GFLOP | TF graph GFLOP | PyTorch GFLOP"
        " | TF graph / forward |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for config, model, mode in cells:
        cfg = quick(CONFIGS[config]) if args.quick else CONFIGS[config]
        n = passes(cfg, model, mode)
        fwd = forward_flops(cfg, model, n) / 1e9
        f = flops[config, model, mode]
        g_tf = f["tf"] / 1e9 if f["tf"] else None
        g_pt = f["torch"] / 1e9 if f["torch"] else None
        lines.append(
            f"| {CONFIGS[config].title} | {model} | {mode} | {n} | {fwd:.2f} | {fmt(g_tf)} | {fmt(g_pt)}"
            f" | {fmt(g_tf / fwd if g_tf else None, 1)} |"
        )
    samples = [
        f"{CONFIGS[c].title} {mode} {1000 * r['sample_s']:.1f} ms"
        for (t, c, m, mode, fw), r in results.items()
        if t == args.threads[0] and m == args.models[0] and fw == "TF" and "sample_s" in r
    ]
    lines += [
        "",
        "Sampling one meta-batch (done by the prefetch thread while the graph runs): "
        + ", ".join(samples)
        + ".",
    ]
    return "\n".join(lines)


def _load(r: dict[str, Any]) -> str:
    return f"{r['load'][0]:.1f}" if "load" in r else "-"


# Levers, measured on the Omniglot 20-way 1-shot Meta-Dropout meta-train step: (name, what changes,
# options). Why each was tried, and the verdicts, are in bench/RESULTS.md.
# In-process levers share one process, each variant with its own graph, session and thread pools.
IN_PROCESS_LEVERS: list[tuple[str, str, Options]] = [
    (
        "baseline",
        "main.py today: placeholders of known shape, BiasAdd, fused batch norm, 2+2 threads",
        Options(),
    ),
    ("baseline again", "nothing (an A/A control: the spread of the measurement itself)", Options()),
    ("dynamic shapes", "placeholders [T, None, D] (before static shapes)", Options(dynamic=True)),
    ("broadcast bias", "biases added by `+ b` (before BiasAdd was adopted)", Options(broadcast_bias=True)),
    (
        "explicit batch norm",
        "mean, squared deviations, rsqrt as separate ops (before FusedBatchNormV3 was adopted)",
        Options(explicit_bn=True),
    ),
    ("grappler on", "grappler's graph rewrites (main.py turns them off on CPU)", Options(grappler=True)),
    ("intra 2, inter 1", "one op at a time, each on both cores", Options(intra=2, inter=1)),
    ("intra 1, inter 2", "independent ops (e.g. the 4 tasks) side by side", Options(intra=1, inter=2)),
    ("intra 1, inter 1", "one core", Options(intra=1, inter=1)),
    ("no prefetch", "episodes sampled on the training thread between runs", Options(prefetch=False)),
]
# Process levers are switched by environment variables: one process each, all kept ready and
# stepped in turn (their memory adds up: about 3.5 GB each, 6.5 GB for XLA).
PROCESS_LEVERS: list[tuple[str, str, Options]] = [
    ("baseline (process)", "as baseline, in a process of its own", Options()),
    ("oneDNN off", "Eigen kernels instead of oneDNN (TF_ENABLE_ONEDNN_OPTS=0)", Options(onednn=False)),
    (
        "XLA",
        "auto-clustering of the whole graph (global_jit_level ON_1, --tf_xla_cpu_global_jit)",
        Options(xla=True),
    ),
]


def levers(args: argparse.Namespace) -> str:
    load0 = os.getloadavg()[0]
    config, model, threads = "omni20", "metadrop", args.threads[0]
    rounds = 2 if args.quick else args.rounds

    def chosen(table: list[tuple[str, str, Options]]) -> list[tuple[str, str, Options]]:
        return [lv for i, lv in enumerate(table) if i == 0 or not args.only or lv[0] in args.only]

    in_process, process = chosen(IN_PROCESS_LEVERS), chosen(PROCESS_LEVERS)
    base = {"config": config, "model": model, "threads": threads, "quick": args.quick}
    spec = {
        **base,
        "kind": "interleaved",
        "rounds": rounds,
        "variants": {n: asdict(o) for n, _, o in in_process},
    }
    print("in-process levers", flush=True)
    results = run_child(spec, timeout=args.lever_timeout).get("variants", {})
    print("process levers", flush=True)
    results.update(paired_processes({n: (base, o) for n, _, o in process}, rounds))
    probe = run_child({"kind": "grouped", "threads": threads, "quick": args.quick}).get("probe", {})
    load1 = os.getloadavg()[0]
    lines = header(args, [load0, load1])
    lines += [
        f"{CONFIGS[config].title}, Meta-Dropout, meta-train step (TensorFlow), {threads} threads unless the"
        f" lever says otherwise. The variants of a group are all built first, then run one step each in"
        f" turn, {rounds} rounds in a rotating order, so that the machine's load (shared here) weighs on"
        " all alike; speed-up = the median over rounds of (group baseline's time / the variant's time)."
        " First run = graph optimisation or compilation, plus one step.",
        "",
        "| lever | what changes | s / step (median) | speed-up | first run s | build s |",
        "|---|---|---|---|---|---|",
    ]
    for name, what, _ in in_process + process:
        r = results.get(name, {"error": "not measured"})
        extra = f" ({r['error']})" if "error" in r else ""
        lines.append(
            f"| {name} | {what}{extra} | {fmt(r.get('s_per_iter'), 3)} | {fmt(r.get('speedup'))}x"
            f" | {fmt(r.get('first_s'), 1)} | {fmt(r.get('build_s'), 1)} |"
        )
    rss = [
        f"{n} {results[n]['peak_rss_mib']:.0f} MiB"
        for n, _, _ in process
        if "peak_rss_mib" in results.get(n, {})
    ]
    lines += ["", "Peak RSS of the process levers: " + ", ".join(rss) + "."]
    lines += [
        "",
        "Batched tasks, the building block: 4 tasks' convolutions as one grouped convolution against 4"
        " separate ones, at Omniglot's second conv block (14 x 14 x 64) for the support and query sets"
        " (seconds, median of 3, or the error):",
        "",
        "| images per task | pass | separate (per-task graph) | grouped (batched graph) | grouped/separate |",
        "|---|---|---|---|---|",
    ]
    for key in dict.fromkeys(k.rsplit(" ", 1)[0] for k in probe):
        n, what = key.split(" ", 1)
        sep, grp = probe.get(f"{key} separate"), probe.get(f"{key} grouped")
        ratio = fmt(grp / sep) if isinstance(sep, float) and isinstance(grp, float) else "-"
        cells = [fmt(c, 4) if isinstance(c, float) else str(c) for c in (sep, grp)]
        lines.append(f"| {n} | {what} | {cells[0]} | {cells[1]} | {ratio} |")
    return "\n".join(lines)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="smaller shapes and few repeats; prints only")
    what = p.add_mutually_exclusive_group()
    what.add_argument("--levers", action="store_true", help="measure the lever table instead")
    what.add_argument("--profile", action="store_true", help="the 2x target measured paired, and op profiles")
    p.add_argument("--only", nargs="*", default=None, help="with --levers: these levers only (by name)")
    p.add_argument(
        "--lever_timeout", type=float, default=1200, help="seconds before a lever's run is given up"
    )
    p.add_argument("--rounds", type=int, default=5, help="with --levers: rounds of interleaved steps")
    p.add_argument("--configs", nargs="+", choices=sorted(CONFIGS), default=list(CONFIGS))
    p.add_argument("--models", nargs="+", choices=sorted(MODELS), default=list(MODELS))
    cores = os.cpu_count() or 1
    p.add_argument(
        "--threads",
        type=int,
        nargs="+",
        default=[cores, 1] if cores > 1 else [1],
        help="thread counts, each for both frameworks (after the first: meta-train only)",
    )
    p.add_argument("--repeats", type=int, default=4, help="timed single steps per measurement")
    p.add_argument(
        "--tf_options",
        nargs="*",
        default=[],
        choices=("dynamic", "broadcast_bias", "explicit_bn", "grappler"),
        help="graph levers for an extra TensorFlow column, TF+ (see --levers)",
    )
    p.add_argument("--device", choices=("cpu", "cuda"), default="cpu", help="PyTorch's device")
    p.add_argument("--out", default=RESULTS, help="results file (--quick writes none unless given)")
    p.add_argument("--child", default=None, help=argparse.SUPPRESS)
    p.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    args.argv = sys.argv[1:] if argv is None else argv
    if min(args.threads) < 1 or args.repeats < 1:
        p.error("--threads and --repeats must be at least 1")
    if args.quick and "--out" not in args.argv:
        args.out = None
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.child:
        print("RESULT " + json.dumps(child(json.loads(args.child))), flush=True)
        return 0
    if args.worker:
        worker(json.loads(args.worker))
        return 0
    if args.profile:
        name, body = "profile", profile(args)
    elif args.levers:
        name, body = "levers", levers(args)
    else:
        name, body = "main", benchmark(args)
    print(body)
    if args.out:
        write_results(args.out, name, body)
        print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
