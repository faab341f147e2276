#!/usr/bin/env bash
# CUDA check for a lent GPU machine (a few minutes). CI never runs this; on a machine without
# CUDA it prints 'skipped' and exits 0. `python benchmarks/gpu_check.py --cpu-dry-run` (run by the
# tests) proves the Python side works first.
#
# Needs, in python3: torch with CUDA, numpy, onnx, safetensors, click (the device image has them:
# /work/.library/device/KINDS.md) and onnxruntime-gpu, which the image lacks (it has the CPU
# onnxruntime) and which is 244 MiB, more than one device call can carry (64 MiB with the tree).
# So it travels in parts, one call each, and this script joins and installs them:
#   here:   bash benchmarks/gpu_wheels.sh          # downloads the cp312 wheel, splits .whl/part-*
#   device: for each part P (5 calls, the first with .whl/part-00.name too):
#           run(carry=[".whl/P"], "mkdir -p /tmp/parts && cp .whl/part-* /tmp/parts/")
#   device: last call:                  run("bash benchmarks/gpu_check.sh")   (warm machine: /tmp kept)
# The image's CUDA 13 / cuDNN 9 wheels match onnxruntime-gpu 1.31.1; torch is imported first so
# its CUDA libraries are loaded when onnxruntime's CUDA provider looks for them.
set -euo pipefail
cd "$(dirname "$0")/.."
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader || true
if ls /tmp/parts/part-* >/dev/null 2>&1 && [ ! -d /tmp/site/onnxruntime ]; then
  name=$(cat /tmp/parts/part-*.name 2>/dev/null || echo onnxruntime_gpu-1.31.1-cp312-cp312-manylinux_2_28_x86_64.whl)
  cat /tmp/parts/part-?? > "/tmp/$name"
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target /tmp/site "/tmp/$name"
fi
if [ -d /tmp/site/onnxruntime ]; then export PYTHONPATH=/tmp/site; fi
export PYTHONPATH="${PYTHONPATH:+$PYTHONPATH:}$PWD:$PWD/runtime"
PYTHONUNBUFFERED=1 python3 benchmarks/gpu_check.py
