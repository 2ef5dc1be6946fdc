"""NVIDIA's ChronoEdit, as diffusers' ChronoEditPipeline draws it: a picture edited by a Wan 2.1
I2V video model (models.chronoedit) that animates the picture into its edited state. The
instruction through UMT5 (Wan's prompt cleaning, 512 tokens), the picture's CLIP penultimate
states, the image-to-video conditioning of the picture resized to width x height (a mask, the
picture's latents, zero frames after), noise of 2 latent frames (5 frames: the picture, the
edit) or, with temporal reasoning, of 1 + (num_frames - 1) / 4 latent frames whose middle ones
(the video between the picture and its edit) are dropped after num_temporal_reasoning_steps
steps; the folder's scheduler (flow UniPC) stepping the transformer's velocity, guided by
`uncond + g (cond - uncond)` against the negative prompt ("" when none) for g > 1. The edited
picture: the last frame the VAE decodes of the first and the last latent frame. With the
torch RNG a seed gives diffusers' picture.

    pipe = ChronoEditPipeline.from_pretrained("ChronoEdit-14B-Diffusers")
    edited = pipe.edit(picture, "turn the cat into a dog", height=720, width=1280, seed=7)
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, cast

import numpy as np

from gpucore import Device
from gpustd import asarray

from ...loaders.wan import WanFiles, chronoedit_family
from ...models.chronoedit import ChronoEditTransformer3DModel
from ...noise.rng import make_generator
from ..finite import check_latents
from .wan import WanPipeline
from .wan_image import clip_image_states, i2v_condition

__all__ = ["EDIT_FRAMES", "ChronoEditPipeline", "keep_ends"]

EDIT_FRAMES = 5  # without temporal reasoning: the picture and its edit (2 latent frames)

StepCallback = Callable[[int, int, np.ndarray], bool | None]


def keep_ends(latents: np.ndarray, scheduler: Any) -> np.ndarray:
    """The first and the last latent frame of `latents` (B, C, F, h, w), and of what the
    multistep scheduler keeps of earlier steps (UniPC's model outputs and last sample).
    diffusers: the `[:, :, [0, -1]]` of ChronoEditPipeline's loop at the reasoning's end."""
    def ends(x: Any) -> Any:
        return x if x is None or x.shape[2] == 2 else x[:, :, [0, -1]]
    if hasattr(scheduler, "_outputs"):
        scheduler._outputs = [ends(x) for x in scheduler._outputs]
    if hasattr(scheduler, "_last_sample"):
        scheduler._last_sample = ends(scheduler._last_sample)
    return cast(np.ndarray, ends(latents))


class ChronoEditPipeline(WanPipeline):
    """A loaded ChronoEdit diffusers folder (module docstring): `edit` draws the edited
    picture; Wan's `__call__` draws its video as an image-to-video model."""

    @classmethod
    def from_pretrained(cls, path: str | Path, *, dtype: Any = np.float32,
                        device: Device | None = None, variant: str | None = None,
                        offload: bool = False,
                        files: WanFiles | None = None) -> ChronoEditPipeline:
        """Load a ChronoEdit diffusers folder (WanPipeline.from_pretrained); ValueError in one
        line for another folder."""
        if chronoedit_family(Path(path)) is None:
            raise ValueError(f"{path} is not a ChronoEdit diffusers folder (its "
                             "model_index.json names no ChronoEditPipeline)")
        pipe = cast(ChronoEditPipeline, super().from_pretrained(
            path, dtype=dtype, device=device, variant=variant, offload=offload, files=files))
        if pipe.image_encoder is None or not isinstance(pipe.transformer,
                                                        ChronoEditTransformer3DModel):
            raise ValueError(f"{path}: a ChronoEdit folder lists its image_encoder and a "
                             "ChronoEditTransformer3DModel transformer; this one does not")
        return pipe

    def edit(self, image: Any, prompt: str | Sequence[str], *,
             negative_prompt: str | None = None, height: int = 480, width: int = 832,
             num_inference_steps: int = 50, guidance_scale: float = 5.0, seed: int = 0,
             rng: str = "torch", sampler: str = "diffusers",
             enable_temporal_reasoning: bool = False, num_temporal_reasoning_steps: int = 0,
             num_frames: int = 81, max_sequence_length: int = 512,
             callback: StepCallback | None = None, output_type: str = "np") -> np.ndarray:
        """`image` (a PIL image or (H, W, 3) uint8) edited as `prompt` says (one or a list):
        (B, height, width, 3) float in [0, 1], or `output_type` "latent": the final first and
        last latent frames (B, C, 2, h, w) that `decode` takes. diffusers:
        `ChronoEditPipeline(image, prompt, negative_prompt=, height=, width=, num_frames=,
        num_inference_steps=, guidance_scale=, enable_temporal_reasoning=,
        num_temporal_reasoning_steps=, generator=torch.Generator().manual_seed(seed),
        output_type="np").frames[:, -1]`. `num_frames` (1 + 4k) counts the reasoning video's
        frames, used only with `enable_temporal_reasoning`."""
        prompts = [prompt] if isinstance(prompt, str) else list(prompt)
        frames = num_frames if enable_temporal_reasoning else EDIT_FRAMES
        self.check(height=height, width=width, num_frames=frames, steps=num_inference_steps,
                   rng=rng, sampler=sampler)
        steps = num_temporal_reasoning_steps
        if isinstance(steps, bool) or not isinstance(steps, (int, np.integer)) or steps < 0:
            raise ValueError("num_temporal_reasoning_steps must be a whole number >= 0, got "
                             f"{steps!r}")
        if output_type not in ("np", "latent"):
            raise ValueError(f"output_type must be 'np' or 'latent', got {output_type!r}")
        assert self.image_encoder is not None  # (from_pretrained's check)
        # 1. the instruction's (and, guided, the negative prompt's) states; the picture's
        guided = guidance_scale > 1
        with self.on_gpu(self.text_encoder):
            negatives = [[negative_prompt or ""] * len(prompts)] if guided else []
            positive_states, *negative_states = self.prompt_states_each(
                [prompts, *negatives], max_sequence_length)
        with self.on_gpu(self.image_encoder):
            image_states = np.repeat(clip_image_states(self.image_encoder, image),
                                     len(prompts), axis=0)
        condition = np.repeat(self._with_vae(lambda vae: i2v_condition(
            vae, image, height, width, frames)), len(prompts), axis=0)
        # 2. the schedule and the noise, drawn as diffusers' randn_tensor
        scheduler = self.scheduler(sampler)
        scheduler.set_timesteps(num_inference_steps)
        model, config = self.transformer, self.transformer.config
        spatial = self.vae.spatial_factor
        shape = (len(prompts), config["out_channels"] or config["in_channels"],
                 condition.shape[2], height // spatial, width // spatial)
        latents = make_generator(rng, seed).standard_normal(shape).astype(np.float32)
        # 3. the steps; the reasoning frames dropped where the reasoning ends
        timesteps = scheduler.timesteps
        with self.on_gpu(model):
            positive = self._context(positive_states)
            negative = self._context(negative_states[0]) if guided else None
            pictured = model.encode_image(asarray(image_states, dtype=model.dtype,
                                                  device=model.device))
            for i, t in enumerate(timesteps):
                if enable_temporal_reasoning and i == steps:
                    latents, condition = keep_ends(latents, scheduler), condition[:, :, [0, -1]]
                x = np.concatenate([scheduler.scale_model_input(latents, t), condition], axis=1)
                sample = asarray(x, dtype=model.dtype, device=model.device)
                timestep = np.full(len(x), float(t), np.float32)
                flow = model(sample, timestep, None, context=positive,
                             image_context=pictured).numpy().astype(np.float32)
                if negative is not None:
                    base = model(sample, timestep, None, context=negative,
                                 image_context=pictured).numpy().astype(np.float32)
                    flow = base + np.float32(guidance_scale) * (flow - base)
                latents = scheduler.step(flow, t, latents).astype(np.float32)
                if callback is not None and callback(i + 1, len(timesteps), latents) is False:
                    break
        ends = np.ascontiguousarray(latents[:, :, [0, -1]])
        return ends if output_type == "latent" else self.edited(ends)

    def edited(self, latents: np.ndarray) -> np.ndarray:
        """The edited pictures (B, H, W, 3) in [0, 1] of latents (B, C, F, h, w): the last
        frame the VAE decodes of their first and last frames (NaN said, not decoded black)."""
        ends = np.ascontiguousarray(latents[:, :, [0, -1]])
        check_latents(ends, self)
        return self._with_vae(lambda _: self.decode(ends))[:, -1]
