#!/usr/bin/env bash
# Offline demo (not a paper result): MAML and MAML + Meta-dropout, trained briefly on scikit-learn's
# digits (5-way 1-shot) and meta-tested on the same 300 episodes of held-out digits; report.py then
# prints Meta-dropout's paired gain over MAML beside both accuracies. About 3 minutes on 2 CPU cores.
# MAML runs beside Meta-dropout, its output in $OUT/maml.log: the two processes keep both cores
# busy where one alone leaves one idle while it loads and builds its graph (the same numbers as one
# after the other). Extra flags are passed to every main.py command.
set -euo pipefail
cd "$(dirname "$0")/.."
out=${OUT:-./results/quickstart}
mkdir -p "$out"
# training: 300 iterations of 4 tasks each, validated once at the end
common=(--dataset digits --way 5 --shot 1 --query 15 --metabatch 4 --n_steps 5 --inner_lr 0.4
        --meta_lr 1e-3 --n_train_iters 300 --save_freq 300 --val_freq 300 --n_val_iters 20
        --n_test_iters 300)
# meta-test: both models on the same 300 episodes (the same --seed), one per session run, 10 noise
# samples per inner step (the paper: 30)
test=(--metabatch 1 --n_test_mc_samp 10)
log=$out/maml.log
maml= stopped=
# Ctrl-C reaches both processes (each saves what it has); a failure here stops MAML with the same
# signal. Either way the script waits for it, so no process outlives the script.
trap 'stopped=1' INT
stop_maml() {
  [ -n "$maml" ] || return 0
  [ -n "$stopped" ] || kill -INT "$maml" 2> /dev/null || true  # it may have ended already
  wait "$maml" || true
}
trap stop_maml EXIT
beside() {  # main.py for MAML, in the background
  python main.py --savedir "$out/maml" "$@" --maml >> "$log" 2>&1 &
  maml=$!
}
joined() {  # wait for MAML; on failure, say where its output is
  local status=0
  wait "$maml" || status=$?
  [ -z "$stopped" ] || exit 130  # the EXIT trap waits for MAML to save
  maml=
  [ "$status" = 0 ] && return
  echo "error: MAML's $1 failed (exit status $status); its output: $log" >&2
  tail -n 3 "$log" >&2
  exit "$status"
}
: > "$log"
echo "MAML runs beside Meta-dropout; its output: $log"
beside --mode meta_train "${common[@]}" --n_test_mc_samp 1 "$@"
python main.py --savedir "$out/metadrop" --mode meta_train "${common[@]}" --n_test_mc_samp 1 "$@"
joined meta_train
beside --mode meta_test "${common[@]}" "${test[@]}" "$@"
python main.py --savedir "$out/metadrop" --mode meta_test "${common[@]}" "${test[@]}" "$@" |
  sed -u "s/^accuracy/Meta-dropout accuracy/"
joined meta_test
sed -n "s/^accuracy/MAML accuracy/p" "$log"
python report.py "$out"
