#!/usr/bin/env bash
# Offline demo (not a paper result): MAML and MAML + Meta-dropout, trained briefly on scikit-learn's
# digits (5-way 1-shot) and meta-tested on the same 300 episodes of held-out digits; report.py then
# prints Meta-dropout's paired gain over MAML beside both accuracies. A few minutes on 2 CPU cores.
# Extra flags are passed to every main.py command.
set -euo pipefail
cd "$(dirname "$0")/.."
out=${OUT:-./results/quickstart}
# training: 300 iterations of 4 tasks each, validated once at the end
common=(--dataset digits --way 5 --shot 1 --query 15 --metabatch 4 --n_steps 5 --inner_lr 0.4
        --meta_lr 1e-3 --n_train_iters 300 --save_freq 300 --val_freq 300 --n_val_iters 20
        --n_test_iters 300)
# meta-test: both models on the same 300 episodes (the same --seed), one per session run, 10 noise
# samples per inner step (the paper: 30)
test=(--metabatch 1 --n_test_mc_samp 10)
for model in maml metadrop; do
  flags=() label=Meta-dropout
  [ "$model" = maml ] && flags=(--maml) label=MAML
  python main.py --savedir "$out/$model" --mode meta_train "${common[@]}" --n_test_mc_samp 1 "${flags[@]}" "$@"
  python main.py --savedir "$out/$model" --mode meta_test "${common[@]}" "${test[@]}" "${flags[@]}" "$@" |
    sed -u "s/^accuracy/$label accuracy/"
done
python report.py "$out"
