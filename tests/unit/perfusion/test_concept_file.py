"""Concept files: safetensors only, exact round trips, refusal of foreign or forged files."""

import io
import json
import pickle
from dataclasses import replace
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from diffusers import UNet2DConditionModel
from safetensors.torch import load as load_safetensors
from safetensors.torch import save as save_safetensors
from transformers import CLIPTextConfig, CLIPTextModel

from tests.unit.perfusion.conftest import make_tiny_pipeline, pixels, write_tokenizer_files
from workers.perfusion import (
    Concept,
    ConceptFormatError,
    ConceptMismatch,
    apply_concepts,
    concept_from_bytes,
    concept_to_bytes,
    generate,
    load_concept,
    model_fingerprint,
    save_concept,
    validate_concept,
)
from workers.perfusion.cli import main
from workers.perfusion.concept import _metadata
from workers.perfusion.pipeline import cross_attention_layers

PROMPT = "a photo of a <sks> on grass"


def render(pipe, concept):
    return pixels(generate(pipe, PROMPT, [concept], steps=3, seed=2)[0])


def test_fp32_round_trip_reproduces_generation_bit_exactly(tiny_pipe, fitted, tmp_path):
    concept = fitted["concept"]
    path = tmp_path / "c.safetensors"
    save_concept(concept, path, dtype=torch.float32)
    loaded = load_concept(path)
    assert loaded.o_k == {}  # not stored: recomputed from e_super
    assert loaded.training == concept.training and loaded.token == "<sks>"
    assert np.array_equal(render(tiny_pipe, loaded), render(tiny_pipe, concept))


def test_fp16_file_changes_nothing_but_the_rounding(tiny_pipe, fitted):
    concept = fitted["concept"]
    data = concept_to_bytes(concept)
    loaded = concept_from_bytes(data)
    rounded = replace(
        concept,
        **{
            k: getattr(concept, k).half().float()
            for k in ("token_embedding", "i_star", "e_super", "score")
        },
        o_v={k: v.half().float() for k, v in concept.o_v.items()},
        o_k={},
    )
    assert np.array_equal(render(tiny_pipe, loaded), render(tiny_pipe, rounded))
    # re-saving is lossless (compare content: safetensors orders metadata keys arbitrarily)
    again = concept_to_bytes(loaded)
    assert _metadata(again) == _metadata(data)
    first, second = load_safetensors(data), load_safetensors(again)
    assert first.keys() == second.keys()
    assert all(torch.equal(first[k], second[k]) for k in first)


def test_concept_from_another_base_is_refused(fitted, tmp_path):
    other = make_tiny_pipeline(tmp_path, seed=1)
    with pytest.raises(ConceptMismatch, match="fingerprint"):
        validate_concept(fitted["concept"], other)
    with pytest.raises(ConceptMismatch):
        apply_concepts(other, [fitted["concept"]])
    assert getattr(other, "_perfusion_applied", None) is None


def forged(data: bytes, layers_edit, o_v_extra: int = 0) -> bytes:
    meta = _metadata(data)
    tensors = load_safetensors(data)
    layers = json.loads(meta["layers"])
    layers_edit(layers)
    meta["layers"] = json.dumps(layers)
    tensors["o_v"] = torch.cat([tensors["o_v"], torch.zeros(o_v_extra, dtype=torch.float16)])
    return save_safetensors(tensors, metadata=meta)


def test_shape_forged_files_are_refused(tiny_pipe, fitted):
    data = concept_to_bytes(fitted["concept"])

    def grow_first(layers):
        layers[0][1] += 8

    # consistent file, but its first layer is wider than the UNet's: refused against the pipe
    wider = concept_from_bytes(forged(data, grow_first, o_v_extra=8))
    with pytest.raises(ConceptMismatch, match="shape"):
        validate_concept(wider, tiny_pipe)
    # inconsistent file: the layer list and the o_v tensor disagree
    with pytest.raises(ConceptMismatch):
        concept_from_bytes(forged(data, grow_first))

    def rename(layers):
        layers[0][0] = "D9X"  # abbreviated form of down_blocks.9.attn2

    with pytest.raises(ConceptMismatch, match="layers"):
        validate_concept(concept_from_bytes(forged(data, rename)), tiny_pipe)


def test_pickle_and_foreign_files_are_refused(fitted):
    buffer = io.BytesIO()
    torch.save({"o_v": torch.zeros(3)}, buffer)
    for data in (buffer.getvalue(), pickle.dumps({"token": "<x>"}), b"", b"\x00" * 64):
        with pytest.raises(ConceptFormatError):
            concept_from_bytes(data)
    with pytest.raises(ConceptFormatError, match="format"):
        concept_from_bytes(save_safetensors({"x": torch.zeros(2)}))


SD15_UNET = dict(
    sample_size=64,
    block_out_channels=(320, 640, 1280, 1280),
    layers_per_block=2,
    cross_attention_dim=768,
    attention_head_dim=8,
    down_block_types=("CrossAttnDownBlock2D",) * 3 + ("DownBlock2D",),
    up_block_types=("UpBlock2D",) + ("CrossAttnUpBlock2D",) * 3,
)


def test_sd15_shaped_concept_file_size(tmp_path, capsys):
    with torch.device("meta"):  # real SD 1.5 layer names and widths, no weight memory
        unet = UNet2DConditionModel(**SD15_UNET)
    tokenizer = write_tokenizer_files(tmp_path / "tok")
    text_encoder = CLIPTextModel(
        CLIPTextConfig(
            hidden_size=768,
            intermediate_size=64,
            num_attention_heads=12,
            num_hidden_layers=1,
            max_position_embeddings=16,
            vocab_size=len(tokenizer),
        )
    )
    pipe = SimpleNamespace(unet=unet, text_encoder=text_encoder, tokenizer=tokenizer)
    layers = cross_attention_layers(unet)
    assert len(layers) == 16
    assert sum(a.to_v.out_features for a in layers.values()) == 12_480
    g = torch.Generator().manual_seed(0)
    vector = lambda n: torch.randn(n, generator=g)  # noqa: E731
    concept = Concept(
        token="<sks>",
        superclass="dog",
        token_embedding=vector(768),
        i_star=vector(768),
        e_super=vector(768),
        o_k={},
        o_v={name: vector(a.to_v.out_features) for name, a in layers.items()},
        score=vector(768),
        i_star_energy=123.0,
        base_fingerprint=model_fingerprint(pipe),
        covariance_fingerprint="c" * 64,
        base_model_id="runwayml/stable-diffusion-v1-5",
        training={
            "steps": 400,
            "batch_size": 4,
            "grad_accum": 4,
            "lr_embedding": 0.006,
            "lr_value": 0.03,
            "resolution": 512,
            "flip_p": 0.5,
            "train_beta": 0.75,
            "train_tau": 0.1,
            "ema_decay": 0.99,
            "seed": 0,
            "mixed_precision": True,
            "n_images": 4,
            "masked": False,
            "final_loss": 0.1234567,
        },
    )
    validate_concept(concept, pipe)
    path = tmp_path / "sd15.safetensors"
    save_concept(concept, path)
    size = path.stat().st_size
    assert main(["info", str(path)]) == 0
    out = capsys.readouterr().out
    assert f"size:         {size} bytes" in out
    with capsys.disabled():
        print(f"\nSD1.5-shaped concept file: {size} bytes ({size / 1024:.1f} KiB)")
    assert size <= 64 * 1024
    assert "up_blocks.3.attentions.2.transformer_blocks.0.attn2" in out  # names survive
    assert "F16" in out and "I8" not in out  # SD 1.x/2.x files stay fp16 by default


def test_a_model_folder_can_ship_its_own_covariance_captions(tiny_pipe, tmp_path):
    from workers.perfusion.covariance import model_captions

    folder = tmp_path / "base"
    folder.mkdir()
    tiny_pipe._perfusion_base_id = str(folder)
    try:
        assert model_captions(tiny_pipe) is None
        (folder / "captions.txt").write_text("a red cat\n\nthe blue sofa\n")
        assert model_captions(tiny_pipe) == ["a red cat", "the blue sofa"]
    finally:
        del tiny_pipe._perfusion_base_id


def test_sd15_shaped_score_survives_the_fp16_file(tmp_path, capsys):
    """s(i*) = i*ᵀ score after a save/load round trip stays within 1 % of 1 (768-d, C from
    captions over a random-weight CLIP layer): fp16 is precise enough for the four vectors."""
    import random

    from workers.perfusion import compute_covariance
    from workers.perfusion.pipeline import encode_ids, tokenize
    from workers.perfusion.processor import score_and_energy

    tokenizer = write_tokenizer_files(tmp_path / "tok")
    torch.manual_seed(0)
    text_encoder = CLIPTextModel(
        CLIPTextConfig(
            hidden_size=768,
            intermediate_size=768,
            num_attention_heads=12,
            num_hidden_layers=1,
            max_position_embeddings=16,
            vocab_size=len(tokenizer),
            bos_token_id=tokenizer.bos_token_id,
            eos_token_id=tokenizer.eos_token_id,
            pad_token_id=tokenizer.pad_token_id,
        )
    ).eval()
    pipe = SimpleNamespace(text_encoder=text_encoder, tokenizer=tokenizer)
    rng = random.Random(0)
    words = "a photo of the good image my dog cat red blue on in at with grass beach".split()
    captions = [" ".join(rng.choice(words) for _ in range(rng.randint(2, 14))) for _ in range(600)]
    cov = compute_covariance(pipe, captions)
    ids, _ = tokenize(pipe, ["a photo of a dog"])
    with torch.no_grad():
        i_star = encode_ids(pipe, ids)[0, 4].float()
    score, energy = score_and_energy(i_star, cov.inverse)
    concept = Concept(
        token="<sks>", superclass="dog", token_embedding=i_star, i_star=i_star, e_super=i_star,
        o_k={}, o_v={"x": torch.zeros(4)}, score=score, i_star_energy=energy,
    )  # fmt: skip
    loaded = concept_from_bytes(concept_to_bytes(concept))
    assert loaded.score.dtype == torch.float32
    s = float(loaded.i_star @ loaded.score)
    with capsys.disabled():
        print(f"\nSD1.5-shaped s(i*) after the fp16 file: {s:.6f}")
    assert abs(s - 1) < 0.01
