#!/usr/bin/env bash
# CPU-scale demo of Tables 2 and 3, NOT the paper's setting: every perturbation of noise.py on
# scikit-learn's digits at the quickstart's budget (5-way 1-shot, 15 queries, 5 inner steps, inner
# step 0.4, meta-batch 4, 300 iterations), seeds 0 1 2; every run is meta-tested on the same 300 fixed
# test episodes, with MC noise samples per inner step (default 5, as runfiles/cpu/omni_small.sh; the
# paper uses 30). Then prints the tables (python report.py OUT).
# Each variant runs at one hyperparameter by default, its default in noise.py (the best Omniglot 1-shot
# value of Table 2); VARIANTS="$GRID" runs Table 2's whole grid.
# Env: VARIANTS ("name" or "name:K=V[,K=V]", space-separated), SEEDS (default "0 1 2"), MC (default 5),
# JOBS (runs at once, default 2), OUT (default ./results/digits_tables). Extra arguments go to every
# main.py command. A run's output goes to OUT/<variant>/seed<k>.log, its wall time to OUT/wall_time.log.
set -euo pipefail
cd "$(dirname "$0")/../.."
out=${OUT:-./results/digits_tables}
episodes=$out/episodes_digits_5w1s.npz
mkdir -p "$out"
common=(--dataset digits --way 5 --shot 1 --query 15 --n_steps 5 --inner_lr 0.4 --meta_lr 1e-3)
variants="none metadrop mixup vib infodrop metadrop_add fixed_gaussian weight_gaussian independent_gaussian
  more_param deterministic_metadrop learned_var"
export GRID="$variants mixup:gamma=1 mixup:gamma=2 vib:beta=1e-5 vib:beta=1e-4 infodrop:beta=1e-4
  infodrop:beta=1e-3"

[ -f "$episodes" ] || python get_data.py --dataset digits --episodes "$episodes" --split test \
  --way 5 --shot 1 --query 15 --n_episodes 300 --seed 0

one() {  # one variant ("name" or "name:K=V") and seed: meta-train, then meta-test
  local name=${1%%:*} hp="" seed=$2
  [[ $1 == *:* ]] && hp=${1#*:}
  local dir="$out/${1//[:=,]/_}/seed$seed" start
  start=$(date +%s)
  python main.py --mode meta_train "${common[@]}" --noise "$name" --noise_hp "$hp" --seed "$seed" \
    --savedir "$dir" --metabatch 4 --n_train_iters 300 --save_freq 100 --val_freq 100 --n_val_iters 20 \
    --n_test_mc_samp 1 "${@:3}" > "$dir.log" 2>&1
  python main.py --mode meta_test "${common[@]}" --noise "$name" --noise_hp "$hp" --seed "$seed" \
    --savedir "$dir" --metabatch 1 --n_test_mc_samp "${MC:-5}" --episodes "$episodes" "${@:3}" >> "$dir.log" 2>&1
  echo "$1 seed $seed: $(($(date +%s) - start)) s" | tee -a "$out/wall_time.log"
}

for seed in ${SEEDS:-0 1 2}; do
  for v in ${VARIANTS:-$variants}; do
    mkdir -p "$out/${v//[:=,]/_}"
    while [ "$(jobs -rp | wc -l)" -ge "${JOBS:-2}" ]; do wait -n || true; done  # a failed run shows as —
    one "$v" "$seed" "$@" &
  done
done
wait || true
python report.py "$out"
