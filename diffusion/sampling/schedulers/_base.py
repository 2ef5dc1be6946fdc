"""What every scheduler shares: diffusers-style config, the beta schedule, step bookkeeping, noise.

All math is numpy float64. Config dicts use diffusers' field names so a model folder's
`scheduler/scheduler_config.json` can be passed straight to `from_config`.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any, ClassVar, Self

import numpy as np

from ..model_sampling import make_betas

__all__ = ["Scheduler"]

# Config fields that diffusers knows but we do not implement: a config that turns one of them
# away from its harmless value is refused instead of being silently sampled differently.
_UNSUPPORTED = {
    "thresholding": (False, None),
    "use_exponential_sigmas": (False, None),
    "use_beta_sigmas": (False, None),
    "use_lu_lambdas": (False, None),
    "use_flow_sigmas": (False, None),
    "use_dynamic_shifting": (False, None),
    "final_sigmas_type": ("zero", None),
    "timestep_type": ("discrete", None),
    "interpolation_type": ("linear", None),
}

def spaced_timesteps(config: Mapping[str, Any], n: int, *, round_linspace: bool) -> np.ndarray:
    """The `n` inference timesteps, descending, by `timestep_spacing` (float64).

    Table 2 of "Common Diffusion Noise Schedules and Sample Steps are Flawed" (Lin et al. 2023).
    The sigma-space schedulers keep linspace's fractional timesteps, the others round them.
    """
    total = config["num_train_timesteps"]
    spacing = config["timestep_spacing"]
    if spacing == "linspace":
        steps = np.linspace(0, total - 1, n)
        return (steps.round() if round_linspace else steps)[::-1].copy()
    if spacing == "leading":
        return (np.arange(n) * (total // n)).round()[::-1] + config["steps_offset"]
    if spacing == "trailing":
        return np.round(np.arange(total, 0, -total / n)) - 1.0
    raise ValueError(f"timestep_spacing {spacing!r} is not supported; use 'linspace', "
                     "'leading' or 'trailing'")


class Scheduler:
    """Base class: holds `config` (a JSON-able dict), `betas`, `alphas_cumprod`, `timesteps`.

    Subclasses implement `set_timesteps(num_inference_steps)` and `step(...)`, and list their
    config fields and defaults in `defaults`.
    """

    defaults: ClassVar[dict[str, Any]] = {}
    choices: ClassVar[dict[str, tuple[Any, ...]]] = {}
    order: ClassVar[int] = 1
    init_noise_sigma: float = 1.0

    def __init__(self, **config: Any) -> None:
        unknown = sorted(set(config) - set(self.defaults))
        if unknown:
            raise TypeError(f"{type(self).__name__} has no config field(s) {unknown}; valid "
                            f"fields: {sorted(self.defaults)}")
        self.config: dict[str, Any] = {**self.defaults, **config}
        for key, allowed in {"prediction_type": ("epsilon", "v_prediction"),
                             **self.choices}.items():
            if key in self.config and self.config[key] not in allowed:
                raise ValueError(f"{type(self).__name__}: {key}={self.config[key]!r} is not "
                                 f"supported; use one of {list(allowed)}")
        self.betas = make_betas(self.config)
        self.alphas_cumprod = np.cumprod(1.0 - self.betas)
        self.num_inference_steps: int | None = None
        self.timesteps: np.ndarray = np.arange(self.config["num_train_timesteps"])[::-1].copy()
        self._step_index: int | None = None
        self._begin_index: int | None = None
        # the clean latents the last `step` predicted, in the sample's dtype (diffusers'
        # `pred_original_sample`); None for a scheduler whose step predicts none
        self.pred_original_sample: np.ndarray | None = None

    @classmethod
    def from_config(cls, config: Mapping[str, Any] | None = None, **overrides: Any) -> Self:
        """Build from a diffusers `scheduler_config.json` dict, like diffusers' `from_config`.

        Keys this class does not use (another scheduler's fields, `_class_name`, ...) are
        ignored; missing keys take `defaults`; `overrides` win over `config`. Raises ValueError
        for features diffusers has and this package does not (e.g. `use_beta_sigmas=True`).
        """
        merged = {**(config or {}), **overrides}
        for key, harmless in _UNSUPPORTED.items():
            if key not in cls.defaults and merged.get(key, harmless[0]) not in harmless:
                raise ValueError(f"{cls.__name__}: {key}={merged[key]!r} is not supported "
                                 f"(supported: {harmless[0]!r})")
        return cls(**{k: v for k, v in merged.items() if k in cls.defaults})

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.config})"

    # -- step bookkeeping ------------------------------------------------------------

    @property
    def step_index(self) -> int | None:
        """Index into `timesteps` of the next `step` (None until the first call)."""
        return self._step_index

    def set_begin_index(self, begin_index: int = 0) -> None:
        """Start at `timesteps[begin_index]` (img2img skips the first steps)."""
        self._begin_index = begin_index

    def _check_steps(self, num_inference_steps: int) -> int:
        """`num_inference_steps` if it is in 1..num_train_timesteps, else a ValueError."""
        total = self.config["num_train_timesteps"]
        if not 0 < num_inference_steps <= total:
            raise ValueError(f"num_inference_steps must be in 1..{total}, "
                             f"got {num_inference_steps}")
        return num_inference_steps

    def _reset(self, timesteps: np.ndarray, num_inference_steps: int | None = None) -> None:
        self.timesteps = timesteps
        # the requested count, which PLMS and Heun schedules exceed by repeating timesteps
        self.num_inference_steps = num_inference_steps or len(timesteps)
        self._step_index = None
        self._begin_index = None
        self.pred_original_sample = None

    def _index_for_timestep(self, timestep: float) -> int:
        hits = np.flatnonzero(np.isclose(self.timesteps, float(timestep), rtol=1e-6, atol=1e-4))
        if hits.size == 0:
            raise ValueError(f"timestep {timestep} is not one of this scheduler's timesteps; pass "
                             "values from `scheduler.timesteps` after `set_timesteps`")
        # a repeated timestep (Heun's second evaluations) means we start at the second copy,
        # as diffusers does, so img2img never begins in the middle of a Heun pair
        return int(hits[1] if hits.size > 1 else hits[0])

    def _current_index(self, timestep: float) -> int:
        if self.num_inference_steps is None:
            raise ValueError(f"{type(self).__name__}: call set_timesteps(num_inference_steps) "
                             "before step()")
        if self._step_index is None:
            self._step_index = (self._index_for_timestep(timestep) if self._begin_index is None
                                else self._begin_index)
        if self._step_index >= len(self.timesteps):
            raise ValueError(f"all {len(self.timesteps)} steps are done; call set_timesteps again")
        return self._step_index

    def _noise_indices(self, timesteps: np.ndarray) -> list[int]:
        """Schedule indices whose noise level `add_noise` uses, as diffusers chooses them:
        the timesteps' own indices, or the begin/current index once `set_begin_index` ran."""
        if self._begin_index is None:
            return [self._index_for_timestep(v) for v in timesteps]
        index = self._step_index if self._step_index is not None else self._begin_index
        return [index] * timesteps.size

    # -- shared helpers --------------------------------------------------------------

    def scale_model_input(self, sample: np.ndarray, timestep: float) -> np.ndarray:
        """The UNet input for `sample` at `timestep` (identity unless the scheduler is in sigma
        space). diffusers: `scheduler.scale_model_input(sample, t)`."""
        return sample

    def add_noise(self, original: np.ndarray, noise: np.ndarray, timesteps: Any) -> np.ndarray:
        """Forward diffusion q(x_t | x_0): sqrt(abar_t) x_0 + sqrt(1 - abar_t) noise.

        `original`/`noise` shape (B, ...); `timesteps` a scalar or (B,) training timesteps.
        diffusers: `scheduler.add_noise(original, noise, timesteps)`.
        """
        t = np.asarray(timesteps).astype(np.int64).reshape(-1)
        abar = self.alphas_cumprod[t].reshape(_batch_shape(t, original))
        return np.sqrt(abar) * original + np.sqrt(1.0 - abar) * noise

    @staticmethod
    def _noise(shape: tuple[int, ...], noise: np.ndarray | None,
               generator: np.random.Generator | None) -> np.ndarray:
        """The standard-normal draw of a stochastic step: `noise` if given, else `generator`'s."""
        if noise is not None:
            noise = np.asarray(noise, dtype=np.float64)
            if noise.shape != shape:
                raise ValueError(f"noise has shape {noise.shape}, the sample has {shape}")
            return noise
        return (generator or np.random.default_rng()).standard_normal(shape)

    def _x0_from_alpha(self, model_output: np.ndarray, sample: np.ndarray,
                       alpha_prod: float) -> tuple[np.ndarray, np.ndarray]:
        """(predicted x0, predicted noise) from the model output, DDPM/DDIM parametrization."""
        a, b = math.sqrt(alpha_prod), math.sqrt(1.0 - alpha_prod)
        if self.config["prediction_type"] == "v_prediction":
            # Salimans & Ho 2022, section 4: v = a * eps - b * x0
            return a * sample - b * model_output, a * model_output + b * sample
        return (sample - b * model_output) / a, model_output


def _batch_shape(t: np.ndarray, like: np.ndarray) -> tuple[int, ...]:
    """Shape that broadcasts one value per batch item (or one for all) over `like`."""
    return (t.size,) + (1,) * (np.ndim(like) - 1) if t.size > 1 else ()


def as_float64(array: Any) -> np.ndarray:
    """The input as a float64 array (schedulers compute in float64 whatever the model used)."""
    return np.asarray(array, dtype=np.float64)


def result(prev_sample: np.ndarray, like: np.ndarray) -> np.ndarray:
    """`prev_sample` in the sample's float dtype (float32 stays float32, float64 stays)."""
    dtype = np.result_type(np.asarray(like).dtype, np.float32)
    return prev_sample.astype(dtype, copy=False)
