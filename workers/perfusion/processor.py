"""The Perfusion edit: gated rank-one key/value edits inside a diffusers attention processor.

Per cross-attention layer, with P = (C + λI)⁻¹ and concepts j = 1..m:

    s_j(e) = eᵀ P i*_j / (i*_jᵀ P i*_j)
    h(e)   = W (e − Σ_j (eᵀ P u_j) u_j) + Σ_j σ((s_j(e) − β_j) / τ_j) · o*_j

{u_j} is a P-orthonormal basis of span{i*_j}; for one concept the sum is exactly s(e) · i*.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from diffusers.models.attention_processor import Attention

from .pipeline import RealTokens


@dataclass
class TextSpaceEdit:
    """The layer-independent part of the edit, shared by every processor of one application.

    All tensors float32. `score` columns are P i*_j / (i*_jᵀ P i*_j), so s = e @ score;
    the removal term is (e @ proj) @ basis.T with basis = U and proj = P U.
    """

    basis: torch.Tensor  # (D, m)
    proj: torch.Tensor  # (D, m)
    score: torch.Tensor  # (D, m)
    beta: torch.Tensor  # (m,)
    tau: torch.Tensor  # (m,)
    key_states: torch.Tensor | None = None  # global locking: K pathway input, or None
    positions: RealTokens | None = None
    """Where the edit applies: the real tokens (BOS, words, first EOS) of each encoding, the
    positions C was measured on; None = every position. Set from the TokenPatch by fitting and
    `apply_concepts`, so fitting, previews, `generate` and plain `pipe(...)` calls all edit the
    same positions. Padding lies outside C's distribution, where s(e) is not ~0: editing it
    would move prompts that do not contain the concept."""


def concept_basis(
    i_stars: torch.Tensor, cinv_i_stars: torch.Tensor, check: bool = True
) -> tuple[torch.Tensor, torch.Tensor]:
    """P-orthonormal basis U of span{i*_j} and P U, from I (m, D) and P I (m, D).

    With Gram G = I P Iᵀ = L Lᵀ (Cholesky), U = Iᵀ L⁻ᵀ satisfies Uᵀ P U = 1 and P U = (P I)ᵀ L⁻ᵀ.
    Computed in float64. `check=False` skips reading the factorisation's status on the host
    (the fit's per-step refresh of one concept, whose 1×1 Gram i*ᵀ P i* is positive).
    """
    i64, pi64 = i_stars.double(), cinv_i_stars.double()
    gram = i64 @ pi64.T
    gram = (gram + gram.T) / 2
    chol, info = torch.linalg.cholesky_ex(gram)
    if check and int(info) != 0:
        raise ValueError("the concepts' i* vectors are (nearly) linearly dependent")
    basis_t = torch.linalg.solve_triangular(chol, i64, upper=False)  # (m, D) = L⁻¹ I
    proj_t = torch.linalg.solve_triangular(chol, pi64, upper=False)  # (m, D) = L⁻¹ P I
    return basis_t.T.float(), proj_t.T.float()


def make_text_edit(
    i_stars: torch.Tensor,
    scores: torch.Tensor,
    energies: torch.Tensor,
    betas: list[float],
    taus: list[float],
) -> TextSpaceEdit:
    """Build the shared text-space edit.

    i_stars (m, D); scores (m, D) = P i*_j / (i*_jᵀ P i*_j); energies (m,) = i*_jᵀ P i*_j.
    """
    cinv_i_stars = scores.double() * energies.double()[:, None]  # P i*_j
    basis, proj = concept_basis(i_stars, cinv_i_stars)
    device = i_stars.device
    return TextSpaceEdit(
        basis=basis.to(device),
        proj=proj.to(device),
        score=scores.T.float().contiguous(),
        beta=torch.tensor(betas, dtype=torch.float32, device=device),
        tau=torch.tensor(taus, dtype=torch.float32, device=device),
    )


def score_and_energy(i_star: torch.Tensor, cinv: torch.Tensor) -> tuple[torch.Tensor, float]:
    """(P i* / (i*ᵀ P i*), i*ᵀ P i*) for one concept, in float32 from a float64 product."""
    pi = cinv.double() @ i_star.double()
    energy = float(i_star.double() @ pi)
    return (pi / energy).float(), energy


def edited_projection(
    linear: torch.nn.Module,
    e: torch.Tensor,
    edit: TextSpaceEdit,
    targets: torch.Tensor,
    positions: torch.Tensor | None = None,
) -> torch.Tensor:
    """h(e) for one projection (to_k or to_v); `targets` is (m, out), o*_j per row.

    `positions` (B, L) bool: where to edit; elsewhere the output is the plain `linear(e)`.
    The linear layer is called with the module's own weights (bias, if any, is kept).
    The scores and the removal run in float32 with autocast off: P can be badly conditioned.
    """
    with torch.autocast(device_type=e.device.type, enabled=False):
        e32 = e.float()
        s = e32 @ edit.score  # (B, L, m)
        removed = e32 - (e32 @ edit.proj) @ edit.basis.T
        gate = torch.sigmoid((s - edit.beta) / edit.tau)
        added = gate @ targets.float()
    out = linear(removed.to(e.dtype))
    out = out + added.to(out.dtype)
    if positions is not None:
        out = torch.where(positions[..., None].to(out.device), out, linear(e))
    return out


def single_concept_projection(
    weight: torch.Tensor,
    e: torch.Tensor,
    i_star: torch.Tensor,
    cinv: torch.Tensor,
    target: torch.Tensor,
    beta: float,
    tau: float,
) -> torch.Tensor:
    """Reference one-concept formula W(e − s i*) + σ((s − β)/τ) o* (tests check against it)."""
    s = (e @ cinv @ i_star) / (i_star @ cinv @ i_star)
    gate = torch.sigmoid((s - beta) / tau)
    return F.linear(e - s[..., None] * i_star, weight) + gate[..., None] * target


class PerfusionAttnProcessor:
    """SDPA attention whose key and value projections carry the Perfusion edit.

    `o_k` is (m, out_k) and locked; `o_v` is a list of m (out_v,) tensors (trainable while
    fitting). With global locking (`edit.key_states` set), the key pathway projects the
    superclass-substituted prompt encoding unedited.
    """

    def __init__(self, edit: TextSpaceEdit, o_k: torch.Tensor, o_v: list[torch.Tensor]) -> None:
        self.edit = edit
        self.o_k = o_k
        self.o_v = o_v
        self._cached: tuple[torch.Tensor, int, torch.Tensor, torch.Tensor] | None = None

    def _key_value(
        self, attn: Attention, encoder_hidden_states: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Edited K and V of the text encoding.

        The text encoding is the same tensor at every denoising step, so at inference K and V
        are computed once per generation: the edit then costs nothing per step. The cache holds
        the tensor itself (its id cannot be reused meanwhile) and its version counter (an
        in-place change invalidates it); with gradients on (fitting) nothing is cached.
        """
        cached = self._cached
        if (
            cached is not None
            and cached[0] is encoder_hidden_states
            and cached[1] == encoder_hidden_states._version
        ):
            return cached[2], cached[3]
        edit = self.edit
        positions = (
            None if edit.positions is None else edit.positions.mask_for(encoder_hidden_states)
        )
        key_states = edit.key_states
        if key_states is not None and key_states.shape == encoder_hidden_states.shape:
            key = attn.to_k(key_states.to(encoder_hidden_states.dtype))
        else:
            key = edited_projection(attn.to_k, encoder_hidden_states, edit, self.o_k, positions)
        o_v = torch.stack(list(self.o_v))
        value = edited_projection(attn.to_v, encoder_hidden_states, edit, o_v, positions)
        if torch.is_grad_enabled():
            self._cached = None
        else:
            self._cached = (encoder_hidden_states, encoder_hidden_states._version, key, value)
        return key, value

    def __call__(
        self,
        attn: Attention,
        hidden_states: torch.Tensor,
        encoder_hidden_states: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        temb: torch.Tensor | None = None,
        **kwargs: object,
    ) -> torch.Tensor:
        if encoder_hidden_states is None:
            raise ValueError("PerfusionAttnProcessor is for cross-attention layers only")
        residual = hidden_states
        if attn.spatial_norm is not None:
            hidden_states = attn.spatial_norm(hidden_states, temb)
        input_ndim = hidden_states.ndim
        if input_ndim == 4:
            batch, channel, height, width = hidden_states.shape
            hidden_states = hidden_states.view(batch, channel, height * width).transpose(1, 2)
        batch, seq_len, _ = encoder_hidden_states.shape
        if attention_mask is not None:
            attention_mask = attn.prepare_attention_mask(attention_mask, seq_len, batch)
            attention_mask = attention_mask.view(batch, attn.heads, -1, attention_mask.shape[-1])
        if attn.group_norm is not None:
            hidden_states = attn.group_norm(hidden_states.transpose(1, 2)).transpose(1, 2)

        query = attn.to_q(hidden_states)
        if attn.norm_cross:
            encoder_hidden_states = attn.norm_encoder_hidden_states(encoder_hidden_states)

        key, value = self._key_value(attn, encoder_hidden_states)

        head_dim = key.shape[-1] // attn.heads
        query = query.view(batch, -1, attn.heads, head_dim).transpose(1, 2)
        key = key.view(batch, -1, attn.heads, head_dim).transpose(1, 2)
        value = value.view(batch, -1, attn.heads, head_dim).transpose(1, 2)
        if attn.norm_q is not None:
            query = attn.norm_q(query)
        if attn.norm_k is not None:
            key = attn.norm_k(key)
        hidden_states = F.scaled_dot_product_attention(
            query, key, value, attn_mask=attention_mask, dropout_p=0.0, is_causal=False
        )
        hidden_states = hidden_states.transpose(1, 2).reshape(batch, -1, attn.heads * head_dim)
        hidden_states = hidden_states.to(query.dtype)
        hidden_states = attn.to_out[0](hidden_states)
        hidden_states = attn.to_out[1](hidden_states)
        if input_ndim == 4:
            hidden_states = hidden_states.transpose(-1, -2).reshape(batch, channel, height, width)
        if attn.residual_connection:
            hidden_states = hidden_states + residual
        return hidden_states / attn.rescale_output_factor
