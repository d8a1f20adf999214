#!/usr/bin/env bash
# Toy-world training on a lent H100/H200 as one prepared call (the device tool's `run`, with
# carry [".gpu-wheels"]; `make gpu-wheels` here first), in about 8 minutes: the kept checkpoint
# (workers/toyworld/model, run W3m) continued at batch 128 with the recipe of its
# README, then what it knows, measured there. The model comes back as one tar in $OUT.
#
#   run: bash scripts/gpu-train-toyworld.sh [minutes, default 6]
#   bash scripts/gpu-train-toyworld.sh --tiny     # here: a CPU dry run of the same steps
#
# Back here: tar -xf <files_at>/toyworld-gpu.tar -C /tmp, then measure it as any run
# (python -m workers.toyworld.evaluate --model /tmp/toyworld-gpu ...; bench.edit_terms;
# bench.quality --subjects known --model /tmp/toyworld-gpu) and record in the model card
# which machine made the weights.
set -euo pipefail
cd "$(dirname "$0")/.."
out="${OUT:-/tmp/gpu-train-toyworld}"
mkdir -p "$out"
python=python3
device=cuda
minutes="${1:-6}"
n=100
batch=128
dataset=12000
if [ "${1:-}" = "--tiny" ]; then
  python=.venv/bin/python
  device=cpu
  minutes=0.3
  n=4
  batch=8
  dataset=256
else
  deps=/tmp/gpu-train-deps
  "$python" -m pip install -q --no-index --no-deps --target "$deps" .gpu-wheels/*.whl
  export PYTHONPATH="$deps:$PWD"
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader | tee "$out/gpu.txt"
fi
export PYTHONUNBUFFERED=1
date -u +%Y-%m-%dT%H:%MZ | tee -a "$out/gpu.txt"
model=/tmp/toyworld-gpu
# --steps only bounds the run; with --minutes the cosine follows the clock (train.learning_rate).
"$python" -m workers.toyworld.train --out "$model" --seed 21 --device "$device" --threads 8 \
  --text-layers 1 --unet-channels 32 64 64 --batch "$batch" --lr 0.0005 --warmup 50 \
  --lr-schedule cosine --lr-final 0.1 --pattern-named 0.9 --breed-share 0.6 --color-named 0.7 \
  --dataset "$dataset" \
  --vae-from workers/toyworld/model --init-from workers/toyworld/model \
  --steps 1000000 --minutes "$minutes" --checkpoint-every 0 2>&1 \
  | grep -v "should be kept in float32" | tee "$out/train.log"
tar -cf "$out/toyworld-gpu.tar" -C /tmp toyworld-gpu
for kind in "" --breeds --patterns --bare; do
  "$python" -m workers.toyworld.evaluate --model "$model" --n "$n" --seed 1 --device "$device" \
    $kind 2>&1 | grep -v "Warning\|warn(" | tee -a "$out/evaluate.txt"
done
ls -l "$out"
