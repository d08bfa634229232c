"""The speed levers of bench/RESULTS.md and where the time of a step goes: measurements that
need more than bench/bench.py's table (variants interleaved in one process or in processes kept
ready; op profiles). The verdicts are in RESULTS.md.

    python bench/levers.py              # the adopted levers, each taken away in turn (~15 min)
    python bench/levers.py --profile    # TensorFlow vs PyTorch measured paired, and op profiles (~5 min)
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import json
import os
import resource
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, replace
from typing import Any

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path[:0] = [os.path.dirname(HERE)]

from bench.bench import (  # noqa: E402
    CONFIGS,
    Options,
    Prefetcher,
    child_env,
    common_args,
    finish_args,
    fmt,
    header,
    meta_batches,
    quick,
    report,
    run_child,
    synthetic_split,
    tf_build,
    tf_session,
    tf_step,
    torch_step,
)


@dataclass(frozen=True)
class Lever(Options):
    """Options plus the adopted graph changes, each of which a lever takes away."""

    dynamic: bool = False  # placeholders [T, None, D], the episode size unknown (before static shapes)
    broadcast_bias: bool = False  # biases added by a broadcast `+ b` (before BiasAdd was adopted)
    explicit_bn: bool = False  # layers.explicit_batch_norm everywhere, not the FusedBatchNormV3 kernel
    prefetch: bool = True  # the next meta-batch is sampled in a background thread (data/prefetch.py)


@contextlib.contextmanager
def graph_levers(opt: Lever) -> Iterator[None]:
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


def lever_build(cfg: Any, model: str, opt: Lever) -> dict[str, Any]:
    """The meta-train step with the lever's graph changes."""
    import tensorflow as tf

    def dynamic(m: Any, n_tasks: int) -> dict[str, Any]:
        """xtr/ytr/xte/yte of a meta-batch whose number of examples is left unknown (None)."""
        return {
            k: tf.compat.v1.placeholder(
                tf.float32, [n_tasks, None, cfg.x_dim if k[0] == "x" else cfg.way], name=f"dynamic_{k}"
            )
            for k in ("xtr", "ytr", "xte", "yte")
        }

    with graph_levers(opt):
        return tf_build(cfg, model, "train", opt, dynamic if opt.dynamic else None)


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
            opt = Lever(**o)
            t = time.perf_counter()
            g = lever_build(cfg, spec["model"], opt)
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
    opt = Lever(**spec["options"])
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
            g = lever_build(cfg, spec["model"], opt)
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


def paired_processes(specs: dict[str, tuple[dict[str, Any], Lever]], rounds: int) -> dict[str, Any]:
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
        env = child_env()
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

    opt = Lever(intra=1, inter=spec["threads"])
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
    """The CPU target measured paired (TensorFlow and PyTorch steps alternating, in two processes
    kept ready, so that a change in the machine's speed weighs on both), and where the time goes."""
    load0 = os.getloadavg()[0]
    threads, rounds = args.threads[0], 2 if args.quick else args.rounds
    base = {"config": "omni20", "model": "metadrop", "threads": threads, "quick": args.quick}
    print("paired steps", flush=True)
    pair = paired_processes(
        {"TF": ({**base, "fw": "tf"}, Lever()), "PT": ({**base, "fw": "torch"}, Lever())}, rounds
    )
    print("op profiles", flush=True)
    ops = {
        fw: run_child({"kind": "ops", "fw": fw, "threads": threads, "quick": args.quick}, script=__file__)
        for fw in ("tf", "torch")
    }
    lines = header(args, [load0, os.getloadavg()[0]], [], "bench/levers.py")
    tf_s, pt_s = (pair[k].get("s_per_iter") for k in ("TF", "PT"))
    ratio = pair["PT"].get("speedup")  # the median over rounds of TF time / PT time
    lines += [
        f"{threads} threads, {rounds} rounds of one TensorFlow step then one PyTorch step.",
        "",
        "| TF s / step (median) | PT s / step (median) | TF/PT (median over rounds) | 1.5x (<= 0.67) |",
        "|---|---|---|---|",
        f"| {fmt(tf_s, 3)} | {fmt(pt_s, 3)} | {fmt(ratio)} | {'met' if ratio and ratio <= 2 / 3 else 'no'} |",
        "",
    ]
    tables = {fw: op_table(r.get("ops", {})) for fw, r in ops.items()}
    lines += ["| TensorFlow op | s | share | PyTorch op | s | share |", "|---|---|---|---|---|---|"]
    for (a, sa, pa), (b, sb, pb) in zip(tables["tf"], tables["torch"]):
        lines.append(f"| {a} | {sa:.3f} | {100 * pa:.0f}% | {b} | {sb:.3f} | {100 * pb:.0f}% |")
    totals = {fw: sum(r.get("ops", {}).values()) for fw, r in ops.items()}
    lines += ["", f"Totals: TensorFlow {totals['tf']:.2f} core-s, PyTorch {totals['torch']:.2f} s."]
    return "\n".join(lines)


# (name, what changes, options) on the Omniglot 20-way 1-shot Meta-Dropout meta-train step, all in
# one process, each with its own graph, session and thread pools. Why each was tried, and the
# verdicts (those of rejected ideas too: batched tasks, XLA on a CPU, oneDNN off, thread settings),
# are in bench/RESULTS.md.
LEVERS: list[tuple[str, str, Lever]] = [
    ("baseline", "main.py today: static shapes, BiasAdd, fused batch norm, prefetch, grappler off", Lever()),
    ("baseline again", "nothing (an A/A control: the spread of the measurement itself)", Lever()),
    ("dynamic shapes", "placeholders [T, None, D] (before static shapes)", Lever(dynamic=True)),
    ("broadcast bias", "biases added by `+ b` (before BiasAdd was adopted)", Lever(broadcast_bias=True)),
    (
        "explicit batch norm",
        "separate mean, deviation, rsqrt ops (before the fused kernel)",
        Lever(explicit_bn=True),
    ),
    ("grappler on", "grappler's graph rewrites (main.py turns them off on CPU)", Lever(grappler=True)),
    ("no prefetch", "episodes sampled on the training thread between runs", Lever(prefetch=False)),
]


def levers(args: argparse.Namespace) -> str:
    load0 = os.getloadavg()[0]
    threads, rounds = args.threads[0], 2 if args.quick else args.rounds
    chosen = [lv for i, lv in enumerate(LEVERS) if i == 0 or not args.only or lv[0] in args.only]
    spec = {
        "config": "omni20",
        "model": "metadrop",
        "threads": threads,
        "quick": args.quick,
        "kind": "interleaved",
        "rounds": rounds,
        "variants": {n: asdict(o) for n, _, o in chosen},
    }
    results = run_child(spec, timeout=args.lever_timeout, script=__file__).get("variants", {})
    lines = header(args, [load0, os.getloadavg()[0]], [], "bench/levers.py")
    lines += [
        "| lever | what changes | s / step (median) | speed-up | first run s | build s |",
        "|---|---|---|---|---|---|",
    ]
    for name, what, _ in chosen:
        r = results.get(name, {"error": "not measured"})
        extra = f" ({r['error']})" if "error" in r else ""
        lines.append(
            f"| {name} | {what}{extra} | {fmt(r.get('s_per_iter'), 3)} | {fmt(r.get('speedup'))}x"
            f" | {fmt(r.get('first_s'), 1)} | {fmt(r.get('build_s'), 1)} |"
        )
    return "\n".join(lines)


def child(spec: dict[str, Any]) -> dict[str, Any]:
    """One measurement of this file in this process, with its peak resident memory."""
    out = {"variants": tf_interleaved(spec)} if spec["kind"] == "interleaved" else op_seconds(spec)
    out["peak_rss_mib"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    common_args(p)
    p.add_argument("--profile", action="store_true", help="TF vs PyTorch measured paired, and op profiles")
    p.add_argument("--only", nargs="*", default=None, help="these levers only (by name)")
    p.add_argument("--lever_timeout", type=float, default=1200, help="seconds before a run is given up")
    p.add_argument("--rounds", type=int, default=5, help="rounds of interleaved steps")
    p.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    args = finish_args(p, argv)
    if args.child:
        print("RESULT " + json.dumps(child(json.loads(args.child))), flush=True)
    elif args.worker:
        worker(json.loads(args.worker))
    elif args.profile:
        report(args, "profile", profile(args))
    else:
        report(args, "levers", levers(args))
    return 0


if __name__ == "__main__":
    sys.exit(main())
