#!/usr/bin/env bash
# CUDA check for a lent GPU machine (a few minutes). Needs, in the active Python: bagcompile and
# bagcompile-runtime (this repo, editable), onnxruntime-gpu with its CUDA/cuDNN libraries, and a
# CUDA build of torch. The GPU machine has no internet: carry wheels (see the device tool's notes).
# CI never runs this; on a machine without CUDA it prints 'skipped' and exits 0.
set -euo pipefail
cd "$(dirname "$0")/.."
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader || true
PYTHONUNBUFFERED=1 python3 benchmarks/gpu_check.py
