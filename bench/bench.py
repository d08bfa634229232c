"""Speed and memory of meta-training and meta-testing: TensorFlow (as main.py builds it, with and
without XLA) against the PyTorch reference (bench/torch_ref.py), each cell in a process of its own.
What the columns mean, and what was concluded, is in bench/RESULTS.md; bench/levers.py has the
speed levers and the op profile.

    python bench/bench.py           # the table, written to bench/RESULTS.md (~30 min on 2 cores)
    python bench/bench.py --quick   # smaller shapes, few repeats: checks that it all runs
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
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
    # runfiles/metadrop_omni_1shot.sh; the split has the size of Omniglot's train.npy ([4800, 20, 784]).
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
    """How the TensorFlow graph is run (bench/levers.py adds the graph levers)."""

    intra: int = 0  # intra-op threads (0: the thread count of the run)
    inter: int = 0  # inter-op threads (0: the thread count of the run)
    grappler: bool = False  # grappler's graph rewrites (main.py: on with a GPU and without XLA)
    xla: bool = False  # the step as one XLA cluster, as main.py --xla builds it


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
    device: str = "cpu"  # PyTorch's device (TensorFlow takes the GPU when it sees one)
    options: Options = Options()


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


def timed(step: Callable[[], None], cell: Cell) -> dict[str, Any]:
    """First-call time (graph optimisation, XLA compilation), then the median seconds per
    iteration over repeats, after warm-up."""
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
    """The session's settings, with thread pools of its own (use_per_session_threads; the intra-op
    pool only where TF_OVERRIDE_GLOBAL_THREADPOOL=1), so that sessions can share a process."""
    import tensorflow as tf

    config = tf.compat.v1.ConfigProto()
    config.intra_op_parallelism_threads = opt.intra or threads
    config.inter_op_parallelism_threads = opt.inter or threads
    config.use_per_session_threads = True
    config.gpu_options.allow_growth = True
    config.graph_options.rewrite_options.disable_meta_optimizer = not opt.grappler
    return config


def tf_build(cfg: Config, model: str, mode: str, opt: Options, placeholders: Callable | None = None) -> dict:
    """The meta-train step (mode "train") or the meta-test accuracy ("test") as a graph; with
    opt.xla, one XLA cluster as main.py --xla builds it. `placeholders(model, n_tasks)` replaces
    Model.placeholders (bench/levers.py)."""
    import tensorflow as tf

    import noise
    from model import Arch, Model

    graph = tf.Graph()
    with graph.as_default():
        tf.compat.v1.set_random_seed(0)
        arch = Arch(hw=cfg.hw, channels=cfg.channels, filters=cfg.filters, way=cfg.way)
        m = Model(arch, noise.get(MODELS[model]), cfg.inner_lr, cfg.n_steps)
        n_tasks = cfg.metabatch if mode == "train" else 1
        with tf.xla.experimental.jit_scope() if opt.xla else contextlib.nullcontext():
            if placeholders:
                ph = placeholders(m, n_tasks)
            else:
                ph = m.placeholders(n_tasks, cfg.shot, cfg.query, mode)
            if mode == "train":
                loss, _ = m.meta_batch(ph, 1)  # one noise sample when meta-training (Section 3.1)
                step = tf.compat.v1.train.get_or_create_global_step()
                fetch = [m.train_op(loss, cfg.meta_lr, step), loss]
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
    g = tf_build(cfg, cell.model, cell.mode, cell.options)
    batches = meta_batches(synthetic_split(cfg), cfg, g["n_tasks"], seed=0)
    with tf_session(g, cell.options, cell.threads) as sess, Prefetcher(batches, depth=2) as source:
        return timed(lambda: tf_step(sess, g, source), cell)


# ---------------------------------------------------------------- PyTorch


def torch_cell(cell: Cell, cfg: Config) -> dict[str, Any]:
    import torch

    torch.set_num_threads(cell.threads)
    n_tasks = cfg.metabatch if cell.mode == "train" else 1
    batches = meta_batches(synthetic_split(cfg), cfg, n_tasks, seed=0)
    with Prefetcher(batches, depth=2) as source:
        return timed(torch_step(cfg, cell.model, cell.mode, cell.device, source), cell)


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


# ---------------------------------------------------------------- processes


def child(spec: dict[str, Any]) -> dict[str, Any]:
    """Run one measurement in this process; the result carries its peak resident memory."""
    load0 = os.getloadavg()[0]
    if spec["kind"] == "gpu":
        import tensorflow as tf

        out: dict[str, Any] = {"gpus": [d.name for d in tf.config.list_physical_devices("GPU")]}
    else:
        opts = Options(**spec.pop("options"))
        cell = Cell(**{k: v for k, v in spec.items() if k != "kind"}, fw=spec["kind"], options=opts)
        cfg = quick(CONFIGS[cell.config]) if cell.quick else CONFIGS[cell.config]
        out = (tf_cell if cell.fw == "tf" else torch_cell)(cell, cfg)
    out["peak_rss_mib"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    out["load"] = [load0, os.getloadavg()[0]]
    return out


def child_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    """The caller's environment, this repository first on PYTHONPATH (a TensorFlow installed
    through PYTHONPATH stays visible), per-session thread pools, and `extra`."""
    path = os.pathsep.join(p for p in (ROOT, os.environ.get("PYTHONPATH")) if p)
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", PYTHONPATH=path, TF_OVERRIDE_GLOBAL_THREADPOOL="1")
    return {**env, **(extra or {})}


def run_child(
    spec: dict[str, Any], timeout: float = 1800, script: str = __file__, env: dict[str, str] | None = None
) -> dict[str, Any]:
    """One measurement in a fresh process (its own thread pools and memory high-water mark)."""
    cmd = [sys.executable, os.path.abspath(script), "--child", json.dumps(spec)]
    label = " ".join(f"{k}={v}" for k, v in spec.items() if k in ("kind", "fw", "config", "model", "mode"))
    print(f"  {label} ...", end="", flush=True)
    t = time.perf_counter()
    try:
        proc = subprocess.run(cmd, env=env or child_env(), capture_output=True, text=True, timeout=timeout)
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
    print(f" { {k: round(v, 4) for k, v in out.items() if isinstance(v, float)} }")
    return out


# ---------------------------------------------------------------- report


def machine() -> dict[str, str]:
    import importlib.metadata as md

    cpu = platform.processor()
    with contextlib.suppress(OSError, StopIteration), open("/proc/cpuinfo") as f:
        cpu = next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    mem = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    versions = {}
    for pkg in ("tensorflow-cpu", "tensorflow", "torch", "numpy"):
        with contextlib.suppress(md.PackageNotFoundError):
            versions[pkg] = md.version(pkg)
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
    begin, end = f"<!-- {name}: generated by bench/ -->", f"<!-- /{name} -->"
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


def header(
    args: argparse.Namespace, load: list[float], gpus: list[str], script: str = "bench/bench.py"
) -> list[str]:
    m = machine()
    now = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC")
    return [
        f"Run {now}: `python {script} {' '.join(args.argv)}`",
        "",
        f"- Machine: {m['cpu']}; {', '.join(gpus) or 'no GPU'}; {m['os']}",
        f"- Software: {m['software']}",
        f"- Threads: {' and '.join(map(str, args.threads))}; load average (1 min) at the start / end:"
        f" {load[0]:.2f} / {load[1]:.2f}",
        "",
    ]


# ---------------------------------------------------------------- the table


def cell_spec(fw: str, config: str, model: str, mode: str, threads: int, args: argparse.Namespace) -> dict:
    """A measurement: the first call (graph optimisation, compilation) is the warm-up, then
    single-step repeats."""
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


def benchmark(args: argparse.Namespace, gpus: list[str]) -> str:
    load0 = os.getloadavg()[0]
    # (column, framework, options): main.py's graph, the same as one XLA cluster, PyTorch.
    columns = [("TF", "tf", Options(grappler=bool(gpus)))]  # as main.py: grappler on a GPU
    columns += [("TF+XLA", "tf", Options(xla=True))] if args.xla else []
    columns += [("PT", "torch", Options())]
    cells = [(c, m, mode) for c in args.configs for m in args.models for mode in ("train", "test")]
    device = "GPU" if gpus else "CPU"
    rows = [
        f"| device | threads | setting | model | phase | {' | '.join(f'{c} s' for c, _, _ in columns)}"
        f" | {' | '.join(f'{c}/PT' for c, _, _ in columns[:-1])} | first call (compile) s"
        f" {' / '.join(c for c, _, _ in columns)} | peak RSS MiB {' / '.join(c for c, _, _ in columns)} |",
        "|---" * (2 * len(columns) + 6) + "|",
    ]
    for i, threads in enumerate(args.threads):
        for config, model, mode in cells:
            if i > 0 and mode != "train":  # further thread counts: meta-train only
                continue
            res = []
            for _, fw, opt in columns:
                spec = cell_spec(fw, config, model, mode, threads, args)
                res.append(run_child({**spec, "options": asdict(opt)}))
            secs = [r.get("s_per_iter") for r in res]
            pt = secs[-1]
            rows.append(
                f"| {device} | {threads} | {CONFIGS[config].title} | {model} | {mode} | "
                + " | ".join(fmt(x, 3) for x in secs)
                + " | "
                + " | ".join(fmt(x / pt if x and pt else None) for x in secs[:-1])
                + f" | {' / '.join(fmt(r.get('first_s'), 1) for r in res)}"
                + f" | {' / '.join(fmt(r.get('peak_rss_mib'), 0) for r in res)} |"
            )
            rows += [
                f"| {device} | {threads} | {config} | {model} | {mode} | {col} failed: {r['error']} |"
                for (col, _, _), r in zip(columns, res)
                if "error" in r
            ]
    return "\n".join(header(args, [load0, os.getloadavg()[0]], gpus) + rows)


def common_args(p: argparse.ArgumentParser) -> None:
    """Flags bench/bench.py and bench/levers.py share."""
    p.add_argument("--quick", action="store_true", help="smaller shapes and few repeats; prints only")
    cores = os.cpu_count() or 1
    p.add_argument(
        "--threads",
        type=int,
        nargs="+",
        default=[cores, 1] if cores > 1 else [1],
        help="thread counts, each for both frameworks (after the first: meta-train only)",
    )
    p.add_argument("--out", default=RESULTS, help="results file (--quick writes none unless given)")
    p.add_argument("--child", default=None, help=argparse.SUPPRESS)


def finish_args(p: argparse.ArgumentParser, argv: list[str] | None) -> argparse.Namespace:
    args = p.parse_args(argv)
    args.argv = sys.argv[1:] if argv is None else argv
    if min(args.threads) < 1 or getattr(args, "repeats", 1) < 1:
        p.error("--threads and --repeats must be at least 1")
    if args.quick and "--out" not in args.argv:
        args.out = None
    return args


def report(args: argparse.Namespace, name: str, body: str) -> None:
    print(body)
    if args.out:
        write_results(args.out, name, body)
        print(f"wrote {args.out}")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    common_args(p)
    p.add_argument("--configs", nargs="+", choices=sorted(CONFIGS), default=list(CONFIGS))
    p.add_argument("--models", nargs="+", choices=sorted(MODELS), default=list(MODELS))
    p.add_argument("--repeats", type=int, default=4, help="timed single steps per measurement")
    p.add_argument(
        "--xla",
        choices=("auto", "on", "off"),
        default="auto",
        help="the TF+XLA column (auto: with a GPU; on a CPU XLA is slower, bench/RESULTS.md)",
    )
    args = finish_args(p, argv)
    if args.child:
        print("RESULT " + json.dumps(child(json.loads(args.child))), flush=True)
        return 0
    gpus = run_child({"kind": "gpu"}).get("gpus", [])
    args.xla = args.xla == "on" or (args.xla == "auto" and bool(gpus))
    args.device = "cuda" if gpus else "cpu"
    report(args, "gpu" if gpus else "main", benchmark(args, gpus))
    return 0


if __name__ == "__main__":
    sys.exit(main())
