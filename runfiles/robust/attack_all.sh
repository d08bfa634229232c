#!/usr/bin/env bash
# Figures 5-6 (Section 4.1, Appendix D): every trained model under ROOT (default ./results) -- each
# savedir with a config.json and a checkpoint: the Table 1 and Table 2 runs and adversarial MAML alike --
# meta-tested under PGD of L1, L2 and Linf norm (200 steps, step 2.5 * eps / steps) over the radii of
# its dataset (radii.sh), on 1000 episodes with --metabatch 1 --n_test_mc_samp 30 (the Table 1
# meta-test) and otherwise the flags of its training run (flags.py). Each savedir gets
# robust_<norm>.json (its clean results.json is left alone); then ROOT/robustness.png.
# Env: ROOT, GPU_ID (default 0), DATA_ROOT (optional), EPS_L1/EPS_L2/EPS_LINF (radii override).
# Extra arguments go to every main.py command, e.g. --n_test_iters 100 --attack_steps 50.
set -euo pipefail
cd "$(dirname "$0")/../.."
source runfiles/robust/radii.sh
root=${ROOT:-./results}
for config in $(find "$root" -name config.json | sort); do
  dir=$(dirname "$config")
  [ -f "$dir/ckpt/checkpoint" ] || { echo "skipping $dir: no checkpoint"; continue; }
  model_flags=$(python runfiles/robust/flags.py "$dir")
  mapfile -t flags <<< "$model_flags"
  dataset=$(python -c 'import json, sys; print(json.load(open(sys.argv[1]))["dataset"])' "$config")
  for norm in "${NORMS[@]}"; do
    eps=$(radii "$dataset" "$norm")
    python main.py --gpu_id "${GPU_ID:-0}" --savedir "$dir" --mode meta_test "${flags[@]}" --metabatch 1 \
      --n_test_mc_samp 30 --n_test_iters 1000 --attack "$norm" --attack_eps "$eps" \
      --attack_steps 200 ${DATA_ROOT:+--data_root "$DATA_ROOT"} "$@"
  done
done
python plot.py --robustness "$root"
