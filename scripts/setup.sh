#!/usr/bin/env bash
# Create .venv and install climb-assets with its test tools. Safe to run again.
#   TORCH_SPEC="torch==2.13.0" scripts/setup.sh   # pick a torch build first (e.g. a CPU wheel)
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$PYTHON" -m venv .venv
.venv/bin/python -m pip install -q --upgrade pip
if [ -n "${TORCH_SPEC:-}" ]; then
  .venv/bin/python -m pip install -q "$TORCH_SPEC"
fi
.venv/bin/python -m pip install -q -e ".[dev,openvino]"  # openvino: its tests run too
echo "climb-assets installed in .venv ($(.venv/bin/python -c 'import torch; print("torch", torch.__version__)'))"
