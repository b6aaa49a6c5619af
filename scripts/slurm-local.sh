#!/usr/bin/env bash
# Start or stop a real one-node SLURM (slurm-wlm + munge) on 127.0.0.1 for the integration tests.
#   scripts/slurm-local.sh start   # writes /etc/slurm/slurm.conf, starts munged, slurmctld, slurmd
#   scripts/slurm-local.sh stop    # stops exactly the daemons it started (by pid)
# Needs root and Debian's slurm-wlm and munge (.ci/system-packages.sh installs them).
set -euo pipefail
STATE=${SLURM_LOCAL_STATE:-/tmp/ssmrepro-slurm}
# the cores this process may use; not nproc's default, which obeys OMP_NUM_THREADS (set to 1 by
# scripts/test.sh, which would leave SLURM one CPU and run its jobs one at a time)
CPUS=$(env -u OMP_NUM_THREADS -u OMP_THREAD_LIMIT nproc)
MEM_MB=$(( $(awk '/MemTotal/ {print $2}' /proc/meminfo) / 1024 - 2048 ))

start() {
  mkdir -p "$STATE"/{spool,ctld,log} /etc/slurm /run/munge /var/lib/munge /var/log/munge
  [ -f /etc/munge/munge.key ] || { mkdir -p /etc/munge; dd if=/dev/urandom of=/etc/munge/munge.key bs=1024 count=1 status=none; }
  chown -R munge:munge /etc/munge /run/munge /var/lib/munge /var/log/munge
  chmod 400 /etc/munge/munge.key
  cat > /etc/slurm/slurm.conf <<CONF
ClusterName=ssmrepro
SlurmctldHost=localhost(127.0.0.1)
AuthType=auth/munge
# a requeued job waits this long before it starts again (default 120 s); it is also the most a
# job launch may take, so not much shorter on a loaded 2-core machine
AuthInfo=cred_expire=30
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
SchedulerType=sched/backfill
ReturnToService=2
MinJobAge=600
SlurmUser=root
SlurmdUser=root
StateSaveLocation=$STATE/ctld
SlurmdSpoolDir=$STATE/spool
SlurmctldPidFile=$STATE/slurmctld.pid
SlurmdPidFile=$STATE/slurmd.pid
SlurmctldLogFile=$STATE/log/slurmctld.log
SlurmdLogFile=$STATE/log/slurmd.log
JobRequeue=1
RequeueExit=75
NodeName=localhost NodeAddr=127.0.0.1 CPUs=$CPUS RealMemory=$MEM_MB State=UNKNOWN
PartitionName=gpu Nodes=localhost Default=YES MaxTime=INFINITE State=UP
CONF
  if ! munge -n 2>/dev/null | unmunge >/dev/null 2>&1; then
    rm -f /run/munge/munged.pid
    runuser -u munge -- /usr/sbin/munged
    for _ in $(seq 50); do munge -n 2>/dev/null | unmunge >/dev/null 2>&1 && break; sleep 0.1; done
    cp /run/munge/munged.pid "$STATE/munged.pid"
  fi
  slurmctld -c -D >"$STATE/log/slurmctld.out" 2>&1 & echo $! > "$STATE/slurmctld.started"
  slurmd -D -N localhost >"$STATE/log/slurmd.out" 2>&1 & echo $! > "$STATE/slurmd.started"
  for _ in $(seq 60); do
    if sinfo -h -o '%T' 2>/dev/null | grep -qE '^(idle|mixed|allocated)'; then echo "slurm up"; return 0; fi
    sleep 0.5
  done
  echo "slurm did not come up; logs in $STATE/log" >&2
  return 1
}

stop() {
  for f in slurmd.started slurmctld.started munged.pid; do
    [ -f "$STATE/$f" ] || continue
    pid=$(cat "$STATE/$f"); kill "$pid" 2>/dev/null || true
    for _ in $(seq 20); do kill -0 "$pid" 2>/dev/null || break; sleep 0.25; done
    kill -9 "$pid" 2>/dev/null || true
    rm -f "$STATE/$f"
  done
}

case "${1:-}" in
  start) start ;;
  stop) stop ;;
  *) echo "usage: $0 start|stop" >&2; exit 2 ;;
esac
