"""Seconds and peak memory per meta-train step of MAML, Meta-SGD and Bayesian TAML at one any-shot
episode shape (seed 002's CIFAR-FS setting by default), each model in a process of its own.

    python bench/learners.py                  # 5-way, max_shot 50, 15 queries, meta-batch 4, 32x32x3, K = 5
    python bench/learners.py --shape small    # max_shot 10, meta-batch 2 (bench/RESULTS.md)
    python bench/learners.py --shape quick    # a tiny shape, K = 1: checks that it runs

The three processes are built first, then step in turn, one step each per round in a rotating
order, so that the load of a shared machine weighs on all alike ("first step": graph building,
initialisation and one step). All three read the same padded, masked episodes (masked batch norm
on the support passes) with the original's zero head (quirk Q1), as the seed-002 runs do;
synthetic images; Adam with clipping and grappler off, as main.py on a CPU. Figures and verdicts:
bench/RESULTS.md.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MODELS = {  # model -> (Meta-SGD's alpha, balancing switches)
    "MAML": (False, {}),
    "Meta-SGD": (True, {}),
    "Bayesian TAML": (True, {"omega": True, "gamma": True, "z": True}),
}
SHAPES = {  # way, max_shot, query, metabatch, hw, n_steps
    "cifar": (5, 50, 15, 4, 32, 5),  # seed 002's CIFAR-FS runs: 5-8 GiB per process here
    "small": (5, 10, 15, 2, 32, 5),  # what a shared 2-core, 24 GiB machine holds three times
    "quick": (5, 5, 3, 2, 32, 1),
}


def episodes(way: int, max_shot: int, query: int, n_tasks: int, x_dim: int) -> dict[str, np.ndarray]:
    """Any-shot meta-batch: per class a shot uniform on 1..max_shot, rows zero-padded, mask."""
    rng = np.random.default_rng(0)
    n = way * max_shot
    ep = {
        "xtr": np.zeros((n_tasks, n, x_dim)),
        "ytr": np.zeros((n_tasks, n, way)),
        "mtr": np.zeros((n_tasks, n)),
    }
    for t in range(n_tasks):
        for c in range(way):
            rows = slice(c * max_shot, c * max_shot + rng.integers(1, max_shot + 1))
            ep["xtr"][t, rows] = rng.random((rows.stop - rows.start, x_dim))
            ep["ytr"][t, rows, c] = ep["mtr"][t, rows] = 1.0
    ep["xte"] = rng.random((n_tasks, way * query, x_dim))
    ep["yte"] = np.tile(np.repeat(np.eye(way), query, axis=0), (n_tasks, 1, 1))
    return {k: v.astype(np.float32) for k, v in ep.items()}


def child(model_name: str, shape: str) -> None:
    """Build the model's training step and run a warm-up step; then one timed step per line read
    from stdin, each answered with its seconds, and at EOF the peak RSS."""
    import tensorflow as tf

    import noise
    import taml
    from model import Arch, Model

    way, max_shot, query, n_tasks, hw, n_steps = SHAPES[shape]
    metasgd, switches = MODELS[model_name]
    arch = Arch(hw=hw, channels=3, filters=32, way=way)
    t0 = time.perf_counter()
    with tf.Graph().as_default():
        learner = taml.get(**switches, max_shot=max_shot, zero_head=True)
        model = Model(arch, noise.get("none"), 0.5, n_steps, metasgd=metasgd, learner=learner)
        ph = model.placeholders(n_tasks, 0, query, "train", max_shot=max_shot)
        loss, _ = model.meta_batch(ph, 1)
        step = tf.compat.v1.train.get_or_create_global_step()
        train = model.train_op(loss, 1e-3, step)
        config = tf.compat.v1.ConfigProto()
        config.graph_options.rewrite_options.disable_meta_optimizer = True
        with tf.compat.v1.Session(config=config) as sess:
            sess.run(tf.compat.v1.global_variables_initializer())
            feed = {ph[k]: v for k, v in episodes(way, max_shot, query, n_tasks, arch.x_dim).items()}
            sess.run(train, feed)
            print(json.dumps(time.perf_counter() - t0), flush=True)
            for _ in sys.stdin:
                t = time.perf_counter()
                sess.run(train, feed)
                print(json.dumps(time.perf_counter() - t), flush=True)
    print(json.dumps(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024), flush=True)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--shape", choices=sorted(SHAPES), default="cifar", help="episode shape (see SHAPES)")
    p.add_argument("--rounds", type=int, default=5, help="timed steps per model (median reported)")
    p.add_argument("--child", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.child:
        child(args.child, args.shape)
        return
    way, max_shot, query, n_tasks, hw, n_steps = SHAPES[args.shape]
    print(
        f"{way}-way, max_shot {max_shot}, {query} queries, meta-batch {n_tasks}, {hw}x{hw}x3, K = {n_steps}"
    )
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", PYTHONPATH=ROOT)
    procs, first = {}, {}
    for name in MODELS:  # built one after the other; all kept waiting for their steps
        cmd = [sys.executable, os.path.abspath(__file__), "--child", name, "--shape", args.shape]
        procs[name] = subprocess.Popen(cmd, env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        first[name] = json.loads(procs[name].stdout.readline())
    times: dict[str, list[float]] = {name: [] for name in MODELS}
    for r in range(args.rounds):  # one step of each model per round, in a rotating order
        names = list(MODELS)[r % len(MODELS) :] + list(MODELS)[: r % len(MODELS)]
        for name in names:
            procs[name].stdin.write("step\n")
            procs[name].stdin.flush()
            times[name].append(json.loads(procs[name].stdout.readline()))
    print(f"load average {os.getloadavg()[0]:.1f}")
    print("| model | s / step (median) | / Meta-SGD (median per round) | first step, s | peak RSS MiB |")
    print("|---|---|---|---|---|")
    for name, proc in procs.items():
        proc.stdin.close()
        rss = json.loads(proc.stdout.readline())
        proc.wait()
        ratio = statistics.median(a / b for a, b in zip(times[name], times["Meta-SGD"]))
        print(
            f"| {name} | {statistics.median(times[name]):.3f} | {ratio:.2f} | {first[name]:.1f} | {rss:.0f} |"
        )


if __name__ == "__main__":
    main()
