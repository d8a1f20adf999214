"""What a fit trains on, shared by the fit and `photo_loss`: the prompt templates, the photos
encoded to latents (with their masks), the timestep draws and the prediction target."""

from __future__ import annotations

import numpy as np
import torch
from diffusers import DDPMScheduler, StableDiffusionPipeline
from PIL import Image, ImageOps
from torch import nn

from .sides import text_side
from .text import ARCH_SDXL

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


def training_target(
    scheduler: DDPMScheduler, clean: torch.Tensor, noise: torch.Tensor, t: torch.Tensor
) -> torch.Tensor:
    """What the UNet is trained to predict: v for a v-prediction model, else the noise."""
    if scheduler.config.prediction_type == "v_prediction":
        return scheduler.get_velocity(clean, noise, t)
    return noise


TIMESTEP_SAMPLING = ("uniform", "stratified")


def draw_timesteps(
    how: str, n: int, steps: int, generator: torch.Generator, device: torch.device
) -> torch.Tensor:
    """n training timesteps in [0, steps): uniform, or one in each of n equal slices."""
    if how == "uniform":
        return torch.randint(0, steps, (n,), generator=generator, device=device)
    if how == "stratified":
        u = torch.rand(n, generator=generator, device=device)
        slices = torch.arange(n, device=device) + u
        return (slices * steps / n).long().clamp(max=steps - 1)
    raise ValueError(f"unknown timestep sampling {how!r} (uniform or stratified)")
