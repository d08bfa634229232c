#!/usr/bin/env bash
# The results table of a submit.sh run, as a job that starts when every array task has succeeded:
# python report.py ROOT --markdown RUNDIR/report.md (also printed into the job's log).
set -euo pipefail
rundir=$1 root=$2
venv="" container=""
# shellcheck source=/dev/null
source "$rundir/job.env"  # venv, container
# shellcheck source=/dev/null
[ -z "$venv" ] || source "$venv/bin/activate"
read -r -a prefix <<< "$container"
"${prefix[@]}" python report.py "$root" --markdown "$rundir/report.md"
