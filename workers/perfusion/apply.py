"""Apply concepts to a diffusers pipeline (processors + temporary tokens) and remove them."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from diffusers import StableDiffusionPipeline
from diffusers.models.attention_processor import Attention
from torch import nn

from .concept import Concept, ConceptMismatch, load_concept, validate_concept
from .pipeline import TokenPatch, cross_attention_layers, model_fingerprint
from .processor import PerfusionAttnProcessor, TextSpaceEdit, make_text_edit
from .sides import text_side

DEFAULT_BETA = 0.7
DEFAULT_TAU = 0.15
# The slider's default: λ = 1, the trained o*_V at the paper's gate (app/jobs/params.py agrees).
DEFAULT_STRENGTH = 0.5


# Strength 1: the concept's gate opened a little (the paper's β) and its locked key target
# scaled, so image positions attend to the concept token more strongly. Chosen on the toy
# world's harness subjects (8 fits, 16 images each: hit rate 0.34 at the default, 0.52 at 1,
# backgrounds all kept; key × 2 or β 0.5 lost shapes or backgrounds). Over 16 fits of the
# harness and known-attribute subjects it beat key × 1.25 (0.438 vs 0.418, default 0.398), but it
# does not help the held-back subjects (0.28 at the default, 0.16 at 1) nor the known-attribute
# ones alone (0.37 and 0.37): the model card, "The strength slider", and docs/benchmarks.md.
STRONGEST_BETA = 0.65
STRONGEST_KEY = 1.5


@dataclass
class ConceptControl:
    """Inference controls of one concept.

    `beta`, `tau`: the gate σ((s − β)/τ); lower beta = stronger concept, tau = gate softness.
    `value` (λ): where the gated value target sits on the line from the superclass's value to
    the trained one, o*_V(λ) = W_v e_super + λ (o*_V − W_v e_super): 0 = the superclass word's
    value, 1 = the trained o*_V.
    `key` (κ): the gated key target is κ·o*_K = κ·W_k e_super. Its direction stays locked to the
    superclass's (where the subject goes); κ > 1 raises the concept token's attention logits,
    so more of the image draws on its value: the pre-softmax form of Prompt-to-Prompt's
    attention re-weighting (Hertz et al. 2022, §3.2). 1 = the paper's edit.
    """

    beta: float = 0.7
    tau: float = DEFAULT_TAU
    value: float = 1.0
    key: float = 1.0


def strength_to_control(strength: float) -> ConceptControl:
    """Map strength in [0, 1] onto the concept's controls, monotone in how personal it looks.

    0 → 0.5: the value target moves from the superclass's (λ 0: with the locked key the token
    then stands for the superclass, barely personal) to the trained o*_V (λ 1), at the paper's
    default gate β 0.7, τ 0.15. 0.5 is the paper's concept exactly.
    0.5 → 1: the trained concept made stronger by the paper's own knob, the gate (β 0.7 → 0.65),
    and by its attention weight (key κ 1 → 1.5). Driving λ past 1 instead (2·strength, until
    2026-12-07) overshot: the toy world's hit rate fell from 0.44 at λ 1 to 0.06 at λ 2.
    """
    if not 0.0 <= strength <= 1.0:
        raise ValueError(f"strength must be in [0, 1], got {strength}")
    if strength <= 0.5:
        return ConceptControl(beta=DEFAULT_BETA, tau=DEFAULT_TAU, value=2.0 * strength)
    up = 2.0 * strength - 1.0
    return ConceptControl(
        beta=DEFAULT_BETA + up * (STRONGEST_BETA - DEFAULT_BETA),
        tau=DEFAULT_TAU,
        value=1.0,
        key=1.0 + up * (STRONGEST_KEY - 1.0),
    )


def key_target(attn: Attention, e_super: torch.Tensor) -> torch.Tensor:
    """Locked key target o*_K = W_k e_super (float32, no bias)."""
    weight = attn.to_k.weight
    return F.linear(e_super.to(weight.device, torch.float32), weight.float())


def value_targets(
    concept: Concept, pipe: StableDiffusionPipeline, value: float
) -> dict[str, torch.Tensor]:
    """The gated value targets o*_V(λ) = W_v e_super + λ (o*_V − W_v e_super) per layer, fp32."""
    device = pipe.unet.device
    targets = {}
    for name, attn in cross_attention_layers(pipe.unet).items():
        trained = concept.o_v[name].to(device, torch.float32)
        if value != 1.0:
            weight = attn.to_v.weight
            superclass = F.linear(concept.e_super.to(weight.device, torch.float32), weight.float())
            trained = superclass + value * (trained - superclass)
        targets[name] = trained
    return targets


def key_targets(concept: Concept, pipe: StableDiffusionPipeline) -> dict[str, torch.Tensor]:
    """The concept's o*_K per layer: as stored in memory, else recomputed from e_super."""
    if concept.o_k:
        return concept.o_k
    return {n: key_target(a, concept.e_super) for n, a in cross_attention_layers(pipe.unet).items()}


def install_processors(
    unet: nn.Module,
    edit: TextSpaceEdit,
    o_k: dict[str, torch.Tensor],
    o_v: dict[str, list[torch.Tensor]],
    tokens: TokenPatch,
) -> dict[str, object]:
    """Swap a PerfusionAttnProcessor onto every cross-attention layer; return the originals.

    The edit applies at the real tokens of the prompts the patched text encoder encodes.
    """
    edit.positions = tokens.real_tokens
    original = dict(unet.attn_processors)
    swapped = dict(original)
    for name in cross_attention_layers(unet):
        swapped[f"{name}.processor"] = PerfusionAttnProcessor(edit, o_k[name], o_v[name])
    unet.set_attn_processor(swapped)  # set_attn_processor pops from the dict it is given
    return original


class AppliedConcepts:
    """Handle of concepts applied to a pipeline; `remove()` (or leaving a `with`) undoes it."""

    def __init__(
        self,
        pipe: StableDiffusionPipeline,
        concepts: list[Concept],
        edit: TextSpaceEdit,
        tokens: TokenPatch,
        original_processors: dict[str, object],
        global_locking: bool,
        controls: list[ConceptControl],
    ) -> None:
        self.pipe = pipe
        self.controls = controls
        self.concepts = concepts
        self.edit = edit
        self.tokens = tokens
        self.original_processors = original_processors
        self.global_locking = global_locking
        self.active = True

    def remove(self) -> None:
        """Restore the original processors, tokenizer and embedding module (idempotent)."""
        if not self.active:
            return
        self.pipe.unet.set_attn_processor(dict(self.original_processors))
        self.tokens.remove()
        self.active = False
        if getattr(self.pipe, "_perfusion_applied", None) is self:
            self.pipe._perfusion_applied = None

    def __enter__(self) -> AppliedConcepts:
        return self

    def __exit__(self, *exc: object) -> None:
        self.remove()


def apply_concepts(
    pipe: StableDiffusionPipeline,
    concepts: list[Concept],
    controls: list[ConceptControl] | None = None,
    global_locking: bool = False,
) -> AppliedConcepts:
    """Apply concepts (replacing any applied before); their tokens work in ordinary prompts.

    All concepts must come from this base model and share one covariance. `controls` gives
    each concept's beta/tau; default: the concept's own defaults.
    """
    remove_concepts(pipe)
    concepts = list(concepts)
    if not concepts:
        raise ValueError("apply_concepts needs at least one concept")
    if controls is None:
        controls = [ConceptControl(c.default_beta, c.default_tau) for c in concepts]
    if len(controls) != len(concepts):
        raise ValueError("one control per concept")
    tokens = [c.token for c in concepts]
    if len(set(tokens)) != len(tokens):
        raise ValueError(f"concept tokens must differ, got {tokens}")
    model_fingerprint(pipe)  # cache it while the tokenizer is still the base one
    for concept in concepts:
        validate_concept(concept, pipe)
    if len({c.covariance_fingerprint for c in concepts}) != 1:
        raise ConceptMismatch("concepts were trained with different covariances; refit them")

    device = pipe.unet.device
    enc_dtype = text_side(pipe).dtype
    vectors = torch.stack([c.token_embedding for c in concepts]).to(device, enc_dtype)
    edit = make_text_edit(
        torch.stack([c.i_star for c in concepts]).to(device, torch.float32),
        torch.stack([c.score for c in concepts]).to(device, torch.float32),
        torch.tensor([c.i_star_energy for c in concepts], device=device),
        [ctl.beta for ctl in controls],
        [ctl.tau for ctl in controls],
    )
    layers = cross_attention_layers(pipe.unet)
    all_o_k = [key_targets(c, pipe) for c in concepts]
    o_k = {
        n: torch.stack(
            [
                k[n].to(device, torch.float32) * ctl.key
                for k, ctl in zip(all_o_k, controls, strict=True)
            ]
        )
        for n in layers
    }
    all_o_v = [value_targets(c, pipe, ctl.value) for c, ctl in zip(concepts, controls, strict=True)]
    o_v = {n: [v[n] for v in all_o_v] for n in layers}
    patch = TokenPatch.add(pipe, tokens, vectors, [c.superclass for c in concepts])
    try:
        original = install_processors(pipe.unet, edit, o_k, o_v, patch)
    except Exception:
        patch.remove()
        raise
    handle = AppliedConcepts(pipe, concepts, edit, patch, original, global_locking, controls)
    pipe._perfusion_applied = handle
    return handle


def remove_concepts(pipe: StableDiffusionPipeline) -> None:
    """Remove whatever concepts are applied to the pipeline (no-op if none)."""
    handle = getattr(pipe, "_perfusion_applied", None)
    if handle is not None:
        handle.remove()


def load_concepts_into(
    pipe: StableDiffusionPipeline,
    *paths: str | Path,
    strength: float | list[float] | None = None,
    global_locking: bool = False,
) -> AppliedConcepts:
    """One call for plain diffusers use: load concept files and apply them.

    >>> with load_concepts_into(pipe, "dog.safetensors"):
    ...     pipe("a <my-dog> on the moon").images
    """
    concepts = [load_concept(p) for p in paths]
    controls = None
    if strength is not None:
        strengths = strength if isinstance(strength, list) else [strength] * len(concepts)
        controls = [strength_to_control(s) for s in strengths]
    return apply_concepts(pipe, concepts, controls, global_locking)
