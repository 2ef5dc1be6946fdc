"""What the flow-matching pipelines (FLUX, diffusion.pipelines.flow.flux; SD3, .sd3) share around
their own denoising loops: where their weights come from, the call's checks, the schedule,
where a run starts (noise, or an init image noised to the schedule's first kept sigma, with the
inpainting blend) and the decode."""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np

from gpucore import Device
from gpustd import asarray

from ...imaging import to_mask, to_unit_image
from ...loaders.flow.file import load_flow_file
from ...loaders.flow.folder import load_flow_folder
from ...loaders.flow.text_encoder_file import use_text_encoder_files
from ...models.tiled_vae import vae_encode
from ...models.vae import AutoencoderKL
from ...noise.rng import RNG_SOURCES
from ...sampling.scheduler_loop import scheduler_loop
from ...sampling.schedulers.flow_match_euler import FlowMatchEulerDiscreteScheduler
from ..finite import check_encoded
from .flow_replay import lent_steps

__all__ = ["FlowStart", "StepCallback", "base_folder", "check_call", "decode", "encode_image",
           "flow_schedule", "load_parts", "run_euler", "single_files"]

_TEXT_ENCODERS = ("text_encoder", "text_encoder_2", "text_encoder_3")

StepCallback = Callable[[int, int, np.ndarray], "bool | None"]
"""callback(done, total, latents) after each step; returning False stops the run there."""


def load_parts(path: str | Path, family: str, *, variant: str | None,
               transformer_file: str | Path | None,
               text_encoder_files: Sequence[str | os.PathLike[str]]) -> tuple[Any, Any]:
    """(weights, modules) of a `family` pipeline: a single file's (`load_flow_file`, with what
    it lacks from `text_encoder_files`) or a diffusers folder's (`load_flow_folder`; its
    transformer left to `transformer_file` when given, its encoders to `text_encoder_files`);
    ValueError when they hold another family."""
    if Path(path).is_file():
        weights, modules = load_flow_file(path, list(text_encoder_files))
    else:
        weights = load_flow_folder(path, variant=variant,
                                   skip=("transformer",) if transformer_file else (),
                                   weightless=_TEXT_ENCODERS if text_encoder_files else ())
        modules = use_text_encoder_files(weights, list(text_encoder_files))
    if weights.family != family:
        raise ValueError(f"{path} holds a {weights.family} pipeline, not {family.upper()}")
    return weights, modules


def single_files(model: str, encoder: str, transformer_file: str | os.PathLike[str] | None,
                 text_encoder_files: Sequence[str | os.PathLike[str]]
                 ) -> tuple[list[Path], tuple[str, ...]]:
    """A family with one text encoder: its --text-encoder file (a list of none or one; more
    refused in one line, saying that `model` takes one: `encoder`) and the folder components
    the single files replace (the folder loader's `skip`)."""
    files = [Path(f) for f in text_encoder_files]
    if len(files) > 1:
        raise ValueError(f"{model} takes one --text-encoder file ({encoder}), got "
                         f"{len(files)}: {', '.join(f.name for f in files)}")
    skip = (("transformer",) if transformer_file is not None else ()) + (
        ("text_encoder",) if files else ())
    return files, skip


def base_folder(path: Path, base: str | os.PathLike[str] | None, model: str, *,
                parts: str = "text encoder, tokenizer, VAE and scheduler"
                ) -> tuple[Path, Path | None]:
    """(the diffusers folder a `model` pipeline loads, the single-file transformer in place of
    its own): `path` a folder and no `base`, or `path` a transformer file and `base` a folder
    of the same model giving its `parts` (Z-Image, Qwen-Image and 2.1, FLUX.2, Kandinsky 5,
    Krea 2 are shared so). One ValueError line for a file without a base or a folder with one;
    `model` names the model in it ("Z-Image")."""
    if path.is_file() and base is None:
        raise ValueError(f"{path.name} is a {model} transformer alone: give a {model} "
                         f"diffusers folder with --base for its {parts}")
    if path.is_dir() and base is not None:
        raise ValueError(f"--base is for a single-file {model} transformer; a {model} "
                         "folder holds every part itself, leave --base out")
    return (path, None) if base is None else (Path(base), path)


def check_call(prompt: str | Any, *, rng: str, output_type: str, steps: int) -> list[str]:
    """The prompts of a call (one or a list), after checking the settings every flow pipeline
    takes; ValueError naming the setting otherwise."""
    if rng not in RNG_SOURCES:
        raise ValueError(f"rng must be one of {RNG_SOURCES}, got {rng!r}")
    if output_type not in ("np", "latent"):
        raise ValueError(f"output_type must be 'np' or 'latent', got {output_type!r}")
    if steps < 1:
        raise ValueError(f"num_inference_steps must be at least 1, got {steps}")
    return [prompt] if isinstance(prompt, str) else list(prompt)


def check_sides(height: int, width: int, multiple: int, model: str) -> None:
    """ValueError in one line where height or width is not a multiple of `multiple` (the
    VAE's factor times the transformer's 2x2 patches) for `model`'s pipeline."""
    if height % multiple or width % multiple:
        raise ValueError(f"height and width must be multiples of {multiple} for {model}, got "
                         f"{height}x{width}")


def flow_schedule(config: dict[str, Any], steps: int, mu: float | None,
                  sigmas: Sequence[float] | None = None) -> FlowMatchEulerDiscreteScheduler:
    """The schedule diffusers' flow pipelines run: FlowMatchEulerDiscreteScheduler from the
    folder's `config` over sigmas 1 .. 1/steps (or the model author's `sigmas`, one a step),
    shifted by `mu` (None where the config's shift is a constant), from its first step."""
    scheduler = FlowMatchEulerDiscreteScheduler.from_config(config)
    grid = np.linspace(1.0, 1 / steps, steps) if sigmas is None else np.asarray(sigmas)
    scheduler.set_timesteps(sigmas=grid, mu=mu)
    scheduler.set_begin_index(0)
    return scheduler


def encode_image(vae: Any, pixels: np.ndarray, generator: Any) -> np.ndarray:
    """Latents (1, C, h, w) of `pixels` (1, 3, H, W) in [-1, 1]: a draw from the VAE's
    posterior (one standard normal of the latents' shape from `generator`), moved into the
    transformer's shifted, scaled space. diffusers: `(retrieve_latents(vae.encode(image),
    generator) - vae.config.shift_factor) * vae.config.scaling_factor`."""
    mean, logvar = vae_encode(vae, pixels.astype(np.float32))
    check_encoded(mean, vae)
    noise = generator.standard_normal(mean.shape)
    latent = AutoencoderKL.sample(mean.astype(np.float64), logvar.astype(np.float64), noise)
    return ((latent - vae.shift_factor) * vae.scaling_factor).astype(np.float32)


class FlowStart:
    """Where a diffusers-style flow run starts, as diffusers' pipelines draw it from one
    `generator`: txt2img, noise (or the given `latents`); img2img (`image`), the schedule's
    tail from `strength` (`get_timesteps`) and the image's latents noised to its first sigma
    (`scale_noise`); inpaint (`image` and `mask`, white = repaint) the same, and after every
    step the kept part is put back at the next step's noise level. Draws in diffusers' order:
    the image's posterior, the noise, the masked image's posterior (drawn, then unused by
    transformers without mask inputs; not where `encode` takes the posterior's mean)."""

    def __init__(self, vae: Any, scheduler: Any, shape: tuple[int, ...], *, generator: Any,
                 latents: np.ndarray | None = None, image: Any = None, mask: Any = None,
                 strength: float = 1.0,
                 encode: Callable[[np.ndarray, Any], np.ndarray] | None = None,
                 scale_factor: int | None = None, posterior: bool = True,
                 bilinear_mask: bool = False) -> None:
        """`encode(pixels, generator)` and `scale_factor`, for a VAE other than
        AutoencoderKL (whose `encode_image` and block count are the defaults): the init
        image's latents in the transformer's space (a posterior draw from `generator`, or
        its mean where `posterior` is off: Kontext's and klein's inpainting, which draw no
        masked image then), and how many times smaller than the picture they are.
        `bilinear_mask`: the binarized mask shrunk bilinearly to the latents' size
        (Flux2KleinInpaintPipeline's, soft between latents at its edges) where the others
        take its nearest pixels."""
        self.scheduler, self.keep = scheduler, None
        encode = encode or partial(encode_image, vae)
        step = scale_factor or _scale(vae)
        if image is None:
            self.timesteps = list(scheduler.timesteps)
            self.latents = self.noise = _noise(latents, shape, generator)
            return
        # 1. the schedule's tail (diffusers' get_timesteps)
        n = len(scheduler.timesteps)
        first = int(max(n - min(n * strength, n), 0))
        if first >= n:
            raise ValueError(f"strength {strength:g} with {n} steps leaves no step to run")
        self.timesteps = list(scheduler.timesteps[first:])
        scheduler.set_begin_index(first)
        # 2. the image's latents, the noise, the start between them
        height, width = shape[2] * step, shape[3] * step
        pixels = to_unit_image(image, width, height)
        self.image_latents = np.repeat(encode(pixels, generator), shape[0], 0)
        self.noise = _noise(latents, shape, generator)
        start = scheduler.scale_noise(self.image_latents, self.timesteps[0], self.noise)
        self.latents = start.astype(np.float32)
        if mask is None:
            return
        # 3. inpaint: the mask binarized, at latent size; the masked image's draw
        full = to_mask(mask, width, height)
        if posterior:
            encode(pixels * (full < 0.5), generator)
        self.keep = 1.0 - (_bilinear(full, step) if bilinear_mask else full[:, :, ::step, ::step])

    def blend(self, latents: np.ndarray, i: int) -> np.ndarray:
        """`latents` after step i with the kept part put back (inpaint; as is otherwise)."""
        if self.keep is None:
            return latents
        kept = self.image_latents
        if i < len(self.timesteps) - 1:
            kept = self.scheduler.scale_noise(kept, self.timesteps[i + 1], self.noise)
        return (self.keep * kept + (1 - self.keep) * latents).astype(np.float32)


def _bilinear(mask: np.ndarray, step: int) -> np.ndarray:
    """`mask` (1, 1, H, W) shrunk `step` times bilinearly, as torch's `interpolate(...,
    mode="bilinear")` (half-pixel centres, no antialiasing): each latent the mean of the 2x2
    pixels around its centre (`step` even)."""
    first, second = step // 2 - 1, step // 2
    return (mask[:, :, first::step, first::step] + mask[:, :, first::step, second::step]
            + mask[:, :, second::step, first::step]
            + mask[:, :, second::step, second::step]) / np.float32(4)


def _scale(vae: Any) -> int:
    return 2 ** (len(vae.config["block_out_channels"]) - 1)


def _noise(latents: np.ndarray | None, shape: tuple[int, ...], generator: Any) -> np.ndarray:
    """`latents` as float32 when given (checked against `shape`), else a standard normal draw
    of `shape` from `generator`."""
    if latents is None:
        latents = generator.standard_normal(shape)
    latents = np.asarray(latents, np.float32)
    if latents.shape != shape:
        raise ValueError(f"latents must have shape {shape}, got {latents.shape}")
    return latents


def decode(vae: Any, latents: np.ndarray, device: Device,
           run: Callable[[Any, np.ndarray], np.ndarray] | None = None) -> np.ndarray:
    """Images (B, H, W, 3) in [0, 1] from transformer latents (B, C, h, w): out of the scaled,
    shifted latent space, through the VAE in its own dtype; `run(vae, z)`: the decode of the
    memory mode in effect (MemoryModes.memory_decode), float32 host images."""
    z = latents / np.float32(vae.scaling_factor) + np.float32(vae.shift_factor)
    images = run(vae, z) if run is not None else vae.decode(asarray(
        z, dtype=vae.decoder.conv_in.weight.dtype, device=device)).numpy().astype(np.float32)
    return np.clip(images / 2 + 0.5, 0.0, 1.0).transpose(0, 2, 3, 1)


def run_euler(vae: Any, scheduler: Any, shape: tuple[int, ...], flow: Callable[..., Any], *,
              generator: Any, latents: np.ndarray | None, image: Any, mask: Any,
              strength: float, callback: StepCallback | None, output_type: str,
              device: Device, lender: Any = None, **options: Any) -> np.ndarray:
    """The end of diffusers' flow pipelines (FLUX, SD3): the start (FlowStart, with its
    `options`: `encode`, `scale_factor`, `posterior`, `bilinear_mask`), Euler steps along
    `flow(x, t)` with `callback(done, total, latents)` after each (False stops), then the
    latents ("latent") or the decoded pictures, the VAE borrowing the step captures'
    scratch of the pipeline `lender` (flow_replay.lent_steps)."""
    start = FlowStart(vae, scheduler, shape, generator=generator, latents=latents, image=image,
                      mask=mask, strength=strength, **options)
    x = scheduler_loop(start.latents, start.timesteps, scheduler,
                       lambda x, t, i: (flow(x, t), None), dtype=np.float32,
                       after_step=lambda i, x: start.blend(x, i), callback=callback)
    if output_type == "latent":
        return x
    with lent_steps(lender):
        return decode(vae, x, device)
