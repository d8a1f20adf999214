"""Job handlers: what each kind of job does once the runner has claimed it.

Handlers compute outside any transaction and hand the runner a `store` function that writes
results in the transaction marking the job succeeded, so results exist exactly once.
"""

from __future__ import annotations

import gc
import logging
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from sqlalchemy.orm import Session

from app.config import get_settings
from app.db import database_fault
from app.generations.models import image_url
from app.jobs.events import ImageEvent, PreviewEvent, StepEvent
from app.jobs.params import FitParams, GenerateParams, PingParams
from app.jobs.runner import (
    JobCanceled,
    JobContext,
    JobFailed,
    JobOutcome,
    with_database_retries,
)
from workers import results
from workers.fit_config import fit_config
from workers.images import open_image, open_masks, png_bytes, preview_data_url
from workers.model_cache import get_model_cache

log = logging.getLogger(__name__)

OOM_MESSAGE = (
    "The GPU ran out of memory while running this job. "
    "Try fewer images, fewer steps or a smaller batch, or try again when the GPU is less busy."
)


def ping(ctx: JobContext) -> JobOutcome:
    """A round trip through broker and worker, proving both are alive."""
    ctx.parse(PingParams)
    return JobOutcome(result={"pong": True, "worker": ctx.worker_id, "at": time.time()})


@contextmanager
def gpu_errors() -> Iterator[None]:
    """Turn CUDA out-of-memory into a readable failure and give the memory back."""
    import torch

    oom = False
    try:
        yield
    except torch.cuda.OutOfMemoryError:
        oom = True  # free outside the except block, once the traceback's tensors are gone
    if oom:
        gc.collect()
        if torch.cuda.is_available():
            torch.cuda.empty_cache()
        raise JobFailed(OOM_MESSAGE)


class _PhaseTimer:
    """Seconds each phase of a job took, in order (the job result's `timings_s`), and the
    CPU seconds the job's thread spent in it (`timings_cpu_s`: with one torch thread, about
    what the phase takes on an idle core however loaded the machine is; a wait costs none)."""

    def __init__(self) -> None:
        self.phases: dict[str, float] = {}
        self.cpu: dict[str, float] = {}
        self._last = time.monotonic()
        self._last_cpu = time.thread_time()

    def done(self, phase: str) -> None:
        now, cpu = time.monotonic(), time.thread_time()
        self.phases[phase] = round(now - self._last, 3)
        self.cpu[phase] = round(cpu - self._last_cpu, 3)
        self._last, self._last_cpu = now, cpu


def fit(ctx: JobContext) -> JobOutcome:
    """Fit the job's concept from its photos (their loss weighted by their masks, when they
    have them), resuming from a checkpoint on a retried attempt."""
    timer = _PhaseTimer()
    import workers.perfusion as perfusion

    timer.done("import")
    if ctx.concept_id is None:
        raise JobFailed("This fit job names no concept.")
    params = ctx.parse(FitParams)
    settings = get_settings()
    try:
        concept_id, checkpoint_id = ctx.concept_id, ctx.checkpoint_blob_id
        inputs = with_database_retries(
            lambda: results.load_fit_inputs(concept_id, checkpoint_id), "load the fit's photos"
        )
    except LookupError as exc:
        raise JobFailed(str(exc)) from exc
    if not inputs.photos:
        raise JobFailed("This concept has no photos to learn from.")
    token, seed, policy = params.token, params.seed, params.samples
    photos = [open_image(data) for data in inputs.photos]
    masks = open_masks(inputs.masks, photos)
    on_cuda = get_model_cache().device.startswith("cuda")
    resume = perfusion.FitCheckpoint.from_bytes(inputs.checkpoint) if inputs.checkpoint else None
    timer.done("inputs")

    def on_progress(p: Any) -> None:
        ctx.progress = p.step / p.total
        ctx.publish(  # the fit already thins its progress points to the interval
            StepEvent(step=p.step, total=p.total, loss=p.loss, elapsed_s=p.elapsed_s, eta_s=p.eta_s)
        )
        if p.preview is not None:
            ctx.publish(PreviewEvent(step=p.step, data_url=preview_data_url(p.preview)))

    def on_checkpoint(checkpoint: Any) -> None:
        done = checkpoint.restart * config.steps + checkpoint.step
        progress = done / (config.steps * config.restarts)
        data = checkpoint.to_bytes()
        try:
            saved = results.save_checkpoint(ctx.job_id, ctx.worker_id, data, progress)
        except Exception as exc:
            fault = database_fault(exc)
            if fault is None:
                raise
            # A checkpoint only shortens a retry: with the database down or full, fit on.
            log.warning(
                "job %s: checkpoint at step %d skipped (database %s)",
                ctx.job_id,
                checkpoint.step,
                fault,
            )
            return
        if not saved:
            raise JobCanceled  # another worker owns the job now: stop, store nothing

    cache = get_model_cache()
    with gpu_errors():
        model = cache.get(settings.base_model)
        timer.done("model")
        # Progress points (loss read back, cancel check, step event) at most this often,
        # plus the first, last, preview and checkpoint steps; 0: every step.
        config = fit_config(
            model.pipe,
            on_cuda,
            params.steps,
            seed,
            progress_interval_s=settings.job_progress_interval_s,
        )
        if resume is not None:
            log.info("job %s resumes its fit at step %d/%d", ctx.job_id, resume.step, config.steps)
        with model.lock:
            timer.done("model lock")
            covariance = cache.covariance(model)
            timer.done("covariance")
            try:
                concept = perfusion.fit_concept(
                    model.pipe,
                    photos,
                    token,
                    params.superclass,
                    config,
                    covariance,
                    masks=masks,
                    on_progress=on_progress,
                    should_cancel=ctx.should_cancel,
                    resume=resume,
                    on_checkpoint=on_checkpoint,
                )
            except perfusion.FitCanceled:
                ctx.raise_stop()
            timer.done("fit")
            concept_file = perfusion.concept_to_bytes(concept)
            prompt = policy.prompt_for(token)
            sample_params = {
                "steps": policy.steps,
                "guidance": policy.guidance,
                "strength": policy.strength,
                "seed": seed,
                "concept_ids": [str(ctx.concept_id)],
                "base_model": settings.base_model,
            }
            samples = _render(ctx, model.pipe, prompt, [concept], sample_params, policy.count)
            timer.done("samples")
    generation_id = uuid.uuid4()
    return JobOutcome(
        result={
            "steps": config.steps,
            "restarts": config.restarts,
            "resumed_from_step": (
                resume.restart * config.steps + resume.step if resume is not None else None
            ),
            "final_loss": concept.training.get("final_loss"),
            "restart_photo_losses": concept.training.get("restart_photo_losses"),
            "sample_generation_id": str(generation_id) if samples else None,
            "sample_image_ids": [str(image.id) for image in samples],
            "timings_s": timer.phases,
            "timings_cpu_s": timer.cpu,
            **cache.stats(model),
        },
        store=results.store_fit(
            ctx.concept_id,
            concept_file,
            prompt,
            sample_params,
            samples,
            generation_id,
            architecture=perfusion.architecture(model.pipe),
        ),
    )


def generate(ctx: JobContext) -> JobOutcome:
    """Generate the job's images with the concepts its prompt uses."""
    import workers.perfusion as perfusion

    if ctx.generation_id is None:
        raise JobFailed("This generation job names no generation.")
    params = ctx.parse(GenerateParams)
    settings = get_settings()
    try:
        concept_ids = params.concept_ids
        files = with_database_retries(
            lambda: results.load_concept_files(concept_ids), "load the prompt's concepts"
        )
    except LookupError as exc:
        raise JobFailed(str(exc)) from exc
    cache = get_model_cache()
    with gpu_errors():
        model = cache.get(settings.base_model)
        concepts = []
        for file in files:
            concept = perfusion.concept_from_bytes(file.data)
            try:
                perfusion.validate_concept(concept, model.pipe)
            except perfusion.ConceptMismatch as exc:
                raise JobFailed(
                    f"The concept {file.token} was made for a different base model than the "
                    f"one this server runs ({settings.base_model}), so it cannot be used here: "
                    f"{exc}"
                ) from exc
            concepts.append(concept)
        image_params = {
            "negative_prompt": params.negative_prompt,
            "steps": params.steps,
            "guidance": params.guidance,
            "strength": params.strength,
            "seed": params.seed,
            "tokens": [file.token for file in files],
            "concept_ids": [str(file.id) for file in files],
            "base_model": settings.base_model,
        }
        with model.lock:
            images = _render(
                ctx,
                model.pipe,
                params.prompt,
                concepts,
                image_params,
                params.n,
                publish_images=True,
            )
    generation_id = ctx.generation_id

    def store(session: Session) -> None:
        results.store_images(session, generation_id, images)

    return JobOutcome(
        result={"image_ids": [str(image.id) for image in images], **cache.stats(model)},
        store=store,
    )


def _render(
    ctx: JobContext,
    pipe: Any,
    prompt: str,
    concepts: list[Any],
    params: dict[str, Any],
    n: int,
    *,
    publish_images: bool = False,
) -> list[results.ResultImage]:
    """n images, one per seed (seed, seed+1, ...), each with its parameters in the PNG."""
    import workers.perfusion as perfusion

    controls = [perfusion.strength_to_control(params["strength"])] * len(concepts) or None
    rendered = []
    for index in range(n):
        seed = params["seed"] + index
        started = time.monotonic()

        def on_step(step: int, total: int, index: int = index, started: float = started) -> None:
            if not publish_images:
                return
            elapsed = time.monotonic() - started
            ctx.progress = (index + step / total) / n
            ctx.publish_step(
                StepEvent(
                    step=step,
                    total=total,
                    elapsed_s=elapsed,
                    eta_s=elapsed / step * (total - step),
                    image_index=index,
                ),
                always=step in (1, total),
            )

        try:
            (image,) = perfusion.generate(
                pipe,
                prompt,
                concepts,
                negative_prompt=params.get("negative_prompt", ""),
                seed=seed,
                steps=params["steps"],
                guidance=params["guidance"],
                n=1,
                controls=controls,
                on_step=on_step,
                should_cancel=ctx.should_cancel,
            )
        except perfusion.GenerationCanceled:
            ctx.raise_stop()
        image_id = uuid.uuid4()
        sampler = type(pipe.scheduler).__name__
        png = png_bytes(
            image, {"prompt": prompt, **params, "seed": seed, "index": index, "sampler": sampler}
        )
        rendered.append(results.ResultImage(image_id, index, seed, image.width, image.height, png))
        if publish_images:
            ctx.publish(ImageEvent(index=index, image_id=str(image_id), url=image_url(image_id)))
    return rendered
