#!/usr/bin/env bash
# CPU-scale demo of Figures 5-6 (not a paper result): the quickstart's MAML and Meta-dropout (run
# runfiles/quickstart.sh first) and an adversarial MAML trained here the same way (every inner step on
# 10-step Linf PGD examples, eps 0.1, the largest radius of digits' Linf range), all under PGD of the
# three norms (runfiles/robust/attack_all.sh, digits' radii in radii.sh), then OUT/robustness.png.
# Reduced for 2 CPU cores: 50 test episodes (quickstart: 300) and 50 PGD steps (paper: 200), with the
# step size rule 2.5 * eps / steps; 30 noise samples per inner step (the quickstart's meta-test: 10).
# Measured: about 35 min per model for the three norms on 2 CPU cores shared with other jobs (docs/robustness.md).
# Env: OUT (default ./results/quickstart).
# Extra flags go to every attack command.
set -euo pipefail
cd "$(dirname "$0")/../.."
out=${OUT:-./results/quickstart}
python main.py --savedir "$out/advmaml" --mode meta_train --dataset digits --way 5 --shot 1 --query 15 \
  --n_steps 5 --inner_lr 0.4 --meta_lr 1e-3 --maml --adv_inner linf --adv_eps 0.1 --metabatch 4 \
  --n_train_iters 300 --save_freq 100 --val_freq 100 --n_val_iters 20
ROOT=$out bash runfiles/robust/attack_all.sh --n_test_iters 50 --attack_steps 50 "$@"
