"""Fitting a concept: trains the new token's embedding row and the per-layer o*_V only."""

from __future__ import annotations

import contextlib
import json
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field

import numpy as np
import torch
from diffusers import DDPMScheduler, StableDiffusionPipeline
from PIL import Image, ImageOps
from safetensors.torch import load as load_safetensors
from safetensors.torch import save as save_safetensors
from torch import nn

from .apply import install_processors, key_target
from .concept import Concept, ConceptMismatch
from .covariance import Covariance
from .pipeline import TokenPatch, base_model_id, cross_attention_layers, model_fingerprint
from .processor import TextSpaceEdit, make_text_edit, score_and_energy
from .sides import text_side
from .text import ARCH_SDXL, TextSide

TEMPLATES = (
    "a photo of a {}",
    "a good photo of the {}",
    "image of a {}",
    "a rendering of a {}",
    "a cropped photo of the {}",
    "a close-up photo of a {}",
    "a bright photo of the {}",
    "a photo of my {}",
    "a clean photo of a {}",
    "a photo of the nice {}",
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
    seed: int = 0
    preview_every: int = 0
    preview_steps: int = 20
    checkpoint_every: int = 0
    mixed_precision: bool = True  # bf16 autocast where the device supports it (CUDA with bf16)


def default_batch(arch: str, on_cuda: bool) -> tuple[int, int]:
    """(images per pass, accumulation) of a fit: effective batch 16 on CUDA, 4 on a CPU.

    SD at 512 px fits 16 in one pass; SDXL at its native 1024 px (4x the latent pixels, a
    3x larger UNet) runs 4 x 4, the re-implementations' recipe.
    """
    if arch == ARCH_SDXL:
        return (4, 4) if on_cuda else (1, 4)
    return (16, 1) if on_cuda else (4, 1)


@dataclass
class FitProgress:
    """One optimisation step done."""

    step: int
    total: int
    loss: float
    elapsed_s: float
    eta_s: float
    preview: Image.Image | None = None


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
        }
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
        )


def _image_tensor(image: Image.Image, size: int, mode: str = "RGB") -> torch.Tensor:
    """Resize the short side to `size`, centre-crop, scale to [-1, 1] (or [0, 1] for masks)."""
    image = ImageOps.fit(image.convert(mode), (size, size), Image.Resampling.BICUBIC)
    array = torch.from_numpy(np.asarray(image, dtype=np.float32) / 255.0)
    if mode == "L":
        return array[None]
    return array.permute(2, 0, 1) * 2 - 1


@torch.no_grad()
def encode_training_images(
    pipe: StableDiffusionPipeline,
    images: list[Image.Image],
    masks: list[Image.Image] | None,
    resolution: int,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Latents (N, 2, c, h, w) and masks (N, 2, 1, h, w), index 1 = horizontally flipped.

    Uses the posterior mean (deterministic); run once per fit. An SDXL VAE marked
    `force_upcast` (it overflows in fp16) encodes in fp32, as the SDXL pipeline decodes;
    fp16 → fp32 → fp16 restores its weights exactly.
    """
    vae = pipe.vae
    upcast = (
        text_side(pipe).arch == ARCH_SDXL
        and vae.dtype == torch.float16
        and bool(getattr(vae.config, "force_upcast", False))
    )
    if upcast:
        vae.to(torch.float32)
    try:
        return _encode_images(vae, images, masks, resolution)
    finally:
        if upcast:
            vae.to(torch.float16)


def _encode_images(
    vae: nn.Module, images: list[Image.Image], masks: list[Image.Image] | None, resolution: int
) -> tuple[torch.Tensor, torch.Tensor]:
    latents, weights = [], []
    for k, image in enumerate(images):
        pixels = _image_tensor(image, resolution)[None]
        pixels = torch.cat([pixels, pixels.flip(-1)]).to(vae.device, vae.dtype)
        lat = vae.encode(pixels).latent_dist.mean.float() * vae.config.scaling_factor
        latents.append(lat)
        if masks is None:
            weight = torch.ones(2, 1, *lat.shape[-2:])
        else:
            soft = _image_tensor(masks[k], resolution, "L")[None]
            soft = torch.nn.functional.interpolate(soft, size=lat.shape[-2:], mode="area")
            weight = torch.cat([soft, soft.flip(-1)])
        weights.append(weight.to(lat.device))
    return torch.stack(latents), torch.stack(weights)


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


def concept_token_encoding(
    pipe: StableDiffusionPipeline, token: str, token_id: int, cinv: torch.Tensor
) -> torch.Tensor:
    """The initial i*: the point of the concept token's template encodings' affine hull with
    the least P-norm (P = C⁻¹), float32.

    Every training template's encoding e_t of the token is then i* plus a P-orthogonal rest,
    so s(e_t) = 1 for all of them at step 0 (the training gate open), however many tokens the
    superclass word has. Their plain mean gives s from ~0.1 to ~3.5 across the templates on the
    toy world, where the prefix words move the token's encoding along low-variance directions.
    """
    ids, encodings = _template_encodings(pipe, token)
    rows = encodings[ids.to(encodings.device) == token_id].double()
    if rows.shape[0] == 0:
        raise ValueError(f"concept token {token!r} does not fit in the prompt length")
    p = cinv.double().to(rows.device)
    origin, spread = rows[0], rows[1:] - rows[:1]
    if spread.shape[0] == 0:
        return rows[0].float()
    # minimise (o + cᵀ S) P (o + cᵀ S)ᵀ over c: (S P Sᵀ) c = -S P o (least squares: S may be
    # rank deficient when two templates give the token the same encoding)
    coeffs = torch.linalg.lstsq(spread @ p @ spread.T, -(spread @ p @ origin)).solution
    return (origin + coeffs @ spread).float()


def _last_match(ids: list[int], word: list[int]) -> int | None:
    """Position of the last token of the last occurrence of `word` in `ids`, or None."""
    for start in range(len(ids) - len(word), -1, -1):
        if ids[start : start + len(word)] == word:
            return start + len(word) - 1
    return None


def _refresh(edit: TextSpaceEdit, i_star: torch.Tensor, cinv: torch.Tensor) -> None:
    """Recompute the shared text-space edit in place after i* moved."""
    score, energy = score_and_energy(i_star, cinv)
    new = make_text_edit(
        i_star[None],
        score[None].to(i_star.device),
        torch.tensor([energy], device=i_star.device),
        edit.beta.tolist(),
        edit.tau.tolist(),
    )
    edit.basis, edit.proj, edit.score = new.basis, new.proj, new.score


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
) -> Concept:
    """Fit a Perfusion concept; the pipeline is left exactly as it was, also on error/cancel."""
    if not images:
        raise ValueError("need at least one training image")
    if masks is not None and len(masks) != len(images):
        raise ValueError("one mask per image")
    if config.i_star_tracking not in ("exact", "ema"):
        raise ValueError(
            f"i_star_tracking must be 'exact' or 'ema', got {config.i_star_tracking!r}"
        )
    if getattr(pipe, "_perfusion_applied", None) is not None:
        raise RuntimeError("remove applied concepts before fitting (remove_concepts(pipe))")
    fingerprint = model_fingerprint(pipe)
    if covariance.base_fingerprint and covariance.base_fingerprint != fingerprint:
        raise ConceptMismatch("the covariance was computed on another base model")
    text = text_side(pipe)
    dim = text.dim
    if tuple(covariance.inverse.shape) != (dim, dim):
        raise ConceptMismatch(f"covariance is {tuple(covariance.inverse.shape)}, text dim {dim}")
    if resume is not None and resume.token != token:
        raise ValueError(f"checkpoint is for token {resume.token!r}, not {token!r}")

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
        optimizer = torch.optim.AdamW(
            [
                {"params": [embedding], "lr": config.lr_embedding},
                {"params": list(o_v.values()), "lr": config.lr_value},
            ],
            weight_decay=0.0,
        )
        generator = torch.Generator("cpu").manual_seed(config.seed)
        losses: list[float] = []
        first_step = 0
        if resume is not None:
            optimizer.load_state_dict(resume.optimizer_state)
            generator.set_state(resume.rng_state.clone())
            losses = list(resume.losses)
            first_step = resume.step

        patch = TokenPatch.add(pipe, [token], embedding, [superclass])
        token_id = patch.token_ids[0]
        original = None
        try:
            if resume is not None:
                i_star = resume.i_star.to(device, torch.float32).clone()
            else:
                i_star = concept_token_encoding(pipe, token, token_id, cinv)
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
            started = time.monotonic()
            for step in range(first_step, config.steps):
                if should_cancel is not None and should_cancel():
                    raise FitCanceled(f"canceled at step {step}/{config.steps}")
                optimizer.zero_grad(set_to_none=True)
                step_loss, token_encodings = 0.0, []
                for _ in range(config.grad_accum):
                    loss, enc = _micro_step(
                        pipe,
                        text,
                        scheduler,
                        latents,
                        weights,
                        (token, superclass),
                        token_id,
                        config,
                        generator,
                        use_amp,
                        resolution,
                    )
                    (loss / config.grad_accum).backward()
                    step_loss += loss.item() / config.grad_accum
                    token_encodings.append(enc)
                optimizer.step()
                with torch.no_grad():
                    if config.i_star_tracking == "exact":
                        i_star.copy_(concept_token_encoding(pipe, token, token_id, cinv))
                    else:
                        mean_enc = torch.cat(token_encodings).mean(0)
                        i_star.mul_(config.ema_decay).add_(mean_enc, alpha=1 - config.ema_decay)
                    _refresh(edit, i_star, cinv)
                losses.append(step_loss)
                done = step + 1
                if on_progress is not None:
                    elapsed = time.monotonic() - started
                    per_step = elapsed / (done - first_step)
                    preview = None
                    if config.preview_every and done % config.preview_every == 0:
                        preview = _preview(pipe, edit, token, config)
                    on_progress(
                        FitProgress(
                            done,
                            config.steps,
                            step_loss,
                            elapsed,
                            per_step * (config.steps - done),
                            preview,
                        )
                    )
                if (
                    on_checkpoint
                    and config.checkpoint_every
                    and done % config.checkpoint_every == 0
                ):
                    on_checkpoint(
                        FitCheckpoint(
                            step=done,
                            token=token,
                            token_embedding=embedding.detach().reshape(dim).cpu().clone(),
                            i_star=i_star.cpu().clone(),
                            o_v={n: p.detach().cpu().clone() for n, p in o_v.items()},
                            optimizer_state=_cpu_optimizer_state(optimizer),
                            rng_state=generator.get_state(),
                            losses=list(losses),
                        )
                    )
        finally:
            if original is not None:
                pipe.unet.set_attn_processor(dict(original))
            patch.remove()

    score, energy = score_and_energy(i_star, cinv)
    tail = losses[-max(1, len(losses) // 10) :]
    training = {
        k: v for k, v in asdict(config).items() if not k.startswith(("preview", "checkpoint"))
    }
    training.update(
        n_images=len(images), masked=masks is not None, final_loss=sum(tail) / len(tail)
    )
    training["resolution"] = resolution
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


def _micro_step(
    pipe: StableDiffusionPipeline,
    text: TextSide,
    scheduler: DDPMScheduler,
    latents: torch.Tensor,
    weights: torch.Tensor,
    words: tuple[str, str],
    token_id: int,
    config: FitConfig,
    generator: torch.Generator,
    use_amp: bool,
    resolution: int,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Weighted noise-prediction loss on one random batch, and the concept token's encodings.

    `words` is (token, superclass): the text side's added UNet conditions (SDXL's pooled
    embedding) see the superclass-substituted prompts. All randomness comes from `generator`
    (on the CPU), which makes resume exact.
    """
    token, superclass = words
    device = latents.device
    n = config.batch_size
    index = torch.randint(0, latents.shape[0], (n,), generator=generator)
    flip = (torch.rand(n, generator=generator) < config.flip_p).long()
    steps = scheduler.config.num_train_timesteps
    timesteps = torch.randint(0, steps, (n,), generator=generator)
    noise = torch.randn((n, *latents.shape[2:]), generator=generator)
    templates = torch.randint(0, len(TEMPLATES), (n,), generator=generator)
    clean = latents[index, flip]
    weight = weights[index, flip]
    noise, timesteps = noise.to(device), timesteps.to(device)
    prompts = [TEMPLATES[k].format(token) for k in templates.tolist()]
    tokens = text.tokenize(prompts)
    ids = tokens.ids[0].to(device)
    amp = torch.autocast(device.type, dtype=torch.bfloat16) if use_amp else contextlib.nullcontext()
    with amp:
        encodings = text.encode(tokens)
        extra = text.unet_kwargs(
            [TEMPLATES[k].format(superclass) for k in templates.tolist()], resolution
        )
        noisy = scheduler.add_noise(clean, noise, timesteps)
        pred = pipe.unet(noisy.to(pipe.unet.dtype), timesteps, encodings, **extra).sample
    if scheduler.config.prediction_type == "v_prediction":
        target = scheduler.get_velocity(clean, noise, timesteps)
    else:
        target = noise
    err = (pred.float() - target).pow(2).mean(1, keepdim=True)
    loss = (err * weight).sum() / weight.sum().clamp(min=1e-6)
    token_encodings = encodings[ids == token_id].detach().float()
    return loss, token_encodings


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
