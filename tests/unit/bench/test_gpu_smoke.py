"""`python -m bench.gpu --tiny` (bench/gpu_check.sh's smoke mode) runs every section on the
CPU: options, profiled phases with FLOPs, and a default fit through the studio's worker.

No timing asserts: this proves the machinery (the numbers are meaningless at toy sizes).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from bench.gpu import main
from bench.syncs import main as syncs_main


@pytest.mark.slow
def test_gpu_bench_smoke_mode_runs_end_to_end(tmp_path: Path, capsys) -> None:
    assert main(["--tiny", "--steps", "1", "--out", str(tmp_path)]) == 0
    table = (tmp_path / "gpu-sd15-tiny.md").read_text()
    data = json.loads((tmp_path / "gpu-sd15-tiny.json").read_text())["rows"]
    for needle in ("| default |", "| fused AdamW |", "UNet fwd+bwd", "TFLOP/s", "upload → concept"):
        assert needle in table, needle
    assert [row["variant"] for row in data["options"]][:2] == [
        "default",
        "events every step (a host sync each)",
    ]
    assert data["flops_per_step"] > 0
    assert set(data["phases_s_per_step"]) >= {"UNet fwd+bwd", "optimiser"}
    (e2e,) = [row for row in data["e2e"] if row["settings"] == "default"]
    assert e2e["result"]["steps"] == 4 and len(e2e["result"]["sample_image_ids"]) == 2
    assert 0 < e2e["fit_s"] < e2e["wall_s"]


def test_sync_check_says_what_covers_the_cpu(capsys) -> None:
    assert syncs_main(["--tiny"]) == 0
    assert "test_host_syncs" in capsys.readouterr().out
