"""HunyuanImage 2.1's guidance, diffusers' AdaptiveProjectedMixGuidance (its folder's
`guider/` and `ocr_guider/` guider_config.json): classifier-free guidance over the steps in
[start, stop) of the run, switching to adaptive projected guidance (APG) after
`adaptive_projected_guidance_start_step`. APG's difference (cond - uncond) runs through a
momentum buffer (updated at every guided step, the CFG ones included), is clipped to a norm of
`adaptive_projected_guidance_rescale` per picture, and its part parallel to the conditional
prediction is scaled by `eta` (0: dropped). A guidance scale of 1 turns both off (one pass).

    guider = MixGuidance.from_config(json.load(open("guider/guider_config.json")))
    state = guider.start()                                  # a fresh momentum buffer
    pred = guider.combine(cond, uncond, step=i, steps=n, state=state)
"""

from __future__ import annotations

import math
import sys
from dataclasses import dataclass, fields, replace
from typing import Any

import numpy as np

__all__ = ["MixGuidance", "MomentumBuffer"]

# what a ClassifierFreeGuidance's guider_config.json holds (diffusers' __init__ arguments)
_CFG_FIELDS = {"guidance_scale", "guidance_rescale", "use_original_formulation", "start",
               "stop", "enabled"}


@dataclass
class MomentumBuffer:
    """APG's running difference: average <- update + momentum * average. diffusers:
    `MomentumBuffer`."""

    momentum: float
    average: np.ndarray | float = 0.0

    def update(self, value: np.ndarray) -> np.ndarray:
        self.average = value + self.momentum * self.average
        return np.asarray(self.average)


@dataclass(frozen=True)
class MixGuidance:
    """AdaptiveProjectedMixGuidance's settings (diffusers' defaults)."""

    guidance_scale: float = 3.5
    guidance_rescale: float = 0.0
    adaptive_projected_guidance_scale: float = 10.0
    adaptive_projected_guidance_momentum: float | None = -0.5
    adaptive_projected_guidance_rescale: float = 10.0
    eta: float = 0.0
    use_original_formulation: bool = False
    start: float = 0.0
    stop: float = 1.0
    adaptive_projected_guidance_start_step: int = 5
    enabled: bool = True

    @classmethod
    def from_config(cls, config: dict[str, Any], where: str = "guider_config.json"
                    ) -> MixGuidance:
        """The guider of a folder's guider_config.json; ValueError in one line naming `where`
        for another guider class or a setting this guider lacks. A ClassifierFreeGuidance
        (HunyuanVideo 1.5's) is this guider with APG never reached and no momentum."""
        kind = config.get("_class_name", "AdaptiveProjectedMixGuidance")
        if kind not in ("AdaptiveProjectedMixGuidance", "ClassifierFreeGuidance"):
            raise ValueError(f"{where}: guider {kind} is not supported (HunyuanImage 2.1's "
                             "AdaptiveProjectedMixGuidance, HunyuanVideo 1.5's "
                             "ClassifierFreeGuidance)")
        names = _CFG_FIELDS if kind == "ClassifierFreeGuidance" else {f.name
                                                                     for f in fields(cls)}
        unknown = sorted(k for k in config if not k.startswith("_") and k not in names)
        if unknown:
            raise ValueError(f"{where}: unknown guider settings {unknown}; fix the file")
        plain = {"adaptive_projected_guidance_start_step": sys.maxsize,
                 "adaptive_projected_guidance_momentum": None} \
            if kind == "ClassifierFreeGuidance" else {}
        return cls(**{**{k: v for k, v in config.items() if k in names}, **plain})

    def with_scale(self, scale: float) -> MixGuidance:
        """These settings with CFG's scale `scale` (the request's CFG scale)."""
        return replace(self, guidance_scale=float(scale))

    def _off(self, scale: float) -> bool:
        return math.isclose(scale, 0.0 if self.use_original_formulation else 1.0)

    @property
    def takes_negative(self) -> bool:
        """Whether a run has a negative pass at all (diffusers encodes the negative prompt
        then): enabled, at a scale that guides."""
        return self.enabled and not self._off(self.guidance_scale)

    def cfg_at(self, step: int, steps: int) -> bool:
        """Whether step `step` of `steps` is guided. diffusers: `_is_cfg_enabled`."""
        within = int(self.start * steps) <= step < int(self.stop * steps)
        return self.enabled and within and not self._off(self.guidance_scale)

    def apg_at(self, step: int, steps: int) -> bool:
        """Whether step `step` is guided by APG. diffusers: `_is_apg_enabled`."""
        return (self.cfg_at(step, steps) and step > self.adaptive_projected_guidance_start_step
                and not self._off(self.adaptive_projected_guidance_scale))

    def start_run(self) -> MomentumBuffer | None:
        """A run's momentum buffer (diffusers makes it at step 0), None without momentum."""
        momentum = self.adaptive_projected_guidance_momentum
        return None if momentum is None else MomentumBuffer(float(momentum))

    def combine(self, cond: np.ndarray, uncond: np.ndarray | None, *, step: int, steps: int,
                state: MomentumBuffer | None) -> np.ndarray:
        """The guided prediction (B, ...) float32 of the conditional and unconditional ones at
        step `step` of `steps`; `uncond` None where the step is not guided. diffusers:
        `AdaptiveProjectedMixGuidance.forward`."""
        if not self.cfg_at(step, steps) or uncond is None:
            return cond
        c, u = cond.astype(np.float64), uncond.astype(np.float64)
        base = c if self.use_original_formulation else u
        if not self.apg_at(step, steps):
            if state is not None:
                state.update(c - u)
            pred = base + self.guidance_scale * (c - u)
        else:
            pred = base + self.adaptive_projected_guidance_scale * self._projected(c, u, state)
        if self.guidance_rescale > 0:
            pred = _rescaled(pred, c, self.guidance_rescale)
        return pred.astype(np.float32)

    def _projected(self, c: np.ndarray, u: np.ndarray, state: MomentumBuffer | None
                   ) -> np.ndarray:
        """APG's update: the (momentum-averaged, norm-clipped) difference with its part along
        the conditional prediction scaled by eta. diffusers: `normalized_guidance`."""
        diff = c - u if state is None else state.update(c - u)
        axes = tuple(range(1, diff.ndim))  # each picture's own norms
        threshold = self.adaptive_projected_guidance_rescale
        if threshold > 0:
            norm = np.sqrt((diff * diff).sum(axis=axes, keepdims=True))
            diff = diff * np.minimum(1.0, threshold / norm)
        unit = c / np.maximum(np.sqrt((c * c).sum(axis=axes, keepdims=True)), 1e-12)
        parallel = (diff * unit).sum(axis=axes, keepdims=True) * unit
        return diff - parallel + self.eta * parallel


def _rescaled(pred: np.ndarray, cond: np.ndarray, amount: float) -> np.ndarray:
    """The guided prediction rescaled toward the conditional one's standard deviation.
    diffusers: `rescale_noise_cfg`."""
    axes = tuple(range(1, pred.ndim))
    ratio = cond.std(axis=axes, ddof=1, keepdims=True) / pred.std(axis=axes, ddof=1,
                                                                  keepdims=True)
    return amount * pred * ratio + (1 - amount) * pred
