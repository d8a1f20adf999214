"""The training script runs every stage at toy size and writes a loadable v-prediction model."""

import json
import random
from pathlib import Path

import torch
from diffusers import AutoencoderKL, StableDiffusionPipeline, UNet2DConditionModel

from workers.toyworld import train

TINY = [
    "--vae-steps", "2", "--vae-batch", "2", "--vae-crop", "32",
    "--steps", "2", "--batch", "2", "--dataset", "4",
    "--unet-channels", "16", "16", "16", "--threads", "1",
]  # fmt: skip


def _state(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in module.state_dict().items()}


def test_a_tiny_run_writes_a_v_prediction_pipeline(tmp_path: Path) -> None:
    out = tmp_path / "model"
    train.main(["--out", str(out), *TINY])
    pipe = StableDiffusionPipeline.from_pretrained(out)
    # Epsilon prediction at near-zero terminal SNR left the first model unable to pick colours;
    # v prediction on a zero-terminal-SNR schedule is what the sampler must be told about.
    assert pipe.scheduler.config.prediction_type == "v_prediction"
    assert pipe.scheduler.config.rescale_betas_zero_snr
    assert (out / "captions.txt").read_text().count("\n") == train.COVARIANCE_CAPTIONS
    facts = json.loads((out / "training.json").read_text())
    assert facts["diffusion_steps_done"] == 2
    image = pipe("a red star", num_inference_steps=2, output_type="np").images[0]
    assert image.shape == (64, 64, 3)


def test_decoder_finetuning_keeps_the_encoder_and_so_the_latents(tmp_path: Path) -> None:
    first = tmp_path / "first"
    train.main(["--out", str(first), *TINY])
    vae = AutoencoderKL.from_pretrained(first / "vae")
    before = _state(vae)
    cfg = train.TrainConfig(decoder_steps=3, vae_batch=2, vae_crop=32, decoder_lr=1e-2)
    train.finetune_decoder(cfg, random.Random(0), vae)
    after = _state(vae)
    changed = {k for k in before if not torch.equal(before[k], after[k])}
    assert changed and all(k.startswith(("decoder.", "post_quant_conv.")) for k in changed)


def test_stage_two_can_continue_from_a_saved_model(tmp_path: Path) -> None:
    first, second = tmp_path / "first", tmp_path / "second"
    train.main(["--out", str(first), *TINY])
    args = [*TINY, "--vae-from", str(first), "--init-from", str(first)]
    args[args.index("--steps") + 1] = "0"
    train.main(["--out", str(second), *args])
    unet_a = UNet2DConditionModel.from_pretrained(first / "unet")
    unet_b = UNet2DConditionModel.from_pretrained(second / "unet")
    for (name, a), b in zip(unet_a.state_dict().items(), unet_b.state_dict().values(), strict=True):
        assert torch.equal(a, b), name


def test_continuing_into_a_larger_vocabulary_keeps_each_words_embedding(tmp_path: Path) -> None:
    """Toy world 2 adds words: --init-from copies every known token's row by its string."""
    from workers.toyworld import models
    from workers.toyworld.tokenizer import write_tokenizer

    old_tok = write_tokenizer(tmp_path / "old", ["a", "red", "circle"], 77)
    new_tok = write_tokenizer(tmp_path / "new", ["a", "red", "striped", "circle"], 77)
    old, new = models.text_encoder(old_tok, 1), models.text_encoder(new_tok, 1)
    new.load_state_dict(
        train._remap_token_rows(old.state_dict(), old_tok.get_vocab(), new_tok, new)
    )
    old_rows, new_rows = old.get_input_embeddings().weight, new.get_input_embeddings().weight
    old_ids, new_ids = old_tok.get_vocab(), new_tok.get_vocab()
    for word in ("red</w>", "circle</w>", "a</w>"):
        assert torch.equal(new_rows[new_ids[word]], old_rows[old_ids[word]])


def test_cosine_schedule_warms_up_then_decays_to_its_floor_by_steps_or_minutes() -> None:
    cfg = train.TrainConfig(lr=1e-3, warmup=10, steps=1000, lr_schedule="cosine", lr_final=0.1)
    assert train.learning_rate(cfg, 5, 0.0) < train.learning_rate(cfg, 10, 0.0)
    assert abs(train.learning_rate(cfg, 500, 0.0) - 0.55e-3) < 1e-9
    assert abs(train.learning_rate(cfg, 1000, 0.0) - 1e-4) < 1e-12
    # With a wall-clock cap the run may end long before `steps`: the decay follows the clock.
    timed = train.TrainConfig(lr=1e-3, warmup=10, steps=40000, minutes=10.0, lr_schedule="cosine")
    assert abs(train.learning_rate(timed, 200, 600.0) - 1e-4) < 1e-12
    constant = train.TrainConfig(lr=1e-3, warmup=10)
    assert train.learning_rate(constant, 900, 1e6) == 1e-3


def test_a_checkpoint_is_a_complete_model_folder(tmp_path: Path) -> None:
    # A checkpoint without captions.txt made Perfusion measure its covariance on generic
    # captions, and fits on it learned nothing.
    out = tmp_path / "model"
    train.main(["--out", str(out), *TINY, "--checkpoint-every", "1"])
    checkpoint = tmp_path / "model.checkpoint"
    for name in ("captions.txt", "superclasses.txt", "world.json", "model_index.json"):
        assert (checkpoint / name).is_file(), name
    assert (checkpoint / "captions.txt").read_text() == (out / "captions.txt").read_text()


def test_padding_comes_from_another_caption_and_real_tokens_stay() -> None:
    from workers.toyworld.train import shuffle_padding

    eos = 9
    ids = torch.tensor(
        [[1, 5, eos, eos, eos, eos], [1, 5, 6, 7, eos, eos], [1, eos, eos, eos, eos, eos]]
    )
    encodings = (
        torch.arange(3.0)[:, None, None].expand(3, 6, 2) * 10 + torch.arange(6.0)[None, :, None]
    )
    out = shuffle_padding(encodings, ids, eos, torch.Generator().manual_seed(0))
    first = [2, 4, 1]
    donors = set()
    for row in range(3):
        kept = first[row] + 1  # the caption and its first end-of-text token
        assert torch.equal(out[row, :kept], encodings[row, :kept])
        donor = int(out[row, kept, 0]) // 10
        donors.add(donor)
        assert torch.equal(out[row, kept:], encodings[donor, kept:])
    assert len(donors) == 3  # a permutation: every caption gives its padding to one row


def test_a_shallower_text_encoder_keeps_the_earlier_ones_first_layers(tmp_path: Path) -> None:
    from transformers import CLIPTextModel

    first, second = tmp_path / "first", tmp_path / "second"
    train.main(["--out", str(first), *TINY, "--text-layers", "2"])
    args = [*TINY, "--vae-from", str(first), "--init-from", str(first), "--text-layers", "1"]
    args[args.index("--steps") + 1] = "0"
    train.main(["--out", str(second), *args])
    deep = CLIPTextModel.from_pretrained(first / "text_encoder").state_dict()
    shallow = CLIPTextModel.from_pretrained(second / "text_encoder")
    assert shallow.config.num_hidden_layers == 1
    for name, value in shallow.state_dict().items():
        assert torch.equal(value, deep[name]), name  # layer 0, embeddings, final norm
    assert any(".layers.1." in name for name in deep)


def test_object_weights_cover_the_object_and_follow_a_mirrored_latent() -> None:
    from workers.toyworld import world

    scene = world.Scene(
        look=world.Look("square", "red", "plain", None),
        background="white",
        cx=16.0,
        cy=32.0,
        radius=8.0,
    )
    weight = train.object_weights([scene], 3.0)
    assert weight.shape == (1, 1, 16, 16)
    assert torch.isclose(weight.min(), torch.tensor(1.0))  # the background keeps weight 1
    assert torch.isclose(weight.max(), torch.tensor(4.0))  # cells wholly inside the object
    cols = torch.nonzero(weight[0, 0].amax(dim=0) > 1.0).flatten()
    assert cols.min() >= 1 and cols.max() <= 6  # the left side, where the square is
    cfg = train.TrainConfig(dataset=2, object_weight=3.0, breed_share=0.0)
    data = train.LatentDataset.__new__(train.LatentDataset)
    data.scenes, data.weight = [scene, scene], weight.repeat(2, 1, 1, 1)
    data.mean = torch.arange(4 * 256, dtype=torch.float32).reshape(1, 4, 16, 16).repeat(2, 1, 1, 1)
    data.std = torch.zeros_like(data.mean)
    data.pattern_named = data.breed_named = data.color_named = cfg.pattern_named
    flips = set()
    for seed in range(8):  # some draws are mirrored: the weight is mirrored with its latent
        latents, _, drawn = data.batch(random.Random(seed), 2, "cpu")
        for latent, w in zip(latents, drawn, strict=True):
            flipped = not torch.equal(latent, data.mean[0])
            assert torch.equal(w, weight[0].flip(-1) if flipped else weight[0])
            flips.add(flipped)
    assert flips == {True, False}


def test_object_weight_without_the_encoded_dataset_is_refused() -> None:
    import pytest

    with pytest.raises(SystemExit):
        train.parse_args(["--out", "x", "--object-weight", "3", "--dataset", "0"])


def test_jitter_moves_only_real_tokens_of_the_chosen_captions_within_its_bound() -> None:
    from workers.toyworld.train import jitter_encodings

    eos = 9
    ids = torch.tensor(
        [[1, 5, 6, eos, eos, eos], [1, 5, 6, 7, eos, eos], [1, eos, eos, eos, eos, eos]]
    )
    encodings = torch.randn(3, 6, 4, generator=torch.Generator().manual_seed(1))
    out = jitter_encodings(encodings, ids, eos, 0.3, 1.0, torch.Generator().manual_seed(0))
    moved = (out - encodings).norm(dim=-1) > 0
    real = torch.tensor(
        [[0, 1, 1, 1, 0, 0], [0, 1, 1, 1, 1, 0], [0, 1, 0, 0, 0, 0]], dtype=torch.bool
    )
    assert torch.equal(moved, real)  # BOS and padding never move; every word and the end do
    words = encodings[ids.ne(eos) & ids.ne(1)]
    bound = 0.3 * torch.maximum(encodings.norm(dim=-1), words.norm(dim=-1).max())
    assert ((out - encodings).norm(dim=-1) <= bound + 1e-6).all()
    untouched = jitter_encodings(encodings, ids, eos, 0.3, 0.0, torch.Generator().manual_seed(0))
    assert torch.equal(untouched, encodings)  # share 0: no caption is chosen


def test_a_frozen_text_encoder_stays_as_it_was(tmp_path: Path) -> None:
    from transformers import CLIPTextModel

    first, second = tmp_path / "first", tmp_path / "second"
    train.main(["--out", str(first), *TINY])
    args = [*TINY, "--vae-from", str(first), "--init-from", str(first), "--freeze-text-encoder"]
    train.main(["--out", str(second), *args, "--encoding-jitter", "0.3"])
    before = CLIPTextModel.from_pretrained(first / "text_encoder").state_dict()
    after = CLIPTextModel.from_pretrained(second / "text_encoder").state_dict()
    assert all(torch.equal(after[k], before[k]) for k in before)
    moved = UNet2DConditionModel.from_pretrained(second / "unet").state_dict()
    start = UNet2DConditionModel.from_pretrained(first / "unet").state_dict()
    assert any(not torch.equal(moved[k], start[k]) for k in start)  # the UNet still trains


def test_boolean_options_can_be_switched_off() -> None:
    _, on = train.parse_args(["--out", "x"])
    _, off = train.parse_args(["--out", "x", "--no-shuffle-padding", "--freeze-text-encoder"])
    assert on.shuffle_padding and not on.freeze_text_encoder
    assert not off.shuffle_padding and off.freeze_text_encoder
