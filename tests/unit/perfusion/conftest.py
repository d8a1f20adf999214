"""Tiny seeded SD-shaped pipelines built in code: no downloads, runs on a CPU in seconds."""

from __future__ import annotations

import random
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
from diffusers import AutoencoderKL, DDIMScheduler, StableDiffusionPipeline, UNet2DConditionModel
from PIL import Image
from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer

from workers.perfusion import FitConfig, compute_covariance, fit_concept
from workers.perfusion.testing import write_word_tokenizer

# Tiny ops on a shared 2-core machine: one thread is ~50x faster than two fighting for cores.
torch.set_num_threads(1)

WORD_TEXT = "a photo of the good image my dog cat red blue on in at with grass beach sofa"
WORDS = WORD_TEXT.split()
MAX_LEN = 16


def _captions(count: int = 400, seed: int = 0) -> list[str]:
    """Varied-length captions over WORDS: the tiny model's stand-in for the caption corpus."""
    rng = random.Random(seed)
    return [
        " ".join(rng.choice(WORDS) for _ in range(rng.randint(2, MAX_LEN))) for _ in range(count)
    ]


CAPTIONS = _captions()


def write_tokenizer_files(folder: Path) -> CLIPTokenizer:
    """A CLIP BPE tokenizer with byte tokens plus whole-word merges for WORDS."""
    return write_word_tokenizer(folder, WORDS, MAX_LEN)


def make_tiny_pipeline(folder: Path, seed: int = 0, text_dim: int = 64) -> StableDiffusionPipeline:
    """A seeded random SD-shaped pipeline: 16 px images, 8x8 latents, 4 cross-attention layers."""
    tokenizer = write_tokenizer_files(folder)
    torch.manual_seed(seed)
    unet = UNet2DConditionModel(
        sample_size=8,
        in_channels=4,
        out_channels=4,
        block_out_channels=(16, 32),
        layers_per_block=1,
        down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"),
        cross_attention_dim=text_dim,
        attention_head_dim=8,
        norm_num_groups=8,
    )
    vae = AutoencoderKL(
        in_channels=3,
        out_channels=3,
        block_out_channels=(16, 32),
        down_block_types=("DownEncoderBlock2D", "DownEncoderBlock2D"),
        up_block_types=("UpDecoderBlock2D", "UpDecoderBlock2D"),
        latent_channels=4,
        norm_num_groups=8,
        sample_size=16,
    )
    text_encoder = CLIPTextModel(
        CLIPTextConfig(
            bos_token_id=tokenizer.bos_token_id,
            eos_token_id=tokenizer.eos_token_id,
            pad_token_id=tokenizer.pad_token_id,
            hidden_size=text_dim,
            intermediate_size=2 * text_dim,
            num_attention_heads=4,
            num_hidden_layers=2,
            max_position_embeddings=MAX_LEN,
            vocab_size=len(tokenizer),
        )
    )
    scheduler = DDIMScheduler(
        beta_start=0.00085,
        beta_end=0.012,
        beta_schedule="scaled_linear",
        clip_sample=False,
        set_alpha_to_one=False,
        steps_offset=1,
    )
    pipe = StableDiffusionPipeline(
        vae=vae,
        text_encoder=text_encoder,
        tokenizer=tokenizer,
        unet=unet,
        scheduler=scheduler,
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    )
    pipe.set_progress_bar_config(disable=True)
    return pipe


def make_images(count: int = 2, size: int = 16, seed: int = 0) -> list[Image.Image]:
    """Deterministic toy 'subject' images: a red blob on noise."""
    rng = np.random.default_rng(seed)
    images = []
    for _ in range(count):
        pixels = rng.integers(0, 80, (size, size, 3), dtype=np.uint8)
        pixels[4:12, 4:12] = (220, 30, 30)
        images.append(Image.fromarray(pixels))
    return images


# A progress event (and cancel check) after every step, with that step's loss: the tests
# count steps and compare losses; test_host_syncs covers the throttled default.
TINY_FIT = FitConfig(
    steps=6, batch_size=2, grad_accum=1, resolution=16, seed=0, progress_interval_s=0.0
)


@pytest.fixture(scope="session")
def tiny_pipe(tmp_path_factory: pytest.TempPathFactory) -> StableDiffusionPipeline:
    return make_tiny_pipeline(tmp_path_factory.mktemp("tiny"))


@pytest.fixture(scope="session")
def tiny_cov(tiny_pipe):
    return compute_covariance(tiny_pipe, CAPTIONS, batch_size=32)


def state_snapshot(pipe: StableDiffusionPipeline) -> dict[str, torch.Tensor]:
    """Copies of every UNet, VAE and text-encoder tensor, to compare bitwise later."""
    return {
        f"{part}.{name}": tensor.detach().clone()
        for part in ("unet", "vae", "text_encoder")
        for name, tensor in getattr(pipe, part).state_dict().items()
    }


@pytest.fixture(scope="session")
def fitted(tiny_pipe, tiny_cov):
    """One short fit on the shared tiny pipeline, with a checkpoint halfway."""
    before = state_snapshot(tiny_pipe)
    processors = dict(tiny_pipe.unet.attn_processors)
    checkpoints: list[bytes] = []
    losses: list[float] = []
    config = replace(TINY_FIT, checkpoint_every=3)
    concept = fit_concept(
        tiny_pipe,
        make_images(),
        "<sks>",
        "dog",
        config,
        tiny_cov,
        on_progress=lambda p: losses.append(p.loss),
        on_checkpoint=lambda c: checkpoints.append(c.to_bytes()),
    )
    return {
        "concept": concept,
        "config": config,
        "before": before,
        "processors": processors,
        "checkpoints": checkpoints,
        "losses": losses,
    }


def pixels(image: Image.Image) -> np.ndarray:
    return np.asarray(image, dtype=np.int16)
