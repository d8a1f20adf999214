"""The committed base model loads like SD 1.5 and knows its world."""

import time

import pytest
import torch
from diffusers import StableDiffusionPipeline

from workers.toyworld.evaluate import GUIDANCE, MODEL_DIR, STEPS, knowledge_accuracy


@pytest.fixture(scope="module")
def pipe() -> StableDiffusionPipeline:
    torch.set_num_threads(2)
    pipe = StableDiffusionPipeline.from_pretrained(MODEL_DIR)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def test_model_has_the_stable_diffusion_layout(pipe: StableDiffusionPipeline) -> None:
    text = pipe.text_encoder.config
    assert pipe.tokenizer.model_max_length == text.max_position_embeddings
    assert pipe.unet.config.cross_attention_dim == text.hidden_size
    scale = 2 ** (len(pipe.vae.config.block_out_channels) - 1)
    assert pipe.unet.config.sample_size * scale == 64
    assert 0 < pipe.vae.config.scaling_factor != 0.18215
    cross = [m for name, m in pipe.unet.named_modules() if name.endswith("attn2")]
    assert cross and all(hasattr(m, "to_k") and hasattr(m, "to_v") for m in cross)
    assert pipe.safety_checker is None and pipe.tokenizer.tokenize("a striped red star") == [
        "a</w>",
        "striped</w>",
        "red</w>",
        "star</w>",
    ]


# Toy world 3's model (world-3 run W3m) at n=100, seed 0: shape 0.97, colour 0.99, pattern
# 0.94, background 1.0, all four 0.91 (workers/toyworld/model/README.md). The bar is the
# issue's: each attribute and all four together in at least 90 % of images.
def test_model_knows_its_world(pipe: StableDiffusionPipeline) -> None:
    start = time.monotonic()
    result = knowledge_accuracy(pipe, n=100, seed=0, steps=STEPS, guidance=GUIDANCE)
    seconds = time.monotonic() - start
    print(f"knowledge accuracy on 100 prompts ({STEPS} steps, guidance {GUIDANCE}): {result}")
    print(f"took {seconds:.1f} s")
    assert min(result.values()) >= 0.9, result  # each attribute, and all four together
