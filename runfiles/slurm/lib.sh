# shellcheck shell=bash
# Sourced by submit.sh and task.sh (from the repository root): what a runfile will run, and whether it is done.

# main_calls RUNFILE ARGS...: one line per `python main.py ...` the runfile would run with ARGS:
# savedir (absolute), mode and --n_train_iters, tab-separated. The runfile runs with a `python` that only
# records its arguments (as tests/test_runfiles.py does), so nothing trains; the last value of a flag wins.
main_calls() {
  local stub
  stub=$(mktemp -d)
  for py in python python3; do
    cat > "$stub/$py" << 'STUB'
#!/usr/bin/env bash
[[ ${1:-} == *main.py ]] || exit 0
savedir='' mode=meta_train iters=''
while [ $# -gt 0 ]; do
  case $1 in
    --savedir) savedir=${2:-} && shift ;;
    --savedir=*) savedir=${1#*=} ;;
    --mode) mode=${2:-} && shift ;;
    --mode=*) mode=${1#*=} ;;
    --n_train_iters) iters=${2:-} && shift ;;
    --n_train_iters=*) iters=${1#*=} ;;
  esac
  shift
done
savedir=$(realpath -m -- "$savedir")
printf '%s\t%s\t%s\n' "$savedir" "$mode" "$iters" >> "$MAIN_CALLS"
STUB
    chmod +x "$stub/$py"
  done
  : > "$stub/calls"
  MAIN_CALLS=$stub/calls PATH="$stub:$PATH" bash "$@" > /dev/null 2>&1 || true
  cat "$stub/calls"
  rm -rf "$stub"
}

# cell_done RUNFILE ARGS...: every savedir the runfile meta-tests holds a results.json from at least
# the --n_train_iters it asks for (main.py's meta_test writes it last, whole or not at all).
cell_done() {
  local savedir mode iters got n=0
  while IFS=$'\t' read -r savedir mode iters; do
    [ "$mode" = meta_test ] || continue
    # "iterations" (the results format's run) or "train_iters" (files of the older format)
    got=$(grep -oE '"(iterations|train_iters)": *[0-9]+' "$savedir/results.json" 2> /dev/null | grep -o '[0-9]*$') ||
      return 1
    [ "$got" -ge "${iters:-0}" ] || return 1
    n=$((n + 1))
  done < <(main_calls "$@")
  [ "$n" -gt 0 ]
}
