#!/usr/bin/env bash
# A one-node Slurm cluster on this machine, for the tests and for trying submit.sh without a cluster.
#   sudo bash runfiles/slurm/local_cluster.sh start   # then: export SLURM_CONF=/tmp/metadrop-slurm/slurm.conf
#   sudo bash runfiles/slurm/local_cluster.sh stop
#   bash runfiles/slurm/local_cluster.sh status
# Needs root and Debian's slurmctld, slurmd, slurm-client and munge packages. A generated slurm.conf
# (proctrack/linuxproc, task/none, select/cons_tres, one node with min(NODE_CPUS, this machine's CPUs)
# and 3/4 of its memory, no GRES) and munged with a fresh key, all in one state dir with its own
# sockets and ports, so a system Slurm or munge is left alone.
# start is idempotent: each caller (its parent process, or HOLDER=id) takes a lease, and stop ends the
# daemons only when no live holder is left (it cancels the cluster's jobs first). Exit 3: cannot start.
# Env: STATE (default /tmp/metadrop-slurm), NODE_CPUS (default 2), PORT (slurmctld; slurmd uses PORT+1).
set -euo pipefail
state=${STATE:-/tmp/metadrop-slurm}
holder=${HOLDER:-$PPID}
conf=$state/slurm.conf
port=${PORT:-6917}
export SLURM_CONF=$conf

alive() { [ -f "$state/$1.pid" ] && kill -0 "$(cat "$state/$1.pid")" 2>/dev/null; }
running() { alive munged && alive slurmctld && alive slurmd; }

write_conf() {
  local host cpus mem
  host=$(hostname -s)
  cpus=$(nproc)
  cpus=$((cpus < ${NODE_CPUS:-2} ? cpus : ${NODE_CPUS:-2}))
  mem=$(awk '/MemTotal/ {print int($2 / 1024 * 3 / 4)}' /proc/meminfo)
  cat > "$conf" << EOF
ClusterName=metadrop-local
SlurmctldHost=$host(127.0.0.1)
SlurmctldPort=$port
SlurmdPort=$((port + 1))
SlurmUser=root
AuthType=auth/munge
AuthInfo=socket=$state/munge.socket
StateSaveLocation=$state/ctld
SlurmdSpoolDir=$state/d
SlurmctldPidFile=$state/slurmctld.pid
SlurmdPidFile=$state/slurmd.pid
SlurmctldLogFile=$state/slurmctld.log
SlurmdLogFile=$state/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU
SchedulerType=sched/builtin
AccountingStorageType=accounting_storage/none
JobAcctGatherType=jobacct_gather/none
JobCompType=jobcomp/none
MpiDefault=none
ReturnToService=2
KillWait=5
NodeName=$host NodeAddr=127.0.0.1 CPUs=$cpus RealMemory=$mem State=UNKNOWN
PartitionName=local Nodes=ALL Default=YES MaxTime=INFINITE State=UP
EOF
}

start_daemons() {
  local missing=()
  for b in munged slurmctld slurmd sinfo sbatch; do command -v "$b" > /dev/null || missing+=("$b"); done
  if [ ${#missing[@]} -gt 0 ]; then
    echo "cannot start: ${missing[*]} not found (apt-get install slurmctld slurmd slurm-client munge)" >&2
    return 3
  fi
  [ "$(id -u)" = 0 ] || { echo "cannot start: slurmd and munged need root" >&2; return 3; }
  stop_daemons
  rm -rf "$state/ctld" "$state/d"
  mkdir -p "$state/ctld" "$state/d"
  chmod 755 "$state"
  dd if=/dev/urandom of="$state/munge.key" bs=1024 count=1 status=none
  chmod 400 "$state/munge.key"
  munged --force --key-file="$state/munge.key" --socket="$state/munge.socket" \
    --pid-file="$state/munged.pid" --log-file="$state/munged.log" --seed-file="$state/munged.seed" \
    < /dev/null >> "$state/munged.log" 2>&1 9>&-
  write_conf
  # -c: a fresh state, no jobs of an earlier cluster. The daemons keep neither the lock nor our stdout.
  slurmctld -c < /dev/null >> "$state/slurmctld.log" 2>&1 9>&-
  slurmd < /dev/null >> "$state/slurmd.log" 2>&1 9>&-
  for _ in $(seq 60); do
    [ "$(sinfo -h -o %T 2> /dev/null)" = idle ] && return 0
    sleep 0.5
  done
  echo "cannot start: the node did not become idle in 30 s; see $state/*.log" >&2
  return 3
}

stop_daemons() {
  if alive slurmctld; then
    scancel --quiet --full --partition=local 2> /dev/null || true
    for _ in $(seq 30); do  # let the jobs' processes end before slurmd does
      [ -z "$(squeue -h -o %i 2> /dev/null)" ] && break
      sleep 1
    done
  fi
  for d in slurmd slurmctld munged; do
    if alive "$d"; then
      kill "$(cat "$state/$d.pid")"
      for _ in $(seq 20); do alive "$d" || break; sleep 0.25; done
    fi
    rm -f "$state/$d.pid"
  done
  rm -f "$state/munge.key"  # a fresh one at every start; the logs stay
}

live_holders() {
  local n=0 f
  for f in "$state"/leases/*; do
    [ -e "$f" ] || continue
    if kill -0 "$(basename "$f")" 2> /dev/null; then n=$((n + 1)); else rm -f "$f"; fi
  done
  echo "$n"
}

mkdir -p "$state/leases"
exec 9> "$state.lock"
flock 9
case ${1:-} in
  start)
    running || start_daemons
    touch "$state/leases/$holder"
    echo "export SLURM_CONF=$conf"
    ;;
  stop)
    rm -f "$state/leases/$holder"
    if [ "$(live_holders)" = 0 ]; then stop_daemons; else echo "still in use: $state/leases" >&2; fi
    ;;
  status)
    if running; then sinfo; squeue; else echo "not running"; exit 1; fi
    ;;
  *)
    echo "usage: $0 start|stop|status" >&2
    exit 2
    ;;
esac
