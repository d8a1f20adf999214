"""Artefact sizes: a Perfusion concept file vs a rank-4 LoRA file vs a full DreamBooth UNet.

    python -m bench.size [--model workers/toyworld/model]

For the toy world (the model's own UNet config) and for an SD 1.5-shaped UNet (random weights,
real widths: block_out_channels (320, 640, 1280, 1280), cross_attention_dim 768), both built
on the meta device, so only shapes exist and nothing is allocated. The Perfusion size is the
byte length of a real `concept_to_bytes` file (fp16) written from a Concept with those shapes
and a realistic training record. LoRA and DreamBooth sizes are parameter counts × 2 bytes
(fp16, safetensors headers of a few KiB not counted). Goal: ≤ 64 KiB per SD 1.5 concept.
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass
from pathlib import Path

import torch

from bench.common import ROOT, human_bytes, machine_header, table, verdict

GOAL_BYTES = 64 * 1024
LORA_TARGETS = ("to_q", "to_k", "to_v", "to_out.0")

SD15_UNET = dict(
    sample_size=64,
    in_channels=4,
    out_channels=4,
    layers_per_block=2,
    block_out_channels=(320, 640, 1280, 1280),
    down_block_types=(
        "CrossAttnDownBlock2D",
        "CrossAttnDownBlock2D",
        "CrossAttnDownBlock2D",
        "DownBlock2D",
    ),
    up_block_types=("UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"),
    cross_attention_dim=768,
    attention_head_dim=8,
)
SD15_TEXT_DIM = 768


@dataclass
class SizeRow:
    model: str
    layers: int
    value_dims: int
    perfusion: int
    lora: int
    textual_inversion: int
    dreambooth: int
    unet_params: int


def meta_unet(config: dict):
    """The UNet with this config on the meta device (shapes only, no memory)."""
    from diffusers import UNet2DConditionModel

    with torch.device("meta"):
        return UNet2DConditionModel(**config)


def perfusion_bytes(unet, text_dim: int) -> tuple[int, int, int]:
    """(file bytes, cross-attention layers, sum of value dims) of a real fp16 concept file."""
    from workers.perfusion import Concept, concept_to_bytes
    from workers.perfusion.pipeline import cross_attention_layers

    layers = cross_attention_layers(unet)
    generator = torch.Generator().manual_seed(0)

    def vec(n: int) -> torch.Tensor:
        return torch.randn(n, generator=generator)

    concept = Concept(
        token="<my-concept>",
        superclass="dog",
        token_embedding=vec(text_dim),
        i_star=vec(text_dim),
        e_super=vec(text_dim),
        o_k={},
        o_v={name: vec(attn.to_v.out_features) for name, attn in layers.items()},
        score=vec(text_dim),
        i_star_energy=1.0,
        base_fingerprint="0" * 64,
        covariance_fingerprint="0" * 64,
        base_model_id="runwayml/stable-diffusion-v1-5",
        training={
            "steps": 400, "batch_size": 4, "grad_accum": 4, "lr_embedding": 6e-3,
            "lr_value": 3e-2, "resolution": 512, "flip_p": 0.5, "train_beta": 0.75,
            "train_tau": 0.1, "ema_decay": 0.99, "seed": 0, "mixed_precision": True,
            "n_images": 4, "masked": True, "final_loss": 0.1234567,
        },
    )  # fmt: skip
    values = sum(attn.to_v.out_features for attn in layers.values())
    return len(concept_to_bytes(concept)), len(layers), values


def lora_params(unet, rank: int = 4) -> int:
    """Parameters of rank-r adapters on to_q/to_k/to_v/to_out.0 of every attention layer."""
    from diffusers.models.attention_processor import Attention

    total = 0
    for module in unet.modules():
        if not isinstance(module, Attention):
            continue
        for target in LORA_TARGETS:
            linear = module.get_submodule(target)
            total += rank * (linear.in_features + linear.out_features)
    return total


def size_row(name: str, unet_config: dict, text_dim: int) -> SizeRow:
    unet = meta_unet(unet_config)
    perfusion, layers, values = perfusion_bytes(unet, text_dim)
    params = sum(p.numel() for p in unet.parameters())
    return SizeRow(
        model=name,
        layers=layers,
        value_dims=values,
        perfusion=perfusion,
        lora=2 * lora_params(unet),
        textual_inversion=2 * text_dim,
        dreambooth=2 * params,
        unet_params=params,
    )


def toy_config(model: Path) -> tuple[dict, int] | None:
    """(UNet config, text width) of a diffusers model folder, or None if it is not there."""
    import json

    unet_cfg = model / "unet" / "config.json"
    text_cfg = model / "text_encoder" / "config.json"
    if not unet_cfg.exists() or not text_cfg.exists():
        return None
    config = {k: v for k, v in json.loads(unet_cfg.read_text()).items() if not k.startswith("_")}
    return config, json.loads(text_cfg.read_text())["hidden_size"]


def run_size(model: Path | None = None) -> list[SizeRow]:
    rows = []
    toy = toy_config(model or ROOT / "workers" / "toyworld" / "model")
    if toy is not None:
        rows.append(size_row("Toy world (bundled model)", *toy))
    rows.append(size_row("SD 1.5-shaped UNet", SD15_UNET, SD15_TEXT_DIM))
    return rows


def render(rows: list[SizeRow]) -> str:
    headers = [
        "Base model", "attn2 layers", "Σ value dims", "Perfusion concept file (fp16)",
        "LoRA r=4 (fp16)", "Textual Inversion (fp16)", "DreamBooth full UNet (fp16)",
        "DreamBooth / Perfusion",
    ]  # fmt: skip
    body = [
        [
            r.model, r.layers, r.value_dims, f"{human_bytes(r.perfusion)} ({r.perfusion:,} B)",
            human_bytes(r.lora), human_bytes(r.textual_inversion),
            f"{human_bytes(r.dreambooth)} ({r.unet_params / 1e6:.0f} M params)",
            f"{r.dreambooth / r.perfusion:,.0f}×",
        ]
        for r in rows
    ]  # fmt: skip
    sd = next(r for r in rows if r.model.startswith("SD 1.5"))
    goal = (
        f"Goal: ≤ 64 KiB per SD 1.5 concept — {verdict(sd.perfusion <= GOAL_BYTES)} "
        f"({human_bytes(sd.perfusion)}; o*_V over {sd.layers} layers = {sd.value_dims:,} values "
        "plus token embedding, i*, e_super and the score vector, 768 each, fp16, plus metadata; "
        "o*_K is recomputed from e_super at load time). Perfusion and TI sizes are real "
        "`concept_to_bytes` / embedding byte counts; LoRA and DreamBooth are parameter counts × "
        "2 bytes, computed from meta-device UNets (no weights allocated)."
    )
    return table(headers, body) + "\n\n" + goal + "\n"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Artefact sizes per concept.")
    parser.add_argument("--model", type=Path, default=None)
    args = parser.parse_args(argv)
    print(machine_header())
    print()
    print(render(run_size(args.model)))


if __name__ == "__main__":
    main()
