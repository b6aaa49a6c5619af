#!/usr/bin/env bash
# System tools the integration tests drive for real: SLURM + munge, Chromium, pdflatex.
set -euo pipefail
need=()
command -v slurmctld >/dev/null || need+=(slurm-wlm munge)
command -v chromium >/dev/null || need+=(chromium)
command -v pdflatex >/dev/null || need+=(texlive-latex-base texlive-latex-recommended)
if [ ${#need[@]} -gt 0 ]; then
  if [ "$(id -u)" = 0 ]; then
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
  else
    echo "not root: cannot install ${need[*]}; their integration tests will be skipped" >&2
  fi
fi
