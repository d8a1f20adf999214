"""How well a concept reproduces its own photos: the denoising loss over fixed draws.

The fit's running loss is one random batch per step (timestep, noise, template), too noisy to
compare fits. This loss fixes the draws — timesteps one in each of `draws` equal slices of the
schedule, noise and templates from a seeded generator — so two concepts (or two iterates of
one fit) are scored on the same problems. On the toy world it ranked quick fits by how often
their images show the subject (workers/toyworld/model/README.md, "Stratified timesteps and a
fixed-draw loss").
"""

from __future__ import annotations

import torch
from diffusers import DDPMScheduler, StableDiffusionPipeline
from PIL import Image

from workers.perfusion import Concept, apply_concepts, strength_to_control
from workers.perfusion.fit import (
    TEMPLATES,
    draw_timesteps,
    encode_training_images,
    training_target,
)


@torch.no_grad()
def photo_loss(
    pipe: StableDiffusionPipeline,
    concept: Concept,
    images: list[Image.Image],
    strength: float,
    draws: int = 64,
    seed: int = 1234,
) -> float:
    """Mean v- (or ε-) prediction loss of `pipe` with `concept` applied at `strength` on the
    photos, over `draws` fixed (photo, timestep, noise, template) draws."""
    resolution = pipe.unet.config.sample_size * pipe.vae_scale_factor
    latents, _ = encode_training_images(pipe, images, None, resolution)
    latents = latents[:, 0].float()  # unflipped
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
            t = timesteps[k : k + 1].to(device)
            noise = torch.randn(clean.shape, generator=generator).to(device)
            noisy = scheduler.add_noise(clean, noise, t)
            pred = pipe.unet(noisy.to(dtype), t, encoding.to(dtype)).sample
            target = training_target(scheduler, clean, noise, t)
            total += (pred.float() - target).pow(2).mean().item()
    return total / draws
