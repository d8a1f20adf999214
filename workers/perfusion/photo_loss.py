"""How well a concept reproduces its own photos: the denoising loss over fixed draws.

A fit's running loss is one random batch per step (timestep, noise, template), too noisy to
compare fits. This loss fixes the draws — timesteps one in each of `draws` equal slices of the
schedule, noise and templates from a seeded generator — so two concepts (two fits of the same
photos, or two iterates of one fit) are scored on the same problems. On the toy world it
picked the fit whose images show the subject more often in 7 of 8 pairs of seeds
(workers/toyworld/model/README.md), which is what `FitConfig.restarts` relies on.
"""

from __future__ import annotations

import torch
from diffusers import DDPMScheduler, StableDiffusionPipeline
from PIL import Image

from .apply import DEFAULT_STRENGTH, apply_concepts, strength_to_control
from .concept import Concept
from .text import ARCH_SD
from .training_data import TEMPLATES, draw_timesteps, encode_training_images, training_target


@torch.no_grad()
def photo_loss(
    pipe: StableDiffusionPipeline,
    concept: Concept,
    images: list[Image.Image],
    masks: list[Image.Image] | None = None,
    strength: float = DEFAULT_STRENGTH,
    draws: int = 64,
    seed: int = 1234,
) -> float:
    """Mean v- (or ε-) prediction loss of `pipe` with `concept` applied at `strength` on the
    photos over `draws` fixed (photo, timestep, noise, template) draws; with masks, each
    draw's loss is weighted by its photo's mask, as the fit's is. SD 1.x/2.x pipelines."""
    if concept.architecture != ARCH_SD:
        raise ValueError("photo_loss scores SD 1.x/2.x concepts (SDXL's added conditions: no)")
    resolution = pipe.unet.config.sample_size * pipe.vae_scale_factor
    latents, weights = encode_training_images(pipe, images, masks, resolution)
    latents, weights = latents[:, 0].float(), weights[:, 0].float()  # unflipped
    scheduler = DDPMScheduler.from_config(pipe.scheduler.config)
    steps = scheduler.config.num_train_timesteps
    generator = torch.Generator().manual_seed(seed)
    timesteps = draw_timesteps("stratified", draws, steps, generator, torch.device("cpu"))
    total = 0.0
    with apply_concepts(pipe, [concept], [strength_to_control(strength)]):
        device, dtype = pipe.unet.device, pipe.unet.dtype
        prompts = [template.format(concept.token) for template in TEMPLATES]
        for k in range(draws):
            # Encoded right before its UNet call: the edit finds a prompt's real tokens among
            # the last 8 encodings made (RealTokens), and ten made up front left two templates
            # edited at every position, padding included.
            encoding = pipe.encode_prompt(prompts[k % len(prompts)], device, 1, False)[0]
            clean = latents[k % len(images)][None]
            weight = weights[k % len(images)][None].to(device)
            t = timesteps[k : k + 1].to(device)
            noise = torch.randn(clean.shape, generator=generator).to(device)
            noisy = scheduler.add_noise(clean, noise, t)
            pred = pipe.unet(noisy.to(dtype), t, encoding.to(dtype)).sample
            err = (pred.float() - training_target(scheduler, clean, noise, t)).pow(2)
            err = err.mean(1, keepdim=True)
            total += ((err * weight).sum() / weight.sum().clamp(min=1e-6)).item()
    return total / draws
