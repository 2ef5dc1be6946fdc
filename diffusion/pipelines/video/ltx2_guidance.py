"""LTX-2's sampling arithmetic on the host, as diffusers' `LTX2Pipeline.__call__` does it: the
video latents packed to tokens, the audio length that the frames and frame rate give, the
schedule (linear sigmas shifted by mu from the video token count), and the guidance that
combines each step's passes in x0 space: CFG's (g - 1)(pos - neg), STG's s (pos - perturbed),
modality guidance's (m - 1)(pos - isolated), then guidance_rescale towards the positive
prediction's spread, back to a velocity."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from ...sampling.model_sampling import calculate_shift

__all__ = ["LTX2Guidance", "audio_latent_frames", "guided_velocity", "ltx2_mu", "pack_video",
           "unpack_video"]

# the shift LTX2Pipeline reads where the scheduler config is silent (its .get defaults)
_SHIFT_DEFAULTS = {"base_image_seq_len": 1024, "max_image_seq_len": 4096, "base_shift": 0.95,
                   "max_shift": 2.05}


@dataclass(frozen=True)
class LTX2Guidance:
    """LTX2Pipeline's guidance scales (its defaults): CFG `guidance_scale` (on above 1),
    `stg_scale` (on above 0: perturbed self-attention at `stg_blocks`), `modality_scale` (on
    above 1: the streams' attention to each other off), `guidance_rescale` (on above 0); the
    audio's own four (None: diffusers' `x or video's`, so 0 falls back too)."""

    guidance_scale: float = 3.0
    stg_scale: float = 1.0
    modality_scale: float = 3.0
    guidance_rescale: float = 0.7
    audio_guidance_scale: float | None = 7.0
    audio_stg_scale: float | None = 1.0
    audio_modality_scale: float | None = 3.0
    audio_guidance_rescale: float | None = 0.7
    stg_blocks: tuple[int, ...] = (28,)

    def audio(self) -> tuple[float, float, float, float]:
        """The audio's (cfg, stg, modality, rescale), as diffusers falls back (`or`)."""
        return (self.audio_guidance_scale or self.guidance_scale,
                self.audio_stg_scale or self.stg_scale,
                self.audio_modality_scale or self.modality_scale,
                self.audio_guidance_rescale or self.guidance_rescale)

    def video(self) -> tuple[float, float, float, float]:
        return (self.guidance_scale, self.stg_scale, self.modality_scale, self.guidance_rescale)

    @property
    def cfg(self) -> bool:
        return self.guidance_scale > 1 or self.audio()[0] > 1

    @property
    def stg(self) -> bool:
        return self.stg_scale > 0 or self.audio()[1] > 0

    @property
    def modality(self) -> bool:
        return self.modality_scale > 1 or self.audio()[2] > 1


def pack_video(latents: np.ndarray) -> np.ndarray:
    """(B, C, F, H, W) -> tokens (B, F H W, C) (patch 1, the released models'). diffusers:
    `LTX2Pipeline._pack_latents(latents, 1, 1)`."""
    b, c = latents.shape[:2]
    return np.ascontiguousarray(latents.reshape(b, c, -1).transpose(0, 2, 1))


def unpack_video(tokens: np.ndarray, frames: int, height: int, width: int) -> np.ndarray:
    """pack_video's inverse. diffusers: `LTX2Pipeline._unpack_latents(..., 1, 1)`."""
    b, _, c = tokens.shape
    return np.ascontiguousarray(tokens.transpose(0, 2, 1).reshape(b, c, frames, height, width))


def audio_latent_frames(num_frames: int, frame_rate: float, sample_rate: int, hop_length: int,
                        compression: int) -> int:
    """The audio latents a video of `num_frames` at `frame_rate` lasts: round(seconds x
    sample_rate / hop_length / compression) (25 a second for LTX-2's 16 kHz, hop 160, 4x).
    diffusers: `LTX2Pipeline.__call__`'s audio_num_frames."""
    per_second = sample_rate / hop_length / float(compression)
    return round(num_frames / frame_rate * per_second)


def ltx2_mu(video_tokens: int, scheduler_config: dict[str, Any]) -> float:
    """The dynamic shift of a video of `video_tokens` latent tokens (the audio's schedule is
    the video's). diffusers: `calculate_shift(latents.shape[1], config.get(..., 1024),
    config.get(..., 4096), config.get(..., 0.95), config.get(..., 2.05))`."""
    return calculate_shift(video_tokens, {**_SHIFT_DEFAULTS, **{
        k: v for k, v in scheduler_config.items() if k in _SHIFT_DEFAULTS}})


def _rescaled(guided: np.ndarray, positive: np.ndarray, factor: float) -> np.ndarray:
    """diffusers' rescale_noise_cfg: guided scaled to the positive's standard deviation per
    batch element, mixed with itself by `factor`."""
    axes = tuple(range(1, guided.ndim))
    ratio = positive.std(axis=axes, keepdims=True, ddof=1) / \
        guided.std(axis=axes, keepdims=True, ddof=1)
    return factor * (guided * ratio) + (1 - factor) * guided


def guided_velocity(sample: np.ndarray, sigma: float, positive: np.ndarray,
                    scales: tuple[float, float, float, float], negative: Any = None,
                    perturbed: Any = None, isolated: Any = None) -> np.ndarray:
    """One stream's guided velocity (float32) from its passes' velocities (None: the pass did
    not run): each made x0 = sample - sigma v, the deltas added to the positive's, rescaled,
    and made a velocity again, (sample - x0) / sigma. `scales`: LTX2Guidance.video() or
    .audio(). diffusers: the guidance block of `LTX2Pipeline.__call__`'s loop."""
    cfg, stg, modality, rescale = scales
    s = np.float32(sigma)

    def x0(velocity: np.ndarray) -> np.ndarray:
        return sample - velocity * s

    pos = x0(positive)
    guided = pos
    if negative is not None:
        guided = guided + np.float32(cfg - 1) * (pos - x0(negative))
    if perturbed is not None:
        guided = guided + np.float32(stg) * (pos - x0(perturbed))
    if isolated is not None:
        guided = guided + np.float32(modality - 1) * (pos - x0(isolated))
    if rescale > 0:
        guided = _rescaled(guided, pos, rescale)
    return ((sample - guided) / s).astype(np.float32)
