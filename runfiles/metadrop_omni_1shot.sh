#!/usr/bin/env bash
# Table 1 cell: MAML + Meta-dropout, Omniglot 20-way 1-shot.
# Meta-trains, then meta-tests (1000 episodes, --n_test_mc_samp 30) into results/metadrop/omni_1shot/results.json;
# `python report.py results/` compares it with the paper.
# Source: the original README's command and runfiles/metadrop_omni_1shot.sh (paper/hyperparameters.csv):
# --metabatch 4, 60000 iterations, meta-lr 3e-4 (the paper's Section 4 says B=8, 40K and 1e-3; the
# original runfile had 1e-3 until the repository's last commit, 41a97e7).
# Env: GPU_ID (default 0); DATA_ROOT (optional, passed on as --data_root).
# Extra arguments go to both commands and win over the ones below, e.g. --seed 1 --savedir DIR.
set -euo pipefail
cd "$(dirname "$0")/.."

python main.py --gpu_id ${GPU_ID:-0} --savedir './results/metadrop/omni_1shot' --dataset 'omniglot' --mode 'meta_train' --metabatch 4 --n_steps 5 --inner_lr 0.1 --way 20 --shot 1 --query 15 --n_train_iters 60000 --meta_lr 3e-4 --n_test_mc_samp 1 ${DATA_ROOT:+--data_root "$DATA_ROOT"} "$@"
python main.py --gpu_id ${GPU_ID:-0} --savedir './results/metadrop/omni_1shot' --dataset 'omniglot' --mode 'meta_test' --metabatch 1 --n_steps 5 --inner_lr 0.1 --way 20 --shot 1 --query 15 --n_train_iters 60000 --meta_lr 3e-4 --n_test_mc_samp 30 ${DATA_ROOT:+--data_root "$DATA_ROOT"} "$@"
