"""Per-seed paired differences of a CPU demo: OUT/<model>/seed<k>/results_<file>.json (one file per
evaluation, e.g. fixed episodes of each dataset), each model minus --baseline seed by seed, with a
95% t-interval over the seeds (n - 1 degrees of freedom). Prints a markdown table per evaluation.

    python runfiles/cpu/paired.py results/taml_demo --baseline maml
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path

import numpy as np
from scipy import stats


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("out", help="the demo's OUT folder")
    p.add_argument("--baseline", default="maml", help="the model the others are compared with")
    args = p.parse_args(argv)
    acc: dict[str, dict[str, dict[int, float]]] = {}  # evaluation -> model -> seed -> accuracy
    for path in sorted(Path(args.out).glob("*/seed*/results*.json")):
        evaluation = re.sub(r"_[0-9a-f]{8}$", "", path.stem)  # results_<file>_<hash>: the file's name
        seed = int(path.parent.name[4:])
        acc.setdefault(evaluation, {}).setdefault(path.parent.parent.name, {})[seed] = json.loads(
            path.read_text()
        )["mean"]
    if not acc:
        print(f"error: no OUT/<model>/seed<k>/results*.json under {args.out}", file=sys.stderr)
        return 2
    for evaluation, models in acc.items():
        seeds = sorted({s for runs in models.values() for s in runs})
        base = models.get(args.baseline, {})
        print(f"\n{evaluation} (accuracy %; differences minus {args.baseline}, paired by seed)\n")
        head = ["model", *(f"seed {s}" for s in seeds), "mean (sd)", f"minus {args.baseline}", "mean ± 95% t"]
        print("| " + " | ".join(head) + " |\n|" + "---|" * len(head))
        for model, runs in sorted(models.items(), key=lambda kv: kv[0] != args.baseline):
            a = np.array([runs[s] for s in seeds if s in runs])
            cells = [f"{runs[s]:.2f}" if s in runs else "—" for s in seeds]
            spread = f"{a.mean():.2f} ({a.std(ddof=1):.2f})" if len(a) > 1 else "—"
            both = [s for s in seeds if s in runs and s in base]
            d = np.array([runs[s] - base[s] for s in both])
            diffs = ", ".join(f"{x:+.2f}" for x in d) if model != args.baseline else ""
            t = ""
            if model != args.baseline and len(d) > 1:
                half = stats.t.ppf(0.975, len(d) - 1) * d.std(ddof=1) / np.sqrt(len(d))
                t = f"{d.mean():+.2f} ± {half:.2f} ({len(d) - 1} df)"
            print("| " + " | ".join([model, *cells, spread, diffs, t]) + " |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
