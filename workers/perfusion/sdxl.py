"""Stable Diffusion XL's text side: two encoders, one 2048-d space, a locked pooled embedding.

The attn2 layers see, per token, CLIP-L's and OpenCLIP-bigG's penultimate hidden states
concatenated (768 + 1280 = 2048 in SDXL base): C, i*, e_super and the score live there, and
the concept token has one trained row in each encoder (stored concatenated).

The pooled embedding (bigG's projected EOS state, fed to the UNet's `add_embeds` next to the
size/crop ids) conditions every ResNet block, ungated. With concepts applied it is computed
from the prompt with each concept token replaced by its superclass word — while fitting, in
`generate` and in plain `pipe(...)` calls (a forward hook on `text_encoder_2`). Why:
- it is key-locking for the global channel: the image's overall condition is "a dog", and the
  concept's identity enters only through the gated V edit, so strength and the gate control
  all of it, several concepts compose, and the file holds nothing extra;
- it keeps the trained bigG row out of a path no gate or C⁻¹ test guards;
- SDXL's bigG config has the legacy `eos_token_id = 2`, so transformers pools at the
  highest token id: with a concept token (id above EOS) in the prompt it would pool at the
  concept token, not at EOS. The substituted prompt has no concept token.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from .text import ARCH_SDXL, PromptEncoding, TextSide, Tokens, swap_ids, word_ids

SDXL_UNET = dict(
    sample_size=128,
    in_channels=4,
    out_channels=4,
    layers_per_block=2,
    block_out_channels=(320, 640, 1280),
    down_block_types=("DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
    up_block_types=("CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"),
    transformer_layers_per_block=(1, 2, 10),
    attention_head_dim=(5, 10, 20),
    cross_attention_dim=2048,
    use_linear_projection=True,
    addition_embed_type="text_time",
    addition_time_embed_dim=256,
    projection_class_embeddings_input_dim=2816,
    flip_sin_to_cos=True,
    freq_shift=0,
    norm_num_groups=32,
)
"""stabilityai/stable-diffusion-xl-base-1.0's UNet config (70 attn2 layers)."""


class PooledLock:
    """Forward hook on `text_encoder_2`: concept tokens pool as their superclass words.

    Replaces `text_embeds` of any batch row holding a concept token by the encoder's output on
    that row with each concept id swapped for its superclass ids (no gradient: the result does
    not depend on trained rows). Other rows, and prompts without concepts, are untouched.
    """

    def __init__(self, swap: dict[int, list[int]], length: int, pad: int, eos: int) -> None:
        self.swap = swap
        self.length = length
        self.pad = pad
        self.eos = eos
        self.concept_ids = torch.tensor(sorted(swap), dtype=torch.long)
        self.enabled = True

    def __call__(
        self, module: nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any], output: Any
    ) -> Any:
        ids = kwargs.get("input_ids", args[0] if args else None)
        if ids is None or not self.enabled:
            return output
        hits = torch.isin(ids, self.concept_ids.to(ids.device)).any(-1)
        if not bool(hits.any()):
            return output
        rows = []
        for row in ids[hits].tolist():
            real = row[: row.index(self.eos) + 1] if self.eos in row else row
            rows.append(swap_ids(real, self.swap, self.length, self.pad)[0])
        with torch.no_grad():
            pooled = module(torch.tensor(rows, device=ids.device))[0]
        embeds = output[0].clone()
        embeds[hits] = pooled.to(embeds.dtype)
        output["text_embeds"] = embeds
        return output


class PenultimateRecorder:
    """Forward hooks on both SDXL encoders: record the concatenated penultimate states.

    SDXL's UNet sees `cat(CLIP-L hidden_states[-2], bigG hidden_states[-2])`, which neither
    encoder returns. The first encoder's hook keeps its penultimate state (and ids); the
    second's, on the next call with hidden states of the same shape, concatenates its own and
    records the result with the real-token mask of the first encoder's ids. Calls without
    hidden states (the pooled embedding alone) record nothing and consume nothing.
    """

    def __init__(self, real_tokens: Any) -> None:
        self.real_tokens = real_tokens
        self._first: tuple[torch.Tensor, torch.Tensor] | None = None

    @staticmethod
    def _states(args: tuple[Any, ...], kwargs: dict[str, Any], output: Any) -> Any:
        ids = kwargs.get("input_ids", args[0] if args else None)
        hidden = getattr(output, "hidden_states", None)
        if not isinstance(ids, torch.Tensor) or hidden is None or len(hidden) < 2:
            return None
        states = hidden[-2]
        if tuple(ids.shape) != tuple(states.shape[:2]):
            return None
        return ids, states

    def first(
        self, module: nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any], output: Any
    ) -> None:
        self._first = self._states(args, kwargs, output)

    def second(
        self, module: nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any], output: Any
    ) -> None:
        found = self._states(args, kwargs, output)
        if found is None:  # a pooled-only call (e.g. the PooledLock's own): keep waiting
            return
        first, self._first = self._first, None
        if first is None or first[1].shape[:2] != found[1].shape[:2]:
            return
        ids, states = first
        self.real_tokens.record(ids, torch.cat([states, found[1].to(states.device)], dim=-1))


class SDXLText(TextSide):
    """SDXL: `tokenizer`/`text_encoder` (CLIP-L) and `tokenizer_2`/`text_encoder_2` (bigG)."""

    arch = ARCH_SDXL
    tokenizer_attrs = ("tokenizer", "tokenizer_2")
    encoder_attrs = ("text_encoder", "text_encoder_2")

    def encode(self, tokens: Tokens) -> torch.Tensor:
        """(B, L, 2048): both encoders' penultimate hidden states, as `encode_prompt` makes them."""
        parts = []
        for encoder, ids in zip(self.encoders, tokens.ids, strict=True):
            out = encoder(ids.to(encoder.device), output_hidden_states=True)
            parts.append(out.hidden_states[-2])
        return torch.cat(parts, dim=-1)

    def record_real_tokens(self, real_tokens: Any) -> list[Any]:
        """Hook both encoders so `real_tokens` records the 2048-d states attn2 sees."""
        recorder = PenultimateRecorder(real_tokens)
        return [
            self.encoders[0].register_forward_hook(recorder.first, with_kwargs=True),
            self.encoders[1].register_forward_hook(recorder.second, with_kwargs=True),
        ]

    def pooled(self, texts: list[str]) -> torch.Tensor:
        """(B, P) pooled embeddings of `texts` (bigG's projected EOS state)."""
        tokens = self.tokenize(texts)
        encoder = self.encoders[1]
        return encoder(tokens.ids[1].to(encoder.device))[0]

    def time_ids(self, resolution: int, batch: int) -> torch.Tensor:
        """(B, 6) original size, crop top-left, target size: an uncropped square image."""
        unet = self.pipe.unet.config
        added = 6 * unet.addition_time_embed_dim + int(self.encoders[1].config.projection_dim)
        if added != unet.projection_class_embeddings_input_dim:
            raise ValueError("this UNet expects other added conditions (an SDXL refiner?)")
        row = torch.tensor([resolution, resolution, 0, 0, resolution, resolution])
        return row.repeat(batch, 1)

    def unet_kwargs(self, texts: list[str], resolution: int) -> dict[str, Any]:
        """SDXL's added conditions for training on `texts` (already superclass-substituted)."""
        with torch.no_grad():
            pooled = self.pooled(texts)
        device, dtype = self.pipe.unet.device, self.pipe.unet.dtype
        return {
            "added_cond_kwargs": {
                "text_embeds": pooled.to(device, dtype),
                "time_ids": self.time_ids(resolution, len(texts)).to(device, dtype),
            }
        }

    def encode_prompt(
        self, prompt: str, negative_prompt: str, n: int, use_cfg: bool
    ) -> PromptEncoding:
        """SDXL's `encode_prompt`; an empty negative prompt stays the pipeline's own default.

        With `force_zeros_for_empty_prompt` (SDXL base) that default is all-zero embeddings,
        which a plain `pipe(prompt)` uses too.
        """
        pipe = self.pipe
        negative = negative_prompt or None
        embeds, neg, pooled, neg_pooled = pipe.encode_prompt(
            prompt,
            device=pipe.unet.device,
            num_images_per_prompt=n,
            do_classifier_free_guidance=use_cfg,
            negative_prompt=negative,
        )
        zero = use_cfg and negative is None and bool(pipe.config.force_zeros_for_empty_prompt)
        kwargs = {
            "prompt_embeds": embeds,
            "pooled_prompt_embeds": pooled,
            "negative_prompt_embeds": neg if use_cfg else None,
            "negative_pooled_prompt_embeds": neg_pooled if use_cfg else None,
        }
        return PromptEncoding(embeds, neg if use_cfg else None, zero, kwargs)

    def lock_pooled(self, patch: Any, superclasses: list[str]) -> None:
        """Install the `PooledLock` hook on `text_encoder_2` (removed with the patch)."""
        base_tokenizer = patch.original_tokenizers[1]
        swap: dict[int, list[int]] = {}
        for tid, superclass in zip(patch.token_ids_per[1], superclasses, strict=True):
            ids = word_ids(base_tokenizer, superclass)
            if not ids:
                raise ValueError(f"superclass {superclass!r} has no tokens")
            swap[tid] = ids
        pad = base_tokenizer.pad_token_id
        if pad is None:
            pad = base_tokenizer.eos_token_id
        eos = int(base_tokenizer.eos_token_id)
        hook = PooledLock(swap, base_tokenizer.model_max_length, int(pad), eos)
        handle = self.encoders[1].register_forward_hook(hook, with_kwargs=True)
        patch.hooks.append(handle)
        patch.pooled_locks.append(hook)
