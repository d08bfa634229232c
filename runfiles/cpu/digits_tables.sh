#!/usr/bin/env bash
# CPU-scale demo of Tables 2 and 3, NOT the paper's setting: every perturbation of noise.py on
# scikit-learn's digits at the quickstart's budget (5-way 1-shot, 15 queries, 5 inner steps, inner
# step 0.4, meta-batch 4, 300 iterations), seeds 0 1 2; every run is meta-tested on the same 300 fixed
# test episodes (--n_test_mc_samp MC, default 30 as the paper). Then prints the tables.
# Env: VARIANTS (default: all rows below, "name" or "name:K=V"), SEEDS (default "0 1 2"), MC (default 30),
# JOBS (runs at once, default 2), OUT (default ./results/digits_tables). Extra arguments go to every main.py command.
set -euo pipefail
cd "$(dirname "$0")/../.."
out=${OUT:-./results/digits_tables}
episodes=$out/episodes_digits_5w1s.npz
mkdir -p "$out"
common=(--dataset digits --way 5 --shot 1 --query 15 --n_steps 5 --inner_lr 0.4 --meta_lr 1e-3)
default_variants="none metadrop mixup:gamma=0.2 mixup:gamma=1 mixup:gamma=2 vib:beta=1e-5 vib:beta=1e-4
  vib:beta=1e-3 infodrop:beta=1e-5 infodrop:beta=1e-4 infodrop:beta=1e-3 metadrop_add fixed_gaussian
  weight_gaussian independent_gaussian more_param deterministic_metadrop learned_var"

[ -f "$episodes" ] || python get_data.py --dataset digits --episodes "$episodes" --split test \
  --way 5 --shot 1 --query 15 --n_episodes 300 --seed 0

one() {  # one variant ("name" or "name:K=V") and seed: meta-train, then meta-test
  local name=${1%%:*} hp="" seed=$2
  [[ $1 == *:* ]] && hp=${1#*:}
  local dir="$out/${1//[:=]/_}/seed$seed" start
  start=$(date +%s)
  python main.py --mode meta_train "${common[@]}" --noise "$name" --noise_hp "$hp" --seed "$seed" \
    --savedir "$dir" --metabatch 4 --n_train_iters 300 --save_freq 100 --val_freq 100 --n_val_iters 20 \
    --n_test_mc_samp 1 "${@:3}" > "$dir.log" 2>&1
  python main.py --mode meta_test "${common[@]}" --noise "$name" --noise_hp "$hp" --seed "$seed" \
    --savedir "$dir" --metabatch 1 --n_test_mc_samp "${MC:-30}" --episodes "$episodes" "${@:3}" >> "$dir.log" 2>&1
  echo "$1 seed $seed: $(($(date +%s) - start)) s" | tee -a "$out/wall_time.log"
}

for seed in ${SEEDS:-0 1 2}; do
  for v in ${VARIANTS:-$default_variants}; do
    mkdir -p "$out/${v//[:=]/_}"
    while [ "$(jobs -rp | wc -l)" -ge "${JOBS:-2}" ]; do wait -n; done
    one "$v" "$seed" "$@" &
  done
done
wait
python report.py "$out"
