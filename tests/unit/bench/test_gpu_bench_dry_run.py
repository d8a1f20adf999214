"""`python -m bench.gpu --tiny`, the CPU dry run of the script prepared for a lent GPU: every
table it would print there, the whole-fit row included, comes out (bench/gpu_check.sh)."""

from __future__ import annotations

import json
from pathlib import Path

import torch

from bench import gpu


def test_the_gpu_bench_runs_end_to_end_on_tiny_shapes(tmp_path: Path, capsys) -> None:  # type: ignore[no-untyped-def]
    torch.set_num_threads(1)
    out = tmp_path / "rows.json"
    args = ["--tiny", "--fit-steps", "2", "--repeats", "1", "--end-to-end-steps", "2"]
    assert gpu.main([*args, "--json", str(out)]) == 0
    rows = json.loads(out.read_text())["rows"]
    assert [row["variant"] for row in rows["fit"]] == [v[0] for v in gpu.FIT_VARIANTS]
    assert [row["dtype"] for row in rows["generate"]] == ["bf16", "fp16", "fp32"]
    (whole,) = rows["end_to_end"]
    assert whole["steps"] == 2 and whole["batch"] == "4×1"  # the worker's CPU batch for SD
    assert whole["wall_s"] > 0 and whole["bytes"] > 1_000  # a concept file of the tiny shapes
    assert "| the worker's fit call" in capsys.readouterr().out
