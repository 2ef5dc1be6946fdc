"""Train the bundled shapes model (SD 1.x architecture, small widths) and export it.

    python tools/train_default_model.py --phase vae  --ckpt CKPT --minutes 9
    python tools/train_default_model.py --phase unet --ckpt CKPT --minutes 9   # repeat to resume
    python tools/train_default_model.py --ckpt CKPT --export diffusion/data/shapes-128

Each run is time-boxed and saves CKPT (fp32 safetensors shards < 16 MB, state.json, losses.csv;
the optimizer in opt_<phase>.pt, optional on resume). Data are drawn in-process by
tools/shapes.py on a process pool, never the HELD_OUT combinations, no flips (left/right matter).
Needs torch, diffusers, transformers; CUDA if present (bf16 autocast), else CPU (use --tiny).
"""

from __future__ import annotations

import argparse
import csv
import json
import multiprocessing
import shutil
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from tools import shapes

MODELS = {
    # Sized for the CPU: a 2-core machine's lavapipe must draw a picture in seconds, so the VAE
    # downsamples 8x like SD's (16x16x4 latents) with narrow full-resolution layers, and the UNet
    # keeps attention off its 16x16 level (as SDXL does), cross-attending at 8x8 and 4x4.
    "full": dict(
        vae=dict(block_out_channels=(16, 32, 64, 64), layers_per_block=1, latent_channels=4,
                 down_block_types=("DownEncoderBlock2D",) * 4,
                 up_block_types=("UpDecoderBlock2D",) * 4, norm_num_groups=16, sample_size=128),
        unet=dict(sample_size=16, block_out_channels=(32, 64, 128), layers_per_block=1,
                  down_block_types=("DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
                  up_block_types=("CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"),
                  cross_attention_dim=128, attention_head_dim=4, norm_num_groups=32),
        text=dict(hidden_size=128, intermediate_size=512, num_hidden_layers=4,
                  num_attention_heads=4, projection_dim=128),
        batch=dict(vae=32, unet=256), pool=150_000, lr=dict(vae=2e-4, unet=3e-4)),
    "tiny": dict(
        vae=dict(block_out_channels=(32, 32, 32), layers_per_block=1, latent_channels=4,
                 down_block_types=("DownEncoderBlock2D",) * 3,
                 up_block_types=("UpDecoderBlock2D",) * 3, norm_num_groups=32, sample_size=128),
        unet=dict(sample_size=32, block_out_channels=(32, 32, 32), layers_per_block=1,
                  down_block_types=("CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"),
                  up_block_types=("UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"),
                  cross_attention_dim=32, attention_head_dim=4, norm_num_groups=32),
        text=dict(hidden_size=32, intermediate_size=128, num_hidden_layers=2,
                  num_attention_heads=4, projection_dim=32),
        batch=dict(vae=4, unet=4), pool=256, lr=dict(vae=2e-4, unet=3e-4)),
}
# SD 1.x's betas, rescaled to zero terminal SNR (Lin et al. 2023) with v-prediction: under
# SD's own schedule the last timestep still holds 7% of the picture, so the model learns to read
# the shape's place from that leak instead of from the caption, and ignores "at the left" when
# sampling starts from pure noise (seen in the first 9.5k-step epsilon model).
SCHEDULE = dict(num_train_timesteps=1000, beta_start=0.00085, beta_end=0.012,
                beta_schedule="scaled_linear", prediction_type="v_prediction",
                rescale_betas_zero_snr=True, timestep_spacing="trailing")
# what the CLI and the page start from (diffusion.pipelines.load reads defaults.json): at 10
# DDIM steps with guidance 5 all 32 evaluation pictures agree with their captions (see the model
# card), and a CPU picture takes 2.5x less time than at 25
SAMPLING_DEFAULTS = {"steps": 10, "sampler": "DDIM", "cfg_scale": 5.0}
SAMPLE_CAPTIONS = ["a red circle on a blue background", "a small green square at the left on a "
                   "white background", "a large yellow star at the top on a black background",
                   "a purple triangle on a orange background", "a red star on a green background"]
SHARD_BYTES = 15 << 20


def log(*parts: object) -> None:
    print(time.strftime("%H:%M:%S"), *parts, file=sys.stderr, flush=True)


# ---- data ------------------------------------------------------------------------------------
def _render(job: tuple[int, int, int]) -> tuple[np.ndarray, np.ndarray]:
    seed, start, count = job
    images, words = [], []
    for image, _, spec in shapes.dataset(seed, count, start=start):
        images.append(image)
        words.append([list(shapes.COLOURS).index(spec.colour), shapes.SHAPES.index(spec.shape),
                      list(shapes.COLOURS).index(spec.background),
                      shapes.POSITIONS.index(spec.position), shapes.SIZES.index(spec.size_word)])
    return np.stack(images), np.array(words, np.int64)


def make_pool(seed: int, n: int, workers: int) -> tuple[np.ndarray, np.ndarray]:
    """n training pictures (uint8 (n, 128, 128, 3)) and their words (n, 5): colour, shape,
    background, position, size indices."""
    start = time.time()
    jobs = [(seed, i, min(1000, n - i)) for i in range(0, n, 1000)]
    with multiprocessing.get_context("spawn").Pool(workers) as pool:
        parts = pool.map(_render, jobs, chunksize=1)
    images, words = np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts])
    log(f"pool: {n} pictures in {time.time() - start:.1f} s on {workers} processes")
    return images, words


def caption_table(tokenizer) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Token ids of every caption: plain[c, s, b], full[c, s, b, p, z], and of ""."""
    def ids(texts: list[str]) -> torch.Tensor:
        return torch.tensor(tokenizer(texts, padding="max_length", truncation=True,
                                      max_length=77).input_ids)
    colours, nc, ns, npos, nz = list(shapes.COLOURS), len(shapes.COLOURS), len(shapes.SHAPES), \
        len(shapes.POSITIONS), len(shapes.SIZES)
    grid = np.indices((nc, ns, nc, npos, nz)).reshape(5, -1).T
    full = [shapes.TEMPLATES["full"].format(colour=colours[c], shape=shapes.SHAPES[s],
            background=colours[b], position=shapes.POSITIONS[p], size=shapes.SIZES[z])
            for c, s, b, p, z in grid]
    plain = [shapes.TEMPLATES["plain"].format(colour=colours[c], shape=shapes.SHAPES[s],
             background=colours[b]) for c, s, b in np.indices((nc, ns, nc)).reshape(3, -1).T]
    return (ids(plain).view(nc, ns, nc, 77), ids(full).view(nc, ns, nc, npos, nz, 77),
            ids([""])[0])


# ---- checkpoint ------------------------------------------------------------------------------
def save_weights(tensors: dict[str, torch.Tensor], folder: Path, name: str) -> None:
    from safetensors.torch import save_file

    for old in folder.glob(f"{name}-*.safetensors"):
        old.unlink()
    shard, size, index = {}, 0, 0
    items = [(k, v.detach().float().cpu().contiguous()) for k, v in tensors.items()]
    for i, (key, value) in enumerate(items):
        shard[key], size = value, size + value.numel() * 4
        if size >= SHARD_BYTES or i == len(items) - 1:
            save_file(shard, str(folder / f"{name}-{index:02d}.safetensors.tmp"))
            (folder / f"{name}-{index:02d}.safetensors.tmp").rename(
                folder / f"{name}-{index:02d}.safetensors")
            shard, size, index = {}, 0, index + 1


def load_weights(folder: Path, name: str) -> dict[str, torch.Tensor] | None:
    from safetensors.torch import load_file

    files = sorted(folder.glob(f"{name}-*.safetensors"))
    return {k: v for f in files for k, v in load_file(str(f)).items()} if files else None


class Checkpoint:
    def __init__(self, folder: Path, tiny: bool) -> None:
        self.folder = folder
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / "state.json"
        self.state = (json.loads(path.read_text()) if path.exists() else
                      {"model": "tiny" if tiny else "full", "step": {"vae": 0, "unet": 0}})
        self.spec = MODELS[self.state["model"]]
        if not (folder / "tokenizer" / "vocab.json").exists():
            shapes.tokenizer_files(folder / "tokenizer")

    def save_state(self) -> None:
        (self.folder / "state.json.tmp").write_text(json.dumps(self.state, indent=1))
        (self.folder / "state.json.tmp").rename(self.folder / "state.json")

    def log_losses(self, rows: list[tuple[str, int, float]]) -> None:
        path = self.folder / "losses.csv"
        new = not path.exists()
        with path.open("a", newline="") as f:
            writer = csv.writer(f)
            if new:
                writer.writerow(["phase", "step", "loss"])
            writer.writerows(rows)


def build(ckpt: Checkpoint):
    import diffusers
    import transformers

    vocab = json.loads((ckpt.folder / "tokenizer" / "vocab.json").read_text())
    spec = ckpt.spec
    vae = diffusers.AutoencoderKL(**spec["vae"])
    unet = diffusers.UNet2DConditionModel(**spec["unet"])
    text = transformers.CLIPTextModel(transformers.CLIPTextConfig(
        **spec["text"], vocab_size=len(vocab), max_position_embeddings=77,
        bos_token_id=vocab["<|startoftext|>"], eos_token_id=vocab["<|endoftext|>"],
        pad_token_id=vocab["<|endoftext|>"], hidden_act="quick_gelu"))
    for name, model in (("vae", vae), ("unet", unet), ("text_encoder", text)):
        weights = load_weights(ckpt.folder, name)
        if weights is not None:
            model.load_state_dict(weights, strict=False)
        count = sum(p.numel() for p in model.parameters())
        log(f"{name}: {count / 1e6:.2f} M parameters, {count * 2 / 2**20:.1f} MiB in float16")
    if "scaling_factor" in ckpt.state:
        vae.register_to_config(scaling_factor=ckpt.state["scaling_factor"])
    return vae, unet, text


# ---- training --------------------------------------------------------------------------------
def sobel(x: torch.Tensor) -> torch.Tensor:
    k = torch.tensor([[-1.0, 0, 1], [-2, 0, 2], [-1, 0, 1]], device=x.device, dtype=x.dtype)
    kernel = torch.stack([k, k.T])[:, None].repeat(x.shape[1], 1, 1, 1)
    return F.conv2d(x, kernel, padding=1, groups=x.shape[1])


def to_unit(images: torch.Tensor) -> torch.Tensor:
    return images.permute(0, 3, 1, 2).float() / 127.5 - 1


class Loop:
    """Shared time-boxed loop: optimizer (resumed if saved), warm-up, logging, saving."""

    def __init__(self, args, ckpt: Checkpoint, phase: str, params: list, device) -> None:
        self.args, self.ckpt, self.phase, self.params = args, ckpt, phase, params
        self.opt = torch.optim.AdamW(params, lr=ckpt.spec["lr"][phase], weight_decay=1e-2)
        opt_path = ckpt.folder / f"opt_{phase}.pt"
        self.warmup = 500 if ckpt.state["step"][phase] == 0 else 100
        if opt_path.exists():
            self.opt.load_state_dict(torch.load(opt_path, map_location=device))
            self.warmup = 0
        self.step0 = self.step = ckpt.state["step"][phase]
        self.rows: list[tuple[str, int, float]] = []
        self.last_print, self.losses = time.time(), []

    def update(self, loss: torch.Tensor) -> None:
        done = self.step - self.step0
        for group in self.opt.param_groups:
            ramp = min(1.0, (done + 1) / (self.warmup + 1))
            group["lr"] = self.ckpt.spec["lr"][self.phase] * ramp
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(self.params, 1.0)
        self.opt.step()
        self.step += 1
        self.losses.append(loss.detach())
        if self.step % 50 == 0:
            self.rows.append((self.phase, self.step, float(torch.stack(self.losses).mean())))
            self.losses = []
        if time.time() - self.last_print > 30 and self.rows:
            self.last_print = time.time()
            log(f"{self.phase} step {self.step} loss {self.rows[-1][2]:.4f}")

    def finish(self) -> None:
        if self.losses:
            self.rows.append((self.phase, self.step, float(torch.stack(self.losses).mean())))
        self.ckpt.state["step"][self.phase] = self.step
        self.ckpt.log_losses(self.rows)
        torch.save(self.opt.state_dict(), self.ckpt.folder / f"opt_{self.phase}.pt")
        self.ckpt.save_state()
        log(f"{self.phase}: saved at step {self.step} ({self.step - self.step0} this run)")


@torch.no_grad()
def latent_std(vae, images: torch.Tensor) -> float:
    latents = [vae.encode(to_unit(images[i:i + 64])).latent_dist.mean
               for i in range(0, min(len(images), 4096), 64)]
    return float(torch.cat(latents).float().std())


def train_vae(args, ckpt: Checkpoint, device, deadline: float) -> None:
    """Encoder and decoder; with --phase vae-decoder the decoder alone, which sharpens the
    pictures without moving the latent space a trained UNet works in."""
    decoder_only = args.phase == "vae-decoder"
    images, _ = make_pool(args.seed, args.pool or ckpt.spec["pool"], args.workers)
    images = torch.from_numpy(images).to(device)
    vae, _, _ = build(ckpt)
    vae.to(device).train()
    params = list(vae.parameters())
    if decoder_only:
        params = [*vae.decoder.parameters(), *vae.post_quant_conv.parameters()]
        vae.requires_grad_(False)
        for p in params:
            p.requires_grad_(True)
    loop = Loop(args, ckpt, "vae", params, device)
    batch = ckpt.spec["batch"]["vae"]
    while time.time() < deadline and (args.steps is None or loop.step - loop.step0 < args.steps):
        x = to_unit(images[torch.randint(len(images), (batch,), device=device)])
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda"):
            dist = vae.encode(x).latent_dist
            out = vae.decode(dist.sample()).sample.float()
        kl = dist.kl().mean() / x[0].numel()
        loss = (F.l1_loss(out, x) + F.mse_loss(out, x) + 0.1 * F.l1_loss(sobel(out), sobel(x))
                + 1e-6 * kl)
        loop.update(loss)
    vae.eval()
    if not decoder_only:
        ckpt.state["scaling_factor"] = 1.0 / latent_std(vae, images)
    log(f"vae: latent scaling_factor {ckpt.state['scaling_factor']:.4f}")
    save_weights(vae.state_dict(), ckpt.folder, "vae")
    loop.finish()


def train_unet(args, ckpt: Checkpoint, device, deadline: float) -> None:
    import diffusers
    import transformers

    if "scaling_factor" not in ckpt.state:
        raise SystemExit("train the VAE first (--phase vae)")
    images, words = make_pool(args.seed + 1, args.pool or ckpt.spec["pool"], args.workers)
    vae, unet, text = build(ckpt)
    vae.to(device).eval()
    scale = ckpt.state["scaling_factor"]
    with torch.no_grad(), torch.autocast(device.type, torch.bfloat16,
                                         enabled=device.type == "cuda"):
        latents = torch.cat([
            vae.encode(to_unit(torch.from_numpy(images[i:i + 256]).to(device))).latent_dist.mean
            .half() * scale for i in range(0, len(images), 256)])
    del images, vae
    words = torch.from_numpy(words).to(device)
    tok = transformers.CLIPTokenizer(str(ckpt.folder / "tokenizer" / "vocab.json"),
                                     str(ckpt.folder / "tokenizer" / "merges.txt"),
                                     model_max_length=77)
    plain, full, empty = (t.to(device) for t in caption_table(tok))
    unet.to(device).train()
    text.to(device).train()
    params = [*unet.parameters(), *text.parameters()]
    ema = [p.detach().clone() for p in params]
    saved = load_weights(ckpt.folder, "ema")
    if saved is not None:
        named = dict([*(("unet." + k, v) for k, v in unet.named_parameters()),
                      *(("text_encoder." + k, v) for k, v in text.named_parameters())])
        ema = [saved[k].to(device) for k in named]
    sched = diffusers.DDPMScheduler(**SCHEDULE)
    alphas = sched.alphas_cumprod.to(device)
    loop = Loop(args, ckpt, "unet", params, device)
    batch = ckpt.spec["batch"]["unet"]
    while time.time() < deadline and (args.steps is None or loop.step - loop.step0 < args.steps):
        idx = torch.randint(len(latents), (batch,), device=device)
        w = words[idx]
        ids = torch.where((torch.rand(batch, device=device) < 0.5)[:, None],
                          plain[w[:, 0], w[:, 1], w[:, 2]],
                          full[w[:, 0], w[:, 1], w[:, 2], w[:, 3], w[:, 4]])
        ids = torch.where((torch.rand(batch, device=device) < 0.1)[:, None], empty, ids)
        x0 = latents[idx].float()
        noise = torch.randn_like(x0)
        t = torch.randint(0, 1000, (batch,), device=device)
        a = alphas[t].view(-1, 1, 1, 1)
        noisy = a.sqrt() * x0 + (1 - a).sqrt() * noise
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda"):
            context = text(ids)[0]
            pred = unet(noisy, t, context).sample.float()
        # v target, unweighted: min-SNR weights vanish at the zero-SNR step that matters most
        target = a.sqrt() * noise - (1 - a).sqrt() * x0
        loss = F.mse_loss(pred, target)
        loop.update(loss)
        n = loop.step
        decay = min(0.999, (1 + n) / (10 + n))
        with torch.no_grad():
            torch._foreach_lerp_(ema, [p.detach() for p in params], 1 - decay)
    save_weights(unet.state_dict(), ckpt.folder, "unet")
    save_weights(text.state_dict(), ckpt.folder, "text_encoder")
    names = [*("unet." + k for k, _ in unet.named_parameters()),
             *("text_encoder." + k for k, _ in text.named_parameters())]
    save_weights(dict(zip(names, ema)), ckpt.folder, "ema")
    loop.finish()


def init_from_export(ckpt: Checkpoint, folder: Path) -> None:
    """Weights (and EMA) from an exported folder; step counters from its losses.csv."""
    from safetensors.torch import load_file

    tensors = {name: load_file(str(next((folder / name).glob("*.safetensors"))))
               for name in ("vae", "unet", "text_encoder")}
    for name, weights in tensors.items():
        save_weights(weights, ckpt.folder, name)
    save_weights({f"{name}.{k}": v for name in ("unet", "text_encoder")
                  for k, v in tensors[name].items()}, ckpt.folder, "ema")
    vae_config = json.loads((folder / "vae" / "config.json").read_text())
    ckpt.state["scaling_factor"] = vae_config["scaling_factor"]
    if (folder / "losses.csv").exists():
        shutil.copy(folder / "losses.csv", ckpt.folder / "losses.csv")
        with (folder / "losses.csv").open() as f:
            for row in csv.DictReader(f):
                ckpt.state["step"][row["phase"]] = max(ckpt.state["step"][row["phase"]],
                                                       int(row["step"]))
    ckpt.save_state()
    log(f"checkpoint started from {folder} at steps {ckpt.state['step']}")


# ---- export ----------------------------------------------------------------------------------
def export(args, ckpt: Checkpoint, device) -> None:
    import diffusers

    out = Path(args.export)
    vae, unet, text = build(ckpt)
    ema = load_weights(ckpt.folder, "ema")
    if ema is None:
        raise SystemExit("no EMA weights yet: train the UNet first (--phase unet)")
    unet.load_state_dict({k[5:]: v for k, v in ema.items() if k.startswith("unet.")},
                         strict=False)
    text.load_state_dict({k[13:]: v for k, v in ema.items() if k.startswith("text_encoder.")},
                         strict=False)
    if out.exists():
        shutil.rmtree(out)
    total = 0
    for name, model in (("vae", vae), ("unet", unet), ("text_encoder", text)):
        model.to(torch.float16).save_pretrained(out / name, safe_serialization=True)
        total += sum(f.stat().st_size for f in (out / name).iterdir())
    diffusers.DDIMScheduler(**SCHEDULE, clip_sample=False, set_alpha_to_one=False,
                            steps_offset=1).save_pretrained(out / "scheduler")
    shutil.copytree(ckpt.folder / "tokenizer", out / "tokenizer")
    index = {"_class_name": "StableDiffusionPipeline", "_diffusers_version": diffusers.__version__,
             "feature_extractor": [None, None], "safety_checker": [None, None],
             "requires_safety_checker": False, "image_encoder": [None, None],
             "scheduler": ["diffusers", "DDIMScheduler"],
             "text_encoder": ["transformers", "CLIPTextModel"],
             "tokenizer": ["transformers", "CLIPTokenizer"],
             "unet": ["diffusers", "UNet2DConditionModel"], "vae": ["diffusers", "AutoencoderKL"]}
    (out / "model_index.json").write_text(json.dumps(index, indent=2) + "\n")
    (out / "defaults.json").write_text(json.dumps(SAMPLING_DEFAULTS) + "\n")
    size = sum(f.stat().st_size for f in out.rglob("*") if f.is_file())
    log(f"exported {out}: {size / 2**20:.2f} MiB in all ({total / 2**20:.2f} MiB of models)")
    plots(ckpt, out, device)


def plots(ckpt: Checkpoint, out: Path, device) -> None:
    """loss_curve.png (needs matplotlib; skipped without it) and samples.png: captions x seeds
    from diffusers' StableDiffusionPipeline on the export, "[x]" where `measure` disagrees."""
    import diffusers
    from PIL import Image, ImageDraw

    try:
        import matplotlib

        matplotlib.use("Agg")
        from matplotlib import pyplot as plt
    except ImportError:
        log("no matplotlib: loss_curve.png skipped")
    else:
        rows = list(csv.DictReader((ckpt.folder / "losses.csv").open()))
        fig, axes = plt.subplots(1, 2, figsize=(10, 3.5))
        for ax, phase in zip(axes, ("vae", "unet")):
            pts = [(int(r["step"]), float(r["loss"])) for r in rows if r["phase"] == phase]
            if pts:
                ax.plot(*zip(*pts))
            ax.set(title=phase, xlabel="step", ylabel="loss", yscale="log")
        fig.tight_layout()
        fig.savefig(out / "loss_curve.png", dpi=100)
    pipe = diffusers.StableDiffusionPipeline.from_pretrained(
        out, torch_dtype=torch.float32, safety_checker=None, feature_extractor=None).to(device)
    pipe.set_progress_bar_config(disable=True)
    seeds, cell, text_h = [1, 2, 3, 4], 128, 40
    sheet = Image.new("RGB", (cell * len(seeds), (cell + text_h) * len(SAMPLE_CAPTIONS)), "white")
    pen = ImageDraw.Draw(sheet)
    for i, text in enumerate(SAMPLE_CAPTIONS):
        top = i * (cell + text_h)
        for j, seed in enumerate(seeds):
            image = pipe(text, num_inference_steps=25, guidance_scale=5.0, height=cell,
                         width=cell, generator=torch.Generator(device).manual_seed(seed)).images[0]
            sheet.paste(image, (j * cell, top))
            if not shapes.agrees(text, shapes.measure(np.asarray(image))):
                pen.text((j * cell + 2, top + 2), "x", fill="red")
        pen.multiline_text((4, top + cell + 2), "\n".join(_wrap(text, 80)), fill="black")
    sheet.save(out / "samples.png")
    log(f"wrote {out / 'samples.png'}")


def _wrap(text: str, width: int) -> list[str]:
    lines, line = [], ""
    for word in text.split():
        if line and len(line) + len(word) > width:
            lines.append(line)
            line = ""
        line = f"{line} {word}".strip()
    return [*lines, line]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--ckpt", required=True, type=Path)
    parser.add_argument("--phase", choices=("vae", "vae-decoder", "unet"))
    parser.add_argument("--init-from", type=Path, metavar="FOLDER",
                        help="start the checkpoint from an exported model folder (and the "
                             "losses.csv beside its files), e.g. to fine-tune a released model")
    parser.add_argument("--minutes", type=float, default=9.0)
    parser.add_argument("--steps", type=int, default=None, help="stop after this many steps")
    parser.add_argument("--export", type=Path)
    parser.add_argument("--tiny", action="store_true", help="tiny widths, for a CPU smoke test")
    parser.add_argument("--pool", type=int, default=None, help="training pictures to draw")
    parser.add_argument("--workers", type=int, default=multiprocessing.cpu_count())
    parser.add_argument("--seed", type=int, default=1000)
    args = parser.parse_args()
    deadline = time.time() + args.minutes * 60
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    torch.backends.cuda.matmul.allow_tf32 = True
    torch.backends.cudnn.allow_tf32 = True
    ckpt = Checkpoint(args.ckpt, args.tiny)
    if args.init_from:
        init_from_export(ckpt, args.init_from)
    torch.manual_seed(args.seed + ckpt.state["step"]["vae"] + ckpt.state["step"]["unet"])
    if args.phase in ("vae", "vae-decoder"):
        train_vae(args, ckpt, device, deadline)
    elif args.phase == "unet":
        train_unet(args, ckpt, device, deadline)
    if args.export:
        export(args, ckpt, device)


if __name__ == "__main__":
    main()
