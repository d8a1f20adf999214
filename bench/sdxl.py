"""A Stable Diffusion XL base-shaped pipeline with random weights (real layer names and widths).

Same compute and memory as SDXL base 1.0, no download: for size and GPU benchmarks. Build it
on the device that will run it (`device="cuda"`): random init of the 2.6B-parameter UNet on a
CPU takes minutes.
"""

from __future__ import annotations

from pathlib import Path

import torch
from diffusers import (
    AutoencoderKL,
    EulerDiscreteScheduler,
    StableDiffusionXLPipeline,
    UNet2DConditionModel,
)
from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection, CLIPTokenizer

from bench.sd15 import WORDS
from workers.perfusion.sdxl import SDXL_UNET
from workers.perfusion.testing import write_word_tokenizer

SDXL_VAE = dict(
    in_channels=3,
    out_channels=3,
    latent_channels=4,
    block_out_channels=(128, 256, 512, 512),
    down_block_types=("DownEncoderBlock2D",) * 4,
    up_block_types=("UpDecoderBlock2D",) * 4,
    layers_per_block=2,
    sample_size=1024,
    scaling_factor=0.13025,
    force_upcast=True,
)
CLIP_L = dict(
    hidden_size=768,
    intermediate_size=3072,
    num_attention_heads=12,
    num_hidden_layers=12,
    hidden_act="quick_gelu",
    projection_dim=768,
)
CLIP_BIGG = dict(
    hidden_size=1280,
    intermediate_size=5120,
    num_attention_heads=20,
    num_hidden_layers=32,
    hidden_act="gelu",
    projection_dim=1280,
)
TINY_UNET = dict(
    SDXL_UNET,
    sample_size=8,
    block_out_channels=(32, 32, 64),
    transformer_layers_per_block=(1, 1, 2),
    attention_head_dim=(2, 4, 4),
    cross_attention_dim=96,
    addition_time_embed_dim=8,
    projection_class_embeddings_input_dim=6 * 8 + 64,
    norm_num_groups=8,
)
TINY_VAE = dict(SDXL_VAE, block_out_channels=(8, 8, 16, 16), layers_per_block=1, norm_num_groups=8)
TINY_L = dict(
    CLIP_L, hidden_size=32, intermediate_size=64, num_attention_heads=4, num_hidden_layers=2
)
TINY_G = dict(
    CLIP_BIGG,
    hidden_size=64,
    intermediate_size=128,
    num_attention_heads=4,
    num_hidden_layers=2,
    projection_dim=64,
)


def make_sdxl_pipeline(
    tokenizer_dir: Path, seed: int = 0, tiny: bool = False, device: str = "cpu"
) -> StableDiffusionXLPipeline:
    """Random-weight SDXL base (fp32): 70 attn2 layers over 2048-d text, 1024 px native.

    `tiny` keeps the block layout at toy widths (17 attn2 layers), for CPU dry runs. The second
    tokenizer pads with "!" as SDXL's does; both encoders keep SDXL's legacy eos_token_id = 2.
    """
    tokenizer = write_word_tokenizer(tokenizer_dir, WORDS, max_length=77)
    tokenizer_2 = CLIPTokenizer(
        str(tokenizer_dir / "vocab.json"),
        str(tokenizer_dir / "merges.txt"),
        model_max_length=77,
        pad_token="!",
    )
    torch.manual_seed(seed)
    unet_config, vae_config, text_l, text_g = (
        (TINY_UNET, TINY_VAE, TINY_L, TINY_G) if tiny else (SDXL_UNET, SDXL_VAE, CLIP_L, CLIP_BIGG)
    )

    def clip(config: dict) -> CLIPTextConfig:
        return CLIPTextConfig(
            **config,
            bos_token_id=tokenizer.bos_token_id,
            eos_token_id=2,
            max_position_embeddings=77,
            vocab_size=len(tokenizer),
        )

    with torch.device(device):
        pipe = StableDiffusionXLPipeline(
            vae=AutoencoderKL(**vae_config),
            text_encoder=CLIPTextModel(clip(text_l)),
            text_encoder_2=CLIPTextModelWithProjection(clip(text_g)),
            tokenizer=tokenizer,
            tokenizer_2=tokenizer_2,
            unet=UNet2DConditionModel(**unet_config),
            scheduler=EulerDiscreteScheduler(
                beta_start=0.00085,
                beta_end=0.012,
                beta_schedule="scaled_linear",
                steps_offset=1,
                timestep_spacing="leading",
            ),
            force_zeros_for_empty_prompt=True,
            add_watermarker=False,
        )
    pipe.set_progress_bar_config(disable=True)
    return pipe
