"""SkyReels V2 diffusion forcing text-to-video, as diffusers'
SkyReelsV2DiffusionForcingPipeline draws it: Wan 2.1's prompt, noise and VAE (WanPipeline),
the transformer reading a timestep per latent frame and the video's fps, each latent frame
stepped by its own copy of the scheduler as the forcing schedule (skyreels_v2_schedule) says.
`ar_step` > 0 starts each block of `causal_block_size` frames later than the one before;
a long video (`num_frames` > `base_num_frames`) is made `base_num_frames` at a time, each
window after the first starting from the last `overlap_history` frames of the one before
(their latents, noised by `addnoise_condition`). With an `image` (diffusers'
SkyReelsV2DiffusionForcingImageToVideoPipeline, on the same folders) its latents stand as the
first latent frame, given like an overlap's, and a `last_image`'s as one more latent frame past
the end, never stepped (the video ends on it; dropped before the decode); with a `video` (diffusers'
SkyReelsV2DiffusionForcingVideoToVideoPipeline) the latents of its last `overlap_history`
frames do, and the new frames continue it (the answer: the video, then what was made).

    pipe = SkyReelsV2DiffusionForcingPipeline.from_pretrained("SkyReels-V2-DF-1.3B-540P-Diffusers")
    frames = pipe("a cat", height=544, width=960, num_frames=97, ar_step=5,
                  causal_block_size=5, seed=7)
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from typing import Any

import numpy as np

from gpustd import asarray

from ...models.skyreels_v2 import fps_index
from ...noise.rng import make_generator
from ..finite import check_latents
from .skyreels_v2_schedule import forcing_schedule
from .wan import StepCallback, WanPipeline
from .wan_image import _latents, first_frame_latents
from .wan_video2video import video_pixels

__all__ = ["SkyReelsV2DiffusionForcingPipeline"]


def _check(num_frames: int, base_num_frames: int, overlap_history: int | None,
           factor: int, ar_step: int, addnoise_condition: float, extends: bool) -> None:
    """ValueError in one line for diffusion forcing settings that cannot run (`extends`: a
    video is given to continue)."""
    if ar_step < 0:
        raise ValueError(f"ar_step must be 0 (synchronous) or more, got {ar_step}")
    if not 0 <= addnoise_condition < 1000:
        raise ValueError(f"addnoise_condition must be in [0, 1000) (20 is usual), got "
                         f"{addnoise_condition}")
    if extends and (overlap_history is None or num_frames < base_num_frames):
        raise ValueError("extending a video takes overlap_history (its last frames the new ones "
                         "continue from, e.g. 17) and num_frames of at least base_num_frames")
    if num_frames <= base_num_frames and not extends:
        return
    if overlap_history is None:
        raise ValueError(f"{num_frames} frames pass base_num_frames {base_num_frames}: give "
                         "overlap_history (e.g. 17) to make the video in overlapping windows")
    if base_num_frames % factor != 1 or overlap_history % factor != 1:
        raise ValueError(f"base_num_frames and overlap_history must be {factor} k + 1, got "
                         f"{base_num_frames} and {overlap_history}")
    if not 0 < overlap_history < base_num_frames:
        raise ValueError(f"overlap_history ({overlap_history}) must be below base_num_frames "
                         f"({base_num_frames})")


def _check_last(last_image: Any, image: Any, long: bool) -> None:
    """ValueError in one line for a last frame without a first one or with a long video."""
    if last_image is None:
        return
    if image is None:
        raise ValueError("last_image is the frame an image-to-video run ends on: give image "
                         "(the first frame) too")
    if long:
        raise ValueError("last_image ends a video made in one window: give num_frames no "
                         "larger than base_num_frames")


class SkyReelsV2DiffusionForcingPipeline(WanPipeline):
    """A loaded SkyReels V2 diffusion forcing folder (module docstring)."""

    def __call__(self, prompt: str | Sequence[str], *,  # type: ignore[override]
                 negative_prompt: str | None = None, height: int = 544, width: int = 960,
                 num_frames: int = 97, num_inference_steps: int = 50,
                 guidance_scale: float = 6.0, seed: int = 0, rng: str = "torch",
                 sampler: str = "diffusers", max_sequence_length: int = 512,
                 callback: StepCallback | None = None, ar_step: int = 0,
                 causal_block_size: int | None = None, base_num_frames: int = 97,
                 overlap_history: int | None = None, addnoise_condition: float = 0,
                 fps: int = 24, cache: None = None, image: Any = None,
                 last_image: Any = None, video: Sequence[Any] | None = None) -> np.ndarray:
        """Videos for `prompt`: (B, num_frames, height, width, 3) float in [0, 1]. diffusers:
        `SkyReelsV2DiffusionForcingPipeline(prompt, negative_prompt=, height=, width=,
        num_frames=, num_inference_steps=, guidance_scale=, ar_step=, causal_block_size=,
        base_num_frames=, overlap_history=, addnoise_condition=, fps=,
        generator=torch.Generator().manual_seed(seed), output_type="np").frames`, its
        addnoise noise drawn from the same generator (diffusers': torch's global one).
        `image` (a PIL image or (H, W, 3) uint8, resized with Lanczos): the first frame, as
        `SkyReelsV2DiffusionForcingImageToVideoPipeline(image=image, ...)`; `last_image`
        (likewise) the frame to end on, with `image` and one window only (`last_image=`
        there). `video` (frames
        as PIL images or (H, W, 3) uint8, resized likewise): the video to extend by
        num_frames, from its last overlap_history frames, as
        `SkyReelsV2DiffusionForcingVideoToVideoPipeline(video=video, ...)`; the answer holds
        the video's frames, then the num_frames made (their first overlap_history redrawn).
        `cache` is taken as WanPipeline's callers give it, and must be None: the frames are
        at different timesteps, which no step cache here measures."""
        if cache is not None:
            raise ValueError("SkyReels V2 diffusion forcing runs without a step cache; leave "
                             "it out")
        prompts = [prompt] if isinstance(prompt, str) else list(prompt)
        self.check(height=height, width=width, num_frames=num_frames,
                   steps=num_inference_steps, rng=rng, sampler=sampler)
        factor = self.temporal_factor
        _check(num_frames, base_num_frames, overlap_history, factor, ar_step,
               addnoise_condition, video is not None)
        if video is not None and image is not None:
            raise ValueError("give a picture to start from or a video to extend, not both")
        _check_last(last_image, image, num_frames > base_num_frames and bool(overlap_history))
        block = causal_block_size or int(self.transformer.config["num_frame_per_block"])
        guided = guidance_scale > 1
        with self.on_gpu(self.text_encoder):
            negatives = [[negative_prompt or ""] * len(prompts)] if guided else []
            positive, *negative = self.prompt_states_each([prompts, *negatives],
                                                          max_sequence_length)
        scheduler = self.scheduler(sampler)
        scheduler.set_timesteps(num_inference_steps)
        total = (num_frames - 1) // factor + 1
        long = overlap_history is not None and (num_frames > base_num_frames or video is not None)
        base = (base_num_frames - 1) // factor + 1 if long else total
        overlap = (overlap_history - 1) // factor + 1 if long and overlap_history else 0
        windows = 1 + (total - base - 1) // (base - overlap) + 1 if long else 1
        read = (base if long else total) + (last_image is not None)  # the end frame's too
        if read % block:
            raise ValueError(f"{read} latent frames are not a multiple of causal_block_size "
                             f"{block}; change the frame count")
        generator = make_generator(rng, seed)
        spatial, model = self.vae.spatial_factor, self.transformer
        done: np.ndarray | None = None
        first, end = (self._frame_latents(picture, height, width)
                      for picture in (image, last_image))
        if video is not None:  # the end of the video, as an overlap
            given = video_pixels(list(video)[-(overlap_history or 1):], height, width)
            first = self._with_vae(lambda vae: _latents(vae, given))
        with self.on_gpu(model):
            contexts = [self._context(states) for states in (positive, *negative)]
            for window in range(windows):
                ready, prefix, frames = 0, None, base if long else total
                if first is not None and done is None:  # the picture's or the video's latents
                    prefix = first if video is None or first.shape[2] % block == 0 \
                        else first[:, :, :-(first.shape[2] % block)]
                    ready = prefix.shape[2]
                elif done is not None:  # the last overlap frames, whole causal blocks of them
                    prefix = done[:, :, -overlap:]
                    if prefix.shape[2] % block:
                        prefix = prefix[:, :, :-(prefix.shape[2] % block)]
                    ready = prefix.shape[2]
                    frames = min(total - window * (base - overlap), base)
                shape = (len(prompts), model.config["in_channels"], frames, height // spatial,
                         width // spatial)
                latents = generator.standard_normal(shape).astype(np.float32)
                if prefix is not None:
                    latents[:, :, :ready] = prefix
                if end is not None:  # one more latent frame, the end, given and kept
                    latents = np.concatenate([latents, np.repeat(end, len(latents), 0)], 2)
                    frames += 1
                plan = forcing_schedule(frames, scheduler.timesteps, frames if long or end
                                        is not None else base, ar_step, ready, block)
                if end is not None:
                    plan.steps[:, -1], plan.update[:, -1] = 0, False
                latents = self._forced(latents, contexts, scheduler, plan, guidance_scale,
                                       block, fps, addnoise_condition, ready, generator,
                                       callback)
                if end is not None:
                    latents = latents[:, :, :-1]
                done = latents if done is None else np.concatenate(
                    [done, latents[:, :, overlap:]], axis=2)
        assert done is not None
        check_latents(done, self)
        made = self._with_vae(lambda _: self.decode(done))
        if video is None:
            return made
        original = (video_pixels(list(video), height, width).transpose(0, 2, 3, 4, 1) + 1) / 2
        return np.concatenate([np.repeat(original.clip(0, 1), len(made), axis=0),
                               made.astype(original.dtype)], axis=1)

    def _frame_latents(self, picture: Any, height: int, width: int) -> np.ndarray | None:
        """A picture's latents as one latent frame (None for none)."""
        if picture is None:
            return None
        return self._with_vae(lambda vae: first_frame_latents(vae, picture, height, width))

    def _forced(self, latents: np.ndarray, contexts: list[Any], scheduler: Any, plan: Any,
                guidance_scale: float, block: int, fps: int, addnoise: float, ready: int,
                generator: Any, callback: StepCallback | None) -> np.ndarray:
        """One window's iterations: each frame stepped by its own scheduler copy."""
        model = self.transformer
        each = [copy.deepcopy(scheduler) for _ in range(latents.shape[2])]
        rates = [fps_index(fps)] * len(latents)
        for i, (steps, update) in enumerate(zip(plan.steps, plan.update, strict=True)):
            start, stop = plan.windows[i][0], min(plan.windows[i][1], latents.shape[2])
            x = latents[:, :, start:stop].copy()
            timestep = np.tile(steps[start:stop].astype(np.float32), (len(x), 1))
            if addnoise > 0 and start < ready:  # the given frames, a little noised
                factor = np.float32(0.001 * addnoise)
                x[:, :, :ready - start] = x[:, :, :ready - start] * (1 - factor) + \
                    generator.standard_normal(x[:, :, :ready - start].shape).astype(
                        np.float32) * factor
                timestep[:, :ready - start] = int(addnoise)
            sample = asarray(x, dtype=model.dtype, device=model.device)
            flows = [model(sample, timestep, None, context=context, fps=rates,
                           causal_block_size=block).numpy().astype(np.float32)
                     for context in contexts]
            flow = flows[0] if len(flows) == 1 else \
                flows[1] + np.float32(guidance_scale) * (flows[0] - flows[1])
            for f in range(start, stop):
                if update[f]:
                    latents[:, :, f] = each[f].step(flow[:, :, f - start], steps[f],
                                                    latents[:, :, f]).astype(np.float32)
            if callback is not None and callback(i + 1, len(plan.steps), latents) is False:
                break
        return latents
