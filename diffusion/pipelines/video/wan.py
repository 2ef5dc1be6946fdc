"""Wan 2.1 text-to-video, as diffusers' WanPipeline draws it: the prompt (whitespace and HTML
entities cleaned) through UMT5, its states kept for the prompt's tokens and zeroed for the
padding up to 512; noise of (B, 16, 1 + (frames - 1) / 4, H / 8, W / 8) latents; the folder's
scheduler (UniPC on flow sigmas with its `flow_shift`, or flow-match Euler) stepping the
transformer's velocity, with classifier-free guidance `uncond + g (cond - uncond)` against the
negative prompt ("" when none) for g > 1; the video VAE decoding one latent frame at a time.
Wan VACE (a WanVACEPipeline folder) reads control latents besides (vace_inputs: a control
video, its mask, reference pictures; a gray video to regenerate whole when none), on the prompt
and the negative pass alike, times a conditioning scale; the reference pictures' latent frames
lead the noise and are dropped before the decode.
Video-to-video (`video=`, `strength=`): an input video's latents noised to where the strength
cuts the schedule take the noise's place (wan_video2video).
Wan 2.2 A14B has two transformers: the high-noise expert steps the timesteps at or above
`boundary_ratio` x 1000, the low-noise expert (`transformer_2`, its own guidance scale) the rest.
With the torch RNG a seed gives diffusers' video (`generator=torch.Generator("cpu")
.manual_seed(seed)`).

    pipe = WanPipeline.from_pretrained("Wan2.1-T2V-1.3B-Diffusers")
    frames = pipe("a cat walks on the grass", height=480, width=832, num_frames=81, seed=7)
"""

from __future__ import annotations

import contextlib
import html
import re
from collections.abc import Callable, Sequence
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np

from gpucore import Device, default_device
from gpustd import Tensor, asarray
from gpustd.nn import deferred
from gpustd.nn.offload import offload as offload_weights

from ...loaders.component import load_component
from ...loaders.wan import WanFiles, load_wan
from ...models.chronoedit import ChronoEditTransformer3DModel
from ...models.clip_vision import CLIPVisionModelWithProjection
from ...models.skyreels_v2 import SkyReelsV2Transformer3DModel
from ...models.step_cache import BranchCache, StepCache
from ...models.t5 import UMT5EncoderModel
from ...models.wan import WanTransformer3DModel
from ...models.wan_animate import WanAnimateTransformer3DModel
from ...models.wan_vace import WanVACETransformer3DModel
from ...models.wan_vae import AutoencoderKLWan
from ...noise.rng import RNG_SOURCES, make_generator
from ...sampling.scheduler_loop import scheduler_loop
from ...text.t5_tokenizer import T5Tokenizer
from ..contract import Denoisers
from ..finite import check_latents
from .vace_inputs import VaceCondition, VacePixels, control_pixels, vace_condition
from .wan_cache import wan_branch
from .wan_image import clip_image_states, first_frame_latents, i2v_condition
from .wan_memory import WanMemoryModes
from .wan_refuse import check_frame_count, image_conditioned, refuse_wan
from .wan_schedule import SAMPLERS, check_strength, strength_timesteps, wan_scheduler
from .wan_vae_passes import WanVaePasses
from .wan_video2video import refuse_video2video, video_start

__all__ = ["SAMPLERS", "WanPipeline"]

StepCallback = Callable[[int, int, np.ndarray], bool | None]


def clean_prompt(text: str) -> str:
    """diffusers' `prompt_clean` without ftfy: HTML entities undone twice, runs of white
    space made one space, the ends stripped."""
    return re.sub(r"\s+", " ", html.unescape(html.unescape(text)).strip()).strip()


class WanPipeline(WanMemoryModes, WanVaePasses):
    """A loaded Wan 2.1 text-to-video diffusers folder (module docstring); its memory modes:
    `set_memory_mode` (wan_memory)."""

    def __init__(self, *, transformer: WanTransformer3DModel, vae: AutoencoderKLWan,
                 text_encoder: UMT5EncoderModel, tokenizer: T5Tokenizer,
                 scheduler_config: dict[str, Any], expand_timesteps: bool = False,
                 offload: bool = False,
                 image_encoder: CLIPVisionModelWithProjection | None = None,
                 transformer_2: WanTransformer3DModel | None = None,
                 boundary_ratio: float | None = None) -> None:
        if (transformer_2 is None) != (boundary_ratio is None):
            raise ValueError("Wan 2.2 A14B's two experts come with a boundary_ratio, and a "
                             "boundary_ratio with two experts")
        self.transformer, self.vae = transformer, vae
        # Wan 2.2 A14B: the low-noise expert, below boundary_ratio x num_train_timesteps
        self.transformer_2, self.boundary_ratio = transformer_2, boundary_ratio
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
                        offload: bool = False, files: WanFiles | None = None) -> WanPipeline:
        """Load a Wan diffusers folder onto `device` in `dtype`, with `files` (ComfyUI's
        split files, GGUFs) in place of its components (`load_wan`); `offload`: each
        network's weights go to host memory as soon as they are loaded, and come to the GPU
        only while that network runs (the text encoder, the transformer(s), the VAE in
        turn), so the GPU holds the largest of them, not all."""
        weights = load_wan(path, files or WanFiles(), variant=variant)
        assert weights.transformer is not None and weights.vae is not None
        assert weights.text_encoder is not None
        place = {"dtype": dtype, "device": device or default_device()}

        def loaded(model: Any, part: Any) -> Any:
            with deferred():  # each parameter takes GPU memory when its values arrive
                # a GGUF's blocks kept, row slices too (Animate's face keys and values)
                model = load_component(model, part, slices=True, to_host=offload)
            if offload:
                offload_weights(model)
                place["device"].empty_pool()
            return model

        text_encoder = loaded(UMT5EncoderModel(weights.text_encoder.config, **place),
                              weights.text_encoder)
        vae = loaded(AutoencoderKLWan(weights.vae.config, **place), weights.vae)
        network = WanVACETransformer3DModel if weights.vace else \
            WanAnimateTransformer3DModel if weights.animate else \
            ChronoEditTransformer3DModel if weights.chronoedit else \
            SkyReelsV2Transformer3DModel if weights.skyreels else WanTransformer3DModel
        transformer = loaded(network(weights.transformer.config, **place), weights.transformer)
        transformer_2 = None if weights.transformer_2 is None else loaded(
            network(weights.transformer_2.config, **place), weights.transformer_2)
        image_encoder = None if weights.image_encoder is None else loaded(
            CLIPVisionModelWithProjection(weights.image_encoder.config, projection=False,
                                          **place), weights.image_encoder)
        return cls(transformer=transformer, vae=vae, text_encoder=text_encoder,
                   image_encoder=image_encoder, tokenizer=T5Tokenizer(weights.tokenizer_dir),
                   scheduler_config=weights.scheduler_config,
                   expand_timesteps=weights.expand_timesteps, offload=offload,
                   transformer_2=transformer_2,
                   boundary_ratio=None if transformer_2 is None else weights.boundary_ratio)

    def lora_targets(self, *, low_noise: bool = False) -> Any:
        """What a `LoraManager` patches: the transformer (`low_noise`: Wan 2.2 A14B's
        transformer_2), as `transformer` (diffusers' and PEFT's `transformer.` keys) and as
        `unet` (ComfyUI's `diffusion_model.`, kohya's `lora_unet_`)."""
        model = self.transformer_2 if low_noise else self.transformer
        if model is None:
            raise ValueError("a LoRA for the low-noise expert is for Wan 2.2 A14B; this Wan "
                             "model has one transformer (give it with --lora)")
        return SimpleNamespace(unet=model, transformer=model)

    @property
    def denoisers(self) -> Denoisers:
        """The transformer (Wan 2.2 A14B: both experts), as a contract's pipeline says it."""
        experts = (self.transformer, self.transformer_2)
        return Denoisers(tuple(t for t in experts if t is not None), "transformer")

    @property
    def vace(self) -> bool:
        """Whether the transformer reads VACE's control latents (a Wan VACE folder)."""
        return isinstance(self.transformer, WanVACETransformer3DModel)

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
        return self.prompt_states_each([prompts], max_sequence_length)[0]

    def prompt_states_each(self, groups: Sequence[Sequence[str]],
                           max_sequence_length: int = 512) -> list[np.ndarray]:
        """`prompt_states` of each group of prompts (the prompts, the negative prompts) in
        one pass through UMT5 (`forward_each`: a streamed block comes to the GPU once for
        all groups), each group's states bitwise its own call's."""
        encoded = [self.tokenizer.encode([clean_prompt(p) for p in prompts],
                                         max_sequence_length) for prompts in groups]
        states = self.text_encoder.forward_each(encoded)
        return [s.numpy().astype(np.float32) * (mask[:, :, None] != 0)
                for s, (_, mask) in zip(states, encoded, strict=True)]

    def encode_prompt(self, prompts: Sequence[str], max_sequence_length: int = 512) -> Tensor:
        """The transformer's context (B, max_sequence_length, dim) for `prompts`: their
        `prompt_states` through the transformer's text embedder."""
        return self._context(self.prompt_states(prompts, max_sequence_length))

    def _context(self, states: np.ndarray, transformer: Any = None) -> Tensor:
        model = self.transformer if transformer is None else transformer
        return model.encode_text(asarray(states, dtype=model.dtype, device=model.device))

    def scheduler(self, sampler: str) -> Any:
        """The scheduler `sampler` names (SAMPLERS), configured from the folder's."""
        return wan_scheduler(self.scheduler_config, sampler)

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
                 max_sequence_length: int = 512, callback: StepCallback | None = None,
                 guidance_scale_2: float | None = None, cache: StepCache | None = None,
                 control: VacePixels | None = None,
                 conditioning_scale: float | Sequence[float] | None = None,
                 video: Sequence[Any] | None = None, strength: float = 0.8) -> np.ndarray:
        """Videos for `prompt` (one or a list): (B, num_frames, height, width, 3) float in
        [0, 1]. diffusers: `WanPipeline(prompt, negative_prompt=, height=, width=,
        num_frames=, num_inference_steps=, guidance_scale=, guidance_scale_2=,
        generator=torch.Generator().manual_seed(seed), output_type="np").frames`. `image`
        (a PIL image or (H, W, 3) uint8, resized to width x height with Lanczos as diffusers
        does): the first frame, animated (image-to-video models and Wan 2.2 TI2V 5B), as
        `WanImageToVideoPipeline(image=image, ...)` of the same folder.
        `guidance_scale_2`: Wan 2.2 A14B's low-noise expert's (`guidance_scale` unless
        given). `cache`: a step cache (First Block Cache, TeaCache) whose branches each expert's
        prompt and negative-prompt calls run through, as diffusers' `apply_first_block_cache`
        on each transformer with its `cache_context("cond")` / `("uncond")`. Wan VACE:
        `control` (vace_pixels: the control video, mask and reference pictures; none: a gray
        video regenerated whole) and `conditioning_scale` (one float or one per VACE layer;
        1 unless given), as `WanVACEPipeline(video=, mask=, reference_images=,
        conditioning_scale=, ...)`. `video` (frames as PIL images or (H, W, 3) uint8; their
        count is the video's, num_frames unused): video-to-video from it, re-noised to where
        `strength` cuts the schedule (wan_video2video), as `WanVideoToVideoPipeline(video=,
        strength=, ...)`."""
        prompts = [prompt] if isinstance(prompt, str) else list(prompt)
        if video is not None:
            num_frames = len(video)
            check_strength(strength, num_inference_steps)
        self.check(height=height, width=width, num_frames=num_frames,
                   steps=num_inference_steps, rng=rng, sampler=sampler)
        config = self.transformer.config
        # image-to-video (Wan 2.1 I2V, Wan 2.2 A14B I2V): the mask and the first frame's
        # latents as extra input channels
        conditioned = image_conditioned(config)
        if video is not None:
            refuse_video2video(image=image is not None, vace=self.vace, conditioned=conditioned)
        refuse_wan(second_expert=self.transformer_2 is not None,
                   expand_timesteps=self.expand_timesteps, conditioned=conditioned,
                   image=image is not None,
                   cache_kind=None if cache is None else cache.spec.kind,
                   guidance_scale_2=guidance_scale_2, vace=self.vace,
                   control=None if control is None and conditioning_scale is None
                   else "a VACE control (video, mask, reference pictures, scale)")
        scale_each = self.transformer.scales(1.0 if conditioning_scale is None else
                                             conditioning_scale) \
            if isinstance(self.transformer, WanVACETransformer3DModel) else None
        # 1. the prompts' (and, guided, the negative prompt's) states
        guided = guidance_scale > 1
        with self.on_gpu(self.text_encoder):
            negatives = [[negative_prompt or ""] * len(prompts)] if guided else []
            positive_states, *negative = self.prompt_states_each([prompts, *negatives],
                                                                 max_sequence_length)
            negative_states = negative[0] if guided else None
        # 2. the schedule and the starting noise, drawn as diffusers' randn_tensor; the given
        # first frame's latents (its posterior's mean)
        scheduler = self.scheduler(sampler)
        scheduler.set_timesteps(num_inference_steps)
        timesteps = scheduler.timesteps if video is None else strength_timesteps(
            scheduler.timesteps, num_inference_steps, strength, scheduler.order)
        if video is not None and cache is not None:  # TeaCache's last step: the cut's last
            cache.steps = len(timesteps)
        spatial = self.vae.spatial_factor
        shape = (len(prompts), config["out_channels"] or config["in_channels"],
                 (num_frames - 1) // self.temporal_factor + 1, height // spatial,
                 width // spatial)
        vace: VaceCondition | None = None
        if self.vace:  # the control latents; the reference pictures' frames lead the noise
            pixels = control_pixels(control, height, width, num_frames)
            vace = self._with_vae(lambda vae: vace_condition(vae, pixels))
            shape = (*shape[:2], vace.latent_frames, *shape[3:])
        latents = make_generator(rng, seed).standard_normal(shape).astype(np.float32)
        if video is not None:  # the video's latents noised to the first kept timestep
            latents = self._with_vae(lambda vae: video_start(
                vae, video, height, width, latents, scheduler, timesteps[0]))
        first = condition = image_states = None
        if image is not None and conditioned:
            if config["image_dim"] is not None:  # Wan 2.1 I2V reads CLIP's states too
                assert self.image_encoder is not None
                with self.on_gpu(self.image_encoder):
                    image_states = clip_image_states(self.image_encoder, image)
            condition = np.repeat(self._with_vae(lambda vae: i2v_condition(
                vae, image, height, width, num_frames)), len(prompts), axis=0)
        elif image is not None:
            first = self._with_vae(lambda vae: first_frame_latents(vae, image, height, width))
        # 3. the steps, each by the expert of its timestep (Wan 2.2 A14B: the high-noise one
        # down to the boundary) with that expert's contexts and guidance scale
        experts = [self.transformer, self.transformer_2]
        scales = [guidance_scale, guidance_scale if guidance_scale_2 is None
                  else guidance_scale_2]
        boundary = None if self.boundary_ratio is None else self.boundary_ratio * float(
            self.scheduler_config.get("num_train_timesteps", 1000))
        contexts: dict[int, tuple[Tensor, Tensor | None, Tensor | None, dict[str, Any]]] = {}
        branches: dict[tuple[int, str], BranchCache] = {}

        def branch(model: Any, side: str) -> dict[str, Any]:
            if cache is None:
                return {}
            key = (0 if model is self.transformer else 1, side)
            if key not in branches:
                branches[key] = wan_branch(cache, model, height, width)
            return {"cache": branches[key]}
        on_gpu = contextlib.ExitStack()

        def expert(t: Any) -> tuple[Any, tuple[Tensor, Tensor | None, Tensor | None,
                                               dict[str, Any]]]:
            index = 0 if boundary is None or float(t) >= boundary else 1
            model = experts[index]
            assert model is not None
            if index not in contexts:  # its text (and picture) embedders, once
                on_gpu.close()
                on_gpu.enter_context(self.on_gpu(model))
                contexts[index] = (
                    self._context(positive_states, model),
                    None if negative_states is None else self._context(negative_states, model),
                    None if image_states is None else model.encode_image(asarray(
                        np.repeat(image_states, len(prompts), axis=0), dtype=model.dtype,
                        device=model.device)),
                    {} if vace is None else {  # VACE: the control's patches, once per video
                        "control_context": model.encode_control(asarray(
                            vace.control, dtype=model.dtype, device=model.device)),
                        "control_hidden_states_scale": scale_each})
            return model, contexts[index]

        def predict(x: np.ndarray, t: Any, i: int) -> tuple[np.ndarray, None]:
            model, (positive, negative, pictured, controlled) = expert(t)
            scale = scales[0 if model is self.transformer else 1]
            timestep: np.ndarray = np.full(len(x), float(t), np.float32)
            if first is not None:  # the picture stands as frame 0, at timestep 0
                x = x.copy()
                x[:, :, :1] = first
                timestep = np.tile(np.float32(t), (len(x), shape[2]))
                timestep[:, 0] = 0
            if condition is not None:  # the mask and first frame's latents
                x = np.concatenate([x, condition], axis=1)
            sample = asarray(x, dtype=model.dtype, device=model.device)
            cond = model(sample, timestep, None, context=positive, image_context=pictured,
                         **controlled, **branch(model, "cond"))
            flow = cond.numpy().astype(np.float32)
            if negative is not None:
                uncond = model(sample, timestep, None, context=negative,
                               image_context=pictured, **controlled,
                               **branch(model, "uncond"))
                base = uncond.numpy().astype(np.float32)
                flow = base + np.float32(scale) * (flow - base)
            return flow, None

        with on_gpu:
            latents = scheduler_loop(latents, timesteps, scheduler, predict,
                                     dtype=np.float32, callback=callback)
        if first is not None:
            latents[:, :, :1] = first
        if vace is not None:
            latents = np.ascontiguousarray(vace.without_references(latents))
        # 4. the frames out of the latent space (NaN said, not decoded into black frames)
        check_latents(latents, self)
        return self._with_vae(lambda _: self.decode(latents))
