#!/usr/bin/env bash
# Table 2 cell: MAML + Input & Manifold Mixup (gamma=2), Omniglot 20-way 5-shot.
# Written by runfiles/make_tables.py from runfiles/maml_omni_5shot.sh (Table 1's
# hyperparameters, Section 4) with the row's perturbation; paper/hyperparameters.csv
# and paper/departures.csv give their sources.
# Meta-trains, then meta-tests into results/table2/mixup_gamma2/omni_5shot/results.json;
# `python report.py results/` puts it beside the paper's number.
# Env: GPU_ID (default 0); DATA_ROOT (optional, passed on as --data_root).
# Extra arguments go to both commands and win over the ones below, e.g. --seed 1 --savedir DIR.
set -euo pipefail
cd "$(dirname "$0")/../.."

python main.py --gpu_id ${GPU_ID:-0} --savedir './results/table2/mixup_gamma2/omni_5shot' --dataset 'omniglot' --mode 'meta_train' --noise 'mixup' --noise_hp 'gamma=2' --metabatch 4 --n_steps 5 --inner_lr 0.4 --way 20 --shot 5 --query 15 --n_train_iters 60000 --meta_lr 1e-3 --n_test_mc_samp 1 ${DATA_ROOT:+--data_root "$DATA_ROOT"} "$@"
python main.py --gpu_id ${GPU_ID:-0} --savedir './results/table2/mixup_gamma2/omni_5shot' --dataset 'omniglot' --mode 'meta_test' --noise 'mixup' --noise_hp 'gamma=2' --metabatch 1 --n_steps 5 --inner_lr 0.4 --way 20 --shot 5 --query 15 --n_train_iters 60000 --meta_lr 1e-3 --n_test_mc_samp 30 ${DATA_ROOT:+--data_root "$DATA_ROOT"} "$@"
