"""Fitting, previews, `generate` and plain diffusers calls edit the same token positions.

The positions are the prompt's real tokens (BOS, words, first EOS): those C was measured on.
A spy records which positions each edited projection actually changed (output != W e), so the
check does not depend on how the edit learns its positions.
"""

from dataclasses import replace

import numpy as np
import pytest
import torch

import workers.perfusion.processor as processor
from tests.unit.perfusion.conftest import TINY_FIT, make_images, pixels
from workers.perfusion import (
    apply_concepts,
    fit_concept,
    generate,
    load_concepts_into,
    save_concept,
)


@pytest.fixture
def changed_positions(monkeypatch):
    """[(grad enabled, (B, L) bool positions the projection changed)] for every edited call."""
    calls: list[tuple[bool, torch.Tensor]] = []
    original = processor.edited_projection

    def spy(linear, e, *args, **kwargs):
        out = original(linear, e, *args, **kwargs)
        with torch.no_grad():
            changed = (out.float() - linear(e).float()).abs().amax(-1) > 0
        calls.append((torch.is_grad_enabled(), changed.cpu()))
        return out

    monkeypatch.setattr(processor, "edited_projection", spy)
    return calls


def real_tokens(tokenizer, texts: list[str]) -> torch.Tensor:
    """The tokenizer's own attention mask: BOS, words and the first EOS, as the SD pipeline pads."""
    return tokenizer(
        texts, padding="max_length", max_length=tokenizer.model_max_length, truncation=True
    ).attention_mask


def assert_all_calls_edit(calls, expected: torch.Tensor) -> None:
    assert calls, "no edited projection ran"
    for _, changed in calls:
        assert torch.equal(changed, torch.as_tensor(expected).bool()), (changed, expected)


def first_eos_mask(ids: torch.Tensor, eos: int) -> torch.Tensor:
    """Positions up to and including the first EOS of each row."""
    first_eos = (ids == eos).int().argmax(-1)
    return torch.arange(ids.shape[1])[None] <= first_eos[:, None]


def test_fit_and_its_preview_edit_only_real_tokens(tiny_pipe, tiny_cov, changed_positions):
    seen_ids: list[tuple[bool, torch.Tensor]] = []
    hook = tiny_pipe.text_encoder.register_forward_pre_hook(
        lambda module, args: (
            seen_ids.append((torch.is_grad_enabled(), args[0].cpu())) if args else None
        )
    )
    config = replace(TINY_FIT, steps=1, preview_every=1, preview_steps=1)
    try:
        fit_concept(
            tiny_pipe, make_images(), "<pos>", "dog", config, tiny_cov, on_progress=lambda p: None
        )
    finally:
        hook.remove()
    training = [c for grad, c in changed_positions if grad]
    preview = [c for grad, c in changed_positions if not grad]
    assert training and preview
    eos = tiny_pipe.tokenizer.eos_token_id
    # the micro step's batch is the text-encoder call with gradients (i*'s refresh after the
    # step encodes the templates without); the last two: the preview's prompt, its negative
    train_ids = [ids for grad, ids in seen_ids if grad][-1]
    (_, prompt_ids), (_, negative_ids) = seen_ids[-2:]
    want = first_eos_mask(train_ids, eos)
    assert want.sum() < want.numel(), "the training prompts have padding"
    for changed in training:
        assert torch.equal(changed, want)
    want = first_eos_mask(torch.cat([negative_ids, prompt_ids]), eos)  # CFG: negative first
    for changed in preview:
        assert torch.equal(changed, want)


@pytest.mark.parametrize("guidance", [7.5, 1.0])
def test_generate_edits_only_real_tokens(tiny_pipe, fitted, changed_positions, guidance):
    prompt, negative = "a photo of a <sks> on grass", "red sofa"
    generate(
        tiny_pipe,
        prompt,
        [fitted["concept"]],
        negative_prompt=negative,
        steps=2,
        n=2,
        guidance=guidance,
    )
    with apply_concepts(tiny_pipe, [fitted["concept"]]):
        tokenizer = tiny_pipe.tokenizer
        mask = torch.tensor(real_tokens(tokenizer, [negative, prompt]))
    rows = [mask[0], mask[0], mask[1], mask[1]] if guidance > 1 else [mask[1], mask[1]]
    assert_all_calls_edit(changed_positions, torch.stack(rows))


def test_plain_diffusers_call_edits_only_real_tokens(
    tiny_pipe, fitted, tmp_path, changed_positions
):
    path = tmp_path / "sks.safetensors"
    save_concept(fitted["concept"], path)
    prompt = "a <sks> on the beach"
    with load_concepts_into(tiny_pipe, path):
        tiny_pipe(prompt, num_inference_steps=2, num_images_per_prompt=2)
        mask = torch.tensor(real_tokens(tiny_pipe.tokenizer, ["", prompt]))
    assert_all_calls_edit(changed_positions, torch.stack([mask[0], mask[0], mask[1], mask[1]]))


def test_plain_diffusers_call_and_generate_give_the_same_image(tiny_pipe, fitted):
    """Same positions, same edit: the README's one-call path equals the library's `generate`."""
    concept = fitted["concept"]
    for prompt in ("a photo of a <sks>", "a red cat on grass"):
        ours = pixels(generate(tiny_pipe, prompt, [concept], steps=3, seed=5)[0])
        with apply_concepts(tiny_pipe, [concept]):
            theirs = tiny_pipe(
                prompt, num_inference_steps=3, generator=torch.Generator("cpu").manual_seed(5)
            ).images[0]
        assert np.array_equal(ours, pixels(theirs)), prompt
