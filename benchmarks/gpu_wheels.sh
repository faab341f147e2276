#!/usr/bin/env bash
# Prepare onnxruntime-gpu for a lent GPU machine (see gpu_check.sh): download the wheel for the
# device's Python 3.12 and split it into parts that fit one device call each (.whl/ is ignored).
set -euo pipefail
cd "$(dirname "$0")/.."
version=${1:-1.31.1}
mkdir -p .whl
python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
  --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_17_x86_64 \
  --platform manylinux2014_x86_64 -d .whl "onnxruntime-gpu==$version"
wheel=$(ls .whl/onnxruntime_gpu-"$version"-*.whl | head -1)
rm -f .whl/part-*
split -b 55M -d "$wheel" .whl/part-
basename "$wheel" > .whl/part-00.name
ls -l .whl/part-*
