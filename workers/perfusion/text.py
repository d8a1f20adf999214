"""The text side of a base model: tokenizers, encoders and the vectors the UNet's attn2 see.

Perfusion edits one vector per token position: what the cross-attention layers receive. A
`TextSide` says how a pipeline makes those vectors, so fitting, covariance, generation and
the concept-token rows share one code path for every architecture:

- `SDText` (SD 1.x/2.x): one CLIP encoder, its last hidden state (width D = 768 or 1024).
- `SDXLText` (in `sdxl.py`): two encoders whose penultimate hidden states are concatenated
  (768 + 1280 = 2048), and a pooled vector from the second that conditions the UNet globally.

A concept token has one input-embedding row per encoder; the library stores them
concatenated, like the encodings (`widths` splits them).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

ARCH_SD = "sd"
ARCH_SDXL = "sdxl"
ARCH_NAMES = {ARCH_SD: "Stable Diffusion 1.x/2.x", ARCH_SDXL: "Stable Diffusion XL"}


@dataclass
class Tokens:
    """Padded token ids, one (B, L) tensor per tokenizer, and the (B, L) real-token mask.

    Real tokens are BOS, the words and the first EOS (`real_token_mask`): the positions the
    covariance is measured on and the edit applies to. Every tokenizer must agree on them.
    """

    ids: tuple[torch.Tensor, ...]
    mask: torch.Tensor


@dataclass
class PromptEncoding:
    """What `generate` passes to the pipeline, and the embeddings the edit sees."""

    prompt_embeds: torch.Tensor
    negative_embeds: torch.Tensor | None
    negative_is_zero: bool
    """SDXL's all-zero negative (force_zeros_for_empty_prompt): no real tokens to edit."""
    pipe_kwargs: dict[str, Any]


def real_token_mask(input_ids: torch.Tensor, eos_token_id: int) -> torch.Tensor:
    """(B, L) bool: BOS, the prompt's tokens and its first EOS; False on the padding after it.

    The one definition of "the prompt's real tokens": the positions the covariance C is measured
    on and the only positions the Perfusion edit touches, in fitting and every inference path.
    """
    is_eos = (input_ids == eos_token_id).long()
    return (is_eos.cumsum(-1) - is_eos) == 0  # no EOS strictly before the position


def word_ids(tokenizer: Any, word: str) -> list[int]:
    """The word's token ids in `tokenizer`, without BOS/EOS."""
    return tokenizer(word, add_special_tokens=False).input_ids


def prompt_ids(tokenizer: Any, prompt: str) -> list[int]:
    """One prompt's ids as the pipeline reads it (BOS, words, EOS, truncated), unpadded."""
    return tokenizer(prompt, truncation=True, max_length=tokenizer.model_max_length).input_ids


def swap_ids(
    ids: Sequence[int], swap: dict[int, list[int]], length: int, pad: int
) -> tuple[list[int], list[int]]:
    """Replace concept ids by superclass ids in one unpadded prompt, then pad to `length`.

    Returns (ids, align): align[p] is the position in the new ids that stands for position p of
    the padded original (a concept token maps to the last token of its superclass).
    """
    out: list[int] = []
    align: list[int] = []
    for tid in ids:
        out.extend(swap.get(tid, [tid]))
        align.append(len(out) - 1)
    end = out[-1]  # keep the EOS even if the substitution made the prompt longer
    out = out[: length - 1] + [end] if len(out) > length else out
    shift = len(out) - len(ids)
    out += [pad] * (length - len(out))
    align = [min(a, length - 1) for a in align]
    align += [min(p + shift, length - 1) for p in range(len(ids), length)]
    return out, align


class TextSide:
    """Tokenizers and text encoders of a pipeline, and the vectors its attn2 layers see."""

    arch = ARCH_SD
    tokenizer_attrs: tuple[str, ...] = ("tokenizer",)
    encoder_attrs: tuple[str, ...] = ("text_encoder",)

    def __init__(self, pipe: Any) -> None:
        self.pipe = pipe

    @property
    def tokenizers(self) -> list[Any]:
        return [getattr(self.pipe, name) for name in self.tokenizer_attrs]

    @property
    def encoders(self) -> list[nn.Module]:
        return [getattr(self.pipe, name) for name in self.encoder_attrs]

    @property
    def widths(self) -> list[int]:
        """Input-embedding (= hidden) width of each encoder."""
        return [int(enc.config.hidden_size) for enc in self.encoders]

    @property
    def dim(self) -> int:
        """Width of one token's vector as the UNet's cross-attention sees it."""
        return sum(self.widths)

    @property
    def device(self) -> torch.device:
        return self.encoders[0].device

    @property
    def dtype(self) -> torch.dtype:
        return self.encoders[0].dtype

    def tokenize(self, texts: list[str]) -> Tokens:
        """Padded, truncated ids per tokenizer, as the pipeline tokenizes prompts."""
        ids, masks = [], []
        for tokenizer in self.tokenizers:
            out = tokenizer(
                texts,
                padding="max_length",
                max_length=tokenizer.model_max_length,
                truncation=True,
                return_tensors="pt",
            )
            ids.append(out.input_ids)
            masks.append(real_token_mask(out.input_ids, tokenizer.eos_token_id))
        for mask in masks[1:]:
            if mask.shape != masks[0].shape or not torch.equal(mask, masks[0]):
                raise ValueError("the pipeline's tokenizers split this text into different tokens")
        return Tokens(tuple(ids), masks[0])

    def word_ids(self, word: str) -> list[list[int]]:
        """The word's token ids in each tokenizer (no BOS/EOS)."""
        return [word_ids(tokenizer, word) for tokenizer in self.tokenizers]

    def word_embedding(self, word: str) -> torch.Tensor:
        """(D,) float32: per encoder the mean input embedding of the word's tokens, concatenated."""
        rows = []
        for ids, encoder in zip(self.word_ids(word), self.encoders, strict=True):
            if not ids:
                raise ValueError(f"{word!r} has no tokens")
            table = encoder.get_input_embeddings().weight
            rows.append(table[torch.tensor(ids, device=table.device)].float().mean(0))
        return torch.cat(rows).detach()

    def encode(self, tokens: Tokens) -> torch.Tensor:
        """(B, L, D) vectors the attn2 layers see: CLIP's last hidden state."""
        encoder = self.encoders[0]
        return encoder(tokens.ids[0].to(encoder.device))[0]

    def template_encodings(
        self, templates: Sequence[str], word: str
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """First-tokenizer ids (T, L) and float32 encodings (T, L, D) of `templates` with `word`.

        The fit's i* and e_super are read off these: the vectors the attn2 layers see for
        the prompts the fit trains on.
        """
        tokens = self.tokenize([template.format(word) for template in templates])
        with torch.no_grad():
            encodings = self.encode(tokens).float()
        return tokens.ids[0], encodings

    def record_real_tokens(self, real_tokens: Any) -> list[Any]:
        """Hook the encoders so `real_tokens` records what attn2 sees; returns the handles.

        SD: the text encoder's last hidden state, with its ids (`RealTokens.hook`).
        """
        return [self.encoders[0].register_forward_hook(real_tokens.hook, with_kwargs=True)]

    def unet_kwargs(self, texts: list[str], resolution: int) -> dict[str, Any]:
        """Extra UNet inputs for training on `texts` at `resolution` (SD: none)."""
        return {}

    def encode_prompt(
        self, prompt: str, negative_prompt: str, n: int, use_cfg: bool
    ) -> PromptEncoding:
        """The pipeline's own prompt encoding, for a call with precomputed embeddings."""
        device = self.pipe.unet.device
        embeds, negative = self.pipe.encode_prompt(prompt, device, n, use_cfg, negative_prompt)
        return PromptEncoding(
            embeds,
            negative,
            False,
            {"prompt_embeds": embeds, "negative_prompt_embeds": negative if use_cfg else None},
        )

    def lock_pooled(self, patch: Any, superclasses: list[str]) -> None:
        """Hook global (non-attn2) conditioning so concept tokens read as their superclass."""


class SDText(TextSide):
    """SD 1.x/2.x: one tokenizer, one CLIP text encoder."""
