"""Decision boundaries (Figure 4, Appendix C) and stochastic feature maps (Figure 8) from export.npz.

`python main.py ... --mode export` traces the inner loop on 10 two-way meta-test tasks into
savedir/export.npz: each task's two classes take two random columns c1, c2 of the meta-learned
last layer, and only that two-way classifier is adapted (Figure 4: only the two classes' examples
take part in the inner optimization). This script reads the file; it needs no TensorFlow.

    python plot.py --savedir DIR               # DIR/plot/step<k>/<task>.png, k = 0..n_steps
    python plot.py --savedir DIR --features    # DIR/plot/features/layer<l>_channel<c>.png
    python plot.py --robustness ROOT           # ROOT/robustness.png (Figures 5-6)
    python plot.py --balance DIR               # DIR/balance.png (Bayesian TAML's balancing variables)

Decision boundary (Appendix C): with w = w_c1 - w_c2 and b = b_c1 - b_c2 of the adapted last
layer, the two logits are equal on the hyperplane h.w + b = 0 (Eq. 11). A feature h is drawn at
x = h.u, u = w / |w| (Eq. 12), and y = a 1-D t-SNE (scikit-learn) of the remainder h - x u, fitted
jointly to the training, perturbed training and test points of the step (Eq. 13); the boundary is
the vertical line x = -b / |w| (Eq. 14), class c1 to its right. Step 0 is the meta-learned
initialisation, step k the classifier after k inner steps. MAML exports have no perturbed points.

Feature maps (Figure 8): for a few query images of the first exported task, one channel of conv
block l's output (after batch norm, ReLU and pooling; meta-learned theta, batch-norm statistics of
that task's query set) without noise (a = mu) and with two noise samples, on one colour scale per
row and channel. Meta-dropout exports only.

Adversarial robustness (Figures 5-6): every savedir/robust_<norm>.json under ROOT (written by
`main.py --mode meta_test --attack <norm>`) is one line of accuracy against the PGD radius eps,
with its CI95; one panel per setting and norm, one line per model (its Table 1/2 row from the
config, and the adversarial-training radius of adversarial MAML); an inset magnifies the clean
region, from eps = 0 to the first radius.

Balancing variables (Bayesian TAML, as its original README shows them): main.py --max_shot logs,
at each validation, the posterior means of gamma on 10 task-imbalance and of omega on 10
class-imbalance validation tasks into savedir/balance.jsonl. --balance draws those of the last
logged iteration: gamma of each layer against the task size N (the README: gamma grows with N, the
head's shrinks), and omega of each
class against its size, one line per task (smaller classes get larger omega).
"""

from __future__ import annotations

import cli

if __name__ == "__main__":
    cli.quiet_ctrl_c()  # Ctrl-C while the modules below load: one line, exit 130

import argparse
import json
import math
import os
import sys
import zipfile

import numpy as np

import quiet
from data.files import not_format, resource

TRACE_KEYS = ("htr", "hte", "htr_samp", "w", "b", "ytr", "yte", "cols")
COLORS = ("firebrick", "royalblue")  # classes c1, c2


class PlotError(Exception):
    """Bad flags or export file; the message says what to do."""


def unit_normal(w: np.ndarray) -> np.ndarray:
    """u = (w_c1 - w_c2) / |w_c1 - w_c2| for the two columns w [F, 2] (Eq. 12)."""
    d = w[:, 0] - w[:, 1]
    norm = np.linalg.norm(d)
    if norm == 0:
        raise ValueError("the two columns of w are equal: there is no decision hyperplane")
    return d / norm


def boundary_x(w: np.ndarray, b: np.ndarray) -> float:
    """x-coordinate of the hyperplane h.(w_c1 - w_c2) + (b_c1 - b_c2) = 0 (Eq. 11, 14)."""
    return float(-(b[0] - b[1]) / np.linalg.norm(w[:, 0] - w[:, 1]))


def project(h: np.ndarray, u: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """x = h.u [N] (Eq. 12) and what remains of h [N, F] after removing that component (Eq. 13)."""
    x = h @ u
    return x, h - np.outer(x, u)


def embed(h: np.ndarray, w: np.ndarray, perplexity: float, max_iter: int, seed: int) -> np.ndarray:
    """2-D coordinates [N, 2] of features h [N, F]: the projection on u and a t-SNE of the rest."""
    from sklearn.manifold import TSNE

    x, rest = project(h, unit_normal(w))
    # t-SNE needs perplexity < number of points; (N - 1) / 3 keeps 3 * perplexity neighbours.
    perplexity = min(perplexity, max(1.0, (len(h) - 1) / 3))
    # Exact t-SNE: a figure has at most a few hundred points, where it is faster than Barnes-Hut.
    tsne = TSNE(1, perplexity=perplexity, max_iter=max_iter, init="random", method="exact", random_state=seed)
    return np.stack([x, tsne.fit_transform(rest)[:, 0]], axis=1)


def load_export(savedir: str) -> tuple[dict[str, np.ndarray], dict]:
    path = os.path.join(savedir, "export.npz")
    if not os.path.isfile(path):
        raise PlotError(f"no {path}: run main.py --mode export with this --savedir first")
    try:
        why = not_format(path, ".npz")
        if why:
            raise PlotError(f"{why}; run main.py --mode export again")
        with np.load(path, allow_pickle=False) as z:
            arrays = {k: z[k] for k in z.files}
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as e:
        raise PlotError(f"{path} is not a readable .npz file ({e}); run main.py --mode export again") from e
    missing = [k for k in (*TRACE_KEYS, "meta") if k not in arrays]
    if missing:
        raise PlotError(f"{path} lacks {', '.join(missing)}: write it again with main.py --mode export")
    return arrays, json.loads(str(arrays["meta"]))


def title(meta: dict) -> str:
    """The perturbation's display title (noise.py), as main.py --mode export recorded it."""
    return meta.get("noise_title", meta["noise"])


def save_png(fig: object, path: str) -> None:
    """Save a figure whole or not at all."""
    import matplotlib.pyplot as plt

    os.makedirs(os.path.dirname(path), exist_ok=True)
    tmp = f"{path}.tmp{os.getpid()}"
    try:
        fig.savefig(tmp, format="png", dpi=120, bbox_inches="tight")
        os.replace(tmp, path)
    finally:
        plt.close(fig)
        if os.path.exists(tmp):
            os.remove(tmp)


def plot_step(ex: dict[str, np.ndarray], meta: dict, t: int, k: int, args: argparse.Namespace) -> str:
    """The figure of task t after k inner steps; returns its path."""
    import matplotlib.pyplot as plt
    from matplotlib.lines import Line2D

    htr, hte, samp = ex["htr"][t, k], ex["hte"][t, k], ex["htr_samp"][t, k]  # samp [S, N, F]
    w, b, ytr, yte = ex["w"][t, k], ex["b"][t, k], ex["ytr"][t], ex["yte"][t]
    n_tr, n_te = len(htr), len(hte)
    xy = embed(
        np.concatenate([htr, hte, samp.reshape(-1, htr.shape[1])]), w, args.perplexity, args.tsne_iter, t
    )
    xy_tr, xy_te, xy_samp = xy[:n_tr], xy[n_tr : n_tr + n_te], xy[n_tr + n_te :]
    y_samp = np.tile(ytr, len(samp))
    acc = np.mean(np.argmax(hte @ w + b, axis=1) == yte)

    fig, ax = plt.subplots(figsize=(6.4, 4.8))
    for c in range(2):
        kw = {"color": COLORS[c], "edgecolors": "black", "linewidths": 0.6}
        ax.scatter(*xy_samp[y_samp == c].T, s=40, alpha=0.3, zorder=1, **kw)
        ax.scatter(*xy_te[yte == c].T, s=110, marker="*", zorder=2, **kw)
        ax.scatter(*xy_tr[ytr == c].T, s=120, marker="o", zorder=3, **kw)
    ax.axvline(boundary_x(w, b), color="black", zorder=0)

    def marker(m: str, size: float, face: str = "white", alpha: float = 1.0) -> Line2D:
        return Line2D(
            [],
            [],
            marker=m,
            linestyle="none",
            markersize=size,
            markerfacecolor=face,
            color="black",
            alpha=alpha,
        )

    handles = [marker("o", 10, COLORS[0]), marker("o", 10, COLORS[1]), marker("o", 10), marker("*", 12)]
    handles.append(Line2D([], [], color="black"))
    c1, c2 = ex["cols"][t]
    labels = [f"class c1 (column {c1})", f"class c2 (column {c2})", "train", "test", "decision boundary"]
    if len(samp):
        handles.insert(3, marker("o", 7, alpha=0.3))
        labels.insert(3, "perturbed train")
    ax.legend(handles, labels, loc="best", fontsize=8, framealpha=0.8)
    ax.set_xlabel("projection on the normal of the decision hyperplane (Eq. 12)")
    ax.set_ylabel("t-SNE of the remainder (Eq. 13)")
    ax.set_yticks([])
    ax.set_title(f"{title(meta)}, {meta['dataset']}: task {t}, step {k}, test accuracy {100 * acc:.0f}%")
    path = os.path.join(args.savedir, "plot", f"step{k}", f"{t}.png")
    save_png(fig, path)
    return path


def plot_boundaries(ex: dict[str, np.ndarray], meta: dict, args: argparse.Namespace) -> list[str]:
    from tqdm import tqdm

    n_tasks, n_steps = ex["htr"].shape[:2]
    if args.tasks is not None:
        n_tasks = min(n_tasks, args.tasks)
    return [
        plot_step(ex, meta, t, k, args) for t in tqdm(range(n_tasks), desc="tasks") for k in range(n_steps)
    ]


def plot_features(ex: dict[str, np.ndarray], meta: dict, args: argparse.Namespace) -> str:
    """Figure 8: per image, the input, then per channel its activation without and with noise."""
    import matplotlib.pyplot as plt

    key = f"fmap{args.layer}"
    layers = sorted(int(k[4:]) for k in ex if k.startswith("fmap") and k[4:].isdigit())
    if key not in ex:
        raise PlotError(f"--layer {args.layer}: export.npz holds layers {layers}")
    fmap = ex[key]  # [1 + samples, images, h, w, C]
    if len(fmap) < 2:
        raise PlotError(
            f"export.npz holds no noise samples ({title(meta)}): --features needs a Meta-dropout export"
        )
    bad = [c for c in args.channels if not 0 <= c < fmap.shape[-1]]
    if bad:
        raise PlotError(f"--channels {bad}: layer {args.layer} has channels 0..{fmap.shape[-1] - 1}")
    images = ex["fmap_x"]
    n_img, n_samp = fmap.shape[1], len(fmap) - 1
    cols = 1 + len(args.channels) * (1 + n_samp)
    fig, axes = plt.subplots(n_img, cols, figsize=(1.4 * cols, 1.4 * n_img), squeeze=False)
    titles = ["image"]
    for c in args.channels:
        titles += [f"ch {c}\nno noise"] + [f"ch {c}\nnoise {s + 1}" for s in range(n_samp)]
    for i in range(n_img):
        img = images[i]
        axes[i, 0].imshow(
            img[..., 0] if img.shape[-1] == 1 else img, cmap="gray_r" if img.shape[-1] == 1 else None
        )
        for j, c in enumerate(args.channels):
            maps = fmap[:, i, :, :, c]
            vmax = max(float(maps.max()), 1e-12)  # one scale for the clean and noisy maps (ReLU: >= 0)
            for s in range(1 + n_samp):
                axes[i, 1 + j * (1 + n_samp) + s].imshow(maps[s], cmap="viridis", vmin=0, vmax=vmax)
    for j, ax in enumerate(axes.flat):
        ax.set_xticks([])
        ax.set_yticks([])
        if j < cols:
            ax.set_title(titles[j], fontsize=8)
    fig.suptitle(
        f"{meta['dataset']}, layer {args.layer}: activations without and with {title(meta)} noise", fontsize=9
    )
    channels = "-".join(map(str, args.channels))
    path = os.path.join(args.savedir, "plot", "features", f"layer{args.layer}_channel{channels}.png")
    save_png(fig, path)
    return path


def load_robust(root: str) -> list[dict]:
    """Every robust_<norm>.json under root (results records with an attack, or the older shape), in a
    stable order: "points" [(eps, mean, ci95)] sorted, starting at eps = 0 (the clean accuracy),
    "label", "norm" and "cell" (dataset, way, shot: report.py's setting)."""
    from results import nothing

    found = []
    for folder, _, files in sorted(os.walk(root)):
        for name in sorted(f for f in files if f.startswith("robust_") and f.endswith(".json")):
            path = os.path.join(folder, name)
            try:
                found.append(robust_curve(path))
            except (OSError, ValueError, KeyError, TypeError) as e:
                raise PlotError(f"{path} is not a robustness result ({e!r}); rerun main.py --attack") from e
    if not found:
        raise PlotError(nothing("robust_<norm>.json files", root, "main.py --mode meta_test --attack"))
    return found


def robust_curve(path: str) -> dict:
    """One robust_<norm>.json (of the results format or the older one) as load_robust gives it;
    ValueError if it is not one."""
    import results

    r = results.read(path)
    if r.attack is None:
        raise ValueError("no attack")
    points = {a["eps"]: (a["mean"], a["ci95"]) for a in r.attack["radii"]}
    points.setdefault(0.0, (r.mean, r.ci95))
    return {
        "points": sorted((e, m, c) for e, (m, c) in points.items()),
        "label": f"{r.model} ({r.attack['steps']} steps, {r.n} episodes)",
        "norm": str(r.attack["norm"]),
        "cell": {"dataset": r.dataset, "way": r.way, "shot": r.shot},
    }


def plot_robustness(root: str) -> str:
    """Figures 5-6: accuracy against eps, one panel per (setting, norm), one line per model."""
    import matplotlib.pyplot as plt

    from results import PUBLISHED, setting_name

    with open(PUBLISHED) as f:
        settings = json.load(f)["settings"]
    panels: dict[tuple[str, str], list[dict]] = {}
    for r in load_robust(root):
        panels.setdefault((setting_name(r["cell"], settings), r["norm"]), []).append(r)
    rows, cols = sorted({s for s, _ in panels}), sorted({n for _, n in panels})
    fig, axes = plt.subplots(len(rows), len(cols), figsize=(5 * len(cols), 4 * len(rows)), squeeze=False)
    for ax in axes.flat:
        ax.set_axis_off()
    for (setting, norm), results in panels.items():
        ax = axes[rows.index(setting), cols.index(norm)]
        ax.set_axis_on()
        inset = ax.inset_axes([0.5, 0.5, 0.47, 0.45])  # the clean region: eps from 0 to the first radius
        first = min((e for r in results for e, _, _ in r["points"] if e > 0), default=1.0)
        near = [(m, c) for r in results for e, m, c in r["points"] if e <= first]
        for r in sorted(results, key=lambda r: r["label"]):
            eps, mean, ci = np.array(r["points"]).T
            for a in (ax, inset):
                a.errorbar(eps, mean, yerr=ci, marker="o", markersize=3, capsize=2, label=r["label"])
        inset.set_xlim(-0.05 * first, 1.05 * first)
        inset.set_ylim(min(m - c for m, c in near) - 0.5, max(m + c for m, c in near) + 0.5)
        inset.tick_params(labelsize=6)
        ax.set_title(f"{settings.get(setting, {}).get('label', setting)} ({norm})", fontsize=9)
        ax.set_xlabel("epsilon")
        ax.set_ylabel("accuracy (%)")
        ax.legend(loc="lower left", fontsize=6)
    path = os.path.join(root, "robustness.png")
    save_png(fig, path)
    return path


def plot_transfer(root: str) -> str:
    """MetaPerturb's target runs under root (transfer.py --phase tgt): periodic test accuracy
    (curve.json) against the step, the mean over seeds with the seeds' range shaded, one line per
    regulariser, one panel per (target dataset, model)."""
    import matplotlib.pyplot as plt

    from results import ResultError, nothing, transfer_results

    try:
        results = transfer_results(root)
    except ResultError as e:
        raise PlotError(str(e)) from e
    curves: dict[tuple[str, str], dict[str, list]] = {}
    for r in results:
        path = os.path.join(os.path.dirname(r["path"]), "curve.json")
        if not os.path.exists(path):  # a run of fewer --train_steps than --print_every tests only at the end
            print(f"{os.path.dirname(path)}: no periodic tests (curve.json), not plotted", file=sys.stderr)
            continue
        try:
            with open(path) as f:
                steps, acc = np.array([(c["step"], c["acc"]) for c in json.load(f)]).T
        except (OSError, ValueError, KeyError) as e:
            raise PlotError(f"{path} is not a transfer.py curve ({e!r})") from e
        curves.setdefault((r["data"], r["model"]), {}).setdefault(r["title"], []).append((steps, acc))
    if not curves:
        raise PlotError(
            nothing(
                "transfer.py curves (curve.json)",
                root,
                "transfer.py --phase tgt with --print_every below --train_steps",
            )
        )
    fig, axes = plt.subplots(1, len(curves), figsize=(5 * len(curves), 3.5), squeeze=False)
    for ax, ((data, model), lines) in zip(axes.flat, sorted(curves.items())):
        for title, runs in sorted(lines.items()):
            n = min(len(s) for s, _ in runs)
            acc = np.stack([a[:n] for _, a in runs])
            ax.plot(runs[0][0][:n], acc.mean(0), label=f"{title} (n={len(runs)})")
            ax.fill_between(runs[0][0][:n], acc.min(0), acc.max(0), alpha=0.2)
        ax.set_title(f"{data}, {model}", fontsize=9)
        ax.set_xlabel("step")
        ax.set_ylabel("test accuracy (%)")
        ax.legend(fontsize=7)
    path = os.path.join(root, "transfer_curves.png")
    save_png(fig, path)
    return path


def load_balance(savedir: str) -> dict[str, dict]:
    """The last logged iteration's records of savedir/balance.jsonl, by variable (gamma, omega)."""
    path = os.path.join(savedir, "balance.jsonl")
    if not os.path.isfile(path):
        raise PlotError(
            f"no {path}: meta-train with --max_shot and --gamma_on or --omega_on (it is written at each "
            "validation)"
        )
    records = []
    try:
        with open(path) as f:
            records = [json.loads(line) for line in f if line.strip()]
        last = max(r["iter"] for r in records)
        out = {r["variable"]: r for r in records if r["iter"] == last}
        for r in out.values():
            r["shots"], r["values"] = np.asarray(r["shots"]), np.asarray(r["values"], dtype=float)
    except (ValueError, KeyError, TypeError) as e:
        raise PlotError(f"{path} is not main.py's balance log ({e}); delete it and validate again") from e
    return out


def plot_balance(savedir: str) -> str:
    """savedir/balance.png: gamma per layer vs task size, omega per class vs class size."""
    import matplotlib.pyplot as plt

    records = load_balance(savedir)
    fig, axes = plt.subplots(1, len(records), figsize=(5 * len(records), 4), squeeze=False)
    for ax, (k, r) in zip(axes[0], sorted(records.items(), key=lambda kv: kv[0] != "gamma")):
        if k == "gamma":
            n = r["shots"].sum(1)
            order = np.argsort(n, kind="stable")
            names = [f"conv{l + 1}" for l in range(r["values"].shape[1] - 1)] + ["dense"]
            for l, name in enumerate(names):
                ax.plot(n[order], r["values"][order, l], marker="o", markersize=3, label=name)
            ax.set_xlabel("task size N (support examples)")
            ax.set_ylabel("gamma (posterior mean)")
            ax.set_yscale("log")
            ax.set_title(f"gamma per layer, task imbalance (iteration {r['iter']})", fontsize=9)
            ax.legend(fontsize=7)
        else:
            for shots, omega in zip(r["shots"], r["values"]):
                order = np.argsort(shots, kind="stable")
                ax.plot(shots[order], omega[order], marker="o", markersize=3, alpha=0.7)
            ax.axhline(1 / r["shots"].shape[1], color="gray", linestyle=":", label="uniform 1/C")
            ax.set_xlabel("class size (support examples)")
            ax.set_ylabel("omega (posterior mean)")
            ax.set_title(
                f"omega per class, class imbalance (iteration {r['iter']}); a line per task", fontsize=9
            )
            ax.legend(fontsize=7)
    path = os.path.join(savedir, "balance.png")
    save_png(fig, path)
    return path


# (least, most) of the count flags (cli.out_of_range; docs/failures.md#counts)
COUNTS = {"tsne_iter": (250, 10**6), "tasks": (1, 10**7), "layer": (1, 1000)}
WHY_LEAST = {"tsne_iter": "scikit-learn's minimum", "layer": "the first conv block"}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = cli.ArgumentParser(description=__doc__.split("\n\n")[0])
    what = p.add_mutually_exclusive_group(required=True)
    what.add_argument("--savedir", help="the --savedir of main.py --mode export")
    what.add_argument("--robustness", metavar="ROOT", help="plot every robust_<norm>.json under ROOT")
    what.add_argument("--transfer", metavar="ROOT", help="plot the test curves of transfer.py's target runs")
    what.add_argument("--balance", metavar="DIR", help="plot Bayesian TAML's balancing variables of a run")
    p.add_argument("--features", action="store_true", help="plot feature maps (Figure 8) instead")
    p.add_argument("--layer", type=int, default=1, help="--features: conv block, 1 = first")
    p.add_argument("--channels", type=int, nargs="+", default=[0, 1], help="--features: channels to show")
    p.add_argument("--tasks", type=int, default=None, help="plot only the first N tasks")
    p.add_argument("--perplexity", type=float, default=30.0, help="t-SNE perplexity (capped by the points)")
    p.add_argument("--tsne_iter", type=int, default=1000, help="t-SNE iterations (at least 250)")
    p.add_argument(
        "--verbose", action="store_true", help=f"show TensorFlow's C++ log lines ({quiet.VERBOSE_ENV}=1)"
    )
    args = p.parse_args(argv)
    wrong = cli.out_of_range(args, COUNTS, WHY_LEAST)
    if wrong:
        p.error(wrong)
    if not (math.isfinite(args.perplexity) and args.perplexity > 0):
        p.error(f"--perplexity must be a positive number, not {args.perplexity}")
    if any(c < 0 for c in args.channels):
        p.error("--channels must be at least 0")
    return args


def main(argv: list[str] | None = None) -> int:
    try:
        cli.ctrl_c_raises()
        return plot(parse_args(argv))
    except KeyboardInterrupt:
        print("stopped; figures already written are whole", file=sys.stderr)
        return cli.STOPPED


def plot(args: argparse.Namespace) -> int:
    import matplotlib

    matplotlib.use("Agg")
    try:
        # the figures drawn from a folder of runs rather than from one export
        for flag, draw in (
            ("robustness", plot_robustness),
            ("transfer", plot_transfer),
            ("balance", plot_balance),
        ):
            if getattr(args, flag):
                print(f"wrote {draw(getattr(args, flag))}")
                return 0
        ex, meta = load_export(args.savedir)
        paths = [plot_features(ex, meta, args)] if args.features else plot_boundaries(ex, meta, args)
    except PlotError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except OSError as e:  # writing a figure: a full disk, a read-only folder, ...
        print(f"error: {resource(e)}", file=sys.stderr)
        return 2
    print(f"wrote {paths[0]}" if args.features else f"wrote {len(paths)} figures under {args.savedir}/plot")
    return 0


if __name__ == "__main__":
    quiet.start(sys.argv[1:])
    cli.run(main)
