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
# Every test has a time limit (pytest-timeout: `timeout` in pyproject.toml, more for the few
# marked slow tests), and the whole run one more: past SSMREPRO_TEST_BUDGET_S seconds pytest gets
# SIGINT, prints what was running and its summary, and this exits 124.
timeout --signal=INT --kill-after=120 "${SSMREPRO_TEST_BUDGET_S:-4200}" \
  python -m pytest -q -p no:cacheprovider -n 2 --dist loadgroup --durations=15 "$@"
rc=$?
[ $rc -eq 124 ] && echo "the tests ran past SSMREPRO_TEST_BUDGET_S=${SSMREPRO_TEST_BUDGET_S:-4200} s" >&2
if [ $rc -eq 5 ]; then
  echo "pytest collected no tests: failing" >&2
  exit 1
fi
exit $rc
