"""A compiled UNet fits and generates as the eager one, and compiles nothing after warm-up.

Dynamo's "eager" backend keeps this quick on a CPU: it captures the same graphs and guards
as Inductor (so graph breaks and recompiles show) and runs them without code generation.
"""

from pathlib import Path

import pytest
import torch
from torch._dynamo.utils import counters

from tests.unit.perfusion.conftest import CAPTIONS, TINY_FIT, make_images, make_tiny_pipeline
from tests.unit.perfusion.test_fit import concept_tensors
from workers.perfusion import compute_covariance, fit_concept, generate, model_fingerprint
from workers.perfusion.compile import compile_unet, is_compiled, uncompile_unet, warm_up
from workers.perfusion.pipeline import cross_attention_layers


@pytest.mark.slow
def test_compiled_unet_fits_alike_and_compiles_nothing_after_warm_up(tmp_path: Path):
    pipe = make_tiny_pipeline(tmp_path)
    cov = compute_covariance(pipe, CAPTIONS)
    want = fit_concept(pipe, make_images(), "<c>", "dog", TINY_FIT, cov)
    keys, fingerprint = list(pipe.unet.state_dict()), model_fingerprint(pipe)
    layers = cross_attention_layers(pipe.unet).values()
    # every ResNet block, self-attention and feed-forward; not the attn2 layers (swapped per job)
    assert compile_unet(pipe.unet, backend="eager") == 8 + 2 * len(layers)
    assert is_compiled(pipe.unet)
    assert all(getattr(a, "_compiled_call_impl", None) is None for a in layers)
    try:
        warm_up(pipe, cov, TINY_FIT, "dog", sample_steps=1)
        graphs = counters["stats"]["unique_graphs"]
        assert graphs > 0 and not counters["graph_break"]
        got = fit_concept(pipe, make_images(), "<c>", "dog", TINY_FIT, cov)
        generate(pipe, "a photo of a <c>", [got], steps=2, seed=0, n=2)
        assert counters["stats"]["unique_graphs"] == graphs, "a job compiled"
    finally:
        uncompile_unet(pipe.unet)
    assert not is_compiled(pipe.unet)
    assert list(pipe.unet.state_dict()) == keys and model_fingerprint(pipe) == fingerprint
    for name, tensor in concept_tensors(got).items():
        expected = concept_tensors(want)[name]
        scale = float(expected.abs().max())
        torch.testing.assert_close(tensor, expected, rtol=0, atol=1e-4 * scale, msg=name)
