"""The harness judges Perfusion's promises from its numbers; a flat result meets none of them."""

from __future__ import annotations

from bench.quality.report import QualityReport, Row
from bench.quality.settings import Settings


def _row(label: str, method: str | None, hits: float, drift: float | None = None) -> Row:
    return Row(label, method, "", hits, 0.0, 1.0, drift, drift)


def _report(perfusion: float, sweep: list[float]) -> QualityReport:
    rows = [
        _row("Reference: best words-only prompt (base model)", None, 0.1),
        _row("Reference: base model, superclass prompt", None, 0.05),
        _row("Perfusion", "perfusion", perfusion, 0.1),
        _row("LoRA", "lora", 0.2, 5.0),
    ]
    points = [
        {"strength": s, "hit_rate": h, "correlogram": 0.0, "prompt_fidelity": 1.0}
        for s, h in zip((0.0, 0.5, 1.0), sweep, strict=True)
    ]
    return QualityReport(Settings(), rows, points, wall_s=1.0, isolated=False)


def _claims(report: QualityReport) -> dict[str, bool]:
    return {text.split(" (")[0]: ok for text, ok in report.claims()}


def test_a_learning_run_meets_every_claim() -> None:
    assert all(_claims(_report(0.6, [0.1, 0.6, 0.8])).values())


def test_nothing_learned_meets_no_fidelity_claim_and_a_flat_sweep_is_no_slider() -> None:
    claims = _claims(_report(0.0, [0.0, 0.0, 0.0]))
    assert not claims["concept fidelity ≥ 3× the base superclass prompt's"]
    assert not claims["concept fidelity above the best words-only prompt's"]
    assert not claims["strength sweep rises monotonically in concept fidelity"]
    assert not _claims(_report(0.6, [0.5, 0.4, 0.7]))[
        "strength sweep rises monotonically in concept fidelity"
    ]
