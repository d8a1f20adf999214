#!/usr/bin/env bash
# The GPU benchmarks as one prepared call for a lent H100/H200 (the device tool's `run`), in
# well under 8 minutes; tables and JSON go to $OUT (or bench/results/gpu-check).
#
#   make gpu-wheels                      # here, once: the wheels the GPU image lacks
#   run: bash bench/gpu_check.sh [sd15|sdxl|all]   # there, with carry [".gpu-wheels"]
#   bash bench/gpu_check.sh --tiny [sd15|sdxl|all] # here: a CPU dry run (small shapes)
#
# Each part has its own limit (sd15 270 s, sdxl 300 s: not yet timed on a GPU), so `all` ends
# inside one 10-minute call.
#
# The GPU image has its own python3 with torch and transformers but no diffusers: the carried
# wheels go into a private folder on PYTHONPATH; nothing is downloaded there.
set -euo pipefail
cd "$(dirname "$0")/.."
out="${OUT:-bench/results/gpu-check}"
mkdir -p "$out"
tiny=()
python=python3
whole_fit=400
if [ "${1:-}" = "--tiny" ]; then
  shift
  tiny=(--tiny)
  whole_fit=3
  python=.venv/bin/python
  export OMP_NUM_THREADS=1
else
  deps=/tmp/gpu-check-deps
  "$python" -m pip install -q --no-index --no-deps --target "$deps" .gpu-wheels/*.whl
  export PYTHONPATH="$deps:$PWD"
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader | tee "$out/gpu.txt"
fi
export PYTHONUNBUFFERED=1
"$python" -c "import torch, diffusers; print('torch', torch.__version__, 'diffusers', diffusers.__version__)" \
  | tee -a "$out/gpu.txt"
date -u +%Y-%m-%dT%H:%MZ | tee -a "$out/gpu.txt"

which="${1:-all}"

# SD 1.5 at 512 px: step time per variant, generation overhead, and one whole default fit
# (400 steps, the worker's call) end to end: issue #13's figure.
if [ "$which" != sdxl ]; then
  timeout 270 "$python" -m bench.gpu "${tiny[@]}" --fit-steps 4 --repeats 2 \
    --end-to-end-steps "$whole_fit" --json "$out/gpu-sd15.json" 2>&1 \
    | grep -v "should be kept in float32" | tee "$out/gpu-sd15.txt"
fi
# SDXL at 1024 px: step time and generation; its whole fit is projected from s / step.
if [ "$which" != sd15 ]; then
  timeout 300 "$python" -m bench.gpu "${tiny[@]}" --arch sdxl --fit-steps 3 --repeats 1 \
    --json "$out/gpu-sdxl.json" 2>&1 | grep -v "should be kept in float32" | tee "$out/gpu-sdxl.txt"
fi
