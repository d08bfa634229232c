"""Seconds and peak memory per meta-train step of MAML, Meta-SGD and Bayesian TAML at one any-shot
episode shape (seed 002's CIFAR-FS setting by default), each model in a process of its own.

    python bench/learners.py            # 5-way, max_shot 50, 15 queries, meta-batch 4, 32x32x3, K = 5
    python bench/learners.py --quick    # a small shape: checks that it runs

All three read the same padded, masked episodes (taml.py: masked batch norm on the support passes)
with the original's zero head (quirk Q1), as the seed-002 runs do; synthetic images; Adam with
clipping as main.py; grappler off as main.py on a CPU. Figures and verdicts: bench/RESULTS.md.
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
    "full": (5, 50, 15, 4, 32, 5),
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


def child(model_name: str, shape: str, repeats: int) -> dict[str, float]:
    """Build the model's training step, run a warm-up step and `repeats` timed ones."""
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
            first = time.perf_counter() - t0
            times = []
            for _ in range(repeats):
                t = time.perf_counter()
                sess.run(train, feed)
                times.append(time.perf_counter() - t)
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return {
        "s_per_step": statistics.median(times),
        "first_s": first,
        "peak_rss_mib": rss,
        "load": os.getloadavg()[0],
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="a small shape and 2 repeats")
    p.add_argument("--repeats", type=int, default=5, help="timed steps per model (median reported)")
    p.add_argument("--child", help=argparse.SUPPRESS)
    args = p.parse_args()
    shape, repeats = ("quick", 2) if args.quick else ("full", args.repeats)
    if args.child:
        print("RESULT " + json.dumps(child(args.child, shape, repeats)), flush=True)
        return
    way, max_shot, query, n_tasks, hw, n_steps = SHAPES[shape]
    print(
        f"{way}-way, max_shot {max_shot}, {query} queries, meta-batch {n_tasks}, {hw}x{hw}x3, K = {n_steps}"
    )
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", PYTHONPATH=ROOT)
    results = {}
    for name in MODELS:
        cmd = [sys.executable, os.path.abspath(__file__), "--child", name, "--repeats", str(repeats)]
        out = subprocess.run(
            cmd + ["--quick"] * args.quick, env=env, capture_output=True, text=True, check=True
        )
        results[name] = json.loads(out.stdout.split("RESULT ", 1)[1])
    print("| model | s / step (median) | vs Meta-SGD | first step incl. build, s | peak RSS MiB | load |")
    print("|---|---|---|---|---|---|")
    for name, r in results.items():
        ratio = r["s_per_step"] / results["Meta-SGD"]["s_per_step"]
        print(
            f"| {name} | {r['s_per_step']:.3f} | {ratio:.2f} | {r['first_s']:.1f} | {r['peak_rss_mib']:.0f} |"
            f" {r['load']:.1f} |"
        )


if __name__ == "__main__":
    main()
