#!/usr/bin/env bash
# CPU-scale check, NOT the paper's setting: MAML vs MAML + Meta-dropout on omniglot_small (the real
# Omniglot "minimal" background sets: 544 train / 168 val / 256 test classes of 28x28 images),
# 5-way 1-shot, 15 queries, 5 inner steps, meta-batch 4, the same 300 iterations for both models,
# seeds 0 1 2; every model is meta-tested on the same 1000 fixed episodes. Then prints the table.
# Meta-testing uses 5 noise samples per inner step, not the paper's 30: on 2 CPU cores 30 samples
# cost ~2 s per episode (33 min per run), 5 samples ~0.5 s. Measured: 6-7 min per MAML run and
# 16-22 min per Meta-dropout run on 2 CPU cores (75 min for all six; docs/reproducing.md).
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
    python main.py --mode meta_train "${common[@]}" "${flags[@]}" --metabatch 4 --n_train_iters 300 \
      --save_freq 100 --val_freq 100 --n_val_iters 50 --n_test_mc_samp 1 "$@"
    python main.py --mode meta_test "${common[@]}" "${flags[@]}" --metabatch 1 --n_test_mc_samp 5 \
      --episodes "$episodes" "$@"
    echo "$model seed $seed: $(($(date +%s) - start)) s" | tee -a "$out/wall_time.log"
  done
done
python report.py "$out"
