"""Generated PNGs carry their parameters twice: JSON for this studio, A1111's text for others."""

from __future__ import annotations

import io

from PIL import Image

from workers.images import A1111_KEY, PARAMETERS_KEY, a1111_parameters, png_bytes, png_parameters

PARAMS = {
    "prompt": "a <candy> on a green background",
    "negative_prompt": "blurry, low quality",
    "steps": 25,
    "guidance": 7.5,
    "strength": 0.6,
    "seed": 1234,
    "index": 0,
    "sampler": "DDIMScheduler",
    "tokens": ["<candy>"],
    "concept_ids": ["c0ffee"],
    "base_model": "/srv/studio/workers/toyworld/model",
}


def test_the_a1111_parameters_chunk_is_what_viewers_parse() -> None:
    png = png_bytes(Image.new("RGB", (64, 48), (10, 20, 30)), PARAMS)
    text = Image.open(io.BytesIO(png)).text
    assert text[A1111_KEY] == (
        "a <candy> on a green background\n"
        "Negative prompt: blurry, low quality\n"
        "Steps: 25, Sampler: DDIMScheduler, CFG scale: 7.5, Seed: 1234, Size: 64x48, "
        "Model: toyworld/model, Perfusion strength: 0.6, Perfusion concepts: <candy>"
    )
    assert png_parameters(png) == PARAMS and PARAMETERS_KEY in text  # the JSON one stays


def test_without_a_negative_prompt_and_with_commas_in_values() -> None:
    text = a1111_parameters(
        {"prompt": "a dog, running", "steps": 4, "seed": 1, "base_model": "org/model, v2"},
        (512, 512),
    )
    assert text == 'a dog, running\nSteps: 4, Seed: 1, Size: 512x512, Model: "org/model, v2"'
