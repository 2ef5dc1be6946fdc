"""PixArt-α and PixArt-Σ, as diffusers' PixArtAlphaPipeline and PixArtSigmaPipeline draw
them: T5 v1.1 XXL's last hidden states of the prompt (300 tokens for Σ, 120 for α, padding
masked) condition the PixArt transformer over SD VAE latents (8x smaller, 4 channels, scaled
by the VAE's `scaling_factor`). The folder's scheduler (DPMSolverMultistepScheduler: DPM-Solver++
2M over the linear betas, epsilon prediction; PixArt-LCM's LCMScheduler) steps from noise,
with CFG as diffusers' (`guidance_scale` > 1: `neg + g * (pos - neg)`); the transformer's
learned-variance half of its output is dropped. PixArt-α 1024 embeds the picture's size and
aspect ratio.

Prompts are lowercased and stripped: diffusers' `clean_caption` (its default) needs bs4 and
ftfy, and without them diffusers warns and does just that, which is what runs here. With the
torch RNG a seed gives diffusers' picture (`generator=torch.Generator("cpu").manual_seed(
seed)`). As diffusers' by default (`use_resolution_binning`), a size is drawn at the model's
aspect-ratio bin nearest to it and resized back (sana_bins: the same tables).

    pipe = PixArtPipeline.from_pretrained("PixArt-Sigma-XL-2-1024-MS")
    images = pipe("a red circle", num_inference_steps=20, guidance_scale=4.5, seed=7)
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np

from gpucore import Device, default_device
from gpustd import asarray

from ...loaders.formats.diffusers_folder import component_config
from ...loaders.pixart import load_pixart_folder, load_pixart_transformer
from ...models.pixart import PixArtTransformer2DModel
from ...models.t5 import T5EncoderModel
from ...models.vae import AutoencoderKL
from ...noise.rng import make_generator
from ...sampling.guidance import Weights
from ...sampling.scheduler_loop import scheduler_loop
from ...sampling.schedulers import scheduler_from_config
from ...sampling.schedulers.dpm_solver import DPMSolverMultistepScheduler
from ...text.t5_tokenizer import T5Tokenizer
from .flow_memory import load_network
from .flow_replay import MaskKey, StepReplay, lent_steps, mask_key, mask_of
from .sana_bins import binned_size, resize_and_crop
from .start import StepCallback, check_call, check_sides

__all__ = ["PixArtConditioning", "PixArtEps", "PixArtPipeline", "pixart_binned_size"]


def pixart_binned_size(sample_size: int, height: int, width: int) -> tuple[int, int] | None:
    """The (height, width) diffusers draws a picture of height x width at for a PixArt
    transformer of `sample_size` latents (32, 64, 128, 256: its 256 to 2048 tables, Sana's
    grids in units of sample_size / 2 pixels), None for other sizes (diffusers raises; here
    the size asked is drawn). diffusers: `classify_height_width_bin(height, width,
    ASPECT_RATIO_..._BIN)`."""
    if sample_size == 32:  # the 256 table: the 512 one halved, the same ratios
        found = binned_size(16, 2 * height, 2 * width)
        return None if found is None else (found[0] // 2, found[1] // 2)
    return binned_size(sample_size // 4, height, width) if sample_size in (64, 128, 256) else None


@dataclass(frozen=True)
class PixArtConditioning:
    """What a generation's steps read besides the latents: the captions' states on the
    device (the negatives' rows first where `guided`), their host mask, and PixArt-α 1024's
    (height, width) of the picture (None for the others)."""

    states: Any
    mask: np.ndarray
    size: tuple[int, int] | None
    guided: bool


class PixArtEps:
    """The transformer's noise predictions as the WebUI's k-diffusion denoiser reads them
    (diffusion.sampling.kdiffusion.GuidedModel): `(uncond or None, cond) = eps(x, t, step)`
    for latents x (B, 4, h, w) at fractional timestep t, the negatives' pass only where
    guided. k-diffusion: `DiscreteEpsDDPMDenoiser.get_eps` of each half."""

    weights: Weights | None = None  # one cond row per image: no AND parts

    def __init__(self, pipe: PixArtPipeline, cond: PixArtConditioning) -> None:
        self.pipe, self.cond = pipe, cond
        self.step = pipe.transformer_step()  # bound once: the kept capture, or eager

    def __call__(self, model_in: np.ndarray, t: float, step: int
                 ) -> tuple[np.ndarray | None, np.ndarray]:
        x = np.asarray(model_in, np.float32)
        if not self.cond.guided:
            return None, self.pipe.predict(x, t, self.cond, self.step)
        pred = self.pipe.predict(np.concatenate([x, x]), t, self.cond, self.step)
        return pred[:len(x)], pred[len(x):]


class PixArtPipeline:
    """PixArt-α or PixArt-Σ (`alpha`) txt2img on gpustd. Components as diffusers names them;
    `scheduler_config` is the folder's `scheduler/scheduler_config.json`."""

    def __init__(self, *, transformer: PixArtTransformer2DModel, vae: AutoencoderKL,
                 text_encoder: T5EncoderModel, tokenizer: T5Tokenizer,
                 scheduler_config: dict[str, Any], alpha: bool = False) -> None:
        self.transformer, self.vae = transformer, vae
        self.text_encoder, self.tokenizer = text_encoder, tokenizer
        self.scheduler_config, self.alpha = dict(scheduler_config), alpha
        self.vae_scale_factor = 2 ** (len(vae.config["block_out_channels"]) - 1)
        self.sample_size = int(transformer.config["sample_size"])
        # diffusers: the transformer's sample_size latents (128: 1024 pixels)
        self.default_size = self.sample_size * self.vae_scale_factor
        # PixArtAlphaPipeline's 120 tokens (T5 as trained for α), Σ's 300
        self.max_sequence_length = 120 if alpha else 300
        # the transformer's step, replayed in the plain memory mode (flow_replay)
        self.step_replay = StepReplay(_transformer_step)

    @classmethod
    def from_pretrained(cls, path: str | Path, *, dtype: Any = np.float32,
                        device: Device | None = None, variant: str | None = None,
                        transformer_file: str | Path | None = None,
                        offload: bool = False) -> PixArtPipeline:
        """Load a PixArt-α or PixArt-Σ diffusers folder (`load_pixart_folder`) onto `device`
        in `dtype`; `transformer_file`: an original-layout single file (.pth or .safetensors:
        `load_pixart_transformer`) in place of the folder's transformer, whose
        transformer/config.json, where it has one, gives the picture size; `offload`: each
        network goes to host memory as soon as it is loaded (T5 before the transformer
        loads), for a memory mode to bring in as it runs."""
        skip = () if transformer_file is None else ("transformer",)
        weights = load_pixart_folder(path, variant=variant, skip=skip)
        transformer, t5 = weights.transformer, weights.text_encoder
        if transformer_file is not None:
            transformer = load_pixart_transformer(
                transformer_file, config=component_config(path, "transformer"))
        assert transformer is not None and t5 is not None
        place = {"dtype": dtype, "device": device or default_device()}
        load = partial(load_network, device=place["device"], offload_to_host=offload)
        encoder = load(lambda: T5EncoderModel(t5.config, **place), t5)
        return cls(
            transformer=load(lambda: PixArtTransformer2DModel(transformer.config, **place),
                             transformer),
            vae=load(lambda: AutoencoderKL(weights.vae.config, **place), weights.vae),
            text_encoder=encoder, tokenizer=T5Tokenizer(weights.tokenizer_file),
            scheduler_config=weights.scheduler_config, alpha=weights.alpha)

    def scheduler(self) -> Any:
        """The folder's scheduler (its `_class_name`: DPMSolverMultistepScheduler, PixArt-LCM's
        LCMScheduler, ...; DPM-Solver++ where the config names none), from its config.
        diffusers: `pipe.scheduler`."""
        if "_class_name" not in self.scheduler_config:
            return DPMSolverMultistepScheduler.from_config(self.scheduler_config)
        return scheduler_from_config(self.scheduler_config)

    def encode_prompt(self, prompts: Sequence[str], max_sequence_length: int | None = None
                      ) -> tuple[np.ndarray, np.ndarray]:
        """(states (B, L, d_model) float32, mask (B, L) int64) of `prompts` lowercased and
        stripped, padded to L = max_sequence_length (Σ 300, α 120) tokens. diffusers:
        `encode_prompt(prompt, clean_caption=False)` (what clean_caption=True does without
        bs4 and ftfy)."""
        length = max_sequence_length or self.max_sequence_length
        ids, mask = self.tokenizer.encode([p.lower().strip() for p in prompts], length)
        return self.text_encoder(ids, mask).numpy().astype(np.float32), mask

    def latent_shape(self, batch: int, height: int, width: int) -> tuple[int, ...]:
        """The latents' shape (B, 4, height / 8, width / 8), after the size check (whole
        2 x 2 patches of latents: multiples of 16)."""
        patch = int(self.transformer.config.get("patch_size", 2))
        check_sides(height, width, self.vae_scale_factor * patch, "PixArt")
        return (batch, int(self.transformer.config["in_channels"]),
                height // self.vae_scale_factor, width // self.vae_scale_factor)

    def conditioning(self, prompts: Sequence[str], *, height: int, width: int,
                     guidance_scale: float, negative_prompt: str | Sequence[str] = "",
                     max_sequence_length: int | None = None, guided: bool | None = None
                     ) -> PixArtConditioning:
        """The prompts' states (and the negative prompts' before them where `guided`; unless
        given, where guidance_scale > 1, the pipelines' do_classifier_free_guidance) for
        pictures of height x width."""
        batch, length = len(prompts), max_sequence_length or self.max_sequence_length
        states, mask = self.encode_prompt(prompts, length)
        guided = guidance_scale > 1 if guided is None else guided
        if guided:
            negatives = ([negative_prompt] * batch if isinstance(negative_prompt, str)
                         else list(negative_prompt))
            if len(negatives) != batch:
                raise ValueError(f"{len(negatives)} negative prompts for {batch} prompts: give "
                                 "one, or one for each prompt")
            negative = self.encode_prompt(negatives, length)
            states, mask = (np.concatenate([negative[0], states]),
                            np.concatenate([negative[1], mask]))
        model = self.transformer
        # PixArtAlphaPipeline's micro-conditions: the picture's size, for α 1024 alone
        size = (height, width) if self.alpha and self.sample_size == 128 else None
        return PixArtConditioning(asarray(states, dtype=model.dtype, device=model.device),
                                  mask, size, guided)

    def transformer_step(self) -> Callable[..., Any]:
        """The transformer's call for one generation's steps: its kept capture in the plain
        memory mode (flow_replay), eager under a memory mode."""
        return self.step_replay.step(self.transformer)

    def predict(self, x: np.ndarray, t: float, cond: PixArtConditioning,
                step: Callable[..., Any] | None = None) -> np.ndarray:
        """The noise prediction (rows, 4, h, w) float32 of latent rows x (as many as
        cond's) at timestep t, the learned-variance half dropped (diffusers' chunk)."""
        model = self.transformer
        step = step or self.transformer_step()
        times = asarray(np.full(len(x), t, np.float32), dtype=np.float32, device=model.device)
        out = step(asarray(x, dtype=model.dtype, device=model.device), cond.states, times,
                   mask_key(cond.mask), cond.size)
        pred = out.numpy().astype(np.float32)
        return pred[:, :x.shape[1]] if pred.shape[1] == 2 * x.shape[1] else pred

    def noise(self, x: np.ndarray, t: float, cond: PixArtConditioning, guidance_scale: float,
              step: Callable[..., Any] | None = None) -> np.ndarray:
        """The guided noise prediction (B, 4, h, w) float32 of latents x at timestep t:
        diffusers' `neg + g * (pos - neg)` on the noise where guided."""
        if not cond.guided:
            return self.predict(x, t, cond, step)
        pred = self.predict(np.concatenate([x, x]), t, cond, step)
        uncond, positive = pred[:len(x)], pred[len(x):]
        return uncond + np.float32(guidance_scale) * (positive - uncond)

    def decode(self, latents: np.ndarray, size: tuple[int, int] | None = None,
               run: Callable[[Any, np.ndarray], np.ndarray] | None = None) -> np.ndarray:
        """Images (B, H, W, 3) in [0, 1] of transformer latents (B, 4, h, w): divided by the
        VAE's scaling factor, decoded in the VAE's dtype; `size` (height, width): resized to
        cover it and cropped before the clip, as diffusers' resolution binning; `run(vae,
        z)`: a memory mode's decode (MemoryModes.memory_decode)."""
        z = latents / np.float32(self.vae.scaling_factor)
        with lent_steps(self):  # the VAE takes the step capture's scratch
            if run is not None:
                images = run(self.vae, z)
            else:
                weight = self.vae.decoder.conv_in.weight
                images = self.vae.decode(asarray(z, dtype=weight.dtype, device=weight.device)
                                         ).numpy().astype(np.float32)
        if size is not None:
            images = resize_and_crop(images, *size)
        return np.clip(images / 2 + 0.5, 0.0, 1.0).transpose(0, 2, 3, 1)

    def __call__(self, prompt: str | Sequence[str], *, height: int | None = None,
                 width: int | None = None, num_inference_steps: int = 20,
                 guidance_scale: float = 4.5, negative_prompt: str | Sequence[str] = "",
                 seed: int = 0, rng: str = "torch", max_sequence_length: int | None = None,
                 latents: np.ndarray | None = None, callback: StepCallback | None = None,
                 output_type: str = "np", use_resolution_binning: bool = True,
                 scheduler: Any = None) -> np.ndarray:
        """Pictures for `prompt` (one or a list): float images in [0, 1], (B, height, width,
        3) ("np"), or the final latents (B, 4, h, w) ("latent"); height and width the
        transformer's sample_size in pixels unless given. `seed` and `rng` ("torch", as
        diffusers; "numpy") draw the noise unless `latents` is given. `callback(done, total,
        latents)` after every step (False stops). `use_resolution_binning`: drawn at the
        nearest aspect-ratio bin, the pictures resized back (the latents stay the bin's).
        `scheduler`: another one than the folder's (the WebUI's DDIM, PLMS, UniPC: diffusers'
        `pipe.scheduler = DDIMScheduler.from_config(pipe.scheduler.config)`). diffusers:
        `PixArtSigmaPipeline(prompt, height=, width=, num_inference_steps=, guidance_scale=,
        negative_prompt=, generator=torch.Generator().manual_seed(seed),
        use_resolution_binning=, output_type="np").images` (PixArtAlphaPipeline's alike)."""
        prompts = check_call(prompt, rng=rng, output_type=output_type,
                             steps=num_inference_steps)
        height = self.default_size if height is None else height
        width = self.default_size if width is None else width
        asked = (height, width)
        if use_resolution_binning:
            height, width = pixart_binned_size(self.sample_size, height, width) or asked
        shape = self.latent_shape(len(prompts), height, width)
        cond = self.conditioning(prompts, height=height, width=width,
                                 guidance_scale=guidance_scale, negative_prompt=negative_prompt,
                                 max_sequence_length=max_sequence_length)
        step = self.transformer_step()
        scheduler = scheduler or self.scheduler()
        scheduler.set_timesteps(num_inference_steps)
        generator = make_generator(rng, seed)
        start = generator.standard_normal(shape) if latents is None else latents
        start = np.asarray(start, np.float32)
        if start.shape != shape:
            raise ValueError(f"latents must have shape {shape}, got {start.shape}")
        # the scheduler's later draws (LCM's noise between steps) from the same generator
        out = scheduler_loop(
            start * np.float32(scheduler.init_noise_sigma), scheduler.timesteps, scheduler,
            lambda x, t, i: (self.noise(x, t, cond, guidance_scale, step), None),
            generator=generator, dtype=np.float32, callback=callback)
        if output_type == "latent":
            return out
        return self.decode(out, size=asked if asked != (height, width) else None)


def _transformer_step(transformer: PixArtTransformer2DModel, x: Any, states: Any, times: Any,
                      mask: MaskKey | None, size: tuple[int, int] | None) -> Any:
    """The transformer's call of a step (StepReplay's captured function): the latents, the
    states and the timesteps (a float32 Tensor) inputs; the caption mask (read on the host)
    and PixArt-α 1024's picture size static arguments, its embeddings' inputs made from it
    (PixArtAlphaPipeline's `resolution` and `aspect_ratio` for each row)."""
    sizes: dict[str, Any] = {}
    if size is not None:
        rows = x.shape[0]
        sizes = {"resolution": np.tile(np.array(size, np.float32), (rows, 1)),
                 "aspect_ratio": np.full(rows, size[0] / size[1], np.float32)}
    return transformer(x, states, times, mask_of(mask), **sizes)
