#!/usr/bin/env bash
# One short lent-GPU check for SDXL: `python -m bench.gpu --arch sdxl` on an SDXL base-shaped
# random-weight pipeline at 1024 px (about 5 minutes on an H200: 3 fit variants x 4 steps, then
# 25-step images in bf16, fp16 and fp32). Writes the table and JSON to $OUT (else bench/results).
set -euo pipefail
cd "$(dirname "$0")/.."
out="${OUT:-bench/results}"
mkdir -p "$out"
python="${PYTHON:-.venv/bin/python}"
"$python" -c "import torch; assert torch.cuda.is_available(), 'needs a CUDA GPU'"
timeout "${LIMIT_S:-540}" "$python" -m bench.gpu --arch sdxl --fit-steps 4 --repeats 1 \
    --json "$out/gpu-sdxl.json" | tee "$out/gpu-sdxl.md"
