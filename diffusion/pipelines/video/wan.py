"""Wan 2.1 text-to-video, as diffusers' WanPipeline draws it: the prompt (whitespace and HTML
entities cleaned) through UMT5, its states kept for the prompt's tokens and zeroed for the
padding up to 512; noise of (B, 16, 1 + (frames - 1) / 4, H / 8, W / 8) latents; the folder's
scheduler (UniPC on flow sigmas with its `flow_shift`, or flow-match Euler) stepping the
transformer's velocity, with classifier-free guidance `uncond + g (cond - uncond)` against the
negative prompt ("" when none) for g > 1; the video VAE decoding one latent frame at a time.
With the torch RNG a seed gives diffusers' video (`generator=torch.Generator("cpu")
.manual_seed(seed)`).

    pipe = WanPipeline.from_pretrained("Wan2.1-T2V-1.3B-Diffusers")
    frames = pipe("a cat walks on the grass", height=480, width=832, num_frames=81, seed=7)
"""

from __future__ import annotations

import contextlib
import html
import os
import re
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np

from gpucore import Device, default_device
from gpustd import Tensor, asarray
from gpustd.nn import deferred
from gpustd.nn.offload import offload as offload_weights
from gpustd.nn.offload import restore as restore_weights

from ...loaders.component import load_component
from ...loaders.wan import load_wan_folder
from ...models.clip_vision import CLIPVisionModelWithProjection, clip_pixels
from ...models.t5 import UMT5EncoderModel
from ...models.wan import WanTransformer3DModel
from ...models.wan_vae import AutoencoderKLWan
from ...noise.rng import RNG_SOURCES, make_generator
from ...sampling.scheduler_loop import scheduler_loop
from ...sampling.schedulers.flow_match_euler import FlowMatchEulerDiscreteScheduler
from ...sampling.schedulers.unipc_flow import FlowUniPCMultistepScheduler, is_flow_unipc
from ...text.t5_tokenizer import T5Tokenizer

__all__ = ["SAMPLERS", "WanPipeline", "check_frame_count", "refuse_pictures"]

SAMPLERS = ("diffusers", "UniPC", "Euler")
""""diffusers": the folder's own scheduler; "UniPC" and "Euler": those on flow sigmas with
the folder's shift."""

StepCallback = Callable[[int, int, np.ndarray], bool | None]


def check_frame_count(frames: int, temporal: int = 4) -> None:
    """ValueError in one line unless `frames` is 1 + temporal k (the VAE's causal frames)."""
    if isinstance(frames, bool) or not isinstance(frames, (int, np.integer)) or frames < 1 \
            or (frames - 1) % temporal:
        lower = max(1, (int(frames) - 1) // temporal * temporal + 1) if frames >= 1 else 1
        raise ValueError(f"frames must be 1 + {temporal}k (1, 5, ..., 81), got {frames!r}; "
                         f"use {lower} or {lower + temporal}")


def refuse_pictures(path: str | os.PathLike[str], family: str, options: Any) -> Any:
    """The picture registry's loader for a Wan folder (`pipelines.families`): a video model
    makes no pictures, so ValueError in one line saying which command makes its videos."""
    raise ValueError(f"{path} is a Wan text-to-video model: make videos with `python -m "
                     f"diffusion txt2vid --model {path} --prompt ...`")


def clean_prompt(text: str) -> str:
    """diffusers' `prompt_clean` without ftfy: HTML entities undone twice, runs of white
    space made one space, the ends stripped."""
    return re.sub(r"\s+", " ", html.unescape(html.unescape(text)).strip()).strip()


class WanPipeline:
    """A loaded Wan 2.1 text-to-video diffusers folder (module docstring)."""

    def __init__(self, *, transformer: WanTransformer3DModel, vae: AutoencoderKLWan,
                 text_encoder: UMT5EncoderModel, tokenizer: T5Tokenizer,
                 scheduler_config: dict[str, Any], expand_timesteps: bool = False,
                 offload: bool = False,
                 image_encoder: CLIPVisionModelWithProjection | None = None) -> None:
        self.transformer, self.vae = transformer, vae
        # Wan 2.1 image-to-video: the CLIP vision encoder whose penultimate states it reads
        self.image_encoder = image_encoder
        self.text_encoder, self.tokenizer = text_encoder, tokenizer
        self.scheduler_config = dict(scheduler_config)
        # Wan 2.2 TI2V 5B: timesteps per token, which lets it animate a given first frame
        self.expand_timesteps = expand_timesteps
        # one network on the GPU at a time (the others' weights in host memory)
        self.offload = offload

    @classmethod
    def from_pretrained(cls, path: str | Path, *, dtype: Any = np.float32,
                        device: Device | None = None, variant: str | None = None,
                        offload: bool = False) -> WanPipeline:
        """Load a Wan diffusers folder (`load_wan_folder`) onto `device` in `dtype`;
        `offload`: each network's weights go to host memory as soon as they are loaded, and
        come to the GPU only while that network runs (the text encoder, the transformer, the
        VAE in turn), so the GPU holds the largest of them, not all three."""
        weights = load_wan_folder(path, variant=variant)
        place = {"dtype": dtype, "device": device or default_device()}

        def loaded(model: Any, part: Any) -> Any:
            with deferred():  # each parameter takes GPU memory when its values arrive
                model = load_component(model, part)
            if offload:
                offload_weights(model)
            return model

        text_encoder = loaded(UMT5EncoderModel(weights.text_encoder.config, **place),
                              weights.text_encoder)
        vae = loaded(AutoencoderKLWan(weights.vae.config, **place), weights.vae)
        transformer = loaded(WanTransformer3DModel(weights.transformer.config, **place),
                             weights.transformer)
        image_encoder = None if weights.image_encoder is None else loaded(
            CLIPVisionModelWithProjection(weights.image_encoder.config, projection=False,
                                          **place), weights.image_encoder)
        return cls(transformer=transformer, vae=vae, text_encoder=text_encoder,
                   image_encoder=image_encoder,
                   tokenizer=T5Tokenizer(weights.tokenizer_dir),
                   scheduler_config=weights.scheduler_config,
                   expand_timesteps=weights.expand_timesteps, offload=offload)

    @contextlib.contextmanager
    def on_gpu(self, network: Any) -> Iterator[None]:
        """`network`'s weights on the GPU for the block (offloading: uploaded, then back to
        host memory)."""
        if not self.offload:
            yield
            return
        offload_weights(self.text_encoder)
        offload_weights(self.transformer)
        offload_weights(self.vae)
        if self.image_encoder is not None:
            offload_weights(self.image_encoder)
        restore_weights(network)
        try:
            yield
        finally:
            offload_weights(network)

    def lora_targets(self) -> Any:
        """What a `LoraManager` patches: the transformer, as `transformer` (diffusers' and PEFT's
        `transformer.` keys) and as `unet` (ComfyUI's `diffusion_model.`, kohya's
        `lora_unet_`)."""
        return SimpleNamespace(unet=self.transformer, transformer=self.transformer)

    @property
    def temporal_factor(self) -> int:
        return self.vae.temporal_factor

    @property
    def size_multiple(self) -> int:
        """What height and width must be multiples of: the VAE's 8 times the patch's 2."""
        return self.vae.spatial_factor * int(self.transformer.config["patch_size"][1])

    def prompt_states(self, prompts: Sequence[str], max_sequence_length: int = 512
                      ) -> np.ndarray:
        """UMT5's states (B, max_sequence_length, d_model) of each prompt's tokens, zeros
        after them, float32 on the host. diffusers: `WanPipeline.encode_prompt`."""
        ids, mask = self.tokenizer.encode([clean_prompt(p) for p in prompts],
                                          max_sequence_length)
        states = self.text_encoder(ids, mask).numpy().astype(np.float32)
        return states * (mask[:, :, None] != 0)

    def encode_prompt(self, prompts: Sequence[str], max_sequence_length: int = 512) -> Tensor:
        """The transformer's context (B, max_sequence_length, dim) for `prompts`: their
        `prompt_states` through the transformer's text embedder."""
        return self._context(self.prompt_states(prompts, max_sequence_length))

    def _context(self, states: np.ndarray) -> Tensor:
        return self.transformer.encode_text(asarray(states, dtype=self.transformer.dtype,
                                                    device=self.transformer.device))

    def scheduler(self, sampler: str) -> Any:
        """The scheduler `sampler` names (SAMPLERS), configured from the folder's."""
        config = self.scheduler_config
        if sampler == "diffusers":
            if is_flow_unipc(config):
                return FlowUniPCMultistepScheduler.from_config(config)
            if config.get("_class_name") == "FlowMatchEulerDiscreteScheduler":
                return FlowMatchEulerDiscreteScheduler.from_config(config)
            raise ValueError(f"the folder's scheduler {config.get('_class_name')!r} is not one "
                             "Wan runs here; choose --sampler UniPC or Euler")
        shift = float(config.get("flow_shift", config.get("shift", 1.0)))
        if sampler == "UniPC":
            return FlowUniPCMultistepScheduler(flow_shift=shift)
        if sampler == "Euler":
            return FlowMatchEulerDiscreteScheduler(shift=shift)
        raise ValueError(f"sampler {sampler!r} is not one Wan runs; choose one of "
                         f"{', '.join(SAMPLERS)}")

    def check(self, *, height: int, width: int, num_frames: int, steps: int, rng: str,
              sampler: str) -> None:
        """ValueError in one line for a setting this pipeline cannot run."""
        check_frame_count(num_frames, self.temporal_factor)
        multiple = self.size_multiple
        if height < multiple or width < multiple or height % multiple or width % multiple:
            raise ValueError(f"width and height must be multiples of {multiple} for Wan, got "
                             f"{width}x{height}")
        if steps < 1:
            raise ValueError(f"steps must be at least 1, got {steps}")
        if rng not in RNG_SOURCES:
            raise ValueError(f"rng must be one of {RNG_SOURCES}, got {rng!r}")
        if sampler not in SAMPLERS:
            raise ValueError(f"sampler {sampler!r} is not one Wan runs; choose one of "
                             f"{', '.join(SAMPLERS)}")

    def __call__(self, prompt: str | Sequence[str], *, negative_prompt: str | None = None,
                 height: int = 480, width: int = 832, num_frames: int = 81,
                 num_inference_steps: int = 50, guidance_scale: float = 5.0, seed: int = 0,
                 rng: str = "torch", sampler: str = "diffusers", image: Any = None,
                 max_sequence_length: int = 512, callback: StepCallback | None = None
                 ) -> np.ndarray:
        """Videos for `prompt` (one or a list): (B, num_frames, height, width, 3) float in
        [0, 1]. diffusers: `WanPipeline(prompt, negative_prompt=, height=, width=,
        num_frames=, num_inference_steps=, guidance_scale=,
        generator=torch.Generator().manual_seed(seed), output_type="np").frames`. `image`
        (a PIL image or (H, W, 3) uint8, resized to width x height with Lanczos as diffusers
        does): the first frame, animated (Wan 2.2 TI2V 5B only), as
        `WanImageToVideoPipeline(image=image, ...)` of the same folder."""
        prompts = [prompt] if isinstance(prompt, str) else list(prompt)
        self.check(height=height, width=width, num_frames=num_frames,
                   steps=num_inference_steps, rng=rng, sampler=sampler)
        reads_image = self.transformer.config["image_dim"] is not None
        if reads_image and image is None:
            raise ValueError("this Wan model is image-to-video: give the first frame "
                             "(`img2vid --image PIC`)")
        if image is not None and not (self.expand_timesteps or reads_image):
            raise ValueError("this Wan model makes videos from text only; animating a picture "
                             "needs Wan 2.2 TI2V 5B (its folder sets expand_timesteps) or a "
                             "Wan 2.1 I2V folder")
        # 1. the prompts' (and, guided, the negative prompt's) states
        guided = guidance_scale > 1
        with self.on_gpu(self.text_encoder):
            positive_states = self.prompt_states(prompts, max_sequence_length)
            negative_states = (self.prompt_states([negative_prompt or ""] * len(prompts),
                                                  max_sequence_length) if guided else None)
        # 2. the schedule and the starting noise, drawn as diffusers' randn_tensor; the given
        # first frame's latents (its posterior's mean)
        scheduler = self.scheduler(sampler)
        scheduler.set_timesteps(num_inference_steps)
        spatial = self.vae.spatial_factor
        config = self.transformer.config
        shape = (len(prompts), config["out_channels"] or config["in_channels"],
                 (num_frames - 1) // self.temporal_factor + 1, height // spatial,
                 width // spatial)
        latents = make_generator(rng, seed).standard_normal(shape).astype(np.float32)
        first = condition = image_states = None
        if image is not None and reads_image:
            assert self.image_encoder is not None
            with self.on_gpu(self.image_encoder):
                image_states = self.image_states(image)
            with self.on_gpu(self.vae):
                condition = np.repeat(self.condition(image, height, width, num_frames),
                                      len(prompts), axis=0)
        elif image is not None:
            with self.on_gpu(self.vae):
                first = self.encode_first_frame(image, height, width)
        dtype, device = self.transformer.dtype, self.transformer.device
        positive: Tensor | None = None
        negative: Tensor | None = None
        pictured: Tensor | None = None

        def predict(x: np.ndarray, t: Any, i: int) -> tuple[np.ndarray, None]:
            timestep: np.ndarray = np.full(len(x), float(t), np.float32)
            if first is not None:  # the picture stands as frame 0, at timestep 0
                x = x.copy()
                x[:, :, :1] = first
                timestep = np.tile(np.float32(t), (len(x), shape[2]))
                timestep[:, 0] = 0
            if condition is not None:  # Wan 2.1 I2V: the mask and first frame's latents
                x = np.concatenate([x, condition], axis=1)
            sample = asarray(x, dtype=dtype, device=device)
            cond = self.transformer(sample, timestep, None, context=positive,
                                    image_context=pictured)
            flow = cond.numpy().astype(np.float32)
            if negative is not None:
                uncond = self.transformer(sample, timestep, None, context=negative,
                                          image_context=pictured)
                base = uncond.numpy().astype(np.float32)
                flow = base + np.float32(guidance_scale) * (flow - base)
            return flow, None

        # 3. the steps (the contexts through the transformer's text embedder first); 4. the
        # frames out of the latent space
        with self.on_gpu(self.transformer):
            positive = self._context(positive_states)
            negative = None if negative_states is None else self._context(negative_states)
            if image_states is not None:
                pictured = self.transformer.encode_image(asarray(
                    np.repeat(image_states, len(prompts), axis=0), dtype=dtype, device=device))
            latents = scheduler_loop(latents, scheduler.timesteps, scheduler, predict,
                                     dtype=np.float32, callback=callback)
        if first is not None:
            latents[:, :, :1] = first
        with self.on_gpu(self.vae):
            return self.decode(latents)

    def encode_first_frame(self, image: Any, height: int, width: int) -> np.ndarray:
        """(1, C, 1, h, w) normalized latents of `image` resized to width x height: the VAE
        posterior's mean. diffusers: WanImageToVideoPipeline's `prepare_latents`
        (`retrieve_latents(..., sample_mode="argmax")`)."""
        pixels = self._pixels(image, height, width)
        vae = self.vae
        video = pixels.transpose(2, 0, 1)[None, :, None]
        mean, _ = vae.encode(asarray(video, dtype=vae.post_quant_conv.weight.dtype,
                                     device=vae.device))
        return vae.normalize(mean).numpy().astype(np.float32)

    def image_states(self, image: Any) -> np.ndarray:
        """The CLIP vision encoder's penultimate hidden states (1, 1 + patches, hidden) of
        `image` (short side resized to the encoder's size, centre cut). diffusers:
        WanImageToVideoPipeline's `encode_image`."""
        encoder = self.image_encoder
        assert encoder is not None
        pixels = clip_pixels(image, encoder.image_size, device=encoder.device)
        return encoder.hidden_states(pixels, -2).numpy().astype(np.float32)

    def condition(self, image: Any, height: int, width: int, num_frames: int) -> np.ndarray:
        """Wan 2.1 I2V's conditioning (1, 4 + C, F, h, w): the mask (1 on the first latent
        frame's 4 channels, 0 after) and the normalized latents (posterior means) of `image`
        (resized to width x height) followed by num_frames - 1 zero frames. diffusers:
        WanImageToVideoPipeline's `prepare_latents`."""
        pixels = self._pixels(image, height, width)
        video = np.zeros((1, 3, num_frames, height, width), np.float32)
        video[0, :, 0] = pixels.transpose(2, 0, 1)
        vae = self.vae
        mean, _ = vae.encode(asarray(video, dtype=vae.post_quant_conv.weight.dtype,
                                     device=vae.device))
        latents = vae.normalize(mean).numpy().astype(np.float32)
        mask = np.zeros((1, self.temporal_factor, *latents.shape[2:]), np.float32)
        mask[:, :, 0] = 1
        return np.concatenate([mask, latents], axis=1)

    @staticmethod
    def _pixels(image: Any, height: int, width: int) -> np.ndarray:
        """`image` resized to width x height with Lanczos, (H, W, 3) in [-1, 1]."""
        from PIL import Image

        picture = image if isinstance(image, Image.Image) else Image.fromarray(
            np.asarray(image, np.uint8))
        picture = picture.convert("RGB").resize((width, height), Image.Resampling.LANCZOS)
        return np.asarray(picture, np.float32) / 255 * 2 - 1

    def decode(self, latents: np.ndarray) -> np.ndarray:
        """Videos (B, T, H, W, 3) in [0, 1] from the transformer's latents (B, C, F, h, w)."""
        vae = self.vae
        z = vae.denormalize(asarray(latents, dtype=vae.post_quant_conv.weight.dtype,
                                    device=vae.device))
        video = vae.decode(z).numpy().astype(np.float32)
        return np.clip(video / 2 + 0.5, 0.0, 1.0).transpose(0, 2, 3, 4, 1)
