"""FramePack's sections (diffusers' HunyuanVideoFramepackPipeline loop, host numpy): how many
windows of `latent_window_size` latent frames make the video, what each packs before its
noisy latents (the first frame's latents and the history: 1 latest frame clean, 2 at 2x, 16
at 4x, each with its frame index in the packed window), how the denoised window joins the
history, and the decoded sections' soft join.

"inverted_anti_drifting" (FramePackI2V_HY) makes the video backwards: each section is the
one before the history generated so far, placed `latent_paddings` windows after the first
frame, the last one then prefixed by the first frame's latents. "vanilla" (F1) makes it
forwards: each section follows the history, which starts as the first frame's latents.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = ["SAMPLING_TYPES", "Section", "appended", "latent_paddings", "pack", "section_count",
           "soft_append"]

SAMPLING_TYPES = ("inverted_anti_drifting", "vanilla")
_SIZES = {"inverted_anti_drifting": (1, 2, 16), "vanilla": (16, 2, 1)}


def section_count(num_frames: int, window: int, temporal: int) -> int:
    """The sections a video of num_frames takes, `window` latent frames each."""
    frames = (window - 1) * temporal + 1
    return max(1, (num_frames + frames - 1) // frames)


def latent_paddings(count: int) -> list[int]:
    """inverted_anti_drifting: each section's distance from the first frame, in windows."""
    if count > 4:
        return [3] + [2] * (count - 3) + [1, 0]
    return list(reversed(range(count)))


def empty_history(sampling: str, image_latents: np.ndarray) -> np.ndarray:
    """The history before the first section: zeros for the 19 history frames (then the first
    frame's latents for vanilla)."""
    b, c, _, h, w = image_latents.shape
    zeros = np.zeros((b, c, sum(_SIZES[sampling]), h, w), np.float32)
    return np.concatenate([zeros, image_latents], axis=2) if sampling == "vanilla" else zeros


@dataclass(frozen=True)
class Section:
    """A section's packing: its latents' frame indices and the history parts
    ({"clean" | "2x" | "4x": (latents, frame indices)}, prepare_history's)."""

    indices: np.ndarray
    parts: dict[str, tuple[np.ndarray, np.ndarray]]


def pack(sampling: str, k: int, count: int, window: int, history: np.ndarray,
         image_latents: np.ndarray, last_latents: np.ndarray | None = None) -> Section:
    """Section k of `count`'s packing of `history` (B, C, N, h, w) and the first frame's
    latents (B, C, 1, h, w); `last_latents`: the last frame's (inverted_anti_drifting), the
    first section's (the video's end) clean history. diffusers: the start of the section
    loop."""
    sizes = _SIZES[sampling]
    if sampling == "inverted_anti_drifting":
        padding = latent_paddings(count)[k] * window
        splits = [1, padding, window, *sizes]
        prefix, _, own, one, two, four = np.split(np.arange(sum(splits)),
                                                  np.cumsum(splits)[:-1])
        recent, double, quad = np.split(history[:, :, :sum(sizes)], np.cumsum(sizes)[:-1],
                                        axis=2)
        if last_latents is not None and k == 0:
            recent = last_latents
    else:
        splits = [1, *sizes, window]
        prefix, four, two, one, own = np.split(np.arange(sum(splits)), np.cumsum(splits)[:-1])
        quad, double, recent = np.split(history[:, :, -sum(sizes):], np.cumsum(sizes)[:-1],
                                        axis=2)
    clean = np.concatenate([image_latents, recent], axis=2)
    return Section(own, {"clean": (clean, np.concatenate([prefix, one])), "2x": (double, two),
                         "4x": (quad, four)})


def appended(sampling: str, k: int, count: int, window: int, history: np.ndarray,
             total: int, latents: np.ndarray, image_latents: np.ndarray
             ) -> tuple[np.ndarray, int, np.ndarray]:
    """(the history with section k's denoised `latents` joined, the generated frame count,
    the latents to decode: all generated ones after the first section, else the section's
    and the window before or after it, which the soft join overlaps). diffusers: the end
    of the section loop."""
    if sampling == "inverted_anti_drifting":
        last = k == count - 1
        if last:
            latents = np.concatenate([image_latents, latents], axis=2)
        total += latents.shape[2]
        history = np.concatenate([latents, history], axis=2)
        real = history[:, :, :total]
        return history, total, real if k == 0 else real[:, :, :2 * window + int(last)]
    total += latents.shape[2]
    history = np.concatenate([history, latents], axis=2)
    real = history[:, :, -total:]
    return history, total, real if k == 0 else real[:, :, -2 * window:]


def soft_append(history: np.ndarray, current: np.ndarray, overlap: int) -> np.ndarray:
    """Videos (B, C, T, H, W) joined in time, the last `overlap` frames of history faded
    into the first of current (weights 1 -> 0). diffusers: `_soft_append`."""
    weights = np.linspace(1, 0, overlap, dtype=np.float32).reshape(1, 1, -1, 1, 1)
    blended = weights * history[:, :, -overlap:] + (1 - weights) * current[:, :, :overlap]
    return np.concatenate([history[:, :, :-overlap], blended, current[:, :, overlap:]], axis=2)
