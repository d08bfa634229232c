#!/usr/bin/env bash
# Table 1 cell: MAML, Omniglot 20-way 1-shot.
# Meta-trains, then meta-tests (1000 episodes, --n_test_mc_samp 30) into results/maml/omni_1shot/results.json;
# `python report.py results/` compares it with the paper.
# Source: the original repository's runfiles/maml_omni_1shot.sh (paper/hyperparameters.csv): --metabatch 4,
# 60000 iterations and meta-lr 1e-3 (the paper's Section 4 says B=8, 40K and 1e-3; the original README
# gives commands for meta-dropout only). Meta-test as every model's (paper/departures.csv).
# Env: GPU_ID (default 0); DATA_ROOT (optional, passed on as --data_root).
# Extra arguments go to both commands and win over the ones below, e.g. --seed 1 --savedir DIR.
set -euo pipefail
cd "$(dirname "$0")/.."

python main.py --gpu_id ${GPU_ID:-0} --savedir './results/maml/omni_1shot' --dataset 'omniglot' --mode 'meta_train' --maml --metabatch 4 --n_steps 5 --inner_lr 0.1 --way 20 --shot 1 --query 15 --n_train_iters 60000 --meta_lr 1e-3 --n_test_mc_samp 1 ${DATA_ROOT:+--data_root "$DATA_ROOT"} "$@"
python main.py --gpu_id ${GPU_ID:-0} --savedir './results/maml/omni_1shot' --dataset 'omniglot' --mode 'meta_test' --maml --metabatch 1 --n_steps 5 --inner_lr 0.1 --way 20 --shot 1 --query 15 --n_train_iters 60000 --meta_lr 1e-3 --n_test_mc_samp 30 ${DATA_ROOT:+--data_root "$DATA_ROOT"} "$@"
