"""Architectures of the toy-world base model: SD 1.5's four parts, shrunk to CPU size."""

from __future__ import annotations

from diffusers import AutoencoderKL, DDIMScheduler, DDPMScheduler, UNet2DConditionModel
from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer

from workers.toyworld.world import SIZE

MAX_LENGTH = 77  # as SD 1.5, so long prompts with unknown words still fit
TEXT_HIDDEN = 128
LATENT_CHANNELS = 4
VAE_CHANNELS = (16, 32, 64)  # two downsamplings: 64 px -> 16x16 latents
LATENT_SIZE = SIZE // 2 ** (len(VAE_CHANNELS) - 1)

# Linear betas reach (almost) zero terminal SNR, unlike SD's scaled_linear: the flat black,
# white and coloured backgrounds need the sampler's first step to be free in mean colour.
SCHEDULE = {
    "num_train_timesteps": 1000,
    "beta_start": 0.0001,
    "beta_end": 0.02,
    "beta_schedule": "linear",
    "prediction_type": "v_prediction",
    "rescale_betas_zero_snr": True,
    "clip_sample": False,
    "steps_offset": 1,
    "timestep_spacing": "trailing",
}


def text_encoder(tokenizer: CLIPTokenizer, layers: int = 3) -> CLIPTextModel:
    config = CLIPTextConfig(
        vocab_size=len(tokenizer),
        hidden_size=TEXT_HIDDEN,
        intermediate_size=4 * TEXT_HIDDEN,
        projection_dim=TEXT_HIDDEN,
        num_hidden_layers=layers,
        num_attention_heads=4,
        max_position_embeddings=MAX_LENGTH,
        hidden_act="quick_gelu",
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    return CLIPTextModel(config)


def vae() -> AutoencoderKL:
    return AutoencoderKL(
        in_channels=3,
        out_channels=3,
        down_block_types=("DownEncoderBlock2D",) * len(VAE_CHANNELS),
        up_block_types=("UpDecoderBlock2D",) * len(VAE_CHANNELS),
        block_out_channels=VAE_CHANNELS,
        layers_per_block=1,
        latent_channels=LATENT_CHANNELS,
        norm_num_groups=8,
        sample_size=SIZE,
        # Fully convolutional, so stage 1 can train on cheap 32x32 crops.
        mid_block_add_attention=False,
    )


def unet(channels: tuple[int, int, int] = (64, 128, 128)) -> UNet2DConditionModel:
    return UNet2DConditionModel(
        sample_size=LATENT_SIZE,
        in_channels=LATENT_CHANNELS,
        out_channels=LATENT_CHANNELS,
        down_block_types=("CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"),
        block_out_channels=channels,
        layers_per_block=1,
        cross_attention_dim=TEXT_HIDDEN,
        attention_head_dim=4,  # diffusers reads this as the number of heads
        norm_num_groups=16,
    )


def train_scheduler() -> DDPMScheduler:
    return DDPMScheduler(**SCHEDULE)


def sample_scheduler() -> DDIMScheduler:
    return DDIMScheduler(**SCHEDULE, set_alpha_to_one=False)
