"""Lumina 2's CFG, as diffusers' Lumina2Pipeline runs it: truncated (`cfg_trunc_ratio`: the
negative pass only for the first part of the steps, the prompt's pass alone after) and
normalised (`cfg_normalization`: the guided prediction rescaled to the norm of the prompt's).

diffusers decides truncation by the step's index: step i (of n) is guided while
`(i + 1) / n <= cfg_trunc_ratio`. A flow here sees the timestep, not the index, so the rule
is the same decision by noise level: guided at timesteps at or above the midpoint between
the last guided and the first unguided step of diffusers' schedule of n steps. On that
schedule (the "diffusers" sampler) it is diffusers' choice step for step; a WebUI sampler's
timesteps (its own, or a second evaluation within a step) are guided by the same noise level.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from .start import flow_schedule

__all__ = ["guided_until", "lumina2_cfg"]


def guided_until(config: dict[str, Any], steps: int, mu: float | None,
                 cfg_trunc_ratio: float) -> float:
    """The lowest timestep (0..1000) that still runs the negative pass, for a run of `steps`
    steps on the scheduler `config` shifted by `mu`: -inf where every step is guided
    (`cfg_trunc_ratio` >= 1, diffusers' default), inf where none is. diffusers:
    `do_classifier_free_truncation = (i + 1) / num_inference_steps > cfg_trunc_ratio`."""
    ratio = float(cfg_trunc_ratio)
    if not np.isfinite(ratio) or ratio < 0:
        raise ValueError(f"cfg_trunc_ratio must be a number from 0 to 1 (the part of the steps "
                         f"that runs CFG), got {cfg_trunc_ratio!r}")
    guided = sum((i + 1) / steps <= ratio for i in range(steps))
    if guided >= steps:
        return -np.inf
    if guided == 0:
        return np.inf
    timesteps = np.asarray(flow_schedule(config, steps, mu).timesteps, np.float64)
    return float(timesteps[guided - 1] + timesteps[guided]) / 2


def lumina2_cfg(positive: np.ndarray, negative: np.ndarray, guidance_scale: float,
                normalize: bool) -> np.ndarray:
    """The guided prediction from the prompt's (`positive`) and the negative prompt's model
    outputs (B, C, h, w) float32: `negative + g * (positive - negative)`; with `normalize`,
    each row along the last axis (a latent row's width, as diffusers' `torch.norm(...,
    dim=-1)` takes it) rescaled to the norm of the positive's row. diffusers: the CFG of
    `Lumina2Pipeline.__call__`."""
    g = np.float32(guidance_scale)
    pred = negative + g * (positive - negative)
    if normalize:
        positive_norm = np.linalg.norm(positive, axis=-1, keepdims=True)
        pred = pred * (positive_norm / np.linalg.norm(pred, axis=-1, keepdims=True))
    return pred.astype(np.float32)  # type: ignore[no-any-return]
