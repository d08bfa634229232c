"""Write runfiles/table2/*.sh and runfiles/table3/*.sh: one per cell of the paper's Tables 2 and 3.

A cell is a row of paper/published.json's table2/table3 with a perturbation (--noise, --noise_hp)
and one of the four settings. Its runfile is the Table 1 MAML runfile of that setting
(runfiles/maml_<setting>.sh: the same hyperparameters; Tables 2 and 3 are MAML with a perturbation,
and the paper's Section 4 gives one meta-learning rate for all Omniglot models, 1e-3) with the row's
--noise and --noise_hp in place of --maml and its own savedir, results/<table>/<row>/<setting>.
Rows "none" and "metadrop" are Table 1's MAML and meta-dropout runs (runfiles/maml_*.sh,
runfiles/metadrop_*.sh) and get no copy.

    python runfiles/make_tables.py    # rewrite them after changing a Table 1 runfile or the rows
"""

from __future__ import annotations

import json
import os
from pathlib import Path

RUNFILES = Path(__file__).resolve().parent
TABLE1 = ("none", "metadrop")  # rows that are Table 1 runs


def hp_flag(hp: dict[str, float]) -> str:
    return ",".join(f"{k}={v:g}" for k, v in hp.items())


def cells() -> dict[str, str]:
    """Runfile path (relative to runfiles/) -> text, for every Table 2/3 cell."""
    pub = json.loads((RUNFILES.parent / "paper" / "published.json").read_text())
    out = {}
    for table in ("table2", "table3"):
        for row, spec in pub[table]["rows"].items():
            if spec["noise"] in TABLE1:
                continue
            for setting, s in pub["settings"].items():
                base = (RUNFILES / f"maml_{setting}.sh").read_text()
                flags = f"--noise '{spec['noise']}'"
                if spec["noise_hp"]:
                    flags += f" --noise_hp '{hp_flag(spec['noise_hp'])}'"
                head = [
                    "#!/usr/bin/env bash",
                    f"# {table[:5].title()} {table[5:]} cell: MAML + {spec['label']}"
                    f"{' (' + hp_flag(spec['noise_hp']) + ')' if spec['noise_hp'] else ''}, {s['label']}.",
                    f"# Written by runfiles/make_tables.py from runfiles/maml_{setting}.sh (Table 1's",
                    "# hyperparameters, Section 4) with the row's perturbation; paper/hyperparameters.csv",
                    "# and paper/departures.csv give their sources.",
                    f"# Meta-trains, then meta-tests into results/{table}/{row}/{setting}/results.json;",
                    "# `python report.py results/` puts it beside the paper's number.",
                ]
                body = base[base.index("# Env:") :]
                body = body.replace(f"'./results/maml/{setting}'", f"'./results/{table}/{row}/{setting}'")
                body = body.replace(" --maml ", f" {flags} ")
                body = body.replace(
                    'cd "$(dirname "$0")/.."', 'cd "$(dirname "$0")/../.."'
                )  # one level deeper
                out[f"{table}/{row}_{setting}.sh"] = "\n".join(head) + "\n" + body
    return out


def main() -> None:
    for name, text in cells().items():
        path = RUNFILES / name
        path.parent.mkdir(exist_ok=True)
        path.write_text(text)
        os.chmod(path, 0o755)
    print(f"wrote {len(cells())} runfiles under {RUNFILES}/table2 and table3")


if __name__ == "__main__":
    main()
