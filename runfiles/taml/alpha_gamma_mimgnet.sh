#!/usr/bin/env bash
# Bayesian TAML (Lee et al., ICLR 2020), miniImageNet / CUB: ablation: alpha + gamma.
# Written by runfiles/make_taml.py, which states the settings and their sources (spec 2.6).
# Meta-trains, then meta-tests into ./results/taml/mimgnet/alpha_gamma/results_{id,ood}_<dataset>.json;
# `python report.py results/` puts them beside the published numbers.
# Env: GPU_ID (default 0); METADROP_DATA (the data folder, default ./data).
# Extra arguments go to both commands and win over the ones below, e.g. --seed 1 --savedir DIR.
set -euo pipefail
cd "$(dirname "$0")/../.."

python main.py --gpu_id ${GPU_ID:-0} --savedir './results/taml/mimgnet/alpha_gamma' --id_dataset 'mimgnet' --ood_dataset 'cub' --metabatch 1 --way 5 --max_shot 50 --query 15 --alpha_on --gamma_on --mode 'meta_train' --n_steps 5 --n_train_iters 80000 --meta_lr 1e-4 --save_freq 10000 --val_freq 10000 --n_val_iters 3000 "$@"
python main.py --gpu_id ${GPU_ID:-0} --savedir './results/taml/mimgnet/alpha_gamma' --id_dataset 'mimgnet' --ood_dataset 'cub' --metabatch 1 --way 5 --max_shot 50 --query 15 --alpha_on --gamma_on --mode 'meta_test' --n_steps 10 --n_test_episodes 1000 --n_mc_samples 10 "$@"
