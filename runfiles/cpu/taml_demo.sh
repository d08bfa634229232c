#!/usr/bin/env bash
# CPU-scale demo of Bayesian TAML (Lee et al., ICLR 2020), NOT the paper's setting: MAML, Meta-SGD and Bayesian
# TAML on any-shot tasks of scikit-learn's digits (in distribution: 5-way, shots 1..10 per class or
# per task, 15 queries) and omniglot_small16 (out of distribution: Omniglot characters resized to
# digits' 16x16; its classes of 20 images cap the shot at 5), seeds 0 1 2; 3 inner steps at
# meta-training and 6 at meta-test (Bayesian TAML's original code doubles them too), meta-batch 2, ITERS iterations
# (default 400), validation every 100 on 50 episodes of each, checkpoint by ID validation accuracy
# (--select id: the OOD validation split is not used to choose). Every run is meta-tested on the same
# fixed any-shot episodes (300 ID, 300 OOD); Bayesian TAML with DRAWS posterior draws (default 5; the
# paper's 10). Then prints the table and the paired differences (report.py: per seed on the same
# episodes, and over the seeds).
# Env: MODELS (default "maml metasgd taml"), SEEDS (default "0 1 2"), ITERS, DRAWS, JOBS (runs at once,
# default 2), OUT (default ./results/taml_demo). Extra arguments go to every main.py command.
set -euo pipefail
cd "$(dirname "$0")/../.."
out=${OUT:-./results/taml_demo}
mkdir -p "$out"
common=(--id_dataset digits --ood_dataset omniglot_small16 --way 5 --max_shot 10 --query 15 --metabatch 2)
declare -A switches=([maml]="" [metasgd]="--alpha_on" [taml]="--alpha_on --omega_on --gamma_on --z_on")
python get_data.py --dataset omniglot_small16
for d in digits omniglot_small16; do
  [ -f "$out/episodes_$d.npz" ] || python get_data.py --dataset "$d" --episodes "$out/episodes_$d.npz" \
    --split test --way 5 --max_shot 10 --query 15 --n_episodes 300 --seed 0
done
one() {  # one model and seed: meta-train, then meta-test on both episode files
  local model=$1 seed=$2 dir="$out/$1/seed$2" start draws=0
  [ "$model" = taml ] && draws=${DRAWS:-5}
  start=$(date +%s)
  # shellcheck disable=SC2086
  python main.py --mode meta_train "${common[@]}" ${switches[$model]} --seed "$seed" --savedir "$dir" \
    --n_steps 3 --n_train_iters "${ITERS:-400}" --save_freq 100 --val_freq 100 --n_val_iters 50 \
    "${@:3}" > "$dir.log" 2>&1
  for d in digits omniglot_small16; do
    # shellcheck disable=SC2086
    python main.py --mode meta_test "${common[@]}" ${switches[$model]} --seed "$seed" --savedir "$dir" \
      --n_steps 6 --select id --n_mc_samples "$draws" --episodes "$out/episodes_$d.npz" "${@:3}" >> "$dir.log" 2>&1
  done
  echo "$model seed $seed: $(($(date +%s) - start)) s" | tee -a "$out/wall_time.log"
}
for seed in ${SEEDS:-0 1 2}; do
  for model in ${MODELS:-maml metasgd taml}; do
    mkdir -p "$out/$model"
    while [ "$(jobs -rp | wc -l)" -ge "${JOBS:-2}" ]; do wait -n || true; done  # a failed run shows as —
    one "$model" "$seed" "$@" &
  done
done
wait || true
python report.py "$out" --baseline maml
