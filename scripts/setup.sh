#!/usr/bin/env bash
# One set-up path for a fresh CPU machine: a virtual environment in .venv with torch 2.13.0 (CPU)
# pinned for every install, torchvision/lpips/pytorch-fid made importable on CPU torch (see
# ssmrepro.compat), and ssmrepro with its dev extra. Idempotent: rerunning it is cheap.
#   scripts/setup.sh            # set up .venv
#   VENV=/path scripts/setup.sh # elsewhere
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${VENV:-.venv}
PY=${PYTHON:-python3}
TORCH_VERSION=${TORCH_VERSION:-2.13.0}

if [ ! -x "$VENV/bin/python" ]; then
  "$PY" -m venv "$VENV"
fi
. "$VENV/bin/activate"
python -m pip install --quiet --upgrade pip

# Pin torch for every later install, so that no dependency pulls another (CUDA) build.
CONSTRAINTS="$VENV/constraints.txt"
echo "torch==${TORCH_VERSION}" > "$CONSTRAINTS"
export PIP_CONSTRAINT="$PWD/$CONSTRAINTS"

python -m pip install --quiet "torch==${TORCH_VERSION}"
python -m pip install --quiet -e ".[dev]"

# torchvision's CUDA wheel does not load its ops on CPU torch; ssmrepro registers their schemas
# before importing it. Check that the whole chain imports.
python - <<'PY'
from ssmrepro.compat import ensure_torchvision_importable
state = ensure_torchvision_importable()
import torchvision, lpips, pytorch_fid  # noqa: F401
import torch
print(f"set-up ok: torch {torch.__version__}, torchvision {torchvision.__version__} ({state})")
PY
