"""Where does a toy-world model read a caption from? Per-pixel image change, in /255, when one
part of the text encodings is replaced.

    python -m bench.text_pathway [--model workers/toyworld/model] [--prompt "..."]

Rows: the padding (positions after the first end-of-text token) swapped for the empty prompt's;
each real token's encoding replaced by a random vector of its norm; and, for a quick Perfusion
concept fitted on `candy` with the superclass "toy", its o*_V set to zero. Large values mean
the UNet reads from there (see workers/toyworld/model/README.md).
"""

from __future__ import annotations

import argparse

import numpy as np
import torch

from bench.quality.settings import DEFAULT_MODEL, photos


def _image(pipe, embeds: torch.Tensor, negative: torch.Tensor) -> np.ndarray:  # type: ignore[no-untyped-def]
    generator = torch.Generator().manual_seed(1)
    out = pipe(
        prompt_embeds=embeds, negative_prompt_embeds=negative, num_inference_steps=10,
        guidance_scale=4.0, generator=generator,
    )  # fmt: skip
    return np.asarray(out.images[0], dtype=np.float64)


def main(argv: list[str] | None = None) -> None:
    from workers.perfusion import FitConfig, fit_concept, generate, get_covariance, load_pipeline

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default=str(DEFAULT_MODEL))
    parser.add_argument("--prompt", default="a striped red circle on a white background")
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    pipe = load_pipeline(args.model, "cpu")
    tok = pipe.tokenizer

    def encode(text: str) -> tuple[torch.Tensor, torch.Tensor]:
        ids = tok(text, padding="max_length", max_length=tok.model_max_length,
                  truncation=True, return_tensors="pt").input_ids  # fmt: skip
        with torch.no_grad():
            return ids, pipe.text_encoder(ids)[0]

    ids, embeds = encode(args.prompt)
    _, empty = encode("")
    reference = _image(pipe, embeds, empty)
    end = int((ids[0] == tok.eos_token_id).int().argmax())
    swapped = embeds.clone()
    swapped[0, end + 1 :] = empty[0, end + 1 :]
    change = np.abs(_image(pipe, swapped, empty) - reference).mean()
    print(f"padding from the empty prompt: {change:.2f}")
    noise = torch.Generator().manual_seed(0)
    for position in range(1, end):
        changed = embeds.clone()
        norm = embeds[0, position].norm() / embeds.shape[-1] ** 0.5
        changed[0, position] = torch.randn(embeds.shape[-1], generator=noise) * norm
        word = tok.convert_ids_to_tokens(int(ids[0, position]))
        change = np.abs(_image(pipe, changed, empty) - reference).mean()
        print(f"position {position} {word!r} random: {change:.2f}")
    images, _ = photos("candy", 4, 0, ("gray", "white"))
    covariance = get_covariance(pipe)
    config = FitConfig(steps=20, batch_size=4, flip_p=0.0)
    concept = fit_concept(pipe, images, "<x>", "toy", config, covariance)
    common = dict(seed=1, steps=10, guidance=4.0, n=1)
    before = np.asarray(generate(pipe, "a <x> on a white background", [concept], **common)[0])
    for name in concept.o_v:
        concept.o_v[name] = torch.zeros_like(concept.o_v[name])
    after = np.asarray(generate(pipe, "a <x> on a white background", [concept], **common)[0])
    print(f"concept's o*_V set to zero: {np.abs(after.astype(float) - before).mean():.2f}")


if __name__ == "__main__":
    main()
