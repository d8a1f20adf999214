"""The fit loop does not wait for the device between steps.

A host sync (the CPU reading a device value: `.item()`, `bool(t)`, `.tolist()`, a boolean-mask
index, a tensor built from Python numbers) drains the GPU's queue: the CPU stops queueing the
next step's kernels until the current ones are done. On the tiny CPU model nothing actually
waits, so these tests count the operations that would, in one steady-state step.
"""

from __future__ import annotations

import traceback
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field, replace

import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode

from tests.unit.perfusion.conftest import TINY_FIT, make_images
from workers.perfusion import FitCanceled, fit_concept

# Ops whose result the CPU must read from the device (or that build a tensor from host data).
_READS = {
    "aten._local_scalar_dense.default": "scalar read (.item(), bool(), float(), int())",
    "aten.nonzero.default": "nonzero",
    "aten.masked_select.default": "masked_select",
    "aten.equal.default": "torch.equal",
    "aten.is_nonzero.default": "is_nonzero",
    "aten.lift_fresh.default": "tensor from host data (torch.tensor(...))",
    "aten._unique2.default": "unique",
    "aten.repeat_interleave.Tensor": "repeat_interleave without output_size",
}
_PATCHED = ("item", "tolist", "cpu", "numpy", "__bool__", "__float__", "__int__", "__index__")


def _from_torch_optim() -> bool:
    # torch.optim's non-fused AdamW keeps its step counter on the CPU and reads it there: no
    # device sync (fused AdamW keeps it on the device and never reads it).
    return any("/torch/optim/" in frame.filename for frame in traceback.extract_stack())


@dataclass
class SyncCounter(TorchDispatchMode):
    """Records host reads while `active`; `marks` splits them by fit step."""

    active: bool = False
    step: int = -1
    found: dict[int, list[str]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        super().__init__()

    def hit(self, what: str) -> None:
        if self.active and not _from_torch_optim():
            where = [f for f in traceback.extract_stack() if "/workers/" in f.filename]
            site = f"{where[-1].name}:{where[-1].lineno}" if where else "?"
            self.found.setdefault(self.step, []).append(f"{what} at {site}")

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):  # type: ignore[no-untyped-def]
        kwargs = kwargs or {}
        name = str(func)
        if name in _READS:
            self.hit(_READS[name])
        elif name == "aten.index.Tensor" and any(
            isinstance(i, torch.Tensor) and i.dtype == torch.bool for i in args[1]
        ):
            self.hit("boolean-mask index")
        elif name in ("aten._to_copy.default", "aten.copy_.default"):
            source = args[1] if name == "aten.copy_.default" else args[0]
            target = kwargs.get("device", args[0].device)
            if isinstance(source, torch.Tensor) and torch.device(target) != source.device:
                self.hit(f"copy {source.device} -> {target}")
        return func(*args, **kwargs)


@contextmanager
def counting_syncs(monkeypatch: pytest.MonkeyPatch) -> Iterator[SyncCounter]:
    """A SyncCounter over the block, with the Python-level reads patched in too."""
    counter = SyncCounter()
    for name in _PATCHED:
        original = getattr(torch.Tensor, name)

        def wrapper(self, *args, _original=original, _name=name, **kwargs):  # type: ignore[no-untyped-def]
            counter.hit(f".{_name}()")
            return _original(self, *args, **kwargs)

        monkeypatch.setattr(torch.Tensor, name, wrapper)
    with counter:
        yield counter
    monkeypatch.undo()


def _mark_steps(  # type: ignore[no-untyped-def]
    monkeypatch: pytest.MonkeyPatch,
    counter: SyncCounter,
    first: int,
    last: int,
    clock: list[float] | None = None,
    micro: int = 1,
):
    """Count from the start of step `first` to the start of step `last + 1` (`micro` micro
    steps a step): each step's own work, its optimiser step, its i* refresh and what follows
    it. Each step also advances `clock` by one second."""
    import workers.perfusion.fit as fit

    micro_step = fit._micro_step
    calls = [0]

    def spy(*args):  # type: ignore[no-untyped-def]
        step, part = divmod(calls[0], micro)
        counter.step = step
        counter.active = first <= step <= last
        calls[0] += 1
        if clock is not None and part == 0:
            clock[0] += 1.0
        return micro_step(*args)

    monkeypatch.setattr(fit, "_micro_step", spy)
    return calls


@pytest.mark.parametrize(
    "options",
    [{}, {"i_star_tracking": "ema"}, {"grad_accum": 2}],
    ids=["default", "ema", "accumulation"],
)
def test_steady_state_steps_make_no_host_syncs(tiny_pipe, tiny_cov, monkeypatch, options):
    """Steps 2..4 of a 6-step fit without callbacks: nothing the CPU waits for."""
    config = replace(TINY_FIT, steps=6, **options)
    with counting_syncs(monkeypatch) as counter:
        calls = _mark_steps(monkeypatch, counter, 2, 4, micro=config.grad_accum)
        fit_concept(tiny_pipe, make_images(), "<sync>", "dog", config, tiny_cov)
        counter.active = False
    assert calls[0] == 6 * config.grad_accum
    assert counter.found == {}, "\n".join(
        f"step {step}: {len(hits)} host reads: {hits}" for step, hits in counter.found.items()
    )


def test_throttled_progress_reads_the_loss_one_step_late_and_only_at_its_points(
    tiny_pipe, tiny_cov, monkeypatch
):
    """Events and cancel checks every 2.5 s of the fit's clock (one step = 1 s here): after
    the first step, steps 3, 6 and the last, 8. Each reports the loss of the step before
    (already computed while this one was queued), exactly as an unthrottled fit computes it;
    the first (no earlier loss known) and the last report their own. Only those steps read
    anything back from the device."""
    steps = 8
    reference: list[float] = []
    fit_concept(
        tiny_pipe,
        make_images(),
        "<sync>",
        "dog",
        replace(TINY_FIT, steps=steps),
        tiny_cov,
        on_progress=lambda p: reference.append(p.loss),
    )
    assert len(reference) == steps
    now = [0.0]
    events, cancel_checks = [], []
    config = replace(TINY_FIT, steps=steps, progress_interval_s=2.5)
    with counting_syncs(monkeypatch) as counter:
        _mark_steps(monkeypatch, counter, 0, steps - 1, clock=now)
        fit_concept(
            tiny_pipe,
            make_images(),
            "<sync>",
            "dog",
            config,
            tiny_cov,
            on_progress=events.append,
            should_cancel=lambda: bool(cancel_checks.append(now[0])),
            clock=lambda: now[0],
        )
        counter.active = False
    assert [e.step for e in events] == [1, 3, 6, 8]
    assert [e.loss_step for e in events] == [1, 2, 5, 8]
    assert [e.loss for e in events] == [reference[0], reference[1], reference[4], reference[7]]
    assert cancel_checks == [0.0, 1.0, 3.0, 6.0]  # before the first step, then at each event
    assert set(counter.found) <= {0, 2, 5, 7}, counter.found  # 0-based: steps 1, 3, 6 and 8
    assert counter.found.get(2), "a progress point reads the loss"


def test_a_cancel_is_seen_within_one_interval_of_the_fit_clock(tiny_pipe, tiny_cov, monkeypatch):
    """Cancel checks are throttled with the events: a cancel asked at 3.5 s of the fit's clock
    (one step = 1 s, interval 2.5 s: checks before the first step and after steps 3 and 6)
    stops the fit after step 6, 2.5 s later; no step starts after it."""
    now = [0.0]
    config = replace(TINY_FIT, steps=8, progress_interval_s=2.5)
    calls = _mark_steps(monkeypatch, SyncCounter(), 0, -1, clock=now)
    with pytest.raises(FitCanceled, match="at step 6/8"):
        fit_concept(
            tiny_pipe,
            make_images(),
            "<sync>",
            "dog",
            config,
            tiny_cov,
            should_cancel=lambda: now[0] >= 3.5,
            clock=lambda: now[0],
        )
    assert calls[0] == 6
