"""A tiny seeded SD-shaped diffusers model on disk, for STUDIO_BASE_MODEL in tests.

Reuses the perfusion library's test pipeline; replace with the toy world model once merged
if it is as fast.
"""

from __future__ import annotations

from pathlib import Path

TEST_SETTINGS = {
    "STUDIO_DEVICE": "cpu",
    "STUDIO_FIT_BATCH_SIZE": "2",
    "STUDIO_FIT_GRAD_ACCUM": "1",
    "STUDIO_FIT_CHECKPOINT_EVERY": "2",
    "STUDIO_FIT_PREVIEW_EVERY": "4",
    "STUDIO_SAMPLE_STEPS": "2",
    "STUDIO_JOB_HEARTBEAT_S": "0.5",
    "STUDIO_JOB_STALE_AFTER_S": "3",
    "STUDIO_SWEEP_INTERVAL_S": "1",
}
"""Worker settings that keep jobs tiny and recovery quick."""


def save_tiny_model(folder: Path) -> dict[str, str]:
    """Write (once) a tiny random pipeline and its captions; the settings that use them."""
    from tests.unit.perfusion.conftest import CAPTIONS, make_tiny_pipeline

    if not (folder / "model_index.json").exists():
        make_tiny_pipeline(folder / "tokenizer-files").save_pretrained(folder)
        (folder / "captions.txt").write_text("\n".join(CAPTIONS))
    return {
        **TEST_SETTINGS,
        "STUDIO_BASE_MODEL": str(folder),
        "STUDIO_COVARIANCE_CAPTIONS": str(folder / "captions.txt"),
    }
