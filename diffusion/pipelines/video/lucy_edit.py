"""Lucy Edit (Decart, 2025): a video edited as an instruction says, on Wan 2.2 TI2V 5B. The
input video's frames are resized to the run's size (Lanczos, to [-1, 1]) and go through Wan
2.2's VAE (its posterior's mean, normalized); each step the transformer reads the noisy
latents and those video latents concatenated on the channel axis (48 + 48 channels) and
predicts the flow of the noisy ones, from pure noise over the whole schedule (no strength: the
video is a condition, not a start), with Wan's prompt states and classifier-free guidance
against the negative prompt. diffusers: `LucyEditPipeline(video=, prompt=, negative_prompt=,
height=, width=, num_inference_steps=, guidance_scale=,
generator=torch.Generator().manual_seed(seed), output_type="np").frames`.

    pipe = LucyEditPipeline.from_pretrained("Lucy-Edit-Dev")
    frames = pipe("make the jacket red leather", video=frames_in, height=480, width=832)
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from gpustd import asarray

from ...models.step_cache import StepCache
from ...noise.rng import make_generator
from ...sampling.scheduler_loop import scheduler_loop
from ..finite import check_latents
from .wan import StepCallback, WanPipeline
from .wan_image import _latents
from .wan_refuse import refuse_lucy
from .wan_video2video import video_pixels

__all__ = ["LucyEditPipeline"]


class LucyEditPipeline(WanPipeline):
    """A loaded Lucy Edit diffusers folder (module docstring): WanPipeline's loading, prompt
    states, memory modes, offloading, VAE passes and LoRA targets, its own call."""

    def __call__(self, prompt: str | Sequence[str], *, video: Sequence[Any] | None = None,
                 negative_prompt: str | None = None, height: int = 480, width: int = 832,
                 num_frames: int | None = None, num_inference_steps: int = 50,
                 guidance_scale: float = 5.0, seed: int = 0, rng: str = "torch",
                 sampler: str = "diffusers", max_sequence_length: int = 512,
                 callback: StepCallback | None = None, cache: StepCache | None = None,
                 image: Any = None, guidance_scale_2: float | None = None,
                 control: Any = None, conditioning_scale: Any = None,
                 strength: float | None = None) -> np.ndarray:
        """Edited videos of `video` (frames as PIL images or (H, W, 3) uint8, resized to
        width x height; their count is the video's, `num_frames` unused as diffusers') for
        `prompt` (one or a list): (B, frames, height, width, 3) float in [0, 1]. `cache`: a
        First Block Cache whose branches the prompt's and the negative prompt's calls run
        through. `image`, `guidance_scale_2`, `control`, `conditioning_scale` and `strength`
        (WanPipeline's call, as the server passes them) are refused unless None."""
        prompts = [prompt] if isinstance(prompt, str) else list(prompt)
        if video is None or not len(video):
            raise ValueError("Lucy Edit edits a video: give the video to edit (txt2vid "
                             "--init-video, the server's init_video)")
        refuse_lucy(image=image is not None,
                    cache_kind=None if cache is None else cache.spec.kind,
                    guidance_scale_2=guidance_scale_2,
                    control=None if control is None and conditioning_scale is None
                    else "a VACE control", strength=None if strength is None
                    else "a denoising strength")
        if self.transformer_2 is not None:
            raise ValueError("a Lucy Edit folder with two experts is not run here; give one "
                             "with a single transformer (Lucy-Edit-Dev)")
        num_frames = len(video)
        self.check(height=height, width=width, num_frames=num_frames,
                   steps=num_inference_steps, rng=rng, sampler=sampler)
        # 1. the prompts' (and, guided, the negative prompt's) states
        guided = guidance_scale > 1
        with self.on_gpu(self.text_encoder):
            negatives = [[negative_prompt or ""] * len(prompts)] if guided else []
            positive_states, *negative = self.prompt_states_each([prompts, *negatives],
                                                                 max_sequence_length)
        # 2. the schedule, the noise (diffusers' randn_tensor) and the video's latents
        scheduler = self.scheduler(sampler)
        scheduler.set_timesteps(num_inference_steps)
        config, spatial = self.transformer.config, self.vae.spatial_factor
        shape = (len(prompts), config["out_channels"] or config["in_channels"],
                 (num_frames - 1) // self.temporal_factor + 1, height // spatial,
                 width // spatial)
        latents = make_generator(rng, seed).standard_normal(shape).astype(np.float32)
        condition = self._with_vae(lambda vae: _latents(vae, video_pixels(
            video, height, width)))
        if condition.shape[1] + shape[1] != config["in_channels"]:  # not a Lucy transformer
            raise ValueError(f"the transformer reads {config['in_channels']} channels, not the "
                             f"noise's {shape[1]} and the video's {condition.shape[1]}")
        condition = np.repeat(condition, len(prompts), axis=0)
        # 3. the steps: the noisy latents with the video's beside them
        model = self.transformer
        branches = {side: cache.branch() for side in ("cond", "uncond")} \
            if cache is not None else {}
        with self.on_gpu(model):
            positive = self._context(positive_states)
            negative_context = self._context(negative[0]) if guided else None

            def predict(x: np.ndarray, t: Any, i: int) -> tuple[np.ndarray, None]:
                sample = asarray(np.concatenate([x, condition], axis=1), dtype=model.dtype,
                                 device=model.device)
                # one timestep a sample: diffusers' per-token timesteps (expand_timesteps)
                # are all t here, its mask all ones, so each token's embedding is the same
                timestep = np.full(len(x), float(t), np.float32)
                cached = {"cache": branches["cond"]} if branches else {}
                flow = model(sample, timestep, None, context=positive,
                             **cached).numpy().astype(np.float32)
                if negative_context is not None:
                    cached = {"cache": branches["uncond"]} if branches else {}
                    base = model(sample, timestep, None, context=negative_context,
                                 **cached).numpy().astype(np.float32)
                    flow = base + np.float32(guidance_scale) * (flow - base)
                return flow, None

            latents = scheduler_loop(latents, scheduler.timesteps, scheduler, predict,
                                     dtype=np.float32, callback=callback)
        # 4. the frames out of the latent space (NaN said, not decoded into black frames)
        check_latents(latents, self)
        return self._with_vae(lambda _: self.decode(latents))
