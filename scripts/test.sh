#!/usr/bin/env bash
# The test command of the README. Fails if pytest collects no test (exit code 5).
# Where it can (root, slurm-wlm and munge installed), it starts one local SLURM on 127.0.0.1 for
# the whole session, so the SLURM tests on both pytest workers share it, and stops it on exit.
set -uo pipefail
cd "$(dirname "$0")/.."
. .venv/bin/activate
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}
if [ "$(id -u)" = 0 ] && command -v slurmctld >/dev/null && ! sinfo -h >/dev/null 2>&1; then
  if scripts/slurm-local.sh start >/dev/null; then
    trap 'scripts/slurm-local.sh stop' EXIT
  fi
fi
python -m pytest -q -p no:cacheprovider -n 2 --dist loadgroup "$@"
rc=$?
if [ $rc -eq 5 ]; then
  echo "pytest collected no tests: failing" >&2
  exit 1
fi
exit $rc
