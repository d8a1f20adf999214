"""Fitting a concept: trains the new token's embedding row and the per-layer o*_V only."""

from __future__ import annotations

import contextlib
import dataclasses
import json
import time
import warnings
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from diffusers import DDPMScheduler, StableDiffusionPipeline
from PIL import Image
from safetensors.torch import load as load_safetensors
from safetensors.torch import save as save_safetensors
from torch import nn

from .apply import install_processors, key_target
from .concept import Concept, ConceptMismatch, concept_from_bytes, concept_to_bytes
from .covariance import Covariance
from .photo_loss import photo_loss
from .pipeline import TokenPatch, base_model_id, cross_attention_layers, model_fingerprint
from .processor import TextSpaceEdit, concept_basis, make_text_edit, score_and_energy
from .sides import text_side
from .text import ARCH_SD, ARCH_SDXL, TextSide, Tokens
from .training_data import (
    TEMPLATES,
    TIMESTEP_SAMPLING,
    draw_timesteps,
    encode_training_images,
    training_target,
)


@dataclass
class FitConfig:
    """Training settings; defaults follow the public re-implementations (see PERFUSION.md)."""

    steps: int = 400
    batch_size: int = 4
    grad_accum: int = 4
    lr_embedding: float = 6e-3
    lr_value: float = 3e-2
    resolution: int | None = None  # None = the model's native size
    flip_p: float = 0.5
    train_beta: float = 0.75
    train_tau: float = 0.1
    # How i* follows the concept token while its embedding trains. "exact": after every step,
    # the least-P-norm point of its current template encodings (as at step 0), so s = 1 on
    # every template throughout. "ema": the re-implementations' moving average (decay
    # ema_decay) of its batch encodings, which over a short fit lags the moving token: on the
    # toy world, 80 steps left s ≈ 0.5 on the training templates themselves, so the inference
    # gate σ((s − 0.7)/0.15) was ≈ 0.25 and the learned target mostly unused.
    i_star_tracking: str = "exact"
    ema_decay: float = 0.99
    separation: float = 0.0
    """Weight μ of a term added to the loss, μ · mean cos_P(c, e_super)²: the squared cosine, in
    the metric P = C⁻¹ of the scores s(e), between the concept token's encodings c and its
    superclass word's e_super. It pushes i* off e_super, so prompts with the superclass word
    lose less of it to the removal term W s(e) i* (s(e_super) falls with the cosine). Not in the
    paper; 0 = off."""
    seed: int = 0
    restarts: int = 1
    """Fits run one after another with seeds seed, seed + 1, ...; the one whose fixed-draw
    denoising loss on the photos (`photo_loss`) is lowest is kept. On a small model a quick
    fit's outcome is set by its own random draws, and that loss tells a fit that learned the
    subject from one that did not (toy-world model card). SD 1.x/2.x only."""
    # "uniform": each image of a batch draws its timestep from [0, T). "stratified": the
    # batch's n timesteps fall one in each of n equal slices of [0, T) (a random point in
    # each), so every batch sees coarse and fine noise levels alike.
    timesteps: str = "uniform"
    preview_every: int = 0
    # A preview is a glance, not a sample: on the toy world (DDIM) 10 steps draw the same image
    # as 20, a little softer, in half the time (0.19-0.39 s against 0.52-0.82 s on one thread).
    preview_steps: int = 10
    checkpoint_every: int = 0
    mixed_precision: bool = True  # bf16 autocast where the device supports it (CUDA with bf16)
    progress_interval_s: float = 0.5
    """Seconds between progress events and cancel checks. Each reads the loss back from the
    device, so they are throttled, and the loss they report is one step old (the step just
    queued is not waited for). 0 = after every step, with that step's own loss."""


# FitConfig fields that change how fast a fit runs, not what it learns: not recorded in the
# concept's training facts.
_NOT_RECORDED = ("preview", "checkpoint", "progress")


def default_batch(arch: str, on_cuda: bool) -> tuple[int, int]:
    """(images per pass, accumulation) of a fit: effective batch 16 on CUDA, 4 on a CPU.

    SD at 512 px fits 16 in one pass; SDXL at its native 1024 px (4x the latent pixels, a
    3x larger UNet) runs 4 x 4, the re-implementations' recipe.
    """
    if arch == ARCH_SDXL:
        return (4, 4) if on_cuda else (1, 4)
    return (16, 1) if on_cuda else (4, 1)


BASE_FIT_FILE = "perfusion_fit.json"
"""A base model's own fit defaults, in its folder beside the diffusers parts: {"lr_embedding": x,
"lr_value": y, "grad_accum": k, "restarts": n}. The re-implementations' learning rates are tuned
for CLIP's text space; a base model whose embeddings live at another scale (the toy world's)
says what suits it here, how many batches a step accumulates on top of the device's batch
(`default_batch`), and how many fits a fit keeps the best of."""
_BASE_FIT_FIELDS = ("lr_embedding", "lr_value", "grad_accum", "restarts")
_BASE_FIT_COUNTS = ("grad_accum", "restarts")


def base_fit_defaults(pipe: StableDiffusionPipeline) -> dict[str, float | int]:
    """The FitConfig fields the pipeline's base-model folder sets (`perfusion_fit.json`), or {}
    for a Hugging Face id or a folder without the file. Unknown or non-positive fields are an
    error, not silently ignored."""
    folder = Path(base_model_id(pipe))
    path = folder / BASE_FIT_FILE
    if not path.is_file():
        return {}
    data = json.loads(path.read_text())
    unknown = sorted(set(data) - set(_BASE_FIT_FIELDS))
    if unknown:
        raise ValueError(f"{path}: unknown fields {unknown}; allowed {list(_BASE_FIT_FIELDS)}")
    fields: dict[str, float | int] = {
        name: float(value) for name, value in data.items() if name not in _BASE_FIT_COUNTS
    }
    if any(value <= 0 for value in fields.values()):
        raise ValueError(f"{path}: learning rates must be positive, got {fields}")
    for name in _BASE_FIT_COUNTS:
        if name not in data:
            continue
        count = data[name]
        if not isinstance(count, int) or isinstance(count, bool) or count < 1:
            raise ValueError(f"{path}: {name} must be a whole number >= 1, got {count!r}")
        fields[name] = count
    return fields


@dataclass
class FitProgress:
    """One optimisation step done."""

    step: int
    total: int
    loss: float
    elapsed_s: float
    eta_s: float
    preview: Image.Image | None = None
    loss_step: int | None = None
    """The step `loss` is from (None: `step`); throttled events report the latest loss read."""


class FitCanceled(Exception):
    """`should_cancel` returned True between two steps."""


@dataclass
class FitCheckpoint:
    """Everything needed to continue a fit exactly: trainables, optimiser, EMA i*, RNG, step."""

    step: int
    token: str
    token_embedding: torch.Tensor
    i_star: torch.Tensor
    o_v: dict[str, torch.Tensor]
    optimizer_state: dict
    rng_state: torch.Tensor
    losses: list[float] = field(default_factory=list)
    rng_device: str = "cpu"
    """Device type of the generator `rng_state` belongs to (the fit's device)."""
    restart: int = 0
    """With `FitConfig.restarts`: the fit this checkpoint is in (`step` counts within it)."""
    kept: Concept | None = None
    """The finished fit with the lowest photo loss so far (None before one)."""
    restart_losses: list[float] = field(default_factory=list)
    """The photo loss of each finished fit, in order (the kept one's is their minimum)."""

    def to_bytes(self) -> bytes:
        """Safetensors bytes (no pickle)."""
        tensors = {
            "token_embedding": self.token_embedding,
            "i_star": self.i_star,
            "rng_state": self.rng_state,
        }
        layers = list(self.o_v)
        for k, name in enumerate(layers):
            tensors[f"o_v.{k}"] = self.o_v[name]
        for index, state in self.optimizer_state["state"].items():
            for key, value in state.items():
                tensors[f"opt.{index}.{key}"] = torch.as_tensor(value)
        meta = {
            "step": str(self.step),
            "token": self.token,
            "layers": json.dumps(layers),
            "losses": json.dumps(self.losses),
            "param_groups": json.dumps(self.optimizer_state["param_groups"]),
            "rng_device": self.rng_device,
            "restart": str(self.restart),
            "restart_losses": json.dumps(self.restart_losses),
        }
        if self.kept is not None:
            # the whole concept file, in fp32 so that a resumed fit keeps it exactly
            kept = bytearray(concept_to_bytes(self.kept, torch.float32))
            tensors["kept_concept"] = torch.frombuffer(kept, dtype=torch.uint8)
        tensors = {k: v.detach().cpu().contiguous() for k, v in tensors.items()}
        return save_safetensors(tensors, metadata=meta)

    @classmethod
    def from_bytes(cls, data: bytes) -> FitCheckpoint:
        """Inverse of `to_bytes`."""
        tensors = load_safetensors(data)
        from .concept import _metadata

        meta = _metadata(data)
        layers = json.loads(meta["layers"])
        state: dict[int, dict[str, torch.Tensor]] = {}
        for key, value in tensors.items():
            if key.startswith("opt."):
                _, index, name = key.split(".", 2)
                state.setdefault(int(index), {})[name] = value
        return cls(
            step=int(meta["step"]),
            token=meta["token"],
            token_embedding=tensors["token_embedding"],
            i_star=tensors["i_star"],
            o_v={name: tensors[f"o_v.{k}"] for k, name in enumerate(layers)},
            optimizer_state={"state": state, "param_groups": json.loads(meta["param_groups"])},
            rng_state=tensors["rng_state"],
            losses=json.loads(meta["losses"]),
            rng_device=meta.get("rng_device", "cpu"),
            restart=int(meta.get("restart", "0")),
            kept=(
                concept_from_bytes(tensors["kept_concept"].numpy().tobytes())
                if "kept_concept" in tensors
                else None
            ),
            restart_losses=json.loads(meta.get("restart_losses", "[]")),
        )


def _template_encodings(
    pipe: StableDiffusionPipeline, word: str
) -> tuple[torch.Tensor, torch.Tensor]:
    """Token ids (T, L) and encodings (T, L, D) of every training template filled with `word`.

    The text side's encodings (SDXL: both encoders' penultimate states, 2048-d) and its first
    tokenizer's ids.
    """
    return text_side(pipe).template_encodings(TEMPLATES, word)


def superclass_vectors(
    pipe: StableDiffusionPipeline, superclass: str
) -> tuple[torch.Tensor, torch.Tensor]:
    """(input embedding, encoding e_super) of the superclass word, float32, D-dimensional.

    A multi-token word gets the mean of its token embeddings (per encoder; SDXL concatenates
    the two rows). e_super is the mean over the training templates of the encoding at the
    word's last token (CLIP is causal, so that position has seen the whole word): the prompts
    the fit uses, so o*_K = W_k e_super is the superclass's key in the same contexts as the
    concept's.
    """
    text = text_side(pipe)
    word_ids = text.word_ids(superclass)[0]
    if not word_ids:
        raise ValueError(f"superclass {superclass!r} has no tokens")
    embedding = text.word_embedding(superclass)
    ids, encodings = _template_encodings(pipe, superclass)
    rows = [(k, _last_match(row.tolist(), word_ids)) for k, row in enumerate(ids)]
    rows = [(k, last) for k, last in rows if last is not None]  # not cut off by truncation
    if not rows:
        raise ValueError(f"superclass {superclass!r} does not fit in the prompt length")
    e_super = torch.stack([encodings[k, last] for k, last in rows]).mean(0)
    return embedding.detach(), e_super


def least_p_norm_point(rows: torch.Tensor, cinv: torch.Tensor) -> torch.Tensor:
    """The point of the affine hull of `rows` (T, D) with the least P-norm, float32.

    Minimises (o + cᵀS) P (o + cᵀS)ᵀ over c, with o the first row and S the others minus it:
    (S P Sᵀ) c = −S P o. S P Sᵀ is singular when two templates give the token the same
    encoding; the point is unique all the same, and a ridge far below the Gram matrix's scale
    finds it with a Cholesky solve, which, unlike a rank-revealing least-squares solver, reads
    nothing back on the host (this runs after every step).
    """
    rows = rows.double()
    p = cinv.double().to(rows.device)
    origin, spread = rows[0], rows[1:] - rows[:1]
    if spread.shape[0] == 0:
        return rows[0].float()
    gram = spread @ p @ spread.T
    gram = (gram + gram.T) / 2
    ridge = gram.diagonal().mean() * 1e-12
    eye = torch.eye(gram.shape[0], dtype=gram.dtype, device=gram.device)
    chol, _ = torch.linalg.cholesky_ex(gram + ridge * eye)
    coeffs = torch.cholesky_solve(-(spread @ p @ origin)[:, None], chol)[:, 0]
    return (origin + coeffs @ spread).float()


@dataclass
class _TrainingPrompts:
    """The training templates, tokenized once and kept on the fit's device.

    Per step the fit draws template indices on the device and gathers from these: no
    tokenizing, no host-built tensors, no boolean-mask lookups of the concept token.
    """

    tokens: Tokens
    """The templates with the concept token: (T, L) ids per tokenizer, (T, L) real tokens."""
    positions: torch.Tensor
    """(T,) the concept token's position in each template."""
    unet_kwargs: dict[str, Any]
    """The UNet's added conditions per template, (T, ...) tensors (SDXL; SD: none)."""
    text: TextSide

    @classmethod
    def build(
        cls,
        text: TextSide,
        token: str,
        token_id: int,
        superclass: str,
        resolution: int,
        device: torch.device,
    ) -> _TrainingPrompts:
        """Tokenize the templates with `token`; the added conditions from the `superclass`
        prompts (the text side's locking: SDXL's pooled embedding reads the superclass)."""
        tokens = text.tokenize([template.format(token) for template in TEMPLATES])
        hits = tokens.ids[0] == token_id
        missing = [TEMPLATES[k] for k in range(len(TEMPLATES)) if not bool(hits[k].any())]
        if missing:
            raise ValueError(
                f"concept token {token!r} does not fit in the prompt length of {missing}"
            )
        kwargs = text.unet_kwargs([t.format(superclass) for t in TEMPLATES], resolution)
        return cls(
            tokens=Tokens(tuple(ids.to(device) for ids in tokens.ids), tokens.mask.to(device)),
            positions=hits.int().argmax(1).to(device),
            unet_kwargs=_to_device(kwargs, device),
            text=text,
        )

    @property
    def count(self) -> int:
        return len(self.positions)

    def take(self, rows: torch.Tensor) -> tuple[Tokens, torch.Tensor, dict[str, Any]]:
        """Tokens, concept positions and UNet conditions of the templates `rows` (on device)."""
        tokens = Tokens(tuple(ids[rows] for ids in self.tokens.ids), self.tokens.mask[rows])
        return tokens, self.positions[rows], _take(self.unet_kwargs, rows)

    @torch.no_grad()
    def i_star(self, cinv: torch.Tensor) -> torch.Tensor:
        """The least-P-norm point of the concept token's current template encodings."""
        encodings = self.text.encode(self.tokens).float()
        rows = encodings[torch.arange(self.count, device=encodings.device), self.positions]
        return least_p_norm_point(rows, cinv)


def _to_device(value: Any, device: torch.device) -> Any:
    if isinstance(value, torch.Tensor):
        return value.to(device)
    if isinstance(value, dict):
        return {k: _to_device(v, device) for k, v in value.items()}
    return value


def _take(value: Any, rows: torch.Tensor) -> Any:
    """`value` with every tensor in it indexed by `rows` along its first dimension."""
    if isinstance(value, torch.Tensor):
        return value[rows]
    if isinstance(value, dict):
        return {k: _take(v, rows) for k, v in value.items()}
    return value


def _last_match(ids: list[int], word: list[int]) -> int | None:
    """Position of the last token of the last occurrence of `word` in `ids`, or None."""
    for start in range(len(ids) - len(word), -1, -1):
        if ids[start : start + len(word)] == word:
            return start + len(word) - 1
    return None


def _refresh(edit: TextSpaceEdit, i_star: torch.Tensor, cinv: torch.Tensor) -> None:
    """Recompute the shared text-space edit in place after i* moved, on the device.

    The same arithmetic as `score_and_energy` followed by `make_text_edit` (energy rounded to
    float32 as there), without reading the energy or the factorisation status on the host.
    """
    pi = cinv.double() @ i_star.double()
    energy = i_star.double() @ pi
    score = (pi / energy).float()
    cinv_i_star = score.double() * energy.float().double()
    basis, proj = concept_basis(i_star[None], cinv_i_star[None], False)
    edit.basis, edit.proj, edit.score = basis, proj, score[:, None].contiguous()


class _Throttle:
    """True at most once per `interval` seconds of `clock` (always when interval is 0)."""

    def __init__(self, interval: float, clock: Callable[[], float]) -> None:
        self.interval = interval
        self.clock = clock
        self.last = clock()

    def due(self) -> bool:
        now = self.clock()
        if now - self.last < self.interval:
            return False
        self.last = now
        return True


class _Losses:
    """Per-step losses kept on the device and read back in batches (one host sync a read)."""

    def __init__(self, done: list[float]) -> None:
        self.values = list(done)
        self.pending: list[torch.Tensor] = []

    def add(self, loss: torch.Tensor) -> None:
        self.pending.append(loss)

    def read(self, keep: int = 0) -> None:
        """Read all but the newest `keep` pending losses."""
        count = len(self.pending) - keep
        if count > 0:
            self.values.extend(torch.stack(self.pending[:count]).tolist())
            del self.pending[:count]


@contextlib.contextmanager
def _frozen(modules: list[nn.Module]):
    """requires_grad off and eval mode for the base modules; both restored afterwards."""
    flags = [(p, p.requires_grad) for m in modules for p in m.parameters()]
    modes = [(m, m.training) for m in modules]
    try:
        for p, _ in flags:
            p.requires_grad_(False)
        for m, _ in modes:
            m.eval()
        yield
    finally:
        for p, flag in flags:
            p.requires_grad_(flag)
        for m, mode in modes:
            m.train(mode)


def bf16_autocast_supported(device: torch.device) -> bool:
    """Whether the fit runs under bf16 autocast on `device`: CUDA devices with bf16."""
    return device.type == "cuda" and torch.cuda.is_bf16_supported()


@contextlib.contextmanager
def _fp32_weights(modules: list[nn.Module]):
    """fp16 modules in fp32 for the fit, back to fp16 afterwards (exact: fp32 holds every fp16).

    The gradients of the token embedding and o*_V then never pass through an fp16 tensor:
    without gradient scaling, fp16 flushes small gradients to zero. bf16 and fp32 modules are
    left as they are (bf16 has fp32's range).
    """
    tensors = [
        t for m in modules for t in (*m.parameters(), *m.buffers()) if t.dtype == torch.float16
    ]
    try:
        for tensor in tensors:
            tensor.data = tensor.data.float()
        yield
    finally:
        for tensor in tensors:
            tensor.data = tensor.data.half()


def fit_concept(
    pipe: StableDiffusionPipeline,
    images: list[Image.Image],
    token: str,
    superclass: str,
    config: FitConfig,
    covariance: Covariance,
    masks: list[Image.Image] | None = None,
    on_progress: Callable[[FitProgress], None] | None = None,
    should_cancel: Callable[[], bool] | None = None,
    resume: FitCheckpoint | None = None,
    on_checkpoint: Callable[[FitCheckpoint], None] | None = None,
    clock: Callable[[], float] = time.monotonic,
) -> Concept:
    """Fit a Perfusion concept; the pipeline is left exactly as it was, also on error/cancel.

    Steps run without reading anything back from the device: progress events and cancel
    checks come every `config.progress_interval_s` seconds of `clock`, and at previews,
    checkpoints, the first step of this run and the last step (no cancel check after the
    last: the fit is done). With `config.restarts` = n > 1, n fits run one after another and
    the one with the lowest `photo_loss` is returned; progress counts the steps of all n, and
    a checkpoint holds the best finished fit so far, so a resumed fit returns the same concept.
    """
    if config.restarts < 1:
        raise ValueError(f"restarts must be >= 1, got {config.restarts}")
    if resume is not None and resume.restart >= config.restarts:
        raise ValueError(f"checkpoint is of fit {resume.restart + 1}, of {config.restarts}")
    if config.restarts == 1:
        return _fit_once(
            pipe, images, token, superclass, config, covariance, masks, on_progress,
            should_cancel, resume, on_checkpoint, clock,
        )  # fmt: skip
    if text_side(pipe).arch != ARCH_SD:
        raise ValueError("restarts > 1 needs an SD 1.x/2.x base model (photo_loss)")
    kept = resume.kept if resume is not None else None
    restart_losses = list(resume.restart_losses) if resume is not None else []
    first = resume.restart if resume is not None else 0
    started = clock()
    for restart in range(first, config.restarts):
        offset = restart * config.steps

        def progress(p: FitProgress, offset: int = offset, restart: int = restart) -> None:
            assert on_progress is not None
            per_fit = p.elapsed_s + p.eta_s
            on_progress(
                dataclasses.replace(
                    p,
                    step=p.step + offset,
                    total=p.total * config.restarts,
                    elapsed_s=clock() - started,
                    eta_s=p.eta_s + per_fit * (config.restarts - restart - 1),
                    loss_step=None if p.loss_step is None else p.loss_step + offset,
                )
            )

        def checkpoint(
            cp: FitCheckpoint,
            restart: int = restart,
            kept: Concept | None = kept,
            done: tuple[float, ...] = tuple(restart_losses),
        ) -> None:
            assert on_checkpoint is not None
            cp.restart, cp.kept, cp.restart_losses = restart, kept, [*done]
            on_checkpoint(cp)

        concept = _fit_once(
            pipe, images, token, superclass,
            dataclasses.replace(config, seed=config.seed + restart, restarts=1),
            covariance, masks, progress if on_progress is not None else None, should_cancel,
            resume if restart == first else None,
            checkpoint if on_checkpoint is not None else None, clock,
        )  # fmt: skip
        loss = photo_loss(pipe, concept, images, masks)
        if kept is None or loss < min(restart_losses):
            kept = concept
        restart_losses.append(loss)
    assert kept is not None
    kept.training.update(restarts=config.restarts, restart_photo_losses=restart_losses)
    return kept


def _fit_once(
    pipe: StableDiffusionPipeline,
    images: list[Image.Image],
    token: str,
    superclass: str,
    config: FitConfig,
    covariance: Covariance,
    masks: list[Image.Image] | None,
    on_progress: Callable[[FitProgress], None] | None,
    should_cancel: Callable[[], bool] | None,
    resume: FitCheckpoint | None,
    on_checkpoint: Callable[[FitCheckpoint], None] | None,
    clock: Callable[[], float],
) -> Concept:
    """One fit (`fit_concept` without restarts)."""
    text = text_side(pipe)
    fingerprint = _check_fit(pipe, text, images, token, config, covariance, masks, resume)
    dim = text.dim
    device = pipe.unet.device
    resolution = config.resolution or pipe.unet.config.sample_size * pipe.vae_scale_factor
    use_amp = config.mixed_precision and bf16_autocast_supported(device)
    cinv = covariance.inverse.to(device, torch.float32)
    scheduler = DDPMScheduler.from_config(pipe.scheduler.config)
    layers = cross_attention_layers(pipe.unet)
    modules = [pipe.unet, pipe.vae, *text.encoders]

    with _frozen(modules), _fp32_weights(modules):
        latents, weights = encode_training_images(pipe, images, masks, resolution)
        embed_init, e_super = superclass_vectors(pipe, superclass)
        o_k = {n: key_target(a, e_super)[None] for n, a in layers.items()}
        embedding, o_v = _trainables(layers, e_super, embed_init, resume, device, dim)
        optimizer = torch.optim.AdamW(
            [
                {"params": [embedding], "lr": config.lr_embedding},
                {"params": list(o_v.values()), "lr": config.lr_value},
            ],
            weight_decay=0.0,
        )
        # On the fit's device: draws need no copy to it, and its state resumes exactly.
        generator = torch.Generator(device).manual_seed(config.seed)
        losses = _Losses(resume.losses if resume is not None else [])
        first_step = 0
        if resume is not None:
            optimizer.load_state_dict(resume.optimizer_state)
            _restore_generator(generator, resume, config.seed)
            first_step = resume.step

        patch = TokenPatch.add(pipe, [token], embedding, [superclass])
        token_id = patch.token_ids[0]
        original = None
        try:
            amp = _autocast(device, use_amp)
            with amp:  # the UNet's added conditions as the steps made them (SDXL, bf16)
                prompts = _TrainingPrompts.build(
                    text, token, token_id, superclass, resolution, device
                )
            if resume is not None:
                i_star = resume.i_star.to(device, torch.float32).clone()
            else:
                with patch.pooled_locks_paused():
                    i_star = prompts.i_star(cinv)
            score, energy = score_and_energy(i_star, cinv)
            edit = make_text_edit(
                i_star[None],
                score[None],
                torch.tensor([energy], device=device),
                [config.train_beta],
                [config.train_tau],
            )
            layer_v = {n: [p] for n, p in o_v.items()}
            original = install_processors(pipe.unet, edit, o_k, layer_v, patch)
            separation = None
            if config.separation > 0:
                p_super = cinv @ e_super.to(device)
                separation = (cinv, p_super / (e_super.to(device) @ p_super).sqrt())
            inputs = _StepInputs(
                pipe, text, scheduler, latents, weights, prompts, patch, config, generator,
                use_amp, separation,
            )  # fmt: skip
            reports = _Reports(config, first_step, clock, on_progress, on_checkpoint, should_cancel)
            if should_cancel is not None and should_cancel():
                raise FitCanceled(f"canceled at step {first_step}/{config.steps}")
            for step in range(first_step, config.steps):
                losses.add(_train_step(inputs, optimizer, i_star, edit, cinv))
                reports.after_step(
                    step,
                    losses,
                    preview=lambda: _preview(pipe, edit, token, config),
                    checkpoint=lambda done: _checkpoint(
                        done, token, embedding, i_star, o_v, optimizer, generator, losses
                    ),
                )
            losses.read()
        finally:
            if original is not None:
                pipe.unet.set_attn_processor(dict(original))
            patch.remove()

    score, energy = score_and_energy(i_star, cinv)
    training = _training_facts(config, losses.values, len(images), masks is not None, resolution)
    return Concept(
        architecture=text.arch,
        token=token,
        superclass=superclass,
        token_embedding=embedding.detach().reshape(dim).cpu().clone(),
        i_star=i_star.cpu().clone(),
        e_super=e_super.cpu().clone(),
        o_k={n: t[0].cpu().clone() for n, t in o_k.items()},
        o_v={n: p.detach().cpu().clone() for n, p in o_v.items()},
        score=score.cpu(),
        i_star_energy=energy,
        base_fingerprint=fingerprint,
        covariance_fingerprint=covariance.fingerprint,
        base_model_id=base_model_id(pipe),
        training=training,
    )


def _training_facts(
    config: FitConfig, losses: list[float], n_images: int, masked: bool, resolution: int
) -> dict[str, Any]:
    """The fit's settings and outcome as the concept file records them (`Concept.training`)."""
    tail = losses[-max(1, len(losses) // 10) :]
    training = {k: v for k, v in asdict(config).items() if not k.startswith(_NOT_RECORDED)}
    training.update(n_images=n_images, masked=masked, final_loss=sum(tail) / len(tail))
    training["resolution"] = resolution
    return training


def _check_fit(
    pipe: StableDiffusionPipeline,
    text: TextSide,
    images: list[Image.Image],
    token: str,
    config: FitConfig,
    covariance: Covariance,
    masks: list[Image.Image] | None,
    resume: FitCheckpoint | None,
) -> str:
    """Refuse a fit that cannot run as asked; returns the base model's fingerprint."""
    if not images:
        raise ValueError("need at least one training image")
    if masks is not None and len(masks) != len(images):
        raise ValueError("one mask per image")
    if config.i_star_tracking not in ("exact", "ema"):
        raise ValueError(
            f"i_star_tracking must be 'exact' or 'ema', got {config.i_star_tracking!r}"
        )
    if config.timesteps not in TIMESTEP_SAMPLING:
        raise ValueError(f"timesteps must be one of {TIMESTEP_SAMPLING}, got {config.timesteps!r}")
    if getattr(pipe, "_perfusion_applied", None) is not None:
        raise RuntimeError("remove applied concepts before fitting (remove_concepts(pipe))")
    fingerprint = model_fingerprint(pipe)
    if covariance.base_fingerprint and covariance.base_fingerprint != fingerprint:
        raise ConceptMismatch("the covariance was computed on another base model")
    dim = text.dim
    if tuple(covariance.inverse.shape) != (dim, dim):
        raise ConceptMismatch(f"covariance is {tuple(covariance.inverse.shape)}, text dim {dim}")
    if resume is not None and resume.token != token:
        raise ValueError(f"checkpoint is for token {resume.token!r}, not {token!r}")
    return fingerprint


def _trainables(
    layers: dict[str, Any],
    e_super: torch.Tensor,
    embed_init: torch.Tensor,
    resume: FitCheckpoint | None,
    device: torch.device,
    dim: int,
) -> tuple[nn.Parameter, dict[str, nn.Parameter]]:
    """The token's embedding row and each layer's o*_V, from the checkpoint when resuming;
    else from the superclass (o*_V = W_v·e_super)."""
    source = resume.o_v if resume is not None else None
    o_v = {
        n: nn.Parameter(
            source[n].to(device, torch.float32).clone()
            if source is not None
            else torch.nn.functional.linear(e_super, a.to_v.weight.float())
        )
        for n, a in layers.items()
    }
    start = resume.token_embedding if resume is not None else embed_init
    embedding = nn.Parameter(start.to(device, torch.float32).clone().reshape(1, dim))
    return embedding, o_v


@dataclass(frozen=True)
class _StepInputs:
    """What every optimisation step of one fit reads: `_micro_step`'s arguments, in order."""

    pipe: StableDiffusionPipeline
    text: TextSide
    scheduler: DDPMScheduler
    latents: torch.Tensor
    weights: torch.Tensor
    prompts: _TrainingPrompts
    patch: TokenPatch
    config: FitConfig
    generator: torch.Generator
    use_amp: bool
    separation: tuple[torch.Tensor, torch.Tensor] | None = None
    """(P, P e_super / ‖e_super‖_P) for the separation term, None when it is off."""


def _train_step(
    inputs: _StepInputs,
    optimizer: torch.optim.Optimizer,
    i_star: torch.Tensor,
    edit: TextSpaceEdit,
    cinv: torch.Tensor,
) -> torch.Tensor:
    """One optimisation step (`grad_accum` micro steps), then i* follows the token and the
    edit is refreshed in place; returns the step's loss, still on the device (float64)."""
    config = inputs.config
    optimizer.zero_grad(set_to_none=True)
    step_loss: torch.Tensor | None = None
    token_encodings = []
    with inputs.patch.pooled_locks_paused():
        for _ in range(config.grad_accum):
            loss, enc = _micro_step(
                inputs.pipe,
                inputs.text,
                inputs.scheduler,
                inputs.latents,
                inputs.weights,
                inputs.prompts,
                inputs.patch,
                config,
                inputs.generator,
                inputs.use_amp,
            )
            total = loss
            if inputs.separation is not None:
                total = loss + config.separation * _superclass_cosine(enc, *inputs.separation)
            (total / config.grad_accum).backward()
            # float64, in the order a Python float sum of .item()s would add them
            part = loss.detach().double() / config.grad_accum
            step_loss = part if step_loss is None else step_loss + part
            token_encodings.append(enc.detach())
        optimizer.step()
        with torch.no_grad():
            if config.i_star_tracking == "exact":
                i_star.copy_(inputs.prompts.i_star(cinv))
            else:
                mean_enc = torch.cat(token_encodings).mean(0)
                i_star.mul_(config.ema_decay).add_(mean_enc, alpha=1 - config.ema_decay)
            _refresh(edit, i_star, cinv)
    assert step_loss is not None
    return step_loss


class _Reports:
    """When a fit reports: progress events (with previews), checkpoints and cancel checks."""

    def __init__(
        self,
        config: FitConfig,
        first_step: int,
        clock: Callable[[], float],
        on_progress: Callable[[FitProgress], None] | None,
        on_checkpoint: Callable[[FitCheckpoint], None] | None,
        should_cancel: Callable[[], bool] | None,
    ) -> None:
        self.config, self.first_step, self.clock = config, first_step, clock
        self.on_progress, self.on_checkpoint = on_progress, on_checkpoint
        self.should_cancel = should_cancel
        self.started = clock()
        self.throttle = _Throttle(config.progress_interval_s, clock)
        self.listening = on_progress is not None or should_cancel is not None

    def after_step(
        self,
        step: int,
        losses: _Losses,
        preview: Callable[[], Image.Image],
        checkpoint: Callable[[int], FitCheckpoint],
    ) -> None:
        """A progress point after `step` when one is due (the loss read back, an event, a
        preview and a checkpoint when theirs are, a cancel check); else nothing, on the host.
        Raises FitCanceled when asked to stop before the last step."""
        config, on_progress, on_checkpoint = self.config, self.on_progress, self.on_checkpoint
        done = step + 1
        preview_due = bool(
            on_progress and config.preview_every and done % config.preview_every == 0
        )
        every = config.checkpoint_every
        checkpoint_due = bool(on_checkpoint and every and done % every == 0)
        last = done == config.steps
        # the first step of this run is reported too: a watcher sees the fit move at
        # once (the worker always publishes step 1), however long the interval
        first = on_progress is not None and step == self.first_step
        forced = preview_due or checkpoint_due or last or first
        if not (forced or (self.listening and self.throttle.due())):
            return
        # A progress point. Previews, checkpoints and the end wait for the device
        # anyway; elsewhere read only the steps before this one, whose kernels ran
        # while this one was queued, so the device keeps working meanwhile.
        late = config.progress_interval_s > 0 and not (preview_due or checkpoint_due or last)
        # (the newest too when no earlier loss is known: the first event of a fit
        # whose steps take longer than the interval)
        older = bool(losses.values) or len(losses.pending) > 1
        losses.read(keep=1 if late and older else 0)
        if on_progress is not None:
            elapsed = self.clock() - self.started
            per_step = elapsed / (done - self.first_step)
            on_progress(
                FitProgress(
                    done,
                    config.steps,
                    losses.values[-1],
                    elapsed,
                    per_step * (config.steps - done),
                    preview() if preview_due else None,
                    loss_step=len(losses.values),
                )
            )
        if checkpoint_due and on_checkpoint is not None:
            on_checkpoint(checkpoint(done))
        if not last and self.should_cancel is not None and self.should_cancel():
            raise FitCanceled(f"canceled at step {done}/{config.steps}")


def _checkpoint(
    done: int,
    token: str,
    embedding: nn.Parameter,
    i_star: torch.Tensor,
    o_v: dict[str, nn.Parameter],
    optimizer: torch.optim.Optimizer,
    generator: torch.Generator,
    losses: _Losses,
) -> FitCheckpoint:
    """The fit after `done` steps, copied to the CPU."""
    return FitCheckpoint(
        step=done,
        token=token,
        token_embedding=embedding.detach().reshape(-1).cpu().clone(),
        i_star=i_star.cpu().clone(),
        o_v={n: p.detach().cpu().clone() for n, p in o_v.items()},
        optimizer_state=_cpu_optimizer_state(optimizer),
        rng_state=generator.get_state(),
        losses=list(losses.values),
        rng_device=generator.device.type,
    )


def _autocast(device: torch.device, enabled: bool) -> contextlib.AbstractContextManager:
    if not enabled:
        return contextlib.nullcontext()
    return torch.autocast(device.type, dtype=torch.bfloat16)


def _restore_generator(generator: torch.Generator, resume: FitCheckpoint, seed: int) -> None:
    """The checkpoint's RNG state; one saved on another kind of device (a checkpoint of an
    older version, whose generator was always on the CPU) cannot continue this generator's
    stream, so the fit continues on a stream derived from (seed, step), not bit-exactly."""
    if resume.rng_device == generator.device.type:
        generator.set_state(resume.rng_state.clone())
        return
    warnings.warn(
        f"fit checkpoint's random state is for {resume.rng_device}, this fit runs on "
        f"{generator.device.type}: resuming on a fresh random stream",
        stacklevel=3,
    )
    generator.manual_seed(seed * 1_000_003 + resume.step)


def _micro_step(
    pipe: StableDiffusionPipeline,
    text: TextSide,
    scheduler: DDPMScheduler,
    latents: torch.Tensor,
    weights: torch.Tensor,
    prompts: _TrainingPrompts,
    patch: TokenPatch,
    config: FitConfig,
    generator: torch.Generator,
    use_amp: bool,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Weighted noise-prediction loss on one random batch, and the concept token's encodings.

    The text side's added UNet conditions (SDXL's pooled embedding) are those of the
    superclass-substituted prompts. All randomness comes from `generator` (on the fit's
    device, which makes resume exact), and nothing is read back from the device.
    """
    device = latents.device
    n = config.batch_size
    index = torch.randint(0, latents.shape[0], (n,), generator=generator, device=device)
    flip = (torch.rand(n, generator=generator, device=device) < config.flip_p).long()
    steps = scheduler.config.num_train_timesteps
    timesteps = draw_timesteps(config.timesteps, n, steps, generator, device)
    noise = torch.randn((n, *latents.shape[2:]), generator=generator, device=device)
    templates = torch.randint(0, prompts.count, (n,), generator=generator, device=device)
    clean = latents[index, flip]
    weight = weights[index, flip]
    tokens, positions, extra = prompts.take(templates)
    with _autocast(device, use_amp):
        encodings = text.encode(tokens)
        # by identity, so the processors find these encodings' real tokens without a lookup
        # by content (SDXL's are concatenated after its encoders' hooks ran)
        assert patch.real_tokens is not None
        patch.real_tokens.record(tokens.ids[0], encodings, tokens.mask)
        noisy = scheduler.add_noise(clean, noise, timesteps)
        pred = pipe.unet(noisy.to(pipe.unet.dtype), timesteps, encodings, **extra).sample
    target = training_target(scheduler, clean, noise, timesteps)
    err = (pred.float() - target).pow(2).mean(1, keepdim=True)
    loss = (err * weight).sum() / weight.sum().clamp(min=1e-6)
    rows = torch.arange(n, device=encodings.device)
    token_encodings = encodings[rows, positions].float()
    return loss, token_encodings


def _superclass_cosine(
    encodings: torch.Tensor, cinv: torch.Tensor, direction: torch.Tensor
) -> torch.Tensor:
    """Mean squared P-cosine between the concept token's encodings (n, D) and e_super."""
    norms = ((encodings @ cinv) * encodings).sum(-1).clamp(min=1e-12).sqrt()
    return ((encodings @ direction) / norms).pow(2).mean()


def _cpu_optimizer_state(optimizer: torch.optim.Optimizer) -> dict:
    state = optimizer.state_dict()
    return {
        "state": {
            k: {n: torch.as_tensor(v).detach().cpu().clone() for n, v in s.items()}
            for k, s in state["state"].items()
        },
        "param_groups": [dict(g) for g in state["param_groups"]],
    }


@torch.no_grad()
def _preview(
    pipe: StableDiffusionPipeline, edit: TextSpaceEdit, token: str, config: FitConfig
) -> Image.Image:
    """A quick image of the concept at the default inference gate, on a fixed seed."""
    beta, tau = edit.beta, edit.tau
    edit.beta = torch.full_like(beta, 0.7)
    edit.tau = torch.full_like(tau, 0.15)
    try:
        return pipe(
            TEMPLATES[0].format(token),
            num_inference_steps=config.preview_steps,
            generator=torch.Generator("cpu").manual_seed(config.seed),
        ).images[0]
    finally:
        edit.beta, edit.tau = beta, tau
