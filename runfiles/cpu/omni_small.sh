#!/usr/bin/env bash
# CPU-scale check, NOT the paper's setting: MAML vs MAML + Meta-dropout on omniglot_small (the real
# Omniglot "minimal" background sets: 544 train / 168 val / 256 test classes of 28x28 images),
# 5-way 1-shot, 15 queries, 5 inner steps, meta-batch 4, the same 400 iterations for both models,
# several seeds; every model is meta-tested on the same 1000 fixed episodes (30 noise samples per
# inner step). Then prints the table. About 10 minutes per run on 2 CPU cores.
# Env: MODELS (default "maml metadrop"), SEEDS (default "0 1 2"), OUT (default ./results/cpu).
# Extra arguments go to every main.py command.
set -euo pipefail
cd "$(dirname "$0")/../.."
out=${OUT:-./results/cpu}
episodes=$out/episodes_omni_small_5w1s.npz
mkdir -p "$out"
common=(--dataset omniglot_small --way 5 --shot 1 --query 15 --n_steps 5 --inner_lr 0.4 --meta_lr 1e-3)

python get_data.py --dataset omniglot_small
[ -f "$episodes" ] || python get_data.py --dataset omniglot_small --episodes "$episodes" --split test \
  --way 5 --shot 1 --query 15 --n_episodes 1000 --seed 0
for seed in ${SEEDS:-0 1 2}; do
  for model in ${MODELS:-maml metadrop}; do
    flags=(--seed "$seed" --savedir "$out/$model/seed$seed")
    [ "$model" = maml ] && flags+=(--maml)
    start=$(date +%s)
    python main.py --mode meta_train "${common[@]}" "${flags[@]}" --metabatch 4 --n_train_iters 400 \
      --save_freq 100 --val_freq 100 --n_val_iters 50 --n_test_mc_samp 1 "$@"
    python main.py --mode meta_test "${common[@]}" "${flags[@]}" --metabatch 1 --n_test_mc_samp 30 \
      --episodes "$episodes" "$@"
    echo "$model seed $seed: $(($(date +%s) - start)) s" | tee -a "$out/wall_time.log"
  done
done
python report.py "$out"
