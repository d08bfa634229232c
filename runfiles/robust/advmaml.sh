#!/usr/bin/env bash
# Adversarial MAML (Section 4.1) for one Table 1 setting: MAML whose every inner step trains on
# 10-step PGD examples of the training set (the outer loss stays the clean query loss), for each norm
# at the smallest and largest radius of its attack range (footnote 2; radii.sh), six models in all.
# Each is runfiles/maml_<SETTING>.sh (paper/README hyperparameters: meta-train, then the clean
# meta-test) with --adv_inner NORM --adv_eps EPS into results/advmaml_<norm>_<eps>/<SETTING>;
# runfiles/robust/attack_all.sh then attacks them beside the other models.
# Usage: advmaml.sh SETTING [extra main.py flags], SETTING one of omni_1shot omni_5shot mimgnet_1shot
# mimgnet_5shot. Env: as runfiles/maml_<SETTING>.sh (GPU_ID, DATA_ROOT), EPS_L1/EPS_L2/EPS_LINF.
set -euo pipefail
cd "$(dirname "$0")/../.."
source runfiles/robust/radii.sh
setting=${1:?usage: advmaml.sh SETTING [flags], e.g. omni_1shot}
shift
[ -f "runfiles/maml_$setting.sh" ] || { echo "no runfiles/maml_$setting.sh" >&2; exit 2; }
declare -A dataset=([omni]=omniglot [mimgnet]=mimgnet)
for norm in "${NORMS[@]}"; do
  eps_list=$(radii "${dataset[${setting%%_*}]}" "$norm")
  IFS=, read -ra range <<< "$eps_list"
  for eps in "${range[1]}" "${range[-1]}"; do
    bash "runfiles/maml_$setting.sh" --savedir "./results/advmaml_${norm}_${eps}/$setting" \
      --adv_inner "$norm" --adv_eps "$eps" "$@"
  done
done
