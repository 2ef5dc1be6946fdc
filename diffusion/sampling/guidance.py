"""Classifier-free guidance, written once for every family and loop: the WebUI's CFG (with
composable diffusion's AND parts), FLUX's true CFG and SD3's CFG on velocities, the timestep
loop's on noise predictions (DDIM CFG++ at its own scale). A distilled guidance (FLUX.1 dev's
`distilled_cfg_scale`) is an input of the model, not a combination of its outputs.

    guided = combine(uncond, cond, weights, cfg_scale)   # uncond + (cond - uncond) * cfg
"""

from __future__ import annotations

from typing import Any

import numpy as np

__all__ = ["Weights", "combine", "part_rows"]

# per image of the batch, the guidance weights of its prompt's AND parts, whose cond rows
# follow one another image by image (the WebUI's conds_list, row indexes implied)
Weights = tuple[tuple[float, ...], ...]


def combine(uncond: np.ndarray, cond: np.ndarray, weights: Weights | None,
            cfg_scale: Any) -> np.ndarray:
    """Classifier-free guidance of uncond (B, ...) by cond: without `weights` (one row per
    image) uncond + (cond - uncond) * cfg_scale; with them (cond's rows the images' parts)
    each image's uncond plus (cond_part - uncond) * (weight * cfg_scale) for each of its
    parts in order: the WebUI's `CFGDenoiser.combine_denoised`, in its order of operations.
    Applies to x0 predictions (k-diffusion), to noise predictions (timestep samplers) and to
    velocities (flow models: float32 arrays with `cfg_scale` a np.float32, diffusers' and
    Forge's `uncond + cfg * (cond - uncond)`, the same bits since IEEE products commute)."""
    if weights is None:
        return uncond + (cond - uncond) * cfg_scale
    if len(weights) != len(uncond) or sum(map(len, weights)) != len(cond):
        raise ValueError(f"weights for {len(weights)} images with "
                         f"{sum(map(len, weights))} parts do not fit {len(uncond)} uncond "
                         f"and {len(cond)} cond rows")
    guided = uncond.copy()
    row = 0
    for image, parts in enumerate(weights):
        for weight in parts:
            guided[image] += (cond[row] - uncond[image]) * (weight * cfg_scale)
            row += 1
    return guided


def part_rows(x: np.ndarray, weights: Weights | None) -> np.ndarray:
    """x (B, ...) with image i's row repeated once per AND part of its prompt, the rows of
    cond that `combine` takes (x itself without `weights`)."""
    return x if weights is None else np.repeat(x, [len(parts) for parts in weights], axis=0)
