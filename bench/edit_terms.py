"""Which term of the Perfusion edit moves prompts that do not contain the concept?

    python -m bench.edit_terms [--model workers/toyworld/model] [--subjects purple-star]

For each subject, a quick fit (80 steps × batch 4 from 4 photos, as bench.quality.quick), then
the harness's two concept-free drift prompts (its superclass in a plain colour, an unrelated
object; `bench.quality.settings.drift_prompts`) drawn with and without the concept, same seeds,
at the default strength. The drift (mean absolute pixel difference, 0-255) is printed for the
edit as PERFUSION.md defines it, h(e) = W (e − s(e) i*) + σ((s(e) − β)/τ) o*, and for the
same edit with its removal term W s(e) i* dropped or scaled, in both projections or one.
These variants are diagnostics only; the product always runs the edit as defined.

Also printed: cos(i*, e_super), i*ᵀ P i* (the rms of s(e) over encodings drawn like C's is
about 1/√ of it) and s(e) at each real token of the drift prompts.
"""

from __future__ import annotations

import argparse
import contextlib
import random
from collections.abc import Iterator

import numpy as np
import torch

from bench.quality.settings import DEFAULT_MODEL, backgrounds, drift_prompts, photos, subject

VARIANTS: dict[str, tuple[float, float]] = {
    # name: (removal scale in K, removal scale in V)
    "as defined": (1.0, 1.0),
    "removal off": (0.0, 0.0),
    "removal in K only": (1.0, 0.0),
    "removal in V only": (0.0, 1.0),
    "removal × 0.1": (0.1, 0.1),
}


def scaled_projection(k_scale: float, v_scale: float, keys: set[int]):  # type: ignore[no-untyped-def]
    """`processor.edited_projection` with its removal term scaled: by `k_scale` for the
    linear layers whose id is in `keys` (the to_k projections), else by `v_scale`."""

    def projection(linear, e, edit, targets, positions=None):  # type: ignore[no-untyped-def]
        scale = k_scale if id(linear) in keys else v_scale
        with torch.autocast(device_type=e.device.type, enabled=False):
            e32 = e.float()
            s = e32 @ edit.score
            removed = e32 - scale * ((e32 @ edit.proj) @ edit.basis.T)
            added = torch.sigmoid((s - edit.beta) / edit.tau) @ targets.float()
        out = linear(removed.to(e.dtype))
        out = out + added.to(out.dtype)
        if positions is not None:
            out = torch.where(positions[..., None].to(out.device), out, linear(e))
        return out

    return projection


@contextlib.contextmanager
def removal_scaled(pipe, k_scale: float, v_scale: float) -> Iterator[None]:  # type: ignore[no-untyped-def]
    """The processors of `pipe` run `scaled_projection` (the edit as defined when both are 1)."""
    from workers.perfusion import processor
    from workers.perfusion.pipeline import cross_attention_layers

    if k_scale == v_scale == 1.0:
        yield
        return
    keys = {id(a.to_k) for a in cross_attention_layers(pipe.unet).values()}
    original = processor.edited_projection
    processor.edited_projection = scaled_projection(k_scale, v_scale, keys)
    try:
        yield
    finally:
        processor.edited_projection = original


def _drift(a: list, b: list) -> float:
    return float(
        np.mean([np.abs(np.asarray(x, np.float32) - np.asarray(y, np.float32)).mean()
                 for x, y in zip(a, b, strict=True)])
    )  # fmt: skip


def main(argv: list[str] | None = None) -> None:
    from workers.perfusion import FitConfig, fit_concept, generate, get_covariance, load_pipeline
    from workers.perfusion.apply import strength_to_control
    from workers.perfusion.pipeline import encode_ids

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default=str(DEFAULT_MODEL))
    parser.add_argument("--subjects", nargs="+", default=["purple-star"])
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--fit-steps", type=int, default=80)
    parser.add_argument("--n", type=int, default=2, help="images per drift prompt")
    parser.add_argument("--strength", type=float, default=0.5)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    pipe = load_pipeline(args.model, "cpu")
    covariance = get_covariance(pipe)
    tok = pipe.tokenizer
    control = strength_to_control(args.strength)
    for name in args.subjects:
        train_bgs, _ = backgrounds(name, 2)
        images, _ = photos(name, 4, args.seed, train_bgs)
        torch.manual_seed(args.seed)
        config = FitConfig(steps=args.fit_steps, batch_size=4, flip_p=0.0, seed=args.seed)
        concept = fit_concept(pipe, images, "<x>", subject(name).superclass, config, covariance)
        cos = float(torch.nn.functional.cosine_similarity(concept.i_star, concept.e_super, dim=0))
        print(f"\n{name}: cos(i*, e_super) {cos:.3f}, i*ᵀPi* {concept.i_star_energy:.1f}")
        prompts = drift_prompts(name)
        with torch.no_grad():
            for prompt in prompts:
                ids = tok([prompt], padding="max_length", max_length=tok.model_max_length,
                          truncation=True, return_tensors="pt").input_ids  # fmt: skip
                s = encode_ids(pipe, ids)[0].float() @ concept.score.float()
                real = int((ids[0] != tok.eos_token_id).sum()) + 1
                words = tok.convert_ids_to_tokens(ids[0, :real].tolist())
                cells = " ".join(
                    f"{w}={float(v):.2f}" for w, v in zip(words, s[:real], strict=True)
                )
                print(f"  s(e) in '{prompt}': {cells}")
            seed = random.Random(f"{name}-{args.seed}").randrange(10_000)
            common = dict(seed=seed, n=args.n, steps=20, guidance=4.0)
            base = {p: generate(pipe, p, **common) for p in prompts}
            print(f"\n| {name}: edit | drift, '{prompts[0]}' | drift, '{prompts[1]}' |")
            print("| --- | --- | --- |")
            for label, (k_scale, v_scale) in VARIANTS.items():
                with removal_scaled(pipe, k_scale, v_scale):
                    made = {
                        p: generate(pipe, p, [concept], controls=[control], **common)
                        for p in prompts
                    }
                cells = " | ".join(f"{_drift(base[p], made[p]):.2f}" for p in prompts)
                print(f"| {label} | {cells} |", flush=True)


if __name__ == "__main__":
    main()
