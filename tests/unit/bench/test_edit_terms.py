"""bench.edit_terms' variants of the edit: scale 1 is the product's edit, scale 0 drops the
removal term and nothing else."""

from __future__ import annotations

import torch

from bench.edit_terms import scaled_projection
from workers.perfusion.processor import edited_projection, make_text_edit, score_and_energy


def _edit_and_inputs():  # type: ignore[no-untyped-def]
    torch.manual_seed(0)
    dim, out = 8, 6
    a = torch.randn(dim, dim)
    cinv = torch.linalg.inv(a @ a.T + torch.eye(dim))
    i_star = torch.randn(dim)
    score, energy = score_and_energy(i_star, cinv)
    edit = make_text_edit(i_star[None], score[None], torch.tensor([energy]), [0.7], [0.15])
    linear = torch.nn.Linear(dim, out)
    e = torch.randn(2, 5, dim)
    e[0, 1] = i_star  # one token is the concept: s = 1
    targets = torch.randn(1, out)
    return linear, e, edit, targets, i_star


def test_scale_one_is_the_products_edit() -> None:
    linear, e, edit, targets, _ = _edit_and_inputs()
    expected = edited_projection(linear, e, edit, targets)
    got = scaled_projection(1.0, 1.0, {id(linear)})(linear, e, edit, targets)
    assert torch.allclose(got, expected, atol=1e-5)


def test_scale_zero_drops_only_the_removal_term() -> None:
    linear, e, edit, targets, _ = _edit_and_inputs()
    s = e @ edit.score
    gate = torch.sigmoid((s - 0.7) / 0.15)
    expected = linear(e) + gate @ targets
    for keys in ({id(linear)}, set()):  # as a key projection (k_scale) or a value one
        scales = (0.0, 1.0) if keys else (1.0, 0.0)
        got = scaled_projection(*scales, keys)(linear, e, edit, targets)
        assert torch.allclose(got, expected, atol=1e-5)
    # and it differs from the edit as defined wherever s(e) is not 0
    assert not torch.allclose(expected, edited_projection(linear, e, edit, targets), atol=1e-3)
