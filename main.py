"""Meta-train, meta-test (and export) Meta-Dropout or MAML: the original code's command line.

Flags (parse_args), their checks alone and together (check_flags), the data's checks before anything
is written (check_data_roots), then the mode: episodic.py runs meta_train, meta_test and export, and
run.py holds the savedir's settings, lock, checkpoints, session, training loop and errors.
"""

from __future__ import annotations

import cli

if __name__ == "__main__":
    cli.quiet_ctrl_c()  # Ctrl-C while the modules below load: one line, exit 130

import argparse
import math
import os
import sys

import quiet
from data.episodes import SAMPLERS
from episodic import check_split, dataset_names, export, make_noise, meta_test, meta_train, xla_cache
from run import UsageError, entry

MODES = {"meta_train": meta_train, "meta_test": meta_test, "export": export}
XLA_CACHE = os.path.join(
    os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "metadrop", "xla"
)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = cli.ArgumentParser(description=__doc__)
    p.add_argument(
        "--gpu_id", type=int, default=None, help="GPU to use (sets CUDA_VISIBLE_DEVICES; default 0)"
    )
    p.add_argument(
        "--verbose", action="store_true", help=f"show TensorFlow's C++ log lines ({quiet.VERBOSE_ENV}=1)"
    )
    p.add_argument("--mode", choices=MODES, default="meta_train")
    p.add_argument("--savedir", default=None, help="checkpoints, logs and results go here")
    p.add_argument("--save_freq", type=int, default=1000, help="checkpoint every N iterations")
    p.add_argument("--n_train_iters", type=int, default=60000)
    p.add_argument("--n_test_iters", type=int, default=1000, help="meta-test episodes")
    p.add_argument("--dataset", default="omniglot")
    p.add_argument("--way", type=int, default=20)
    p.add_argument("--shot", type=int, default=1)
    p.add_argument("--query", type=int, default=15)
    p.add_argument("--metabatch", type=int, default=4, help="tasks per iteration (or per meta-test run)")
    p.add_argument("--meta_lr", type=float, default=1e-3)
    p.add_argument(
        "--inner_lr",
        type=float,
        default=None,
        help="inner step size (Meta-SGD: its initial value); default 0.1, and with --max_shot Bayesian "
        "TAML's 0.5, or 0.01 with --alpha_on",
    )
    p.add_argument("--n_steps", type=int, default=5, help="inner gradient steps")
    p.add_argument(
        "--n_test_mc_samp",
        type=int,
        default=1,
        help="noise samples per inner step when meta-testing (meta-training uses 1)",
    )
    p.add_argument("--maml", action="store_true", help="base MAML: no perturbation")
    p.add_argument("--metasgd", action="store_true", help="Meta-SGD: meta-learned inner step sizes")
    p.add_argument(
        "--first_order",
        action="store_true",
        help="first-order MAML (Finn et al. 2017, Section 5.2): the meta-gradient treats the inner"
        " gradients as constants (less memory and time; phi gets only its direct part)",
    )
    p.add_argument("--noise", default=None, help="perturbation by name (default: metadrop; README, noise.py)")
    p.add_argument(
        "--noise_hp",
        default="",
        metavar="K=V[,K=V]",
        help="the perturbation's hyperparameters, e.g. gamma=0.2 (mixup), beta=1e-4 (vib, infodrop), "
        "lam=0.1 (metadrop_add); unset ones take their defaults",
    )
    p.add_argument(
        "--sampler",
        choices=SAMPLERS,
        default="independent",
        help="meta-batches of independent tasks, or, as the original code, tasks sharing one class set",
    )
    p.add_argument("--data_root", default=None, help="dataset folder (default ./data/<dataset>)")
    p.add_argument("--episodes", default=None, help="meta_test on the fixed episodes of this .npz file")
    p.add_argument("--seed", type=int, default=0, help="seeds initialisation, episodes and noise")
    p.add_argument("--log_freq", type=int, default=50, help="log line every N iterations")
    p.add_argument("--val_freq", type=int, default=1000, help="meta-validation every N iterations")
    p.add_argument("--n_val_iters", type=int, default=100, help="meta-validation episodes")
    p.add_argument(
        "--xla",
        choices=("auto", "on", "off"),
        default="auto",
        help="compile the training, validation and meta-test graphs with XLA, each as one cluster"
        " (auto: on when a GPU is visible; on a CPU XLA is slower)",
    )
    p.add_argument(
        "--xla_cache",
        default=XLA_CACHE,
        help="persistent cache of XLA compilations, shared by runs and resumes of the same shapes"
        " ('' for none; default %(default)s)",
    )
    add_attack_flags(p)
    add_taml_flags(p)
    args = p.parse_args(argv)
    try:
        check_flags(args)
    except UsageError as e:
        p.error(str(e))
    xla_cache(args)  # TF_XLA_FLAGS, before TensorFlow is imported
    return args


# Flags whose value is a count: (least, most) (cli.out_of_range; docs/failures.md#counts). The most
# of the graph's counts is far above any run of the papers (5-10 inner steps, 10 posterior draws),
# each of which is a copy of the network in the graph (or a draw in memory); the data's sizes bound
# way, shot and query further (check_data_sizes).
MAX_GRAPH = 1000  # --n_steps, --n_test_mc_samp, --n_mc_samples, --metabatch
MAX_EPISODES = 10**7  # meta-test and validation episodes
MAX_SIZE = 10**5  # --way, --shot, --query, --max_shot: no dataset has classes (or examples) this many
COUNTS = {
    "save_freq": (1, cli.MAX_ITERS),
    "n_train_iters": (1, cli.MAX_ITERS),
    "n_test_iters": (2, MAX_EPISODES),
    "way": (1, MAX_SIZE),
    "shot": (1, MAX_SIZE),
    "query": (1, MAX_SIZE),
    "max_shot": (1, MAX_SIZE),
    "metabatch": (1, MAX_GRAPH),
    "n_steps": (1, MAX_GRAPH),
    "n_test_mc_samp": (1, MAX_GRAPH),
    "n_mc_samples": (0, MAX_GRAPH),
    "log_freq": (1, cli.MAX_ITERS),
    "val_freq": (1, cli.MAX_ITERS),
    "n_val_iters": (1, MAX_EPISODES),
    "attack_steps": (1, MAX_EPISODES),
    "gpu_id": (0, 1023),  # an index (CUDA_VISIBLE_DEVICES): another value would hide every GPU
}
WHY_LEAST = {
    "n_test_iters": "a confidence interval needs two episodes",
    # Without an inner step there is no adaptation, and Meta-dropout's noise (which acts only in
    # the inner loop, Algorithm 1) would have nothing to perturb: refused for every model alike.
    "n_steps": "the inner loop needs a step",
    "n_mc_samples": "0: the posterior means",
}


def check_flags(args: argparse.Namespace) -> None:
    """Every flag's value, alone and with the others, without TensorFlow and before anything is
    written; fills in the perturbation's hyperparameters. UsageError saying what to do."""
    wrong = cli.out_of_range(args, COUNTS, WHY_LEAST)
    if wrong:
        raise UsageError(wrong)
    check_taml_flags(args)  # next: it fills in the Bayesian TAML defaults (--inner_lr, --noise)
    for name in ("meta_lr", "inner_lr"):
        if not (math.isfinite(getattr(args, name)) and getattr(args, name) > 0):
            raise UsageError(f"--{name} must be a positive number, not {getattr(args, name)}")
    if not 0 <= args.seed <= cli.MAX_SEED:
        raise UsageError(f"--seed must be an integer from 0 to {cli.MAX_SEED}, not {args.seed}")
    if args.episodes is not None and args.mode != "meta_test":
        raise UsageError(f"--episodes is for --mode meta_test only (not {args.mode})")
    if args.savedir is None:
        raise UsageError("--savedir is required")
    if args.savedir.strip() == "":
        raise UsageError("--savedir is empty: name a folder")
    check_attack_flags(args)
    if args.maml and args.noise not in (None, "none"):
        raise UsageError(
            f"--maml is MAML without perturbation; it cannot be combined with --noise {args.noise}"
        )
    args.noise = "none" if args.maml else (args.noise or "metadrop")
    # all hyperparameters, defaults filled in, for config.json and the settings checks
    perturbation = make_noise(args)
    args.noise_hp, args.noise_title = perturbation.hp(), perturbation.title
    args.noise_version = perturbation.version  # config.json: savedirs of another version are refused
    check_xla_cache(args)


def add_attack_flags(p: argparse.ArgumentParser) -> None:
    """Flags of the adversarial-robustness experiment (Section 4.1, Figures 5-6; attack.py)."""
    p.add_argument("--attack", default=None, help="meta_test under PGD of this norm: l1, l2 or linf")
    p.add_argument("--attack_eps", default=None, help="--attack radii, comma-separated (0 = clean)")
    p.add_argument("--attack_steps", type=int, default=200, help="--attack PGD steps")
    p.add_argument("--adv_inner", default=None, help="adversarial MAML: inner steps on PGD examples (norm)")
    p.add_argument("--adv_eps", type=float, default=None, help="--adv_inner radius")


def check_attack_flags(args: argparse.Namespace) -> None:
    """The attack flags' values (check_flags)."""
    from attack import NORMS

    for name in ("attack", "adv_inner"):
        if getattr(args, name) not in (None, *NORMS):
            raise UsageError(f"--{name} {getattr(args, name)}: choose one of {', '.join(NORMS)}")
    if (args.attack is None) != (args.attack_eps is None):
        raise UsageError("--attack and --attack_eps go together: e.g. --attack linf --attack_eps 0,0.01,0.02")
    if args.attack is not None:
        if args.mode != "meta_test":
            raise UsageError("--attack evaluates a trained model: use it with --mode meta_test")
        try:
            args.attack_eps = [float(e) for e in args.attack_eps.split(",")]
        except ValueError:
            raise UsageError(
                f"--attack_eps {args.attack_eps}: give numbers separated by commas, e.g. 0,0.1,0.2"
            ) from None
        bad = [e for e in args.attack_eps if not (math.isfinite(e) and e >= 0)]
        if bad:
            what = "negative" if bad[0] < 0 else "infinite" if math.isinf(bad[0]) else "not a number"
            raise UsageError(
                f"--attack_eps {','.join(f'{e:g}' for e in args.attack_eps)}: the radius {bad[0]:g} is "
                f"{what}; give radii of at least 0 (0 = clean), e.g. 0,0.1,0.2"
            )
    if (args.adv_inner is None) != (args.adv_eps is None):
        raise UsageError("--adv_inner and --adv_eps go together: e.g. --adv_inner linf --adv_eps 0.005")
    if args.adv_eps is not None and not (math.isfinite(args.adv_eps) and args.adv_eps > 0):
        raise UsageError(f"--adv_eps must be a positive number, not {args.adv_eps:g}")


# Bayesian TAML (Lee et al., ICLR 2020; docs/bayesian-taml.md) runs beside Meta-Dropout; the
# flags that mean the same thing are other names of Meta-Dropout's: --alpha_on = --metasgd (Meta-SGD),
# --id_dataset = --dataset, --n_test_episodes (and the runfiles' prefix --n_test_episode) =
# --n_test_iters, and -meta_lr (one dash: the seed's README, spec Q11) = --meta_lr.
SELECT = ("last", "id", "id+ood")  # checkpoint selection rules of meta_test (spec Q7)


def add_taml_flags(p: argparse.ArgumentParser) -> None:
    """Flags of Bayesian TAML's original command line (spec section 4)."""
    g = p.add_argument_group("Bayesian TAML (Lee et al., ICLR 2020): any-shot and out-of-distribution tasks")
    alias = {"default": argparse.SUPPRESS}  # the original flag holds the default
    g.add_argument(
        "--id_dataset", dest="dataset", **alias, help="= --dataset; a comma list trains on each in turn"
    )
    g.add_argument("--ood_dataset", default=None, help="comma list of datasets evaluated out of distribution")
    g.add_argument(
        "--alpha_on", dest="metasgd", action="store_true", **alias, help="= --metasgd (Meta-SGD's alpha)"
    )
    g.add_argument(
        "--n_test_episodes",
        "--n_test_episode",
        dest="n_test_iters",
        type=int,
        **alias,
        help="= --n_test_iters",
    )
    g.add_argument(
        "-meta_lr", dest="meta_lr", type=float, **alias, help="= --meta_lr (the seed's README's typo)"
    )
    g.add_argument(
        "--max_shot",
        type=int,
        default=None,
        help="any-shot episodes: shots uniform on 1..max_shot per class or per task (--shot unused)",
    )
    for k, what in (("omega", "class weights"), ("gamma", "per-layer step scales"), ("z", "initialisation")):
        g.add_argument(f"--{k}_on", action="store_true", help=f"balancing variable {k}: {what} (taml.py)")
    g.add_argument(
        "--n_mc_samples",
        type=int,
        default=0,
        help="meta_test: posterior draws of the balancing variables, each with its own inner loop "
        "(0: the posterior means)",
    )
    g.add_argument(
        "--select",
        choices=SELECT,
        default=None,
        help="meta_test's checkpoint: the newest, or the best validation accuracy in distribution (id) "
        "or summed with out of distribution (id+ood, the original's); default id+ood with --max_shot, "
        "else last (always last for a dataset without validation split: omniglot)",
    )


def check_taml_flags(args: argparse.Namespace) -> None:
    """Normalise and check the Bayesian TAML flags (before TensorFlow is imported)."""
    ids, oods = dataset_names(args.dataset), dataset_names(args.ood_dataset)
    for flag, names in (("--id_dataset", ids), ("--ood_dataset", oods)):
        if len(set(names)) < len(names):
            raise UsageError(f"{flag}: a dataset is named twice ({', '.join(names)})")
    if not ids:
        raise UsageError("--id_dataset (--dataset) names no dataset")
    from data import DATASETS, has_val

    for flag, names in (("--dataset (--id_dataset)", ids), ("--ood_dataset", oods)):
        for name in names:
            if name not in DATASETS:
                raise UsageError(f"{flag}: unknown dataset {name} (known: {', '.join(sorted(DATASETS))})")
    if set(ids) & set(oods):
        raise UsageError(f"--ood_dataset: {', '.join(sorted(set(ids) & set(oods)))} is also in distribution")
    if len(ids) > 1 and args.data_root is not None:
        raise UsageError("--data_root is one dataset's folder: give a single --id_dataset with it")
    args.dataset, args.ood_dataset = ",".join(ids), ",".join(oods) or None
    # Whether the ID datasets hold out classes for meta-validation (config.json; omniglot does not).
    args.val_split = all(has_val(n) for n in ids)
    if args.select is None:
        args.select = "id+ood" if args.max_shot and args.val_split else "last"
    if args.select != "last" and not args.val_split:
        raise UsageError(
            f"--select {args.select} picks a checkpoint by meta-validation, but {args.dataset} holds no "
            "validation split: use --select last (the newest checkpoint, the paper's choice), or meta-train "
            "on a dataset with one (omniglot_val holds out 100 of Omniglot's training characters)"
        )
    if args.max_shot and args.mode == "export":
        raise UsageError("--mode export traces fixed-shot two-way tasks: leave out --max_shot")
    if args.max_shot and (args.attack or args.adv_inner):
        raise UsageError("--attack and --adv_inner take fixed-shot tasks: leave out --max_shot")
    if (
        args.inner_lr is None
    ):  # Bayesian TAML's original code: scalar step 0.5, Meta-SGD's alpha starts at 0.01 (spec 1.2)
        args.inner_lr = (0.01 if args.metasgd else 0.5) if args.max_shot else 0.1
    if args.max_shot and args.noise is None and not args.maml:
        args.noise = "none"  # Bayesian TAML's models have no perturbation (--noise adds one)


def check_data_roots(args: argparse.Namespace) -> None:
    """UsageError if a dataset read from files has no folder (a typo'd --data_root, a dataset not
    prepared), before a savedir is made; meta_test on --episodes reads no dataset. Not part of
    check_flags: parse_args also parses commands whose data are elsewhere (seed 002's README)."""
    if args.episodes is not None:
        return
    import data
    from data.files import command

    ids = dataset_names(args.dataset)
    for i, name in enumerate(ids + dataset_names(args.ood_dataset)):
        if not hasattr(data.entry(name)[0], "prepare"):  # bundled data (digits): no folder
            continue
        given = args.data_root if i == 0 else None  # --data_root is the (single) ID dataset's
        root = given or data.default_root(name)
        if os.path.isdir(root):
            continue
        flag = "--dataset" if i < len(ids) else "--ood_dataset"
        where = f"--data_root {root}" if given else f"{flag} {name}: {root}"
        if os.path.exists(root):
            raise UsageError(f"{where} is a file, not a folder: give the folder get_data.py prepared")
        if given:
            also = ""
        elif i == 0 and len(ids) == 1:
            also = " (or give its folder with --data_root)"
        else:  # --data_root is the single ID dataset's; the others are found under $METADROP_DATA
            also = f" (or set ${data.DATA_ENV} to the folder that holds {os.path.basename(root)})"
        raise UsageError(f"{where} does not exist: prepare {name} there with: {command(name, root)}{also}")
    check_data_sizes(args)


SPLITS_OF = {
    "meta_train": ("train", "val"),
    "meta_test": ("test",),
    "export": ("test",),
}  # what each mode reads


def check_data_sizes(args: argparse.Namespace) -> None:
    """UsageError if a dataset cannot be opened or cannot hold an episode of these flags (--way,
    --shot/--max_shot, --query against its classes), or the datasets' image shapes differ, from the
    files' headers only (data.headers.peek): before TensorFlow, in about a second, not after the data
    and the graph are loaded. The Runner checks the loaded splits again."""
    from data import DataError
    from data.headers import peek

    ids = dataset_names(args.dataset)
    shapes = {}
    for i, name in enumerate(ids + dataset_names(args.ood_dataset)):
        flag = "--dataset" if i < len(ids) else "--ood_dataset"
        try:
            shapes[name], n = peek(name, args.data_root if i == 0 else None)
        except DataError as e:
            raise UsageError(f"{flag} {name}: {e}") from None
        for s in SPLITS_OF[args.mode]:
            if (i < len(ids) and s != "val") or s in n:  # OOD datasets may lack a training split,
                check_split(args, n[s], f"{name} {s}")  # any dataset a validation split
    for name, shape in shapes.items():
        if shape != shapes[ids[0]]:
            raise UsageError(
                f"{name} has {'x'.join(map(str, shape))} images, {ids[0]} "
                f"{'x'.join(map(str, shapes[ids[0]]))}: one network needs one image shape"
            )


def check_xla_cache(args: argparse.Namespace) -> None:
    """--xla_cache must be a folder that can be created or written: TensorFlow would only fail at the
    first compilation. The default is dropped with a warning when unusable and XLA is not forced on."""
    if args.xla == "off" or not args.xla_cache:
        return
    why = unwritable(args.xla_cache)
    if why is None:
        return
    if args.xla_cache == XLA_CACHE and args.xla == "auto":
        print(
            f"warning: --xla_cache {XLA_CACHE}: {why}; compiled XLA clusters are not cached", file=sys.stderr
        )
        args.xla_cache = ""
        return
    raise UsageError(
        f"--xla_cache {args.xla_cache}: {why}; choose another folder, or --xla_cache '' for none"
    )


def unwritable(folder: str) -> str | None:
    """Why `folder` cannot be created or written to, None if it can; creates nothing."""
    path = os.path.abspath(folder)
    while not os.path.exists(path):
        path = os.path.dirname(path)
    if not os.path.isdir(path):
        return f"{path} is a file, not a folder"
    if not os.access(path, os.W_OK | os.X_OK):
        return f"{path} is not writable"
    return None


def main(argv: list[str] | None = None) -> int:
    def work(made: list[str]) -> None:
        cli.ctrl_c_raises()
        os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # before TensorFlow is imported
        args = parse_args(argv)
        check_data_roots(args)
        os.environ["CUDA_VISIBLE_DEVICES"] = str(args.gpu_id or 0)
        if not os.path.lexists(args.savedir):  # this run creates it
            made.append(args.savedir)
        MODES[args.mode](args)

    return entry(work)


if __name__ == "__main__":
    quiet.start(sys.argv[1:])
    cli.run(main)
