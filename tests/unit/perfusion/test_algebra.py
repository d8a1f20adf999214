"""The edit's algebra, checked on random tensors and on the tiny model's covariance."""

import pytest
import torch
from torch import nn

from tests.unit.perfusion.conftest import CAPTIONS
from workers.perfusion import compute_covariance
from workers.perfusion.pipeline import encode_ids, tokenize
from workers.perfusion.processor import (
    concept_basis,
    edited_projection,
    make_text_edit,
    score_and_energy,
    single_concept_projection,
)

D, OUT = 24, 40


def random_spd(dim: int, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    a = torch.randn(dim, dim, generator=g)
    return a @ a.T / dim + 0.1 * torch.eye(dim)


def one_concept(seed: int = 0, beta: float = 0.7, tau: float = 0.15):
    g = torch.Generator().manual_seed(seed)
    cinv = random_spd(D, seed)
    i_star = torch.randn(D, generator=g)
    linear = nn.Linear(D, OUT, bias=False)
    target = torch.randn(OUT, generator=g)
    score, energy = score_and_energy(i_star, cinv)
    edit = make_text_edit(i_star[None], score[None], torch.tensor([energy]), [beta], [tau])
    return cinv, i_star, linear, target, edit


def test_saturated_gate_maps_i_star_to_o_star_for_k_and_v():
    torch.manual_seed(0)
    cinv, i_star, _, _, edit = one_concept(beta=-100.0, tau=1.0)  # σ(101) == 1 in float32
    for projection in ("to_k", "to_v"):  # same code path, separate weights and targets
        linear = nn.Linear(D, OUT, bias=False)
        target = torch.randn(OUT)
        out = edited_projection(linear, i_star[None, None], edit, target[None])
        torch.testing.assert_close(out[0, 0], target, atol=1e-5, rtol=1e-5, msg=projection)


def test_c_inverse_orthogonal_encodings_pass_through():
    cinv, i_star, linear, target, edit = one_concept(seed=1)
    e = torch.randn(5, D)
    e = e - ((e @ cinv @ i_star) / (i_star @ cinv @ i_star))[:, None] * i_star  # s(e) = 0
    out = edited_projection(linear, e[None], edit, target[None])[0]
    leak = torch.sigmoid(torch.tensor(-0.7 / 0.15)) * target  # closed gate at s = 0
    torch.testing.assert_close(out - leak, linear(e), atol=1e-5, rtol=1e-5)
    # and with a plain dot product instead of C⁻¹ the removal would not vanish:
    assert (e @ i_star).abs().max() > 1e-2


def test_multi_concept_basis_is_c_inverse_orthonormal_and_projects_with_c_inverse():
    cinv = random_spd(D, 2)
    i_stars = torch.randn(3, D, generator=torch.Generator().manual_seed(3))
    basis, proj = concept_basis(i_stars, i_stars @ cinv)
    torch.testing.assert_close(basis.T @ cinv @ basis, torch.eye(3), atol=1e-5, rtol=0)
    torch.testing.assert_close(proj, cinv @ basis, atol=1e-5, rtol=1e-5)
    in_span = torch.tensor([0.3, -1.2, 2.0]) @ i_stars
    removed = in_span - (in_span @ proj) @ basis.T
    assert removed.abs().max() < 1e-4
    # e C⁻¹-orthogonal to every i*_j is untouched (would fail with uᵀe instead of uᵀC⁻¹e)
    e = torch.randn(D)
    e = e - basis @ (basis.T @ cinv @ e)
    assert (i_stars @ cinv @ e).abs().max() < 1e-4
    torch.testing.assert_close(e - (e @ proj) @ basis.T, e, atol=1e-5, rtol=0)
    assert (e - (e @ basis) @ basis.T - e).abs().max() > 1e-2


def test_one_concept_multi_path_equals_single_concept_formula():
    cinv, i_star, linear, target, edit = one_concept(seed=4)
    e = torch.randn(2, 7, D) + 0.8 * i_star  # a mix of gate values
    got = edited_projection(linear, e, edit, target[None])
    want = single_concept_projection(linear.weight, e, i_star, cinv, target, 0.7, 0.15)
    torch.testing.assert_close(got, want, atol=1e-4, rtol=1e-4)


def test_covariance_uses_non_padding_positions_and_ridge(tiny_pipe):
    ridge = 0.05
    cov = compute_covariance(tiny_pipe, CAPTIONS, ridge=ridge)
    ids, mask = tokenize(tiny_pipe, CAPTIONS)
    with torch.no_grad():
        enc = encode_ids(tiny_pipe, ids).double()
    rows = enc[mask.bool()]
    c = rows.T @ rows / rows.shape[0]
    lam = ridge * torch.trace(c) / c.shape[0]
    assert cov.n_tokens == int(mask.sum())
    want = torch.linalg.inv(c + lam * torch.eye(c.shape[0], dtype=c.dtype)).float()
    torch.testing.assert_close(cov.inverse, want, atol=1e-4, rtol=1e-3)
    assert not torch.allclose(cov.inverse, torch.linalg.inv(c).float(), rtol=1e-2, atol=1e-3)
    all_rows = enc.reshape(-1, enc.shape[-1])
    c_all = all_rows.T @ all_rows / all_rows.shape[0]
    assert not torch.allclose(c, c_all, rtol=1e-2, atol=1e-3)  # padding excluded on purpose


def test_positions_outside_the_mask_get_the_unedited_projection():
    """Padding is outside the distribution C describes: `generate` leaves it unedited."""
    _, i_star, linear, target, edit = one_concept(seed=4, beta=-100.0, tau=1.0)
    e = torch.stack([i_star, i_star, torch.randn(D)])[None]  # (1, 3, D)
    positions = torch.tensor([[True, False, False]])
    out = edited_projection(linear, e, edit, target[None], positions)[0]
    torch.testing.assert_close(out[0], target, atol=1e-5, rtol=1e-5)  # edited
    torch.testing.assert_close(out[1:], linear(e[0, 1:]))  # untouched, even i* itself


def test_saturated_gate_processor_attends_with_o_k_and_reads_o_v():
    """Through PerfusionAttnProcessor: K from o*_K, V from o*_V (a swap would change the output)."""
    from diffusers.models.attention_processor import Attention

    from workers.perfusion.processor import PerfusionAttnProcessor

    torch.manual_seed(0)
    cinv, i_star, _, _, edit = one_concept(seed=5, beta=-100.0, tau=1.0)  # gate == 1
    attn = Attention(query_dim=16, cross_attention_dim=D, heads=2, dim_head=8).eval()
    o_k, o_v = torch.randn(1, 16), torch.randn(16)
    attn.set_processor(PerfusionAttnProcessor(edit, o_k, [o_v]))
    hidden = torch.randn(1, 5, 16)
    text = torch.stack([i_star, torch.randn(D), 0.5 * i_star + torch.randn(D)])[None]

    def reference(key_target, value_target):
        key = single_concept_projection(attn.to_k.weight, text, i_star, cinv, key_target, -100, 1)
        value = single_concept_projection(
            attn.to_v.weight, text, i_star, cinv, value_target, -100, 1
        )
        q = attn.to_q(hidden).view(1, -1, 2, 8).transpose(1, 2)
        k, v = (t.view(1, -1, 2, 8).transpose(1, 2) for t in (key, value))
        out = torch.nn.functional.scaled_dot_product_attention(q, k, v)
        return attn.to_out[0](out.transpose(1, 2).reshape(1, -1, 16))

    with torch.no_grad():
        got = attn(hidden, encoder_hidden_states=text)
        want, swapped = reference(o_k[0], o_v), reference(o_v, o_k[0])
    torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)
    assert (want - swapped).abs().max() > 1e-2  # the check can tell K from V


@pytest.mark.parametrize("m", [2, 3])
def test_each_of_several_concepts_gates_its_own_token_like_the_one_concept_formula(m):
    """m concepts, each with its own beta/tau: on concept j's token the output is concept j's
    one-concept h(e), plus the other concepts' closed-gate leaks (s_k = 0 on it by design)."""
    g = torch.Generator().manual_seed(10 + m)
    cinv = random_spd(D, 7)
    raw = torch.randn(m, D, generator=g)
    basis, _ = concept_basis(raw, raw @ cinv)  # P-orthonormal: s_k(i*_j) = 0 for k != j
    i_stars = basis.T * torch.tensor([2.0, 0.7, 1.3][:m])[:, None]
    betas, taus = [0.7, 0.9, 0.5][:m], [0.1, 0.05, 0.2][:m]
    targets = torch.randn(m, OUT, generator=g)
    scores, energies = zip(*(score_and_energy(i, cinv) for i in i_stars), strict=True)
    edit = make_text_edit(i_stars, torch.stack(scores), torch.tensor(energies), betas, taus)
    linear = nn.Linear(D, OUT, bias=False)
    e = i_stars[:, None] + 0.0  # (m, 1, D): concept j's token in row j
    out = edited_projection(linear, e, edit, targets)[:, 0]
    for j in range(m):
        own = single_concept_projection(
            linear.weight, i_stars[j], i_stars[j], cinv, targets[j], betas[j], taus[j]
        )
        leaks = sum(
            torch.sigmoid(torch.tensor(-betas[k] / taus[k])) * targets[k]
            for k in range(m)
            if k != j
        )
        torch.testing.assert_close(out[j], own + leaks, atol=1e-4, rtol=1e-4, msg=f"concept {j}")
    # and with the concepts' gates exchanged the check fails
    swapped = make_text_edit(
        i_stars, torch.stack(scores), torch.tensor(energies), betas[::-1], taus[::-1]
    )
    assert (edited_projection(linear, e, swapped, targets)[:, 0] - out).abs().max() > 1e-2
