"""The `perfusion` command end to end on a tiny saved model, and the covariance cache."""

from pathlib import Path

import torch
from PIL import Image

from tests.unit.perfusion.conftest import CAPTIONS, make_images, make_tiny_pipeline
from workers.perfusion import get_covariance, load_concept, load_pipeline, model_fingerprint
from workers.perfusion.cli import build_parser, main


def test_fit_generate_info_end_to_end(tmp_path: Path, capsys, monkeypatch):
    model = tmp_path / "model"
    make_tiny_pipeline(tmp_path / "tok").save_pretrained(model)
    images = tmp_path / "images"
    images.mkdir()
    for k, image in enumerate(make_images(2)):
        image.save(images / f"{k}.png")
    captions = tmp_path / "captions.txt"
    captions.write_text("\n".join(CAPTIONS))
    concept = tmp_path / "sks.safetensors"
    monkeypatch.setenv("PERFUSION_CACHE", str(tmp_path / "cache"))
    base = ["--base", str(model)]

    fit = ["fit", *base, "--images", str(images), "--token", "<sks>", "--superclass", "dog"]
    fit += ["--out", str(concept), "--steps", "2", "--batch-size", "1", "--grad-accum", "1"]
    assert main([*fit, "--captions", str(captions), "--resolution", "16"]) == 0
    assert load_concept(concept).base_model_id == str(model)

    out = tmp_path / "out"
    gen = ["generate", *base, "--concept", str(concept), "--prompt", "a photo of a <sks>"]
    assert main([*gen, "--out", str(out), "--steps", "2", "--n", "2", "--strength", "0.8"]) == 0
    written = sorted(out.glob("*.png"))
    assert len(written) == 2 and Image.open(written[0]).size == (16, 16)

    assert main(["info", str(concept)]) == 0
    text = capsys.readouterr().out
    assert "token:        <sks>" in text and "superclass:   dog" in text and "bytes" in text


def test_base_defaults_to_env_then_toy_world(monkeypatch):
    monkeypatch.setenv("PERFUSION_BASE", "/some/model")
    assert build_parser().parse_args(["covariance"]).base == "/some/model"
    monkeypatch.delenv("PERFUSION_BASE")
    default = build_parser().parse_args(["covariance"]).base
    assert Path(default).parts[-3:] == ("workers", "toyworld", "model")


def test_covariance_is_cached_per_base_model(tmp_path: Path):
    model = tmp_path / "model"
    make_tiny_pipeline(tmp_path / "tok").save_pretrained(model)
    pipe = load_pipeline(str(model))
    first = get_covariance(pipe, CAPTIONS[:50], cache_dir=tmp_path)
    files = list(tmp_path.glob("covariance-*.safetensors"))
    assert len(files) == 1
    again = get_covariance(pipe, CAPTIONS[:50], cache_dir=tmp_path)
    assert torch.equal(first.inverse, again.inverse) and again.fingerprint == first.fingerprint
    assert first.base_fingerprint == model_fingerprint(pipe)
    other = get_covariance(pipe, CAPTIONS[50:100], cache_dir=tmp_path)
    assert other.fingerprint != first.fingerprint
    assert len(list(tmp_path.glob("covariance-*.safetensors"))) == 2


def test_fit_with_masks_weights_the_loss(tmp_path: Path, monkeypatch):
    """`perfusion fit --masks DIR`: a mask named like a photo weights that photo's loss."""
    model = tmp_path / "model"
    make_tiny_pipeline(tmp_path / "tok").save_pretrained(model)
    images, masks = tmp_path / "images", tmp_path / "masks"
    images.mkdir()
    masks.mkdir()
    for k, image in enumerate(make_images(2)):
        image.save(images / f"{k}.png")
    centre = Image.new("L", (16, 16), 0)
    centre.paste(255, (4, 4, 12, 12))
    centre.save(masks / "0.png")  # photo 1 has no mask: uniform weight
    captions = tmp_path / "captions.txt"
    captions.write_text("\n".join(CAPTIONS))
    monkeypatch.setenv("PERFUSION_CACHE", str(tmp_path / "cache"))
    fit = ["fit", "--base", str(model), "--images", str(images), "--token", "<sks>"]
    fit += ["--superclass", "dog", "--steps", "2", "--batch-size", "2", "--grad-accum", "1"]
    fit += ["--captions", str(captions), "--resolution", "16"]
    losses = {}
    for name, extra in (("plain", []), ("masked", ["--masks", str(masks)])):
        out = tmp_path / f"{name}.safetensors"
        assert main([*fit, "--out", str(out), *extra]) == 0
        concept = load_concept(out)
        losses[name] = concept.training
    assert losses["plain"]["masked"] is False and losses["masked"]["masked"] is True
    assert losses["plain"]["final_loss"] != losses["masked"]["final_loss"]


def test_fit_takes_the_folders_accumulation_and_restarts_unless_asked(tmp_path, monkeypatch):
    """The toy model's folder sets grad_accum: `perfusion fit` on it used to pass grad_accum
    twice (its own default and the folder's) and stop with a TypeError."""
    import json

    from workers.perfusion.fit import BASE_FIT_FILE

    model = tmp_path / "model"
    make_tiny_pipeline(tmp_path / "tok").save_pretrained(model)
    (model / BASE_FIT_FILE).write_text(json.dumps({"grad_accum": 2, "restarts": 2}))
    images = tmp_path / "images"
    images.mkdir()
    for k, image in enumerate(make_images(2)):
        image.save(images / f"{k}.png")
    captions = tmp_path / "captions.txt"
    captions.write_text("\n".join(CAPTIONS))
    monkeypatch.setenv("PERFUSION_CACHE", str(tmp_path / "cache"))
    fit = ["fit", "--base", str(model), "--images", str(images), "--token", "<sks>"]
    fit += ["--superclass", "dog", "--steps", "2", "--batch-size", "1"]
    fit += ["--captions", str(captions), "--resolution", "16"]
    folder, asked = tmp_path / "folder.safetensors", tmp_path / "asked.safetensors"
    assert main([*fit, "--out", str(folder)]) == 0
    assert main([*fit, "--out", str(asked), "--grad-accum", "1", "--restarts", "1"]) == 0
    training = load_concept(folder).training
    assert (training["grad_accum"], training["restarts"]) == (2, 2)
    assert len(training["restart_photo_losses"]) == 2
    training = load_concept(asked).training
    assert (training["grad_accum"], training["restarts"]) == (1, 1)
