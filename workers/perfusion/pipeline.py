"""Base-model loading, fingerprints, cross-attention discovery and temporary concept tokens."""

from __future__ import annotations

import contextlib
import copy
import hashlib
import os
import warnings
import weakref
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from diffusers import StableDiffusionPipeline
from diffusers.models.attention_processor import Attention
from torch import nn

from .sides import text_side
from .text import real_token_mask

DEFAULT_BASE = Path(__file__).resolve().parent.parent / "toyworld" / "model"

_FINGERPRINTS: weakref.WeakKeyDictionary[nn.Module, str] = weakref.WeakKeyDictionary()


def default_base() -> str:
    """The base model used when none is given: env PERFUSION_BASE, else the bundled toy world."""
    return os.environ.get("PERFUSION_BASE") or str(DEFAULT_BASE)


SDXL_PIPELINES = ("StableDiffusionXLPipeline",)


def pipeline_class_name(base: str) -> str:
    """`_class_name` of the base model's model_index.json (local folder or Hugging Face id)."""
    from diffusers import DiffusionPipeline

    return str(DiffusionPipeline.load_config(base).get("_class_name", ""))


def load_pipeline(
    base: str | None = None, device: str = "cpu", dtype: torch.dtype | None = None
) -> StableDiffusionPipeline:
    """Load an SD 1.x/2.x or SDXL pipeline from a local diffusers folder or a Hugging Face id.

    The class comes from the model's model_index.json: StableDiffusionXLPipeline loads as SDXL,
    anything else as StableDiffusionPipeline.
    """
    base = base or default_base()
    if dtype is None:
        dtype = torch.float16 if device.startswith("cuda") else torch.float32
    if pipeline_class_name(base) in SDXL_PIPELINES:
        from diffusers import StableDiffusionXLPipeline

        pipe = StableDiffusionXLPipeline.from_pretrained(
            base, torch_dtype=dtype, add_watermarker=False
        )
    else:
        pipe = StableDiffusionPipeline.from_pretrained(
            base, torch_dtype=dtype, safety_checker=None, requires_safety_checker=False
        )
    pipe.set_progress_bar_config(disable=True)
    pipe._perfusion_base_id = str(base)  # recorded in concept files
    return pipe.to(device)


def base_model_id(pipe: StableDiffusionPipeline) -> str:
    """The id or path the pipeline was loaded from, or its config name."""
    return getattr(pipe, "_perfusion_base_id", None) or str(pipe.config.get("_name_or_path", ""))


def model_fingerprint(pipe: StableDiffusionPipeline) -> str:
    """Stable SHA-256 of the text encoder weights (cast to fp16) and the tokenizer vocabulary.

    Weights are hashed in fp16 so a model loaded in fp32 or fp16 from the same checkpoint gets the
    same fingerprint (bf16 loads differ). The result is cached per text-encoder module and always
    describes the base model, also while concept tokens are applied. SDXL hashes both encoders
    and tokenizers, in order (the first pair exactly as for SD).
    """
    encoder = pipe.text_encoder
    cached = _FINGERPRINTS.get(encoder)
    if cached is not None:
        return cached
    text = text_side(pipe)
    digest = hashlib.sha256()
    for tokenizer, enc in zip(text.tokenizers, text.encoders, strict=True):
        if isinstance(enc.get_input_embeddings(), ExtendedEmbedding):
            raise RuntimeError("compute model_fingerprint before concept tokens are added")
        for name, tensor in sorted(enc.state_dict().items()):
            data = tensor.detach().to("cpu", torch.float16).contiguous()
            digest.update(f"{name}:{tuple(data.shape)};".encode())
            digest.update(data.view(torch.uint8).numpy().tobytes())
        for token, index in sorted(tokenizer.get_vocab().items(), key=lambda kv: kv[1]):
            digest.update(f"{index}={token}\n".encode())
    fingerprint = digest.hexdigest()
    _FINGERPRINTS[encoder] = fingerprint
    return fingerprint


def cross_attention_layers(unet: nn.Module) -> dict[str, Attention]:
    """Every cross-attention module of the UNet (the `attn2` layers), by module name."""
    return {
        name: module
        for name, module in unet.named_modules()
        if isinstance(module, Attention) and module.is_cross_attention
    }


class ExtendedEmbedding(nn.Module):
    """Wraps the text encoder's token embedding and adds rows for concept tokens.

    The base embedding is neither copied nor modified: ids listed in `token_ids` read their
    vector from `extra` instead. This is what makes removal exact and training touch one row.
    """

    def __init__(
        self,
        base: nn.Embedding,
        token_ids: list[int],
        extra: torch.Tensor,
        columns: slice = slice(None),
    ) -> None:
        super().__init__()
        self.base = base
        self.register_buffer("token_ids", torch.tensor(token_ids, dtype=torch.long), False)
        self.extra = extra  # (k, D); a Parameter while training, a plain tensor otherwise
        self.columns = columns  # this encoder's part of the concatenated rows (SDXL: two)

    @property
    def weight(self) -> torch.Tensor:  # some callers read .weight for dtype/device
        return self.base.weight

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        known = input_ids.clamp(max=self.base.num_embeddings - 1)
        out = self.base(known)
        for j in range(len(self.token_ids)):
            hit = (input_ids == self.token_ids[j]).unsqueeze(-1)
            out = torch.where(hit, self.extra[j, self.columns].to(out.dtype), out)
        return out


_PATCHED: weakref.WeakKeyDictionary[object, dict[tuple[str, ...], object]] = (
    weakref.WeakKeyDictionary()
)
_PATCHED_PER_TOKENIZER = 8


def _patched_tokenizer(tokenizer: object, tokens: tuple[str, ...]) -> object:
    """A copy of `tokenizer` that knows `tokens`, reused across applications of the same tokens.

    Copying a 49k-entry CLIP tokenizer costs ~0.1 s, about 13 % of a 25-step SD 1.5 image on an
    H200; the original is never modified, and the copy only ever gains these tokens.
    """
    cache = _PATCHED.setdefault(tokenizer, {})
    patched = cache.pop(tokens, None)
    if patched is None:
        patched = copy.deepcopy(tokenizer)
        patched.add_tokens(list(tokens))
    cache[tokens] = patched  # most recently used last
    while len(cache) > _PATCHED_PER_TOKENIZER:
        cache.pop(next(iter(cache)))
    return patched


class RealTokens:
    """Finds the real-token mask of the text encodings that reach the UNet.

    Forward hooks on the text encoders (`TextSide.record_real_tokens`) record each encoding the
    attn2 layers would see with its mask: SD's last hidden state; SDXL's two penultimate states
    concatenated, recorded when the second encoder runs. The UNet sees those encodings as they
    are (the fit), or rows of them repeated per image and concatenated with the negative
    prompt's (the pipelines): `mask_for` matches each row by identity, else by content, so no
    caller has to pass positions. An all-zero row (SDXL's zero negative for an empty negative
    prompt) has no real tokens. A row that matches nothing (encodings made elsewhere, e.g.
    clip_skip or prompt weighting) is edited at every position, with a warning.
    """

    def __init__(self, eos_token_id: int, keep: int = 8) -> None:
        self.eos_token_id = eos_token_id
        # (the encodings themselves, weakly: identity; detached: content; the mask)
        self._seen: deque[tuple[weakref.ref, torch.Tensor, torch.Tensor]] = deque(maxlen=keep)
        self._last: tuple[torch.Tensor, int, torch.Tensor] | None = None

    def record(
        self, input_ids: torch.Tensor, encodings: torch.Tensor, mask: torch.Tensor | None = None
    ) -> None:
        """Remember one text-encoder call: (B, L) ids and their (B, L, D) encodings.

        `mask`: their real-token mask if the caller has it already (else computed from ids).
        """
        if mask is None:
            mask = real_token_mask(input_ids, self.eos_token_id)
        self._seen.append((weakref.ref(encodings), encodings.detach(), mask.to(encodings.device)))

    def hook(self, module: nn.Module, args: tuple, kwargs: dict, output: object) -> None:
        """`register_forward_hook(..., with_kwargs=True)` callback for SD's text encoder."""
        ids = kwargs.get("input_ids", args[0] if args else None)
        encodings = output[0]  # last_hidden_state, for a ModelOutput or a tuple
        if isinstance(ids, torch.Tensor) and tuple(ids.shape) == tuple(encodings.shape[:2]):
            self.record(ids, encodings)

    def mask_for(self, e: torch.Tensor) -> torch.Tensor:
        """(B, L) bool mask of the real tokens of encodings `e` (B, L, D)."""
        last = self._last
        if last is not None and last[0] is e and last[1] == e._version:
            return last[2]
        mask = self._find(e)
        self._last = (e, e._version, mask)
        return mask

    def _find(self, e: torch.Tensor) -> torch.Tensor:
        # By identity first: the fit's encodings reach the UNet as they are, and comparing
        # contents reads the comparison back on the host (a device sync per step).
        for ref, _, mask in self._seen:
            if ref() is e:
                return mask
        rows = torch.ones(e.shape[:2], dtype=torch.bool, device=e.device)
        found = torch.zeros(e.shape[0], dtype=torch.bool, device=e.device)
        with torch.no_grad():
            zero = (e == 0).flatten(1).all(-1)  # (B,): SDXL's zero negative, nothing to edit
            rows[zero] = False
            found |= zero
            if found.all():
                return rows
            for _, encodings, mask in self._seen:
                if encodings.shape[1:] != e.shape[1:]:
                    continue
                same = (encodings.to(e.device, e.dtype)[None] == e[:, None]).flatten(2).all(-1)
                hit = same.any(1) & ~found  # (B,): row b equals some recorded row
                if hit.any():
                    rows[hit] = mask.to(e.device)[same[hit].int().argmax(1)]
                    found |= hit
                if found.all():
                    return rows
        warnings.warn(
            "Perfusion: text encodings not produced by this pipeline's text encoder reach the "
            "UNet; their padding positions are edited too",
            stacklevel=2,
        )
        return rows


@dataclass
class TokenPatch:
    """Concept tokens added to copies of the tokenizers and spliced into the text encoders.

    One tokenizer/encoder pair for SD, two for SDXL; the first pair's fields have the
    single-encoder names. While installed it also records the real-token masks of the
    encodings the UNet's attn2 layers see (`real_tokens`, via the text side's hooks), which
    the Perfusion processors read. `hooks` are removable handles (those recording hooks and
    SDXL's pooled-embedding lock).
    """

    pipe: StableDiffusionPipeline
    tokens: list[str]
    original_tokenizers: list[object]
    original_embeddings: list[nn.Module]
    token_ids_per: list[list[int]]
    embeddings: list[ExtendedEmbedding]
    real_tokens: RealTokens | None = None
    hooks: list[object] = field(default_factory=list)
    pooled_locks: list[Any] = field(default_factory=list)
    """SDXL's `PooledLock`s (also in `hooks`), paused by `pooled_locks_paused`."""

    @property
    def token_ids(self) -> list[int]:
        """The tokens' ids in the first tokenizer."""
        return self.token_ids_per[0]

    @property
    def embedding(self) -> ExtendedEmbedding:
        return self.embeddings[0]

    @classmethod
    def add(
        cls,
        pipe: StableDiffusionPipeline,
        tokens: list[str],
        vectors: torch.Tensor,
        superclasses: list[str] | None = None,
    ) -> TokenPatch:
        """Install `tokens` with input embeddings `vectors` (k, D); undo with `remove()`.

        D is the text side's width: for SDXL each row is the two encoders' rows concatenated.
        With `superclasses`, global conditioning outside attn2 reads each concept token as its
        superclass (SDXL's pooled embedding; nothing for SD).
        """
        text = text_side(pipe)
        if vectors.shape[-1] != text.dim:
            raise ValueError(f"token vectors are {vectors.shape[-1]}-d, the text side {text.dim}")
        for tokenizer in text.tokenizers:
            for token in tokens:
                if token in tokenizer.get_vocab() or len(tokenizer.tokenize(token)) == 0:
                    raise ValueError(
                        f"concept token {token!r} already means something to the tokenizer"
                    )
        patch = cls(pipe, list(tokens), [], [], [], [])
        offset = 0
        for tok_attr, encoder, width in zip(
            text.tokenizer_attrs, text.encoders, text.widths, strict=True
        ):
            tokenizer = getattr(pipe, tok_attr)
            base = encoder.get_input_embeddings()
            patched = _patched_tokenizer(tokenizer, tuple(tokens))
            token_ids = [patched.convert_tokens_to_ids(t) for t in tokens]
            columns = slice(offset, offset + width)
            embedding = ExtendedEmbedding(base, token_ids, vectors, columns).to(base.weight.device)
            offset += width
            setattr(pipe, tok_attr, patched)
            encoder.set_input_embeddings(embedding)
            patch.original_tokenizers.append(tokenizer)
            patch.original_embeddings.append(base)
            patch.token_ids_per.append(token_ids)
            patch.embeddings.append(embedding)
        try:
            patch.real_tokens = RealTokens(int(text.tokenizers[0].eos_token_id))
            patch.hooks.extend(text.record_real_tokens(patch.real_tokens))
            if superclasses is not None:
                text.lock_pooled(patch, superclasses)
        except Exception:
            patch.remove()
            raise
        return patch

    @contextlib.contextmanager
    def pooled_locks_paused(self) -> Iterator[None]:
        """Pooled embeddings are computed plainly inside (SDXL's lock off).

        For the fit's own encoder calls, which use the hidden states only (the UNet's pooled
        input comes from the superclass prompts): the lock would re-encode each batch with the
        concept swapped out, and read on the host whether the batch holds a concept token.
        """
        for lock in self.pooled_locks:
            lock.enabled = False
        try:
            yield
        finally:
            for lock in self.pooled_locks:
                lock.enabled = True

    def remove(self) -> None:
        """Put back the original tokenizer objects and embedding modules, drop the hooks."""
        for hook in self.hooks:
            hook.remove()  # type: ignore[attr-defined]
        self.hooks = []
        text = text_side(self.pipe)
        for tok_attr, encoder, tokenizer, embedding in zip(
            text.tokenizer_attrs,
            text.encoders,
            self.original_tokenizers,
            self.original_embeddings,
            strict=False,
        ):
            setattr(self.pipe, tok_attr, tokenizer)
            encoder.set_input_embeddings(embedding)


def encode_ids(pipe: StableDiffusionPipeline, input_ids: torch.Tensor) -> torch.Tensor:
    """Text-encoder outputs (B, L, D) for token ids, as the SD pipeline computes them."""
    encoder = pipe.text_encoder
    return encoder(input_ids.to(encoder.device))[0]


def tokenize(pipe: StableDiffusionPipeline, texts: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
    """First-tokenizer ids and the real-token mask, as the pipeline tokenizes prompts."""
    tokens = text_side(pipe).tokenize(texts)
    return tokens.ids[0], tokens.mask
