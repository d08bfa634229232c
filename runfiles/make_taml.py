"""Write runfiles/taml/<model>_<experiment>.sh: Bayesian TAML's experiments (Bayesian TAML, Table 1) for
MAML, Meta-SGD, Bayesian TAML and the ablations (alpha plus one of omega, gamma, z).

Settings (spec 2.6; the seed's README commands and the original runfiles): any-shot tasks with shots
1..50 and 15 queries, 5 inner steps at meta-training and 10 at meta-test, checkpoints and validation
every 10,000 iterations on 3000 episodes, 1000 test episodes; MAML's scalar inner step 0.5 (0.1 on
miniImageNet); Meta-SGD and the balancing variables --alpha_on (alpha from 0.01); 10 posterior draws at
meta-test for the models with balancing variables, posterior means (0) for the others.

    python runfiles/make_taml.py    # rewrite them after changing the settings below
"""

from __future__ import annotations

import os
from pathlib import Path

RUNFILES = Path(__file__).resolve().parent
# name -> (label, --id_dataset, --ood_dataset, way, metabatch, iterations, meta_lr, MAML's inner_lr)
EXPERIMENTS = {
    "cifar": ("CIFAR-FS / SVHN", "cifar", "svhn", 5, 4, 50000, "1e-3", "0.5"),
    "mimgnet": ("miniImageNet / CUB", "mimgnet", "cub", 5, 1, 80000, "1e-4", "0.1"),
    "multi": (
        "Aircraft, QuickDraw, VGG Flower / Traffic Signs, Fashion-MNIST",
        "aircraft, quickdraw, vgg_flower",
        "traffic, fashion-mnist",
        10,
        3,
        60000,
        "1e-3",
        "0.5",
    ),
}
MODELS = {  # name -> (label, switches)
    "maml": ("MAML", ""),
    "metasgd": ("Meta-SGD", "--alpha_on"),
    "taml": ("Bayesian TAML", "--alpha_on --omega_on --gamma_on --z_on"),
    "alpha_omega": ("ablation: alpha + omega", "--alpha_on --omega_on"),
    "alpha_gamma": ("ablation: alpha + gamma", "--alpha_on --gamma_on"),
    "alpha_z": ("ablation: alpha + z", "--alpha_on --z_on"),
}


def runfile(model: str, exp: str) -> str:
    label, ids, oods, way, metabatch, iters, meta_lr, maml_lr = EXPERIMENTS[exp]
    name, switches = MODELS[model]
    savedir = f"./results/taml/{exp}/{model}"
    lr = f"--inner_lr {maml_lr} " if not switches else ""
    draws = 10 if model not in ("maml", "metasgd") else 0  # posterior draws only with balancing variables
    common = (
        f"--gpu_id ${{GPU_ID:-0}} --savedir '{savedir}' --id_dataset '{ids}' --ood_dataset '{oods}' "
        f"--metabatch {metabatch} --way {way} --max_shot 50 --query 15 {lr}{switches}".rstrip()
    )
    train = (
        f"python main.py {common} --mode 'meta_train' --n_steps 5 --n_train_iters {iters} "
        f'--meta_lr {meta_lr} --save_freq 10000 --val_freq 10000 --n_val_iters 3000 "$@"'
    )
    test = (
        f"python main.py {common} --mode 'meta_test' --n_steps 10 --n_test_episodes 1000 "
        f'--n_mc_samples {draws} "$@"'
    )
    return "\n".join(
        [
            "#!/usr/bin/env bash",
            f"# Bayesian TAML (Lee et al., ICLR 2020), {label}: {name}.",
            "# Written by runfiles/make_taml.py, which states the settings and their sources (spec 2.6).",
            f"# Meta-trains, then meta-tests into {savedir}/results_{{id,ood}}_<dataset>.json;",
            "# `python report.py results/` puts them beside the published numbers.",
            "# Env: GPU_ID (default 0); METADROP_DATA (the data folder, default ./data).",
            "# Extra arguments go to both commands and win over the ones below, e.g. --seed 1 --savedir DIR.",
            "set -euo pipefail",
            'cd "$(dirname "$0")/../.."',
            "",
            train,
            test,
            "",
        ]
    )


def main() -> None:
    for model in MODELS:
        for exp in EXPERIMENTS:
            path = RUNFILES / "taml" / f"{model}_{exp}.sh"
            path.parent.mkdir(exist_ok=True)
            path.write_text(runfile(model, exp))
            os.chmod(path, 0o755)
    print(f"wrote {len(MODELS) * len(EXPERIMENTS)} runfiles under {RUNFILES / 'taml'}")


if __name__ == "__main__":
    main()
