"""A Stable Diffusion 1.5-shaped pipeline with random weights (real layer names and widths).

Same compute and memory as the real model, no download: for size and GPU benchmarks.
"""

from __future__ import annotations

from pathlib import Path

import torch
from diffusers import AutoencoderKL, DDIMScheduler, StableDiffusionPipeline, UNet2DConditionModel
from transformers import CLIPTextConfig, CLIPTextModel

from workers.perfusion.testing import write_word_tokenizer

WORDS = tuple(
    "a photo of the an image good close up my dog cat toy person on in at with beach grass "
    "moon city forest red blue green wearing space suit painting style".split()
)

SD15_UNET = dict(
    sample_size=64,
    in_channels=4,
    out_channels=4,
    layers_per_block=2,
    block_out_channels=(320, 640, 1280, 1280),
    down_block_types=("CrossAttnDownBlock2D",) * 3 + ("DownBlock2D",),
    up_block_types=("UpBlock2D",) + ("CrossAttnUpBlock2D",) * 3,
    cross_attention_dim=768,
    attention_head_dim=8,
)
SD15_VAE = dict(
    in_channels=3,
    out_channels=3,
    latent_channels=4,
    block_out_channels=(128, 256, 512, 512),
    down_block_types=("DownEncoderBlock2D",) * 4,
    up_block_types=("UpDecoderBlock2D",) * 4,
    layers_per_block=2,
    sample_size=512,
)
SD15_TEXT = dict(
    hidden_size=768,
    intermediate_size=3072,
    num_attention_heads=12,
    num_hidden_layers=12,
    max_position_embeddings=77,
    vocab_size=49408,
    hidden_act="quick_gelu",
)


TINY_UNET = dict(SD15_UNET, sample_size=8, block_out_channels=(32, 32, 64, 64), layers_per_block=1)
TINY_VAE = dict(SD15_VAE, block_out_channels=(8, 8, 16, 16), layers_per_block=1, norm_num_groups=8)
TINY_TEXT = dict(
    SD15_TEXT, hidden_size=64, intermediate_size=128, num_attention_heads=4, num_hidden_layers=2
)


def make_sd15_pipeline(
    tokenizer_dir: Path, seed: int = 0, with_vae: bool = True, tiny: bool = False
) -> StableDiffusionPipeline:
    """Random-weight SD 1.5 architecture (fp32, CPU): 860M-parameter UNet, 16 attn2 layers.

    `tiny` keeps the block structure (and so the 16 attn2 layer names) at toy widths, for dry runs.
    """
    tokenizer = write_word_tokenizer(tokenizer_dir, WORDS, max_length=77)
    torch.manual_seed(seed)
    unet_config, vae_config, text = (
        (TINY_UNET, TINY_VAE, TINY_TEXT) if tiny else (SD15_UNET, SD15_VAE, SD15_TEXT)
    )
    if tiny:
        unet_config = dict(unet_config, cross_attention_dim=text["hidden_size"], norm_num_groups=8)
    text_config = CLIPTextConfig(
        **text,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    pipe = StableDiffusionPipeline(
        vae=AutoencoderKL(**vae_config) if with_vae else None,
        text_encoder=CLIPTextModel(text_config),
        tokenizer=tokenizer,
        unet=UNet2DConditionModel(**unet_config),
        scheduler=DDIMScheduler(
            beta_start=0.00085,
            beta_end=0.012,
            beta_schedule="scaled_linear",
            clip_sample=False,
            set_alpha_to_one=False,
        ),
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    )
    pipe.set_progress_bar_config(disable=True)
    return pipe
