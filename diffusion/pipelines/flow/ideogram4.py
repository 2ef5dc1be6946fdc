"""Ideogram 4, as diffusers' Ideogram4Pipeline draws a picture from a prompt: the prompt in
Qwen3-VL's chat template, the outputs (before the final norm) of 13 of Qwen3-VL's 36 decoder
layers interleaved feature by feature condition the Ideogram 4 transformer, which predicts
the velocity of 2x2 patches of FLUX.2's VAE latents (normalized by the VAE's batch-norm
statistics). Guidance is asymmetric: a second transformer of its own weights
(`unconditional_transformer`) reads the picture alone, and the two velocities are blended as
`g * cond + (1 - g) * uncond`, g per step (diffusers' default schedule: 7.0, the last three
steps 3.0) or constant. FlowMatchEulerDiscreteScheduler steps over Ideogram's logit-normal
sigmas (mean `mu` shifted by half the log of the picture's pixels over 512 x 512, deviation
`std`). With the torch RNG a seed gives diffusers' picture. The optional prompt rewrite
(`prompt_upsampling`, the text encoder made generative by a separate LM head) is not run.

    pipe = Ideogram4Pipeline.from_pretrained("ideogram-v4")
    images = pipe("a red circle", height=1024, width=1024, seed=7)
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Sequence
from functools import partial
from pathlib import Path
from statistics import NormalDist
from typing import Any

import numpy as np

from gpucore import Device, default_device
from gpustd import Tensor, asarray

from ...loaders.flux2.vae_file import load_flux2_vae_file
from ...loaders.ideogram4 import load_ideogram4_folder
from ...loaders.vae_kind import require_vae
from ...models.ideogram4 import (
    QWEN3_VL_ACTIVATION_LAYERS,
    Ideogram4Transformer2DModel,
    interleave_layers,
)
from ...models.llm import LLMTextModel
from ...models.step_cache import StepCache
from ...models.tiled_vae import vae_encode
from ...models.vae import AutoencoderKL
from ...models.vae_flux2 import AutoencoderKLFlux2
from ...noise.rng import make_generator
from ...sampling.scheduler_loop import scheduler_loop
from ...text.llm_tokenizer import LLMTokenizer, qwen3_chat_prompt
from ..finite import check_encoded
from .flow_memory import load_network
from .flow_replay import StepReplay, lent_steps
from .start import FlowStart, StepCallback, check_call, check_sides, flow_schedule
from .vae_file import network_like

__all__ = ["DEFAULT_GUIDANCE", "Ideogram4Pipeline", "logit_normal_sigmas"]

PATCH = 2
MAX_TOKENS = 2048  # diffusers' max_sequence_length: a longer prompt is refused
DEFAULT_GUIDANCE = (7.0,) * 45 + (3.0,) * 3  # diffusers' default schedule, for 48 steps


def logit_normal_sigmas(steps: int, mu: float, std: float = 1.5, logsnr_min: float = -15.0,
                        logsnr_max: float = 18.0) -> np.ndarray:
    """`steps` decreasing sigmas (float32): s = 0, 1/n, .., (n-1)/n through the logit-normal's
    inverse CDF, 1 - expit(mu + std * ndtri(s)), clamped to the log-SNR range. diffusers:
    pipeline_ideogram4's `_logit_normal_sigmas`."""
    normal = NormalDist()
    grid = np.linspace(0.0, 1.0, steps + 1)
    z = np.array([-np.inf if s <= 0 else np.inf if s >= 1 else normal.inv_cdf(s) for s in grid])
    with np.errstate(over="ignore"):
        t = 1.0 - 1.0 / (1.0 + np.exp(-(mu + std * z)))
    t = np.clip(t, 1.0 / (1.0 + math.exp(0.5 * logsnr_max)),
                1.0 / (1.0 + math.exp(0.5 * logsnr_min)))
    return (1.0 - t)[::-1][:-1].astype(np.float32)


def schedule_mu(height: int, width: int, mu: float) -> float:
    """`mu` shifted by half the log of the pixels over 512 x 512's. diffusers:
    `_resolution_aware_mu`."""
    return mu + 0.5 * math.log(height * width / (512 * 512))


def pack(latents: np.ndarray) -> np.ndarray:
    """(B, C, h, w) -> (B, h w, C): the patches row-major."""
    batch, channels = latents.shape[:2]
    return latents.reshape(batch, channels, -1).transpose(0, 2, 1)


class Ideogram4Pipeline:
    """Ideogram 4 txt2img (and img2img) on gpustd. Components as diffusers names them;
    `scheduler_config` is the folder's scheduler/scheduler_config.json."""

    def __init__(self, *, transformer: Ideogram4Transformer2DModel,
                 unconditional_transformer: Ideogram4Transformer2DModel,
                 vae: AutoencoderKLFlux2, text_encoder: LLMTextModel, tokenizer: LLMTokenizer,
                 scheduler_config: dict[str, Any]) -> None:
        self.transformer, self.unconditional_transformer = transformer, unconditional_transformer
        self.vae, self.text_encoder, self.tokenizer = vae, text_encoder, tokenizer
        self.scheduler_config = dict(scheduler_config)
        self.vae_scale_factor = 2 ** (len(vae.config["block_out_channels"]) - 1)
        self.modules: list[str] = []
        # each transformer's step, replayed in the plain memory mode (flow_replay), a
        # recording of its own: the conditional one's per prompt length (a batch's distinct
        # prompts run apart) at two sizes (hires), the unconditional one's per size
        self.step_replay = StepReplay(_transformer_step, max_signatures=4)
        self.unconditional_replay = StepReplay(_transformer_step)

    @classmethod
    def from_pretrained(cls, path: str | Path, *, dtype: Any = np.float32,
                        device: Device | None = None, variant: str | None = None,
                        offload: bool = False) -> Ideogram4Pipeline:
        """Load an Ideogram 4 diffusers folder (`load_ideogram4_folder`) onto `device` in
        `dtype`; `offload`: each network goes to host memory as soon as it is loaded, for a
        memory mode to bring in as it runs (flow_memory)."""
        weights = load_ideogram4_folder(path, variant=variant)
        text, cond, uncond = (weights.text_encoder, weights.transformer,
                              weights.unconditional_transformer)
        assert text is not None and cond is not None and uncond is not None
        layers, wanted = text.config["num_hidden_layers"], cond.config.get("llm_features_dim")
        taps = len(QWEN3_VL_ACTIVATION_LAYERS)
        if layers <= max(QWEN3_VL_ACTIVATION_LAYERS) or wanted != taps * text.config[
                "hidden_size"]:
            raise ValueError(f"the transformer reads {wanted} features a token, the text "
                             f"encoder's {taps} taps of {layers} layers give "
                             f"{taps * text.config['hidden_size']}: give the folder's own "
                             "Qwen3-VL text encoder (36 layers)")
        place = {"dtype": dtype, "device": device or default_device()}
        load = partial(load_network, device=place["device"], offload_to_host=offload)
        encoder = load(lambda: LLMTextModel(text.config, **place), text)
        return cls(
            transformer=load(lambda: Ideogram4Transformer2DModel(cond.config, **place), cond),
            unconditional_transformer=load(
                lambda: Ideogram4Transformer2DModel(uncond.config, **place), uncond),
            vae=load(lambda: AutoencoderKLFlux2(weights.vae.config, **place), weights.vae),
            text_encoder=encoder, tokenizer=LLMTokenizer(weights.tokenizer_dir),
            scheduler_config=weights.scheduler_config)

    def use_vae_file(self, path: str | os.PathLike[str]) -> None:
        """Decode (and encode) with FLUX.2's VAE in the file `path` (`flux2-vae.safetensors`;
        `load_flux2_vae_file`), in the place, dtype and config of the folder's. WeightsError
        in one line for another family's VAE or tensors that do not fit."""
        require_vae(path, "flux2", int(self.vae.config["latent_channels"]),
                    model="Ideogram 4", usual="flux2-vae.safetensors")
        self.vae = network_like(self.vae, load_flux2_vae_file(path, config=self.vae.config),
                                path)

    def encode_prompt(self, prompt: str) -> Tensor:
        """(1, L, 13 * hidden) float32: for each token of the chat-templated prompt, the
        outputs of QWEN3_VL_ACTIVATION_LAYERS interleaved (`interleave_layers`). diffusers:
        `Ideogram4Pipeline.encode_prompt`'s text features without the left padding (which
        the transformer's segment mask keeps apart)."""
        # Qwen3-VL-8B-Instruct's template renders one user message so: no system message, no
        # think block
        ids, _mask = self.tokenizer([qwen3_chat_prompt(prompt)], MAX_TOKENS + 1,
                                    padding="longest", add_special_tokens=False)
        if ids.shape[1] > MAX_TOKENS:
            raise ValueError(f"the prompt passes Ideogram 4's {MAX_TOKENS} tokens (in its chat "
                             "template); shorten it")
        taps = self.text_encoder.hidden_states_of(
            ids, None, [k + 1 for k in QWEN3_VL_ACTIVATION_LAYERS], final_norm=False)
        return interleave_layers(taps)

    def velocity(self, prompts: Sequence[str], *, height: int, width: int,
                 guidance_scale: float = 7.0, cache: StepCache | None = None
                 ) -> tuple[Callable[..., np.ndarray], tuple[int, ...], None]:
        """The guided model as `flow(x, t, scale=guidance_scale)` for `prompts` at height x
        width: x (B, C, h, w) float32 latents (channel (row, column, c) of each 2x2 patch),
        t the scheduler's timestep (0..1000); the result is -(g v + (1 - g) v_uncond), the
        sign the scheduler steps with (g = 1: no unconditional pass, which it would weigh 0).
        Also the latents' shape, and None: the schedule does not shift by mu. `cache`: no
        step cache is implemented (ValueError for one)."""
        if cache is not None:
            raise ValueError("step caching is not supported for Ideogram 4; leave --cache out")
        scale = self.vae_scale_factor * PATCH
        if height < scale or width < scale:
            raise ValueError(f"height and width must be at least {scale}, got {height}x{width}")
        rows, columns = height // scale, width // scale
        cond, uncond = self.transformer, self.unconditional_transformer
        states = {p: self.encode_prompt(p) for p in dict.fromkeys(prompts)}
        groups = {p: [i for i, q in enumerate(prompts) if q == p] for p in states}
        # replayed (eager under a memory mode): the timestep's sinusoid, made on the host,
        # an input
        cond_step = self.step_replay.step(cond)
        free_step = self.unconditional_replay.step(uncond)

        def flow(x: np.ndarray, t: float, scale: float = guidance_scale) -> np.ndarray:
            tokens = pack(x)
            model_t = np.float32(1) - np.float32(t) / np.float32(1000)
            time = np.full(len(x), model_t, np.float32)
            v = np.empty(tokens.shape, np.float32)
            for prompt, rows_of in groups.items():
                part = asarray(tokens[rows_of], dtype=cond.dtype, device=cond.device)
                v[rows_of] = cond_step(part, cond.time_features(time[rows_of]), states[prompt],
                                       rows, columns).numpy()
            g = np.float32(scale)
            if g != 1:
                free = free_step(asarray(tokens, dtype=uncond.dtype, device=uncond.device),
                                 uncond.time_features(time), None, rows, columns
                                 ).numpy().astype(np.float32)
                v = g * v + (np.float32(1) - g) * free
            return -v.transpose(0, 2, 1).reshape(x.shape)

        return flow, (len(prompts), cond.config["in_channels"], rows, columns), None

    def _statistics(self) -> tuple[np.ndarray, np.ndarray]:
        """The VAE's batch-norm mean and std (float32) over the packed channels."""
        bn, eps = self.vae.bn, np.float32(self.vae.config["batch_norm_eps"])
        return (bn.running_mean.numpy().astype(np.float32),
                np.sqrt(bn.running_var.numpy().astype(np.float32) + eps))

    def encode_image(self, pixels: np.ndarray, generator: Any) -> np.ndarray:
        """Latents (1, 4C, h, w) of `pixels` (1, 3, H, W) in [-1, 1]: a posterior draw,
        each 2x2 patch's channels (row, column, c), normalized by the batch norm (the
        inverse of `raw_latents`; diffusers has no Ideogram 4 img2img)."""
        mean, logvar = vae_encode(self.vae, pixels.astype(np.float32))
        check_encoded(mean, self.vae)
        noise = generator.standard_normal(mean.shape)
        raw = AutoencoderKL.sample(mean.astype(np.float64), logvar.astype(np.float64), noise)
        batch, channels, height, width = raw.shape
        patches = raw.reshape(batch, channels, height // 2, 2, width // 2, 2).transpose(
            0, 2, 4, 3, 5, 1).reshape(batch, height // 2, width // 2, 4 * channels)
        bn_mean, bn_std = self._statistics()
        return ((patches - bn_mean) / bn_std).transpose(0, 3, 1, 2).astype(np.float32)

    def raw_latents(self, latents: np.ndarray) -> np.ndarray:
        """The VAE's latents (B, C, 2h, 2w) of the transformer's (B, 4C, h, w): the batch
        norm undone, the patches unpacked. diffusers: Ideogram4Pipeline's decode step."""
        bn_mean, bn_std = self._statistics()
        batch, packed, rows, columns = latents.shape
        z = latents.transpose(0, 2, 3, 1) * bn_std + bn_mean
        z = z.reshape(batch, rows, columns, PATCH, PATCH, packed // 4).transpose(0, 5, 1, 3, 2, 4)
        return z.reshape(batch, packed // 4, rows * PATCH, columns * PATCH).astype(np.float32)

    def decode(self, latents: np.ndarray,
               run: Callable[[Any, np.ndarray], np.ndarray] | None = None) -> np.ndarray:
        """Pictures (B, H, W, 3) in [0, 1] from the transformer's latents (B, 4C, h, w);
        `run(vae, z)`: the memory mode's decode (MemoryModes.memory_decode)."""
        raw, weight = self.raw_latents(latents), self.vae.decoder.conv_in.weight
        images = run(self.vae, raw) if run is not None else self.vae.decode(asarray(
            raw, dtype=weight.dtype, device=weight.device)).numpy().astype(np.float32)
        return np.clip(images / 2 + 0.5, 0.0, 1.0).transpose(0, 2, 3, 1)

    def __call__(self, prompt: str | Sequence[str], *, height: int = 2048, width: int = 2048,
                 num_inference_steps: int = 48, guidance_scale: float | None = None,
                 guidance_schedule: Sequence[float] | None = None, mu: float = 0.0,
                 std: float = 1.5, seed: int = 0, rng: str = "torch",
                 latents: np.ndarray | None = None, image: Any = None, mask_image: Any = None,
                 strength: float = 0.6, callback: StepCallback | None = None,
                 output_type: str = "np", cache: StepCache | None = None) -> np.ndarray:
        """Pictures for `prompt` (one or a list): float images in [0, 1], (B, height, width,
        3) ("np"), or the final latents (B, 4C, H/16, W/16) ("latent"). At most one of
        `guidance_scale` (constant) and `guidance_schedule` (one a step); neither:
        diffusers' default schedule (DEFAULT_GUIDANCE, for 48 steps). `seed` and `rng`
        ("torch", as diffusers; "numpy") draw the starting noise (B, tokens, 4C) unless
        `latents` (B, 4C, h, w) is given; `image` (PIL or HxWx3 uint8; with `mask_image`,
        white = repaint) starts from that picture at `strength`, as the flow families'
        img2img and inpainting do; `callback(done, total, latents)` after every step (False
        stops); `cache`: none is implemented (ValueError). diffusers: `Ideogram4Pipeline(
        prompt, height=, width=,
        num_inference_steps=, guidance_scale=, guidance_schedule=, mu=, std=,
        generator=torch.Generator().manual_seed(seed), output_type="np").images`."""
        prompts = check_call(prompt, rng=rng, output_type=output_type, steps=num_inference_steps)
        check_sides(height, width, self.vae_scale_factor * PATCH, "Ideogram 4")
        if guidance_scale is not None and guidance_schedule is not None:
            raise ValueError("give guidance_scale or guidance_schedule, not both")
        scales = ([float(guidance_scale)] * num_inference_steps if guidance_scale is not None
                  else [float(g) for g in guidance_schedule or DEFAULT_GUIDANCE])
        if len(scales) != num_inference_steps:
            raise ValueError(f"the guidance schedule has {len(scales)} entries for "
                             f"{num_inference_steps} steps; give one a step (or a constant "
                             "guidance_scale)")
        # 1. conditioning, as a function of the latents, the timestep and the step's scale
        flow, shape, _ = self.velocity(prompts, height=height, width=width, cache=cache)
        # 2. the logit-normal schedule, its mean shifted by the picture's size
        sigmas = logit_normal_sigmas(num_inference_steps, schedule_mu(height, width, mu), std)
        scheduler = flow_schedule(self.scheduler_config, num_inference_steps, None,
                                  sigmas.tolist())
        # 3. the noise in diffusers' (B, tokens, 4C) order, the start, the Euler steps
        generator = make_generator(rng, seed)
        if latents is None:
            batch, channels, rows, columns = shape
            latents = generator.standard_normal((batch, rows * columns, channels)).reshape(
                batch, rows, columns, channels).transpose(0, 3, 1, 2)
        start = FlowStart(self.vae, scheduler, shape, generator=generator, latents=latents,
                          image=image, mask=mask_image, strength=strength,
                          encode=self.encode_image, scale_factor=self.vae_scale_factor * PATCH)
        skipped = num_inference_steps - len(start.timesteps)
        x = scheduler_loop(start.latents, start.timesteps, scheduler,
                           lambda x, t, i: (flow(x, t, scales[skipped + i]), None),
                           dtype=np.float32, after_step=lambda i, x: start.blend(x, i),
                           callback=callback)
        if output_type == "latent":
            return x
        with lent_steps(self):  # the VAE takes the step captures' scratch (flow_replay)
            return self.decode(x)


def _transformer_step(transformer: Ideogram4Transformer2DModel, latents: Tensor,
                      features: Tensor, states: Tensor | None, rows: int, columns: int
                      ) -> Tensor:
    """A transformer's call of a step (StepReplay's captured function): the patches, the
    timestep's sinusoid (`time_features`) and the prompt's features inputs (None: the
    unconditional model); the grid static arguments."""
    return transformer(latents, features, states, rows, columns)
