"""A worker loads its base model and covariance when it starts, so the first fit waits for
neither (bench.first_image)."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from app.config import get_settings
from app.db import session_scope
from app.jobs import sweeper
from app.jobs.models import Job, JobState
from app.jobs.runner import run_job
from tests.conftest import reset_caches
from tests.support.tiny_model import save_tiny_model
from tests.unit.test_handlers import _fit_job
from workers import handlers
from workers.model_cache import get_model_cache, warm_in_background


@pytest.fixture
def tiny(embedded_env: Path, monkeypatch: pytest.MonkeyPatch, tmp_path_factory):  # type: ignore[no-untyped-def]
    for name, value in save_tiny_model(tmp_path_factory.getbasetemp() / "tiny-model").items():
        monkeypatch.setenv(name, value)
    get_model_cache.cache_clear()
    yield monkeypatch
    get_model_cache.cache_clear()


def test_a_warm_worker_has_the_model_and_covariance_before_its_first_fit(tiny) -> None:  # type: ignore[no-untyped-def]
    tiny.setenv("STUDIO_WORKER_WARM_START", "1")
    reset_caches()
    thread = warm_in_background()
    assert thread is not None
    thread.join(timeout=120)
    cache = get_model_cache()
    assert cache.loads == 1
    (model,) = cache._models.values()
    assert model.covariance is not None
    _, _, job_id = _fit_job(steps=2)
    run_job(job_id, handlers.fit)
    with session_scope() as session:
        job = session.get(Job, job_id)
        assert job is not None and job.state == JobState.succeeded, job.error
        assert job.result is not None
        assert job.result["model_loads"] == 1 and job.result["model_cache_hits"] >= 1


def test_warm_start_can_be_turned_off(tiny) -> None:  # type: ignore[no-untyped-def]
    tiny.setenv("STUDIO_WORKER_WARM_START", "0")
    reset_caches()
    assert warm_in_background() is None
    assert get_model_cache().loads == 0


def test_a_base_model_that_cannot_load_is_logged_not_raised(tiny, caplog) -> None:  # type: ignore[no-untyped-def]
    tiny.setenv("STUDIO_WORKER_WARM_START", "1")
    tiny.setenv("STUDIO_BASE_MODEL", "/nonexistent/model")
    reset_caches()
    thread = warm_in_background()
    assert thread is not None
    thread.join(timeout=60)
    assert "could not warm base model /nonexistent/model" in caplog.text


def test_the_embedded_worker_warms_its_model_when_the_app_starts(tiny) -> None:  # type: ignore[no-untyped-def]
    # The embedded worker is a plain WorkController, which Celery does not make announce
    # worker_ready; without that, the start-up hooks of workers/tasks.py never ran in it.
    from fastapi.testclient import TestClient

    from app.main import create_app

    tiny.setenv("STUDIO_WORKER_WARM_START", "1")
    reset_caches()
    with TestClient(create_app()):
        deadline = time.monotonic() + 120
        cache = get_model_cache()
        while not (cache.loads and all(m.covariance is not None for m in cache._models.values())):
            assert time.monotonic() < deadline, "the embedded worker did not warm its model"
            time.sleep(0.05)
        # worker_ready fired; the embedded process still sweeps only once, at its start-up
        assert sweeper._sweeper is None
    assert cache.loads == 1


def test_the_warm_up_fit_and_generation_leave_the_base_model_as_it_was(tiny) -> None:  # type: ignore[no-untyped-def]
    import torch

    from workers.model_cache import first_calls

    reset_caches()
    cache = get_model_cache()
    model = cache.get(get_settings().base_model)
    pipe = model.pipe
    before = {k: v.clone() for k, v in pipe.unet.state_dict().items()}
    processors = {k: type(v) for k, v in pipe.unet.attn_processors.items()}
    vocab = len(pipe.tokenizer)
    rows = pipe.text_encoder.get_input_embeddings().weight.shape
    first_calls(pipe, cache.covariance(model), on_cuda=False)
    assert {k: type(v) for k, v in pipe.unet.attn_processors.items()} == processors
    assert len(pipe.tokenizer) == vocab
    assert pipe.text_encoder.get_input_embeddings().weight.shape == rows
    after = pipe.unet.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)
