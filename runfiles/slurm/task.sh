#!/usr/bin/env bash
# One Slurm array task = one cell: line SLURM_ARRAY_TASK_ID of RUNDIR/cells.tsv (name, runfile, its arguments),
# written by submit.sh. Runs the runfile unchanged; skips a cell that already has its results. Requeued or
# restarted after a node failure, it runs the runfile again and main.py resumes from the last checkpoint.
set -euo pipefail
rundir=$1
source runfiles/slurm/lib.sh  # sbatch --chdir: the repository
venv="" container=""
# shellcheck source=/dev/null
source "$rundir/job.env"      # venv, container
IFS=$'\t' read -r -a cell < <(sed -n "$((SLURM_ARRAY_TASK_ID + 1))p" "$rundir/cells.tsv")
echo "== ${cell[0]}: ${cell[*]:1} (job ${SLURM_ARRAY_JOB_ID}_$SLURM_ARRAY_TASK_ID, start $((${SLURM_RESTART_COUNT:-0} + 1)), $(hostname), $(date -Is))"
if cell_done "${cell[@]:1}"; then
  echo "results already there: skipped"
  exit 0
fi
# shellcheck source=/dev/null
[ -z "$venv" ] || source "$venv/bin/activate"
# main.py sets CUDA_VISIBLE_DEVICES=--gpu_id: hand it the GPU Slurm gave this task.
[ -z "${CUDA_VISIBLE_DEVICES:-}" ] || export GPU_ID=${CUDA_VISIBLE_DEVICES%%,*}
read -r -a prefix <<< "$container"
"${prefix[@]}" bash "${cell[@]:1}"
