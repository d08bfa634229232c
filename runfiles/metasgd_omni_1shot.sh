#!/usr/bin/env bash
# Table 1 cell: Meta-SGD, Omniglot 20-way 1-shot.
# Meta-trains, then meta-tests (1000 episodes, --n_test_mc_samp 30) into results/metasgd/omni_1shot/results.json;
# `python report.py results/` compares it with the paper.
# Source: no original runfile for Meta-SGD, so the paper's Section 4 (meta-lr 1e-3) with the
# original runfiles' --metabatch 4 and 60000 iterations (Section 4: B=8, 40K), as every model of the
# table; paper/hyperparameters.csv, paper/departures.csv (the README has meta-dropout commands only).
# Env: GPU_ID (default 0); DATA_ROOT (optional, passed on as --data_root).
# Extra arguments go to both commands and win over the ones below, e.g. --seed 1 --savedir DIR.
set -euo pipefail
cd "$(dirname "$0")/.."

python main.py --gpu_id ${GPU_ID:-0} --savedir './results/metasgd/omni_1shot' --dataset 'omniglot' --mode 'meta_train' --maml --metasgd --metabatch 4 --n_steps 5 --inner_lr 0.1 --way 20 --shot 1 --query 15 --n_train_iters 60000 --meta_lr 1e-3 --n_test_mc_samp 1 ${DATA_ROOT:+--data_root "$DATA_ROOT"} "$@"
python main.py --gpu_id ${GPU_ID:-0} --savedir './results/metasgd/omni_1shot' --dataset 'omniglot' --mode 'meta_test' --maml --metasgd --metabatch 1 --n_steps 5 --inner_lr 0.1 --way 20 --shot 1 --query 15 --n_train_iters 60000 --meta_lr 1e-3 --n_test_mc_samp 30 ${DATA_ROOT:+--data_root "$DATA_ROOT"} "$@"
