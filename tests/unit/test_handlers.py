"""Fit and generate handlers in process on a tiny model: results stored once, events published."""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest
import torch
from sqlalchemy import func, select

from app.concepts.models import Concept, ConceptStatus
from app.config import get_settings
from app.db import session_scope
from app.generations.models import GeneratedImage, Generation
from app.jobs.models import Job, JobKind, JobState
from app.jobs.params import FitParams, SamplePolicy
from app.jobs.progress import get_progress_bus
from app.jobs.runner import JobFailed, run_job
from app.storage import DatabaseBlobStore
from app.storage.models import Blob
from tests.conftest import reset_caches
from tests.support.factories import make_concept, make_generation, make_job_row, make_user
from tests.support.tiny_model import save_tiny_model
from tests.support.webdata import mask_png
from workers import handlers
from workers.images import png_parameters
from workers.model_cache import get_model_cache


@pytest.fixture
def tiny_env(embedded_env: Path, monkeypatch: pytest.MonkeyPatch, tmp_path_factory):  # type: ignore[no-untyped-def]
    for name, value in save_tiny_model(tmp_path_factory.getbasetemp() / "tiny-model").items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("STUDIO_JOB_PROGRESS_INTERVAL_S", "0")  # every step, compared one for one
    reset_caches()
    get_model_cache.cache_clear()
    yield embedded_env
    get_model_cache.cache_clear()


def _events(job_id: uuid.UUID) -> list[dict]:  # type: ignore[type-arg]
    return [event for _, event in get_progress_bus().read(str(job_id), None, 0)]


def _fit_job(
    steps: int = 4, token: str = "<rex>", masks: list[bytes] | None = None
) -> tuple[uuid.UUID, uuid.UUID, uuid.UUID]:
    """A fit job of a two-photo concept; `masks`: a mask PNG stored beside each photo."""
    with session_scope() as session:
        user = make_user(session)
        concept = make_concept(session, user, token=token)
        for photo, mask in zip(concept.photos, masks or [], strict=False):
            photo.mask_blob_id = DatabaseBlobStore(session).put(mask, "image/png")
        policy = SamplePolicy(count=2, steps=get_settings().sample_steps)
        params = FitParams(token=token, superclass="dog", steps=steps, seed=0, samples=policy)
        job = make_job_row(
            session,
            JobKind.fit,
            owner_id=user.id,
            concept_id=concept.id,
            params=params.model_dump(mode="json"),
        )
        return user.id, concept.id, job.id


def _generate_job(user_id: uuid.UUID, concept_ids: list[str], n: int = 2) -> uuid.UUID:
    from app.users.models import User

    with session_scope() as session:
        user = session.get(User, user_id)
        assert user is not None
        generation = make_generation(session, user, "a <rex> on the beach")
        params = {
            "prompt": "a <rex> on the beach",
            "negative_prompt": "blurry",
            "n": n,
            "seed": 7,
            "steps": 2,
            "guidance": 5.0,
            "strength": 0.8,
            "concept_ids": concept_ids,
        }
        job = make_job_row(
            session, JobKind.generate, owner_id=user.id, generation_id=generation.id, params=params
        )
        return job.id


def test_step_events_are_thinned_to_the_interval_but_keep_first_last_checkpoints_previews(
    tiny_env, monkeypatch: pytest.MonkeyPatch
) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.setenv("STUDIO_JOB_PROGRESS_INTERVAL_S", "3600")
    reset_caches()
    user_id, concept_id, job_id = _fit_job(steps=6)
    run_job(job_id, handlers.fit)
    events = _events(job_id)
    # Tiny settings: a checkpoint every 2 steps, a preview at 4; steps 3 and 5 are thinned out.
    assert [e["step"] for e in events if e["type"] == "step"] == [1, 2, 4, 6]
    assert [e["step"] for e in events if e["type"] == "preview"] == [4]
    gen_job = _generate_job(user_id, [str(concept_id)], n=2)
    run_job(gen_job, handlers.generate)
    steps = [(e["image_index"], e["step"]) for e in _events(gen_job) if e["type"] == "step"]
    assert steps == [(0, 1), (0, 2), (1, 1), (1, 2)]  # two steps an image: first and last


def test_a_fit_stores_its_concept_file_and_samples_once_then_generation_uses_it(tiny_env) -> None:  # type: ignore[no-untyped-def]
    user_id, concept_id, job_id = _fit_job()
    run_job(job_id, handlers.fit)
    with session_scope() as session:
        job = session.get(Job, job_id)
        concept = session.get(Concept, concept_id)
        assert job is not None and concept is not None
        assert job.state == JobState.succeeded, job.error
        assert concept.status == ConceptStatus.ready and concept.file_blob_id is not None
        assert job.checkpoint_blob_id is None  # cleaned up with the final state
        assert concept.settings["architecture"] == "sd"
        (sample,) = session.scalars(select(Generation).where(Generation.concept_id == concept_id))
        assert sample.prompt == "a photo of a <rex>" and sample.params["sample"] is True
        assert [image.index for image in sample.images] == [0, 1]
        assert job.result is not None and job.result["resumed_from_step"] is None
        # where the job's time went, in order (bench.first_image prints it)
        phases = ["import", "inputs", "model", "model lock", "covariance", "fit", "samples"]
        assert list(job.result["timings_s"]) == phases
        assert list(job.result["timings_cpu_s"]) == phases
        assert all(seconds >= 0 for seconds in job.result["timings_s"].values())
    events = _events(job_id)
    assert [e["step"] for e in events if e["type"] == "step"] == [1, 2, 3, 4]
    assert [e["step"] for e in events if e["type"] == "preview"] == [4]
    assert events[0]["state"] == "running" and events[-1] == {"type": "state", "state": "succeeded"}

    gen_job = _generate_job(user_id, [str(concept_id)], n=2)
    run_job(gen_job, handlers.generate)
    with session_scope() as session:
        job = session.get(Job, gen_job)
        assert job is not None and job.state == JobState.succeeded, job and job.error
        assert job.result is not None
        assert job.result["model_loads"] == 1  # the fit loaded the base model; reused here
        images = session.scalars(
            select(GeneratedImage).where(GeneratedImage.generation_id == job.generation_id)
        ).all()
        assert sorted((image.index, image.seed) for image in images) == [(0, 7), (1, 8)]
        blob = session.get(Blob, images[0].blob_id)
        assert blob is not None
        meta = png_parameters(blob.data)
    assert meta["prompt"] == "a <rex> on the beach" and meta["negative_prompt"] == "blurry"
    assert (meta["steps"], meta["guidance"], meta["strength"]) == (2, 5.0, 0.8)
    assert meta["tokens"] == ["<rex>"] and meta["concept_ids"] == [str(concept_id)]
    assert meta["seed"] in (7, 8) and meta["base_model"]
    events = _events(gen_job)
    steps = [(e["image_index"], e["step"]) for e in events if e["type"] == "step"]
    assert steps == [(0, 1), (0, 2), (1, 1), (1, 2)]
    finished = [e for e in events if e["type"] == "image"]
    assert [e["index"] for e in finished] == [0, 1]
    assert {e["image_id"] for e in finished} == {str(image.id) for image in images}

    run_job(gen_job, handlers.generate)  # the same message again
    with session_scope() as session:
        count = session.scalar(select(func.count()).select_from(GeneratedImage))
        assert count == 4  # two samples + two images, nothing twice


def test_a_concept_for_another_base_model_fails_the_generation_readably(tiny_env) -> None:  # type: ignore[no-untyped-def]
    user_id, concept_id, job_id = _fit_job(steps=2)
    run_job(job_id, handlers.fit)
    with session_scope() as session:  # pretend it was trained elsewhere: corrupt its fingerprint
        concept = session.get(Concept, concept_id)
        assert concept is not None and concept.file_blob_id is not None
        blob = session.get(Blob, concept.file_blob_id)
        assert blob is not None
        import workers.perfusion as perfusion

        data = perfusion.concept_from_bytes(blob.data)
        data.base_fingerprint = "0" * 64
        blob.data = perfusion.concept_to_bytes(data)
    gen_job = _generate_job(user_id, [str(concept_id)], n=1)
    run_job(gen_job, handlers.generate)
    with session_scope() as session:
        job = session.get(Job, gen_job)
        assert job is not None and job.state == JobState.failed
        assert "different base model" in (job.error or "") and "<rex>" in (job.error or "")


def test_cuda_out_of_memory_becomes_a_readable_failure_and_frees_the_cache(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    emptied: list[bool] = []
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "empty_cache", lambda: emptied.append(True))
    with pytest.raises(JobFailed, match="ran out of memory.*fewer images"), handlers.gpu_errors():
        raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
    assert emptied == [True]


def test_a_fit_with_masks_weights_its_loss_by_them_and_one_without_is_unchanged(
    tiny_env, monkeypatch: pytest.MonkeyPatch
) -> None:  # type: ignore[no-untyped-def]
    """Each photo's stored mask reaches `fit_concept` beside its photo and becomes its loss
    weights (N, 2 flips, 1, h, w); a half-black mask changes the loss; no masks: masks=None."""
    import workers.perfusion as perfusion
    import workers.perfusion.fit as fit_module

    calls: list[dict] = []  # type: ignore[type-arg]
    real_fit, real_encode = perfusion.fit_concept, fit_module.encode_training_images

    def spy_fit(pipe, images, *args, masks=None, **kwargs):  # type: ignore[no-untyped-def]
        calls.append({"images": images, "masks": masks})
        return real_fit(pipe, images, *args, masks=masks, **kwargs)

    def spy_encode(pipe, images, masks, resolution):  # type: ignore[no-untyped-def]
        latents, weights = real_encode(pipe, images, masks, resolution)
        calls[-1]["weights"] = weights
        return latents, weights

    monkeypatch.setattr(perfusion, "fit_concept", spy_fit)
    monkeypatch.setattr(fit_module, "encode_training_images", spy_encode)
    white = (16, 8)  # photo 0: all white (uniform); photo 1: its left half white
    masks = [mask_png(columns, size=(16, 16)) for columns in white]
    runs = {}
    for name, stored in (("plain", None), ("masked", masks)):
        _, concept_id, job_id = _fit_job(steps=4, masks=stored)  # the same token and seed
        run_job(job_id, handlers.fit)
        with session_scope() as session:
            job = session.get(Job, job_id)
            concept = session.get(Concept, concept_id)
            assert job is not None and job.state == JobState.succeeded, job and job.error
            assert concept is not None and concept.file_blob_id is not None
            blob = session.get(Blob, concept.file_blob_id)
            assert blob is not None
            runs[name] = perfusion.concept_from_bytes(blob.data)
            concept.token = f"<{name}>"  # frees <rex> for the next fit
        runs[name].training["losses"] = [e["loss"] for e in _events(job_id) if e["type"] == "step"]

    plain, masked = calls
    assert plain["masks"] is None and bool((plain["weights"] == 1).all())
    assert [m.mode for m in masked["masks"]] == ["L", "L"]
    assert [m.size for m in masked["masks"]] == [p.size for p in masked["images"]]
    weights = masked["weights"]
    latents = weights.shape[-2:]
    assert tuple(weights.shape) == (2, 2, 1, *latents)  # photos, flips, one channel
    assert bool((weights[0] == 1).all())  # photo 0's mask is white: uniform weight
    half = latents[1] // 2
    assert bool((weights[1, 0, :, :, :half] == 1).all())  # photo 1: left half subject
    assert bool((weights[1, 0, :, :, half:] == 0).all())  # right half background
    assert torch.equal(weights[1, 1], weights[1, 0].flip(-1))  # the flipped copy, flipped
    assert runs["plain"].training["masked"] is False and runs["masked"].training["masked"] is True
    losses = {name: concept.training["losses"] for name, concept in runs.items()}
    assert losses["masked"] != pytest.approx(losses["plain"], rel=1e-6, abs=0)
    for layer, o_v in runs["plain"].o_v.items():  # the masked loss trained something else
        assert not torch.allclose(o_v, runs["masked"].o_v[layer], rtol=1e-3, atol=1e-5), layer
