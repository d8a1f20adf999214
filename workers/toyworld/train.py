"""Train the toy-world base model and write it in the diffusers StableDiffusionPipeline layout.

    python -m workers.toyworld.train --out workers/toyworld/model --seed 0

Stage 1 trains the VAE (reconstruction + a small KL term) and fixes the latent scaling factor
as 1 / std of the latents, as SD did; stage 1b (optional) sharpens its decoder with the encoder
frozen. Stage 2 trains the text encoder jointly with the UNet (v-prediction loss on a
zero-terminal-SNR schedule, 10% empty captions for classifier-free guidance), keeping an EMA of
both; the EMA weights are saved.

Why v and zero terminal SNR (Lin et al., "Common Diffusion Noise Schedules and Sample Steps are
Flawed", WACV 2024): the flat backgrounds make the image's mean colour the first thing the
sampler must decide, at the noisiest step. An epsilon loss there barely depends on the image
(alpha_bar ~ 4e-5 at t = 999), so the first model, trained that way, never learned which colour
to draw: it scored background 0.43 and colour 0.33. The same UNet trained on v for 3,465 CPU
steps scores background 1.0 and colour 0.95 (n=40).

Steps are fixed by the arguments, so a run is reproducible on the same machine and thread
count; --minutes only caps stage 2's wall time.
"""

from __future__ import annotations

import argparse
import copy
import json
import logging
import math
import random
import shutil
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
from diffusers import AutoencoderKL, StableDiffusionPipeline, UNet2DConditionModel
from PIL import Image
from safetensors.torch import load_file, save_file
from transformers import CLIPTextModel, CLIPTokenizer

from workers.toyworld import models, world
from workers.toyworld.tokenizer import write_tokenizer

log = logging.getLogger("toyworld.train")

COVARIANCE_CAPTIONS = 2000


@dataclass
class TrainConfig:
    seed: int = 0
    vae_steps: int = 1000
    vae_batch: int = 32
    vae_crop: int = 64  # < 64 trains on random crops (cheaper on CPU, worse image borders)
    vae_lr: float = 2e-3
    kl_weight: float = 1e-6
    steps: int = 3000
    batch: int = 128
    lr: float = 1e-3
    warmup: int = 100
    lr_schedule: str = "constant"  # or "cosine": down to lr_final x lr by the end of the run
    lr_final: float = 0.1
    ema_decay: float = 0.995
    caption_dropout: float = 0.1
    # > 0: each latent cell's loss weighs 1 + object_weight x (its share of object pixels), so
    # the few cells where pattern and second colour live count more than the flat background.
    object_weight: float = 0.0
    pattern_named: float = world.PATTERN_NAMED  # how often a training caption names the pattern
    breed_share: float = world.BREED_SHARE  # share of training scenes that show a breed
    breed_named: float = world.BREED_NAMED  # how often a breed's caption uses its breed word
    color_named: float = world.COLOR_NAMED  # how often a training caption names the main colour
    # Feed the UNet each caption's padding encodings from another caption of the batch, so it
    # learns to read the real tokens only (see shuffle_padding).
    shuffle_padding: bool = True
    # > 0: in a share of captions, each real token's encoding e becomes e - a x d, with a drawn
    # from U(-jitter, jitter) and d either e itself or another word's encoding from the batch
    # (see jitter_encodings): the UNet learns not to hinge its image on a small part of one
    # word's encoding, as a large model with many redundant tokens does not.
    encoding_jitter: float = 0.0
    jitter_share: float = 0.5
    freeze_text_encoder: bool = False  # train the UNet only, as Stable Diffusion was (frozen CLIP)
    unet_channels: tuple[int, int, int] = (64, 128, 128)
    text_layers: int = 3
    minutes: float | None = None  # wall cap for stage 2 only
    checkpoint_every: int = 0  # if > 0, also save the EMA pipeline to <out>.checkpoint
    threads: int = 2
    dataset: int = 12000  # scenes rendered and VAE-encoded once for stage 2 (0 = fresh each step)
    decoder_steps: int = 0  # stage 1b: fine-tune the decoder of the (trained or reused) VAE
    decoder_lr: float = 5e-4
    vae_from: str = ""  # a model folder whose VAE to reuse instead of training stage 1
    vae_init: str = ""  # a model folder whose VAE stage 1 starts from (fine-tunes)
    init_from: str = ""  # a model folder whose text encoder and UNet stage 2 continues from
    device: str = "cpu"  # all random draws stay on the CPU, so a GPU run follows the same recipe


def images_to_tensor(images: list) -> torch.Tensor:
    """PIL images -> float tensor in [-1, 1], NCHW."""
    array = np.stack([np.asarray(im, dtype=np.float32) for im in images]) / 127.5 - 1.0
    return torch.from_numpy(array).permute(0, 3, 1, 2).contiguous()


def _randn(device: str | torch.device, like: torch.Tensor) -> torch.Tensor:
    """Standard normal noise drawn on the CPU (device-independent stream), moved to device."""
    return torch.randn(like.shape).to(device)


def scene_batch(
    rng: random.Random,
    n: int,
    pattern_named: float = world.PATTERN_NAMED,
    breed_share: float = world.BREED_SHARE,
    breed_named: float = world.BREED_NAMED,
    color_named: float = world.COLOR_NAMED,
) -> tuple[torch.Tensor, list[str]]:
    scenes = [world.sample_training_scene(rng, breed_share) for _ in range(n)]
    return images_to_tensor([world.render(s) for s in scenes]), [
        world.caption(
            s, rng, pattern_named=pattern_named, breed_named=breed_named, color_named=color_named
        )
        for s in scenes
    ]


def vae_batch(cfg: TrainConfig, rng: random.Random) -> torch.Tensor:
    """A batch of rendered scenes, one random vae_crop x vae_crop window of them, on device."""
    x, _ = scene_batch(rng, cfg.vae_batch)
    top, left = (
        rng.randrange(world.SIZE - cfg.vae_crop + 1),
        rng.randrange(world.SIZE - cfg.vae_crop + 1),
    )
    return x[:, :, top : top + cfg.vae_crop, left : left + cfg.vae_crop].to(cfg.device)


def train_vae(cfg: TrainConfig, rng: random.Random) -> tuple[AutoencoderKL, float]:
    """Stage 1: returns the VAE and its latent scaling factor."""
    vae = models.vae()
    if cfg.vae_init:
        vae.load_state_dict(AutoencoderKL.from_pretrained(Path(cfg.vae_init) / "vae").state_dict())
        log.info("stage 1 starts from the VAE of %s", cfg.vae_init)
    vae = vae.to(cfg.device)
    opt = torch.optim.AdamW(vae.parameters(), lr=cfg.vae_lr, weight_decay=0.0)
    start = time.monotonic()
    for step in range(1, cfg.vae_steps + 1):
        lr = cfg.vae_lr * min(1.0, step / 50) * (0.1 if step > 0.8 * cfg.vae_steps else 1.0)
        for group in opt.param_groups:
            group["lr"] = lr
        x = vae_batch(cfg, rng)
        posterior = vae.encode(x).latent_dist
        recon = vae.decode(posterior.mean + posterior.std * _randn(x.device, posterior.std)).sample
        mse = torch.nn.functional.mse_loss(recon, x)
        loss = mse + cfg.kl_weight * posterior.kl().mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if step % 50 == 0 or step == cfg.vae_steps:
            log.info(
                "vae step %d/%d mse %.5f (%.0f s)",
                step,
                cfg.vae_steps,
                mse.item(),
                time.monotonic() - start,
            )
    vae.eval().requires_grad_(False)
    with torch.no_grad():
        x, _ = scene_batch(rng, 256)
        posterior = vae.encode(x.to(cfg.device)).latent_dist
        std = (posterior.mean + posterior.std * _randn(cfg.device, posterior.std)).std().item()
    log.info("latent std %.4f -> scaling factor %.5f", std, 1.0 / std)
    return vae, 1.0 / std


def finetune_decoder(cfg: TrainConfig, rng: random.Random, vae: AutoencoderKL) -> None:
    """Stage 1b: sharpen the decoder with the encoder frozen, so the latents (and any UNet
    trained on them) stay valid; SD's improved VAE decoders were made the same way. Small
    stars otherwise come back with blunt points that read as circles."""
    vae.requires_grad_(False)
    vae.decoder.requires_grad_(True)
    vae.post_quant_conv.requires_grad_(True)
    params = [p for p in vae.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=cfg.decoder_lr, weight_decay=0.0)
    start = time.monotonic()
    for step in range(1, cfg.decoder_steps + 1):
        for group in opt.param_groups:
            group["lr"] = cfg.decoder_lr * (0.1 if step > 0.8 * cfg.decoder_steps else 1.0)
        x = vae_batch(cfg, rng)
        with torch.no_grad():
            posterior = vae.encode(x).latent_dist
            z = posterior.mean + posterior.std * _randn(x.device, posterior.std)
        recon = vae.decode(z).sample
        mse = torch.nn.functional.mse_loss(recon, x)
        opt.zero_grad(set_to_none=True)
        mse.backward()
        opt.step()
        if step % 50 == 0 or step == cfg.decoder_steps:
            elapsed = time.monotonic() - start
            log.info(
                "decoder step %d/%d mse %.5f (%.0f s)", step, cfg.decoder_steps, mse.item(), elapsed
            )
    vae.eval().requires_grad_(False)


class LatentDataset:
    """Scenes rendered and VAE-encoded once, so a stage-2 step costs only the UNet and text
    encoder. Each draw samples the posterior afresh, picks a fresh caption template and mirrors
    half the latents (every toy shape is left-right symmetric, so a mirror is a valid scene)."""

    def __init__(
        self, cfg: TrainConfig, rng: random.Random, vae: AutoencoderKL, scaling: float
    ) -> None:
        self.scenes = [
            world.sample_training_scene(rng, cfg.breed_share) for _ in range(cfg.dataset)
        ]
        means, stds = [], []
        with torch.no_grad():
            for start in range(0, len(self.scenes), 256):
                chunk = self.scenes[start : start + 256]
                x = images_to_tensor([world.render(s) for s in chunk]).to(cfg.device)
                posterior = vae.encode(x).latent_dist
                means.append(posterior.mean * scaling)
                stds.append(posterior.std * scaling)
        self.mean, self.std = torch.cat(means), torch.cat(stds)
        self.weight = (
            object_weights(self.scenes, cfg.object_weight).to(cfg.device)
            if cfg.object_weight
            else None
        )
        self.pattern_named = cfg.pattern_named
        self.breed_named = cfg.breed_named
        self.color_named = cfg.color_named
        log.info("encoded %d scenes once for stage 2", len(self.scenes))

    def batch(
        self, rng: random.Random, n: int, device: str
    ) -> tuple[torch.Tensor, list[str], torch.Tensor | None]:
        """Latents, captions and (with object_weight) each latent cell's loss weight."""
        index = [rng.randrange(len(self.scenes)) for _ in range(n)]
        latents = self.mean[index] + self.std[index] * _randn(device, self.std[index])
        mirror = torch.tensor([rng.random() < 0.5 for _ in index], device=latents.device)
        latents = torch.where(mirror[:, None, None, None], latents.flip(-1), latents)
        weight = None
        if self.weight is not None:
            weight = self.weight[index]
            weight = torch.where(mirror[:, None, None, None], weight.flip(-1), weight)
        captions = [
            world.caption(
                self.scenes[k],
                rng,
                pattern_named=self.pattern_named,
                breed_named=self.breed_named,
                color_named=self.color_named,
            )
            for k in index
        ]
        return latents, captions, weight


def object_weights(scenes: list[world.Scene], object_weight: float) -> torch.Tensor:
    """Per latent cell (N x 1 x 16 x 16): 1 + object_weight x the cell's share of object pixels."""
    cells = world.SIZE // 4
    masks = np.stack(
        [
            np.asarray(world.object_mask(s).resize((cells, cells), Image.Resampling.BOX))
            for s in scenes
        ]
    )
    share = torch.from_numpy(masks.astype(np.float32) / 255.0)[:, None]
    return 1.0 + object_weight * share


def tokenize(tokenizer: CLIPTokenizer, prompts: list[str]) -> torch.Tensor:
    """Token ids exactly as StableDiffusionPipeline makes them (padded to the full length)."""
    return tokenizer(
        prompts,
        padding="max_length",
        max_length=tokenizer.model_max_length,
        truncation=True,
        return_tensors="pt",
    ).input_ids


def shuffle_padding(
    encodings: torch.Tensor, ids: torch.Tensor, eos_id: int, generator: torch.Generator
) -> torch.Tensor:
    """Each row's encodings after its first end-of-text token, taken from a random row.

    A causal text encoder writes a summary of the whole caption into every padding position
    after the caption, and a UNet trained jointly with it reads the caption mostly from there:
    toy world 2's model put 72 % of its cross-attention on padding, and only 10 % on a breed
    word. Models trained with a frozen text encoder, as Stable Diffusion is, ignore padding
    (Toker et al., "Padding Tone", NAACL 2025, arXiv 2501.06751); there a concept token's own
    key and value carry its look, which is what Perfusion edits. Padding that belongs to another
    caption carries nothing about this image, so the UNet learns to read the real tokens.
    """
    is_eos = ids == eos_id
    first_eos = torch.where(is_eos.any(1), is_eos.int().argmax(1), ids.shape[1])
    positions = torch.arange(ids.shape[1])[None]
    after = (positions > first_eos[:, None]).to(encodings.device)
    donor = torch.randperm(ids.shape[0], generator=generator).to(encodings.device)
    return torch.where(after[..., None], encodings[donor], encodings)


def jitter_encodings(
    encodings: torch.Tensor,
    ids: torch.Tensor,
    eos_id: int,
    amount: float,
    share: float,
    generator: torch.Generator,
) -> torch.Tensor:
    """Perturb the real tokens' encodings (the words and the first end-of-text token) of a
    random `share` of the rows by e - a x d, a ~ U(-amount, amount) per token.

    d is, with even odds, the token's own encoding (a rescaling) or a random word encoding of
    the batch. These are the two ways a Perfusion edit moves a word that is not its concept:
    h(e) = W (e - s(e) i*) + ..., with s(e) up to a third at the superclass noun, whose
    encoding i* started from, and a tenth or two at other words (the model card's drift
    sections). A base model trained on clean encodings only redraws its whole image for such a
    change; this teaches it that the caption, not a tenth of one word, decides the image.
    """
    n, length = ids.shape
    is_eos = ids == eos_id
    first_eos = torch.where(is_eos.any(1), is_eos.int().argmax(1), length - 1)
    positions = torch.arange(length)[None]
    words = (positions >= 1) & (positions < first_eos[:, None])
    real = (positions >= 1) & (positions <= first_eos[:, None])
    rows = torch.rand(n, generator=generator) < share
    word_index = words.flatten().nonzero().squeeze(1)
    if not len(word_index):
        return encodings
    clean = encodings.detach()
    pick = word_index[torch.randint(len(word_index), (n, length), generator=generator)]
    others = clean.reshape(n * length, -1)[pick.to(clean.device)]
    own = (torch.rand(n, length, generator=generator) < 0.5).to(clean.device)
    donors = torch.where(own[..., None], clean, others)
    a = (torch.rand(n, length, generator=generator) * 2 - 1) * amount
    a = torch.where(real & rows[:, None], a, torch.zeros_like(a)).to(encodings)
    return encodings - a[..., None] * donors


def _remap_token_rows(
    state: dict[str, torch.Tensor],
    old_vocab: dict[str, int],
    tokenizer: CLIPTokenizer,
    encoder: CLIPTextModel,
) -> dict[str, torch.Tensor]:
    """An earlier text encoder's weights for a (possibly larger) new vocabulary: each token's
    embedding row is copied by token string; tokens new to the world keep their fresh init."""
    key = next(k for k in state if k.endswith("embeddings.token_embedding.weight"))
    rows = encoder.state_dict()[key].clone()
    copied = 0
    for token, new_id in tokenizer.get_vocab().items():
        if token in old_vocab:
            rows[new_id] = state[key][old_vocab[token]]
            copied += 1
    log.info("copied %d of %d token embeddings from the earlier encoder", copied, len(rows))
    return {**state, key: rows}


def learning_rate(cfg: TrainConfig, step: int, elapsed_s: float) -> float:
    """Linear warm-up, then constant or cosine decay. With --minutes the run's end is a time,
    so the cosine follows whichever of steps and minutes is further along."""
    lr = cfg.lr * min(1.0, step / cfg.warmup)
    if cfg.lr_schedule == "constant":
        return lr
    if cfg.lr_schedule != "cosine":
        raise ValueError(f"unknown lr schedule {cfg.lr_schedule!r} (constant or cosine)")
    progress = step / max(cfg.steps, 1)
    if cfg.minutes:
        progress = max(progress, elapsed_s / (60 * cfg.minutes))
    shape = 0.5 * (1 + math.cos(math.pi * min(progress, 1.0)))
    return lr * (cfg.lr_final + (1 - cfg.lr_final) * shape)


def train_diffusion(
    cfg: TrainConfig,
    rng: random.Random,
    tokenizer: CLIPTokenizer,
    vae: AutoencoderKL,
    scaling: float,
    checkpoint: Callable[[CLIPTextModel, UNet2DConditionModel], None] | None = None,
) -> tuple[CLIPTextModel, UNet2DConditionModel, int, float]:
    """Stage 2: returns the EMA text encoder and UNet, the steps done and seconds taken."""
    encoder = models.text_encoder(tokenizer, cfg.text_layers).to(cfg.device)
    unet = models.unet(cfg.unet_channels).to(cfg.device)
    if cfg.init_from:
        # Continue an earlier run (its saved EMA weights); the optimizer starts afresh.
        folder = Path(cfg.init_from)
        old = CLIPTextModel.from_pretrained(folder / "text_encoder").state_dict()
        old_vocab = CLIPTokenizer.from_pretrained(folder / "tokenizer").get_vocab()
        state = _remap_token_rows(old, old_vocab, tokenizer, encoder)
        own = encoder.state_dict()
        dropped = sorted(k for k in state if k not in own)
        if dropped:  # a shallower --text-layers keeps the earlier encoder's first layers
            log.info("%d tensors of the earlier encoder's deeper layers not used", len(dropped))
        missing = encoder.load_state_dict(
            {k: v for k, v in state.items() if k in own}, strict=False
        )
        if missing.missing_keys:
            log.info("%d encoder tensors start fresh", len(missing.missing_keys))
        unet.load_state_dict(UNet2DConditionModel.from_pretrained(folder / "unet").state_dict())
        log.info("stage 2 starts from the text encoder and UNet of %s", folder)
    if cfg.freeze_text_encoder:
        encoder.requires_grad_(False)
    ema_encoder, ema_unet = copy.deepcopy(encoder), copy.deepcopy(unet)
    ema_encoder.requires_grad_(False)
    ema_unet.requires_grad_(False)
    # (live, EMA) pairs of what is trained; a frozen encoder's EMA copy stays as it was.
    pairs = [
        (p, a)
        for p, a in zip(
            [*encoder.parameters(), *unet.parameters()],
            [*ema_encoder.parameters(), *ema_unet.parameters()],
            strict=True,
        )
        if p.requires_grad
    ]
    trained = [p for p, _ in pairs]
    averaged = [a for _, a in pairs]
    opt = torch.optim.AdamW(trained, lr=cfg.lr, weight_decay=0.01)
    scheduler = models.train_scheduler()
    data = LatentDataset(cfg, rng, vae, scaling) if cfg.dataset else None
    shuffler = torch.Generator().manual_seed(cfg.seed)
    start = time.monotonic()
    step, running = 0, 0.0
    while step < cfg.steps:
        if cfg.minutes is not None and time.monotonic() - start > 60 * cfg.minutes:
            log.warning("stopping at step %d: --minutes %.1f reached", step, cfg.minutes)
            break
        step += 1
        for group in opt.param_groups:
            group["lr"] = learning_rate(cfg, step, time.monotonic() - start)
        weight = None
        if data is not None:
            latents, prompts, weight = data.batch(rng, cfg.batch, cfg.device)
        else:
            x, prompts = scene_batch(
                rng, cfg.batch, cfg.pattern_named, cfg.breed_share, cfg.breed_named, cfg.color_named
            )
            with torch.no_grad():
                posterior = vae.encode(x.to(cfg.device)).latent_dist
                latents = posterior.mean + posterior.std * _randn(cfg.device, posterior.std)
                latents = latents * scaling
        prompts = ["" if rng.random() < cfg.caption_dropout else p for p in prompts]
        noise = _randn(cfg.device, latents)
        t = torch.randint(0, scheduler.config.num_train_timesteps, (cfg.batch,)).to(cfg.device)
        noisy = scheduler.add_noise(latents, noise, t)
        ids = tokenize(tokenizer, prompts)
        encodings = encoder(ids.to(cfg.device))[0]
        if cfg.shuffle_padding:
            encodings = shuffle_padding(encodings, ids, tokenizer.eos_token_id, shuffler)
        if cfg.encoding_jitter:
            encodings = jitter_encodings(
                encodings,
                ids,
                tokenizer.eos_token_id,
                cfg.encoding_jitter,
                cfg.jitter_share,
                shuffler,
            )
        pred = unet(noisy, t, encodings).sample
        target = scheduler.get_velocity(latents, noise, t)
        error = (pred - target).pow(2)
        if weight is None:
            per_sample = error.mean(dim=(1, 2, 3))
        else:  # a weighted mean: the loss keeps its scale, so the learning rate keeps its meaning
            per_sample = (error * weight).mean(dim=(1, 2, 3)) / weight.mean(dim=(1, 2, 3))
        # Plain v loss, as SD 2: min-SNR weighting would scale the noisiest steps by their ~0
        # SNR, starving exactly the steps that decide the background colour.
        loss = per_sample.mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(trained, 1.0)
        opt.step()
        decay = min(cfg.ema_decay, (1 + step) / (10 + step))
        with torch.no_grad():
            torch._foreach_lerp_(averaged, [p.detach() for p in trained], 1 - decay)
        running = 0.98 * running + 0.02 * loss.item() if step > 1 else loss.item()
        if step % 50 == 0 or step == cfg.steps:
            elapsed = time.monotonic() - start
            log.info(
                "step %d/%d loss %.4f (%.0f s, %.2f s/step)",
                step,
                cfg.steps,
                running,
                elapsed,
                elapsed / step,
            )
        if checkpoint and cfg.checkpoint_every and step % cfg.checkpoint_every == 0:
            checkpoint(ema_encoder, ema_unet)
    return ema_encoder.eval(), ema_unet.eval(), step, time.monotonic() - start


def build_pipeline(
    tokenizer: CLIPTokenizer,
    encoder: CLIPTextModel,
    vae: AutoencoderKL,
    unet: UNet2DConditionModel,
    scaling: float,
) -> StableDiffusionPipeline:
    vae.register_to_config(scaling_factor=scaling)
    return StableDiffusionPipeline(
        vae=vae,
        text_encoder=encoder,
        tokenizer=tokenizer,
        unet=unet,
        scheduler=models.sample_scheduler(),
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    )


def store_half(folder: Path) -> None:
    """Rewrite the saved weights in fp16 to halve the folder; from_pretrained still loads fp32
    models (the values are cast up), and fp16 keeps ample precision for this model."""
    for path in folder.glob("*/*.safetensors"):
        state = load_file(path)
        save_file({k: v.half() for k, v in state.items()}, path, metadata={"format": "pt"})


def write_world_files(folder: Path, seed: int) -> None:
    """What besides weights makes a folder a toy-world model: the captions Perfusion measures
    its text covariance on, the nouns the studio suggests, and what the world draws. A
    checkpoint gets them too; without captions.txt a fit falls back to generic captions and
    learns nothing."""
    captions = world.captions(COVARIANCE_CAPTIONS, seed)
    (folder / "captions.txt").write_text("\n".join(captions) + "\n")
    # The nouns the web app suggests first as a concept's superclass (it imports no workers/).
    nouns = [*world.SUPERCLASS_NOUNS, *world.SHAPES]
    (folder / "superclasses.txt").write_text("\n".join(nouns) + "\n")
    # What the new-concept page says the world draws (app/concepts/basemodel.py reads it).
    described = {"size_px": world.SIZE, "backgrounds": list(world.BACKGROUNDS)}
    (folder / "world.json").write_text(json.dumps(described, indent=2) + "\n")


def parse_args(argv: list[str] | None = None) -> tuple[Path, TrainConfig]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, required=True)
    defaults = TrainConfig()
    for name, value in asdict(defaults).items():
        if name == "unet_channels":
            parser.add_argument("--unet-channels", type=int, nargs=3, default=list(value))
        elif name == "minutes":
            parser.add_argument("--minutes", type=float, default=None)
        elif isinstance(value, bool):  # type=bool would read "--flag false" as True
            parser.add_argument(
                "--" + name.replace("_", "-"), action=argparse.BooleanOptionalAction, default=value
            )
        else:
            parser.add_argument("--" + name.replace("_", "-"), type=type(value), default=value)
    args = vars(parser.parse_args(argv))
    out = args.pop("out")
    args["unet_channels"] = tuple(args["unet_channels"])
    if args["object_weight"] and not args["dataset"]:
        parser.error("--object-weight needs the encoded dataset (--dataset > 0)")
    return out, TrainConfig(**args)


def main(argv: list[str] | None = None) -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    out, cfg = parse_args(argv)
    torch.set_num_threads(cfg.threads)
    torch.manual_seed(cfg.seed)
    rng = random.Random(cfg.seed)
    started = time.monotonic()
    staging = out.with_name(out.name + ".partial")
    shutil.rmtree(staging, ignore_errors=True)
    tokenizer = write_tokenizer(staging / "tokenizer", world.vocabulary(), models.MAX_LENGTH)
    if cfg.vae_from:
        vae = AutoencoderKL.from_pretrained(Path(cfg.vae_from) / "vae").to(cfg.device)
        vae.eval().requires_grad_(False)
        scaling = float(vae.config.scaling_factor)
        log.info("reusing the VAE of %s (scaling factor %.5f)", cfg.vae_from, scaling)
    else:
        vae, scaling = train_vae(cfg, rng)
    if cfg.decoder_steps:
        finetune_decoder(cfg, rng, vae)
    vae_seconds = time.monotonic() - started

    def checkpoint(encoder: CLIPTextModel, unet: UNet2DConditionModel) -> None:
        folder = out.with_name(out.name + ".checkpoint")
        build_pipeline(tokenizer, encoder, vae, unet, scaling).save_pretrained(folder)
        write_world_files(folder, cfg.seed)
        log.info("checkpoint written to %s", folder)

    encoder, unet, steps, seconds = train_diffusion(cfg, rng, tokenizer, vae, scaling, checkpoint)
    pipe = build_pipeline(tokenizer, encoder, vae, unet, scaling).to("cpu")
    pipe.save_pretrained(staging)
    store_half(staging)
    write_world_files(staging, cfg.seed)
    facts = {
        "config": asdict(cfg),
        "diffusion_steps_done": steps,
        "vae_seconds": round(vae_seconds),
        "diffusion_seconds": round(seconds),
        "total_seconds": round(time.monotonic() - started),
        "torch_threads": torch.get_num_threads(),
    }
    (staging / "training.json").write_text(json.dumps(facts, indent=2) + "\n")
    # Atomic replace: the old model stays usable until the new one is complete.
    if out.exists():
        old = out.with_name(out.name + ".old")
        shutil.rmtree(old, ignore_errors=True)
        out.rename(old)
        staging.rename(out)
        shutil.rmtree(old)
    else:
        staging.rename(out)
    log.info("wrote %s in %.0f s", out, time.monotonic() - started)


if __name__ == "__main__":
    main()
