"""SkyReels V2 diffusion forcing's schedule: which timestep each latent frame is at in each
iteration, which frames step, and the window of frames the transformer reads. Synchronous
(ar_step 0) every frame walks the schedule together; asynchronous (ar_step > 0) each causal
block starts `ar_step` steps after the one before it, a wave of denoising down the video.
diffusers: `SkyReelsV2DiffusionForcingPipeline.generate_timestep_matrix`."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

__all__ = ["ForcingSchedule", "forcing_schedule"]


@dataclass(frozen=True)
class ForcingSchedule:
    """`steps` (iterations, frames) the timestep of each frame, `update` (iterations, frames)
    whether it steps then, `windows` each iteration's [start, stop) frames the model reads."""

    steps: np.ndarray
    update: np.ndarray
    windows: list[tuple[int, int]]


def forcing_schedule(frames: int, timesteps: np.ndarray, base_frames: int, ar_step: int,
                     ready: int, block: int) -> ForcingSchedule:
    """The schedule of `frames` latent frames over the scheduler's `timesteps`, the model
    reading at most `base_frames` at once, the first `ready` frames given (a long video's
    overlap: never stepped), causal blocks of `block` frames. A not yet started frame is at
    999 (pure noise), a finished one at 0. ValueError when `ar_step` is too small for the
    window to slide over every block."""
    blocks, base_blocks, count = frames // block, base_frames // block, len(timesteps) + 1
    if base_blocks < blocks and ar_step < len(timesteps) / base_blocks:
        raise ValueError(f"ar_step must be at least {math.ceil(len(timesteps) / base_blocks)} "
                         f"for {frames} latent frames read {base_frames} at a time")
    template = np.concatenate([[999], np.asarray(timesteps).astype(np.int64), [0]])
    before = np.zeros(blocks, np.int64)
    before[:ready // block] = count
    rows, masks = [], []
    while not np.all(before >= count - 1):
        row = np.zeros(blocks, np.int64)
        for i in range(blocks):
            # the first block, or one whose predecessor is done, steps on; the others lag
            row[i] = before[i] + 1 if i == 0 or before[i - 1] >= count - 1 \
                else row[i - 1] - ar_step
        row = row.clip(0, count)
        masks.append((row != before) & (row != count))
        rows.append(template[row])
        before = row
    end, windows = base_blocks, []
    for mask in masks:
        if end < blocks and mask[end]:
            end += 1
        windows.append((max(end - base_blocks, 0) * block, end * block))
    return ForcingSchedule(np.repeat(np.stack(rows), block, axis=1),
                           np.repeat(np.stack(masks), block, axis=1), windows)
