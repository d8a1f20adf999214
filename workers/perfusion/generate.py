"""Image generation with concepts, progress and cancellation."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from diffusers import StableDiffusionPipeline
from PIL import Image

from .apply import AppliedConcepts, ConceptControl, apply_concepts
from .concept import Concept
from .sides import text_side
from .text import Tokens, prompt_ids, swap_ids, word_ids


class GenerationCanceled(Exception):
    """`should_cancel` returned True between two denoising steps."""


def superclass_key_states(pipe: StableDiffusionPipeline, prompt: str, applied: AppliedConcepts):
    """Encoding of `prompt` with each concept token replaced by its superclass word.

    Positions are aligned with the original prompt's tokens: a concept token maps to the last
    token of its (possibly multi-token) superclass, other tokens to themselves. Every tokenizer
    substitutes its own ids; the alignment must agree across them.
    """
    text = text_side(pipe)
    ids, aligns = [], []
    for tokenizer, token_ids in zip(text.tokenizers, applied.tokens.token_ids_per, strict=True):
        row = prompt_ids(tokenizer, prompt)
        swap = {
            tid: word_ids(tokenizer, c.superclass)
            for tid, c in zip(token_ids, applied.concepts, strict=True)
        }
        pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else row[-1]
        substituted, align = swap_ids(row, swap, tokenizer.model_max_length, pad)
        ids.append(torch.tensor([substituted]))
        aligns.append(align)
    if any(a != aligns[0] for a in aligns[1:]):
        raise ValueError("the tokenizers split the superclass words differently")
    encoding = text.encode(Tokens(tuple(ids), torch.ones_like(ids[0], dtype=torch.bool)))
    return encoding[:, aligns[0]]


def generate(
    pipe: StableDiffusionPipeline,
    prompt: str,
    concepts: Sequence[Concept] = (),
    negative_prompt: str = "",
    seed: int = 0,
    steps: int = 25,
    guidance: float = 7.5,
    n: int = 1,
    controls: list[ConceptControl] | None = None,
    on_step: Callable[[int, int], None] | None = None,
    should_cancel: Callable[[], bool] | None = None,
    global_locking: bool = False,
    height: int | None = None,
    width: int | None = None,
) -> list[Image.Image]:
    """Generate `n` images; concepts are applied for this call only and removed afterwards.

    If `concepts` is empty, whatever is already applied to the pipeline stays in effect.
    `on_step(done, total)` is called after each denoising step; cancellation is checked there.
    """
    applied = apply_concepts(pipe, list(concepts), controls, global_locking) if concepts else None
    active = applied or getattr(pipe, "_perfusion_applied", None)
    use_cfg = guidance > 1.0
    text = text_side(pipe)
    try:
        with torch.no_grad():
            encoded = text.encode_prompt(prompt, negative_prompt, n, use_cfg)
            prompt_embeds, negative_embeds = encoded.prompt_embeds, encoded.negative_embeds
            if active is not None and active.global_locking:
                keys = superclass_key_states(pipe, prompt, active).to(prompt_embeds.dtype)
                keys = keys.repeat_interleave(n, dim=0)
                active.edit.key_states = torch.cat([negative_embeds, keys]) if use_cfg else keys

        def callback(pipeline, index, timestep, tensors):
            if on_step is not None:
                on_step(index + 1, steps)
            if should_cancel is not None and should_cancel():
                raise GenerationCanceled(f"canceled at step {index + 1}/{steps}")
            return tensors

        result = pipe(
            **encoded.pipe_kwargs,
            num_inference_steps=steps,
            guidance_scale=guidance,
            generator=torch.Generator("cpu").manual_seed(seed),
            callback_on_step_end=callback,
            height=height,
            width=width,
        )
        return list(result.images)
    finally:
        if active is not None:
            active.edit.key_states = None
        if applied is not None:
            applied.remove()
