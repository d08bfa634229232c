"""Prepare a dataset for main.py, and optionally write a file of fixed evaluation episodes.

    python get_data.py --dataset omniglot         # official Omniglot archives -> ./data/omniglot
    python get_data.py --dataset mimgnet          # miniImageNet (Ravi & Larochelle split) -> ./data/mimgnet
    python get_data.py --dataset omniglot_small   # ../shared/data/omniglot -> ./data/omniglot_small
    python get_data.py --dataset cifar            # CIFAR-FS (Bayesian TAML); svhn, cub, aircraft, quickdraw,
                                                  # vgg_flower, traffic, fashion-mnist, small_cifar_100,
                                                  # aircraft_official, cub_official: see docs/datasets.md
    python get_data.py --dataset tiny_imagenet    # MetaPerturb's source (also stl10, stanford_dogs,
                                                  # stanford_cars): docs/datasets-metaperturb.md
    python get_data.py --dataset omniglot --source ~/downloads   # offline: files downloaded elsewhere
                                                  # (a folder or a file:// URL), docs/data.md#offline
    python get_data.py --dataset omniglot_small --episodes eps.npz --split test --way 5 --shot 1 \\
        --query 15 --n_episodes 1000 --seed 0
    python get_data.py --dataset digits --episodes anyshot.npz --split test --way 5 --max_shot 50 \
        --query 15 --n_episodes 1000 --seed 0   # any-shot episodes (Bayesian TAML)

A re-run skips whatever is already complete and resumes an interrupted download. Data roots default
to $METADROP_DATA/<dataset> ($METADROP_DATA defaults to ./data). Bayesian TAML's form, `cd ./data/cifar &&
python get_data.py` (also svhn, mimgnet, cub), prepares into that folder.
"""

from __future__ import annotations

import cli

if __name__ == "__main__":
    cli.quiet_ctrl_c()  # Ctrl-C while the modules below load: one line, exit 130

import argparse
import os
import sys

import quiet

EPISODE_FLAGS = {"split": "test", "way": 20, "shot": 1, "query": 15, "n_episodes": 1000, "seed": 0}
# (least, most) of the episode counts (cli.out_of_range; docs/failures.md#counts): a file is built
# in memory; the split's sizes bound way, shot, max_shot and query further (data.episodes.check)
MAX_SIZE = 10**5
EPISODE_COUNTS = {k: (1, MAX_SIZE) for k in ("way", "shot", "query", "max_shot")} | {"n_episodes": (1, 10**6)}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    from data import DATASETS, SPLITS

    p = cli.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--dataset", choices=sorted(DATASETS), default="omniglot")
    p.add_argument(
        "--data_root",
        default=None,
        help="where the prepared data go (default $METADROP_DATA/<dataset>, ./data/...)",
    )
    p.add_argument(
        "--source",
        default=None,
        help="where the raw files come from: a base URL for downloaded datasets (default: their "
        "official host, or the module's $METADROP_<SOURCE>_URL, see docs/datasets.md), or, for every "
        "dataset, a folder (or its file:// URL) holding the files downloaded elsewhere, checked by the "
        "same checksums (docs/data.md#offline); omniglot_small's default is shared/data/omniglot "
        "beside the project folder, from any working directory",
    )
    e = p.add_argument_group("fixed evaluation episodes (for main.py --mode meta_test --episodes FILE)")
    e.add_argument("--episodes", metavar="FILE.npz", default=None, help="write episodes to this file")
    e.add_argument("--split", choices=SPLITS, help=f"default {EPISODE_FLAGS['split']}")
    for name in ("way", "shot", "query", "n_episodes"):
        e.add_argument(f"--{name}", type=int, help=f"default {EPISODE_FLAGS[name]}")
    e.add_argument(
        "--max_shot",
        type=int,
        default=None,
        help="any-shot episodes instead of --shot: shots uniform on 1..max_shot per class or per task, "
        "support padded to way*max_shot rows with a mask (main.py --max_shot)",
    )
    e.add_argument("--seed", type=int, help="seeds numpy's default_rng (default 0)")
    p.add_argument(
        "--verbose", action="store_true", help=f"show TensorFlow's C++ log lines ({quiet.VERBOSE_ENV}=1)"
    )
    args = p.parse_args(argv)
    if args.episodes is not None and not args.episodes.strip():
        p.error("--episodes is empty: name the .npz file to write")
    given = [f"--{k}" for k in (*EPISODE_FLAGS, "max_shot") if getattr(args, k) is not None]
    if args.episodes is None and given:
        p.error(f"{', '.join(given)}: only with --episodes FILE.npz")
    if args.max_shot is not None and args.shot is not None:
        p.error("--shot and --max_shot exclude each other: fixed-shot or any-shot episodes")
    for k, default in EPISODE_FLAGS.items():
        if getattr(args, k) is None:
            setattr(args, k, default)
    wrong = cli.out_of_range(args, EPISODE_COUNTS, {})
    if wrong:
        p.error(wrong)
    if not 0 <= args.seed <= cli.MAX_SEED:
        p.error(f"--seed must be an integer from 0 to {cli.MAX_SEED}, not {args.seed}")
    # The data root itself is created, not the folder that holds it (nor --episodes' folder).
    for flag in ("data_root", "episodes"):
        path = getattr(args, flag)
        if path is not None and (why := cli.missing_parent(path)):
            p.error(f"--{flag} {path}: {why}")
    return args


def missing_folders(path: str) -> list[str]:
    """path and those of its parent folders that do not exist yet, deepest first."""
    out = []
    path = os.path.abspath(path)
    while not os.path.exists(path):
        out.append(path)
        path = os.path.dirname(path)
    return out


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)  # Ctrl-C until here: cli.quiet_ctrl_c's one line
    import data

    new = missing_folders(args.data_root or data.default_root(args.dataset))
    try:
        cli.ctrl_c_raises()
        code = prepare(args)
    except KeyboardInterrupt:
        print("stopped; what was complete is kept: re-run the same command to continue", file=sys.stderr)
        code = cli.STOPPED
    for folder in new if code else []:  # a failed run leaves no empty folder of its own behind
        try:
            os.rmdir(folder)
        except OSError:  # not empty (a kept download), or not made by this run
            break
    return code


def prepare(args: argparse.Namespace) -> int:
    import data
    from data.episodes import write_file
    from data.files import resource

    root = args.data_root or data.default_root(args.dataset)
    module, view = data.entry(args.dataset)
    try:
        if hasattr(module, "prepare"):
            module.prepare(root, args.source, *([view] if view else []))
        elif args.source is not None:
            raise data.DataError(f"--source: {args.dataset} has no raw files to fetch")
        else:
            print(f"{args.dataset} needs no preparation")
        if args.episodes:
            split = data.load(args.dataset, root).split(args.split)
            meta = {"dataset": args.dataset, **{k: getattr(args, k) for k in EPISODE_FLAGS}}
            if args.max_shot is not None:
                del meta["shot"]
                meta["max_shot"] = args.max_shot
            write_file(
                args.episodes,
                split,
                args.way,
                args.shot,
                args.query,
                args.n_episodes,
                args.seed,
                meta,
                max_shot=args.max_shot,
            )
            print(f"{args.episodes}: {args.n_episodes} episodes ({os.path.getsize(args.episodes)} bytes)")
    except data.DataError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except OSError as e:  # a full disk, a read-only folder, ...: what is complete is kept
        print(f"error: {resource(e)}; what was complete is kept", file=sys.stderr)
        return 2
    except MemoryError:
        print(
            f"error: out of memory while preparing {args.dataset}; what was complete is kept: free "
            "memory (or raise the memory limit) and run the same command again",
            file=sys.stderr,
        )
        return 2
    return 0


if __name__ == "__main__":
    quiet.start(sys.argv[1:])
    cli.run(main)
