#!/usr/bin/env bash
# Table 1 cell: Meta-SGD + Meta-dropout, Omniglot 20-way 5-shot.
# Meta-trains, then meta-tests (1000 episodes, --n_test_mc_samp 30) into results/metasgd_metadrop/omni_5shot/results.json;
# `python report.py results/` compares it with the paper.
# Source: no original runfile for Meta-SGD + Meta-dropout, so the paper's Section 4 (meta-lr 1e-3) with the
# original runfiles' --metabatch 4 and 60000 iterations (Section 4: B=6, 40K), as every model of the
# table; paper/hyperparameters.csv, paper/departures.csv (the README has meta-dropout commands only).
# Env: GPU_ID (default 0); DATA_ROOT (optional, passed on as --data_root).
# Extra arguments go to both commands and win over the ones below, e.g. --seed 1 --savedir DIR.
set -euo pipefail
cd "$(dirname "$0")/.."

python main.py --gpu_id ${GPU_ID:-0} --savedir './results/metasgd_metadrop/omni_5shot' --dataset 'omniglot' --mode 'meta_train' --metasgd --metabatch 4 --n_steps 5 --inner_lr 0.4 --way 20 --shot 5 --query 15 --n_train_iters 60000 --meta_lr 1e-3 --n_test_mc_samp 1 ${DATA_ROOT:+--data_root "$DATA_ROOT"} "$@"
python main.py --gpu_id ${GPU_ID:-0} --savedir './results/metasgd_metadrop/omni_5shot' --dataset 'omniglot' --mode 'meta_test' --metasgd --metabatch 1 --n_steps 5 --inner_lr 0.4 --way 20 --shot 5 --query 15 --n_train_iters 60000 --meta_lr 1e-3 --n_test_mc_samp 30 ${DATA_ROOT:+--data_root "$DATA_ROOT"} "$@"
