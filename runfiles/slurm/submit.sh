#!/usr/bin/env bash
# Submit experiments to a Slurm cluster as one job array (one cell per task) and a report job that
# starts when every task has succeeded (docs/slurm.md).
#   bash runfiles/slurm/submit.sh table1                      # the 16 Table 1 cells (tables.txt)
#   bash runfiles/slurm/submit.sh metadrop_omni_1shot maml_omni_1shot path/to/cell.sh
#   bash runfiles/slurm/submit.sh --seeds "1 2" metadrop_omni_1shot   # --seed S --savedir <savedir>_seedS
#   bash runfiles/slurm/submit.sh --dry-run table1 -- --n_train_iters 1000   # print, submit nothing
# A target is a table of tables.txt, a runfile's path, or NAME for runfiles/NAME.sh or runfiles/*/NAME.sh.
# Arguments after -- go to every runfile (and so to main.py). Options, or the environment variables in [ ]:
#   --partition P [METADROP_PARTITION]   --account A [METADROP_ACCOUNT]   --time T [METADROP_TIME]
#   --gpus G [METADROP_GPUS, default 1]: N, TYPE:N (e.g. a100:1) or none (--gres=gpu:G per task)
#   --cpus N [METADROP_CPUS]   --mem M [METADROP_MEM]   (per task; default: the cluster's)
#   --venv DIR [METADROP_VENV]: activated in every job
#   --container CMD [METADROP_CONTAINER]: runs each runfile and the report, e.g. "apptainer exec --nv metadrop.sif"
#   --sbatch-args ARGS [METADROP_SBATCH_ARGS]: more sbatch options for every job, e.g. "--qos=long"
#   --out DIR: logs, the cell list and report.md (default results/slurm/<name>-<date>)
#   --name NAME (default: the first target)   --seeds "S ..."   --dry-run
set -euo pipefail
caller=$PWD
cd "$(dirname "$0")/../.."
repo=$PWD
source runfiles/slurm/lib.sh

die() { echo "error: $*" >&2; exit 2; }
partition=${METADROP_PARTITION:-} account=${METADROP_ACCOUNT:-} time=${METADROP_TIME:-}
gpus=${METADROP_GPUS:-1} cpus=${METADROP_CPUS:-} mem=${METADROP_MEM:-} venv=${METADROP_VENV:-}
container=${METADROP_CONTAINER:-} extra=${METADROP_SBATCH_ARGS:-}
out='' name='' seeds='' dry=0 targets=() args=()
while [ $# -gt 0 ]; do
  case $1 in
    --dry-run) dry=1 && shift && continue ;;
    --) shift && args=("$@") && break ;;
    -*) [ $# -ge 2 ] || die "$1 needs a value" ;;
    *) targets+=("$1") && shift && continue ;;
  esac
  case $1 in
    --partition) partition=$2 ;;
    --account) account=$2 ;;
    --time) time=$2 ;;
    --gpus) gpus=$2 ;;
    --cpus) cpus=$2 ;;
    --mem) mem=$2 ;;
    --venv) venv=$2 ;;
    --container) container=$2 ;;
    --sbatch-args) extra=$2 ;;
    --out) out=$2 ;;
    --name) name=$2 ;;
    --seeds) seeds=$2 ;;
    *) die "unknown option $1 (the options are at the top of runfiles/slurm/submit.sh)" ;;
  esac
  shift 2
done
[ ${#targets[@]} -gt 0 ] || die "no target: give a table (runfiles/slurm/tables.txt), runfiles or cell names"
if [ -n "$venv" ]; then
  [[ $venv == /* ]] || venv=$(realpath -m "$caller/$venv")
  [ -f "$venv/bin/activate" ] || die "--venv $venv: no $venv/bin/activate"
fi

# Targets -> runfiles (relative to the repository when inside it).
shopt -s nullglob
runfiles=()
for t in "${targets[@]}"; do
  line=$(awk -v t="$t" '!/^#/ && $1 == t' runfiles/slurm/tables.txt)
  if [ -n "$line" ]; then
    read -r -a globs <<< "${line#"$t"}"
    found=()
    # shellcheck disable=SC2206 # the globs expand here
    for g in "${globs[@]}"; do found+=($g); done
    for g in "${found[@]}"; do [ -f "$g" ] || die "$t: no runfile $g"; done
    [ ${#found[@]} -gt 0 ] || die "$t has no runfiles yet (${globs[*]})"
    runfiles+=("${found[@]}")
  elif [[ $t == *.sh ]]; then
    [[ $t == /* ]] || t=$caller/$t
    [ -f "$t" ] || die "no runfile $t"
    runfiles+=("$(realpath --relative-base="$repo" "$t")")
  else
    found=()
    for f in runfiles/"$t".sh runfiles/*/"$t".sh; do [ -f "$f" ] && found+=("$f"); done
    [ ${#found[@]} = 1 ] || die "$t is no table of runfiles/slurm/tables.txt, runfile or cell (runfiles/$t.sh)"
    runfiles+=("${found[0]}")
  fi
done

# Cells: name, runfile, its arguments; with --seeds one per seed, each in its own savedir.
cells=() savedirs=()
for f in "${runfiles[@]}"; do
  base=$(basename "$f" .sh)
  for s in ${seeds:-none}; do
    cell=("$base" "$f")
    if [ "$s" != none ]; then
      savedir=$(main_calls "$f" "${args[@]}" | cut -f1 | tail -n 1)
      [ -n "$savedir" ] || die "$f runs no main.py: cannot give it seeds"
      savedir=$(realpath -m --relative-base="$repo" "$savedir")
      cell=("${base}_seed$s" "$f" --seed "$s" --savedir "${savedir}_seed$s")
    fi
    cell+=("${args[@]}")
    line=$(printf '%s\t' "${cell[@]}")
    cells+=("${line%$'\t'}")
    while IFS=$'\t' read -r d mode _; do
      [ "$mode" = meta_test ] && savedirs+=("$d")
    done < <(main_calls "${cell[@]:1}")
    status=todo
    cell_done "${cell[@]:1}" && status="done"
    printf '%3d  %-4s  %s\n' $((${#cells[@]} - 1)) "$status" "${cell[*]}"
  done
done
[ ${#savedirs[@]} -gt 0 ] || die "these runfiles meta-test nothing: no results to report"

# The report reads every results.json under the savedirs' closest common folder.
root=$(dirname "${savedirs[0]}")
for d in "${savedirs[@]}"; do
  while [[ $(dirname "$d")/ != "$root"/* ]]; do root=$(dirname "$root"); done
done
root=$(realpath --relative-base="$repo" -m "$root")

name=${name:-$(basename "${targets[0]}" .sh)}
if [ -n "$out" ]; then
  [[ $out == /* ]] || out=$caller/$out
  out=$(realpath -m --relative-base="$repo" "$out")
fi
out=${out:-results/slurm/$name-$(date +%Y%m%d-%H%M%S)}
common=(--chdir="$repo")
[ -z "$partition" ] || common+=(--partition="$partition")
[ -z "$account" ] || common+=(--account="$account")
read -r -a more <<< "$extra"
array=(sbatch --parsable --job-name="metadrop-$name" "${common[@]}" --array=0-$((${#cells[@]} - 1)) --requeue --open-mode=append
  --output="$out/logs/%a.out")
[ -z "$time" ] || array+=(--time="$time")
[ "$gpus" = none ] || array+=(--gres="gpu:$gpus")
[ -z "$cpus" ] || array+=(--cpus-per-task="$cpus")
[ -z "$mem" ] || array+=(--mem="$mem")
array+=("${more[@]}" runfiles/slurm/task.sh "$out")
report=(sbatch --parsable --job-name="metadrop-$name-report" "${common[@]}" --time=0:30:00
  --output="$out/logs/report.out" "${more[@]}"
  --kill-on-invalid-dep=yes --dependency=afterok:ARRAY_JOB_ID runfiles/slurm/report.sh "$out" "$root")

if [ "$dry" = 1 ]; then
  echo "dry run: nothing submitted; would write $out/ (venv: ${venv:-none}, container: ${container:-none}) and run"
  printf '%q ' "${array[@]}" && echo
  printf '%q ' "${report[@]}" && echo
  exit 0
fi
command -v sbatch > /dev/null || die "sbatch not found: run this on a Slurm login node (or use --dry-run)"
mkdir -p "$out/logs"
printf '%s\n' "${cells[@]}" > "$out/cells.tsv"
printf 'venv=%q\ncontainer=%q\n' "$venv" "$container" > "$out/job.env"
for i in "${!cells[@]}"; do ln -sfn "$i.out" "$out/logs/${cells[$i]%%$'\t'*}.out"; done
id=$("${array[@]}")
id=${id%%;*}
report_id=$("${report[@]/ARRAY_JOB_ID/$id}")
echo "job array $id: ${#cells[@]} cells, logs in $out/logs/"
echo "report job ${report_id%%;*}: $out/report.md when every cell has succeeded"
