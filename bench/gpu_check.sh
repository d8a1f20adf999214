#!/usr/bin/env bash
# Issue #13's lent-GPU check, one run under 8 minutes on one H100/H200: `python -m bench.gpu`
# on the SD 1.5-shaped random-weight pipeline at 512 px. Prints, and writes to $OUT (else
# bench/results): the fit-step speed options each against the production default (8 timed
# steps per row), where a step's device time goes (torch.profiler) with FLOPs and TFLOP/s,
# and the end-to-end wall time of a default 400-step fit through the studio's worker
# (warm), with and without the options that helped (COMPILE=1: also a compiled UNet, a few
# minutes more). A final pass checks that steady-state fit steps never wait for the GPU
# (torch.cuda.set_sync_debug_mode). About 5 minutes on an H200 without COMPILE.
#
#   bench/gpu_check.sh            # on the GPU machine
#   bench/gpu_check.sh --tiny     # the same on this CPU at toy sizes (a smoke run)
#
# The GPU image holds torch and transformers but not diffusers nor the studio's web stack:
# bring them as wheels in .wheels-gpu/ (see bench/gpu_wheels.sh; `carry` it), installed here
# into /tmp/site. LIMIT_S caps the benchmark (default 400 s).
set -euo pipefail
cd "$(dirname "$0")/.."
out="${OUT:-bench/results}"
mkdir -p "$out"
python="${PYTHON:-}"
if [ -z "$python" ]; then
    if [ -x .venv/bin/python ]; then python=.venv/bin/python; else python=python3; fi
fi
if [ -d .wheels-gpu ] && ls .wheels-gpu/*.whl >/dev/null 2>&1; then
    "$python" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
        --target /tmp/site .wheels-gpu/*.whl
    export PYTHONPATH="/tmp/site:${PWD}${PYTHONPATH:+:$PYTHONPATH}"
else
    export PYTHONPATH="${PWD}${PYTHONPATH:+:$PYTHONPATH}"
fi
export PYTHONUNBUFFERED=1
args=(--out "$out")
if [ "${1:-}" = "--tiny" ]; then
    args+=(--tiny --steps 1)
    compile=()
else
    "$python" -c "import torch; assert torch.cuda.is_available(), 'needs a CUDA GPU'"
    nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true
    args+=(--steps 8)
    compile=()
    [ "${COMPILE:-0}" = 1 ] && compile=(--compile)
fi
timeout "${LIMIT_S:-400}" "$python" -m bench.gpu "${args[@]}" "${compile[@]}" 2>"$out/gpu-check.err" \
    | tee "$out/gpu-check.md"
timeout 60 "$python" -m bench.syncs "${@}" | tee -a "$out/gpu-check.md"
