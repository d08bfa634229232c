"""First- vs second-order MAML (main.py --first_order): seconds per meta-training iteration and peak
resident memory for 1, 5 and 20 inner steps, each cell in a process of its own. The setting is
runfiles/cpu/omni_small.sh's (28x28 Omniglot images, 64 filters, 5-way 1-shot, 15 queries,
meta-batch 4, MAML) on synthetic images; the figures go to bench/RESULTS.md by hand.

    python bench/first_order.py [--steps 1 5 20] [--iters 5]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path[:0] = [os.path.dirname(HERE)]

from bench.bench import Config, meta_batches, run_child, synthetic_split  # noqa: E402

OMNI_SMALL = Config("omniglot_small 5-way 1-shot", 28, 1, 64, 5, 1, 15, 4, 0.4, 1e-3, 5, (64, 20))


def child(spec: dict) -> dict:
    """Build main.py's meta-training step, run 2 warm-up and `iters` timed iterations."""
    import tensorflow as tf

    import noise
    from model import Arch, Model

    cfg = OMNI_SMALL
    graph = tf.Graph()
    with graph.as_default():
        tf.compat.v1.set_random_seed(0)
        arch = Arch(hw=cfg.hw, channels=cfg.channels, filters=cfg.filters, way=cfg.way)
        m = Model(arch, noise.get("none"), cfg.inner_lr, spec["n_steps"], first_order=spec["first_order"])
        ph = m.placeholders(cfg.metabatch, cfg.shot, cfg.query, "train")
        loss, _ = m.meta_batch(ph, 1)
        train = m.train_op(loss, cfg.meta_lr, tf.compat.v1.train.get_or_create_global_step())
        init = tf.compat.v1.global_variables_initializer()
    config = tf.compat.v1.ConfigProto()
    config.graph_options.rewrite_options.disable_meta_optimizer = True  # as main.py on a CPU
    batches = meta_batches(synthetic_split(cfg), cfg, cfg.metabatch, seed=0)
    times = []
    with tf.compat.v1.Session(graph=graph, config=config) as sess:
        sess.run(init)
        for _ in range(2 + spec["iters"]):
            batch = next(batches)[0]
            t = time.perf_counter()
            sess.run(train, {ph[k]: batch[k] for k in ph})
            times.append(time.perf_counter() - t)
    return {
        "s_per_iter": statistics.median(times[2:]),
        "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "load": os.getloadavg()[0],
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--steps", type=int, nargs="+", default=[1, 5, 20])
    p.add_argument("--iters", type=int, default=5)
    p.add_argument("--child", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.child:
        print("RESULT " + json.dumps(child(json.loads(args.child))), flush=True)
        return
    rows = ["| inner steps | order | s / iteration | peak RSS MiB | load |", "|---|---|---|---|---|"]
    for n in args.steps:
        for first in (False, True):
            out = run_child({"n_steps": n, "first_order": first, "iters": args.iters}, script=__file__)
            order = "first" if first else "second"
            if "error" in out:
                rows.append(f"| {n} | {order} | {out['error']} | | |")
                continue
            rows.append(
                f"| {n} | {order} | {out['s_per_iter']:.3f} | {out['peak_rss_mib']:.0f} | {out['load']:.1f} |"
            )
    print(f"{OMNI_SMALL.title}, MAML, median of {args.iters} iterations after 2 warm-up ones:")
    print("\n".join(rows))


if __name__ == "__main__":
    main()
