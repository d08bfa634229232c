"""A target training step of transfer.py with and without MetaPerturb: seconds per step and peak RSS.

    python bench/metaperturb.py                  # ResNet-20, batch 128, 32x32x3, 10 classes
    python bench/metaperturb.py --steps 3 --batch 16   # a quick check
    python bench/metaperturb.py --parts          # the perturbation's parts alone, forward + backward

Each regulariser runs in a process of its own (peak RSS is per process); the two alternate over
--rounds rounds, so a busy machine slows both alike; the figure is the median over all timed steps
(after 2 warm-up steps). The target of issue 22: MetaPerturb / none <= 1.3.
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

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path[:0] = [os.path.dirname(HERE)]


def child(noise: str, model: str, batch: int, size: int, steps: int) -> dict:
    import numpy as np
    import tensorflow as tf

    import nets
    import transfer
    from noise import build

    flags = ["--phase", "tgt", "--model", model, "--img_size", str(size), "--batch_size", str(batch)]
    flags += ["--noise", noise] + (["--phi_from", "unused.npz"] if noise == "metaperturb" else [])
    args = transfer.parse_args(flags)
    graph = tf.Graph()
    with graph.as_default():
        tf.compat.v1.set_random_seed(0)
        g = nets.Target(args, (size, size, 3), 10, build(noise, {}))
        init = tf.compat.v1.global_variables_initializer()
    rng = np.random.default_rng(0)
    fd = {
        g.train_in.x: rng.random((batch, size * size * 3), np.float32),
        g.train_in.y: rng.integers(10, size=batch),
        g.lam: 1.0,
        g.lr: 1e-3,
    }
    times = []
    with transfer.session(graph) as sess:
        sess.run(init)
        for step in range(steps + 2):
            fd[g.train_in.seed] = np.array([step, 0])
            t0 = time.perf_counter()
            sess.run(g.train_op, fd)
            times.append(time.perf_counter() - t0)
    return {"times": times[2:], "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}


def parts(batch: int, steps: int) -> None:
    """Forward + backward (to the features) of MetaPerturb's parts alone on ResNet-20's nine insertion
    points (3 each of 32x32x16, 16x16x32, 8x8x64), summed over the points; median over `steps` runs."""
    import itertools

    import numpy as np
    import tensorflow as tf

    import noise
    import transfer

    mp = noise.get("metaperturb")
    shapes = [(batch, 32 >> i, 32 >> i, 16 << i) for i in (0, 1, 2) for _ in range(3)]
    graph = tf.Graph()
    with graph.as_default():
        phi = {k: 50 * v for k, v in mp.init_phi([], 0, tf.float32).items()}  # O(1) weights
        seed = tf.compat.v1.placeholder(tf.int32, [2])
        draw = noise.Draw(seed, itertools.count(), 1, tf.float32)
        fs = [tf.compat.v1.placeholder(tf.float32, s) for s in shapes]
        sites = []
        for i, f in enumerate(fs):
            with tf.compat.v1.variable_scope(f"site{i}"):
                sites.append(noise.Site(64.0, 32.0, 1.0, mp.init_stats(f.shape[-1], tf.float32)))
        ways = {
            "eps ~ N(0, 1) (M3)": lambda f, s: f * draw.normal(tf.shape(f)),
            "softplus(f + eps) (M3)": lambda f, s: f * tf.nn.softplus(f + draw.normal(tf.shape(f))),
            "noise mean a (M1-M2)": lambda f, s: f * mp.noise_mean(phi, f),
            "scale s (M4-M5)": lambda f, s: f * mp.scale(phi, f, 1, s)[:, None, None],
            "whole perturbation (M1-M6)": lambda f, s: mp.act(phi, 0, f, draw, s),
        }
        runs = {
            k: tf.gradients([tf.reduce_sum(w(f, s) * f) for f, s in zip(fs, sites)], fs)
            for k, w in ways.items()
        }
        init = tf.compat.v1.global_variables_initializer()
    rng = np.random.default_rng(0)
    fd = {f: rng.standard_normal(s).astype(np.float32) for f, s in zip(fs, shapes)}
    print(f"MetaPerturb's parts on ResNet-20's 9 insertion points, batch {batch}, forward + backward")
    print("| part | ms (median) |\n|---|---|")
    with transfer.session(graph) as sess:
        sess.run(init)
        for k, r in runs.items():
            times = []
            for step in range(steps + 2):
                fd[seed] = [step, 0]
                t0 = time.perf_counter()
                sess.run(r, fd)
                times.append(time.perf_counter() - t0)
            print(f"| {k} | {1000 * statistics.median(times[2:]):.0f} |")


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="resnet20")
    p.add_argument("--batch", type=int, default=128)
    p.add_argument("--size", type=int, default=32)
    p.add_argument("--steps", type=int, default=10, help="timed steps per process")
    p.add_argument("--rounds", type=int, default=2, help="processes per regulariser, alternating")
    p.add_argument("--parts", action="store_true", help="time the perturbation's parts alone")
    p.add_argument("--child", default=None, help=argparse.SUPPRESS)
    a = p.parse_args()
    if a.parts:
        parts(a.batch, a.steps)
        return 0
    if a.child:
        print(json.dumps(child(a.child, a.model, a.batch, a.size, a.steps)))
        return 0
    out: dict[str, dict] = {n: {"times": [], "rss": []} for n in ("none", "metaperturb")}
    for _ in range(a.rounds):
        for noise in out:
            cmd = [
                sys.executable,
                __file__,
                "--child",
                noise,
                "--model",
                a.model,
                "--batch",
                str(a.batch),
                "--size",
                str(a.size),
                "--steps",
                str(a.steps),
            ]
            r = json.loads(
                subprocess.run(cmd, check=True, capture_output=True, text=True).stdout.splitlines()[-1]
            )
            out[noise]["times"] += r["times"]
            out[noise]["rss"].append(r["peak_rss_mb"])
    med = {n: statistics.median(v["times"]) for n, v in out.items()}
    shape = f"{a.size}x{a.size}x3"
    print(f"{a.model}, batch {a.batch}, {shape}, {os.cpu_count()} CPUs, {a.rounds} x {a.steps} steps")
    print("| regulariser | s / step (median) | peak RSS (MB) |\n|---|---|---|")
    for n, v in out.items():
        print(f"| {n} | {med[n]:.3f} | {max(v['rss']):.0f} |")
    print(
        f"MetaPerturb / none: {med['metaperturb'] / med['none']:.2f}x time, "
        f"{max(out['metaperturb']['rss']) / max(out['none']['rss']):.2f}x peak RSS"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
