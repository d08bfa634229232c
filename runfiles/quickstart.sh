#!/usr/bin/env bash
# Offline demo (not a paper result): MAML and MAML + Meta-dropout, trained briefly on scikit-learn's
# digits (5-way 1-shot), meta-tested on 300 episodes of held-out digits, printed side by side.
# A few minutes on 2 CPU cores. Extra flags are passed to every main.py command.
set -euo pipefail
cd "$(dirname "$0")/.."
out=${OUT:-./results/quickstart}
common=(--dataset digits --way 5 --shot 1 --query 15 --metabatch 4 --n_steps 5 --inner_lr 0.4
        --meta_lr 1e-3 --n_train_iters 300 --save_freq 100 --val_freq 100 --n_val_iters 20
        --n_test_iters 300)
for model in maml metadrop; do
  flags=()
  [ "$model" = maml ] && flags=(--maml)
  python main.py --savedir "$out/$model" --mode meta_train "${common[@]}" --n_test_mc_samp 1 "${flags[@]}" "$@"
  python main.py --savedir "$out/$model" --mode meta_test "${common[@]}" --metabatch 1 --n_test_mc_samp 30 \
    "${flags[@]}" "$@"
done
python report.py "$out"
