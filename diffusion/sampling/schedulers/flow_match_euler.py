"""Flow matching with Euler steps (Esser et al. 2024, "Scaling Rectified Flow Transformers"):
diffusers' FlowMatchEulerDiscreteScheduler, the scheduler of SD3/3.5 and FLUX.1.

The model predicts the velocity v = noise - x0 along the straight path x_sigma = (1 - sigma)
x0 + sigma noise, so one Euler step is x + (sigma_next - sigma) v. The schedule is sigma from
1 towards 0, bent towards 1 by `shift` (SD3: 3.0) or, with `use_dynamic_shifting` (FLUX dev),
by mu = `calculate_shift(image tokens)` chosen per picture size
(diffusion.sampling.model_sampling, where the shifts are written).

Not in `SCHEDULERS` (the SD registry, whose entries all share the beta schedule): a flow
pipeline builds it with `FlowMatchEulerDiscreteScheduler.from_config(scheduler_config)`.
"""

from __future__ import annotations

from typing import Any, ClassVar

import numpy as np

from ..model_sampling import shift_constant, shift_exponential, shift_linear
from ._base import Scheduler, _batch_shape, as_float64, result

__all__ = ["FlowMatchEulerDiscreteScheduler"]

# sigma schedules of diffusers' other options, which no SD3 or FLUX folder sets
_REFUSED = ("use_karras_sigmas", "use_exponential_sigmas", "use_beta_sigmas", "invert_sigmas")


def _f32(values: Any) -> np.ndarray:
    """float32 values held as float64: diffusers keeps sigmas in a float32 tensor."""
    return np.asarray(values, np.float32).astype(np.float64)


class FlowMatchEulerDiscreteScheduler(Scheduler):
    """Euler on the rectified-flow ODE; `stochastic_sampling` redraws the noise each step.
    `timesteps` are sigma x num_train_timesteps (what the SD3 transformer embeds; FLUX's
    pipeline divides them by 1000 again)."""

    defaults: ClassVar[dict[str, Any]] = {
        "num_train_timesteps": 1000,
        "shift": 1.0,
        "use_dynamic_shifting": False,
        "base_shift": 0.5,
        "max_shift": 1.15,
        "base_image_seq_len": 256,
        "max_image_seq_len": 4096,
        "invert_sigmas": False,
        "shift_terminal": None,
        "use_karras_sigmas": False,
        "use_exponential_sigmas": False,
        "use_beta_sigmas": False,
        "time_shift_type": "exponential",
        "stochastic_sampling": False,
    }
    choices: ClassVar[dict[str, tuple[Any, ...]]] = {"time_shift_type": ("exponential", "linear")}

    def __init__(self, **config: Any) -> None:
        # 1. config checks (the base class's), without its beta schedule: flow models have none
        unknown = sorted(set(config) - set(self.defaults))
        if unknown:
            raise TypeError(f"{type(self).__name__} has no config field(s) {unknown}; valid "
                            f"fields: {sorted(self.defaults)}")
        self.config = {**self.defaults, **config}
        if self.config["time_shift_type"] not in self.choices["time_shift_type"]:
            raise ValueError(f"{type(self).__name__}: time_shift_type="
                             f"{self.config['time_shift_type']!r} is not supported; use "
                             "'exponential' or 'linear'")
        refused = [key for key in _REFUSED if self.config[key]]
        if refused:
            raise ValueError(f"{type(self).__name__}: {', '.join(refused)} is not supported; "
                             "SD3 and FLUX use the plain shifted schedule (set them false)")
        # 2. the training schedule, float32 as diffusers builds it
        total = self.config["num_train_timesteps"]
        sigmas = np.linspace(1, total, total, dtype=np.float32)[::-1] / np.float32(total)
        if not self.config["use_dynamic_shifting"]:
            sigmas = shift_constant(sigmas, np.float32(self.config["shift"]))
        self.sigma_max, self.sigma_min = float(sigmas[0]), float(sigmas[-1])
        self.sigmas = _f32(sigmas)
        self.num_inference_steps: int | None = None
        self.timesteps = self.sigmas * total
        self._step_index: int | None = None
        self._begin_index: int | None = None

    def _time_shift(self, mu: float, sigmas: np.ndarray) -> np.ndarray:
        if self.config["time_shift_type"] == "exponential":
            return shift_exponential(sigmas, mu)
        return shift_linear(sigmas, mu)

    def set_timesteps(self, num_inference_steps: int | None = None, *,
                      sigmas: Any = None, mu: float | None = None) -> None:
        """The schedule of `num_inference_steps` steps: sigmas from sigma_max down, linear in
        the unshifted time, then shifted; or the given unshifted `sigmas` (FluxPipeline passes
        linspace(1, 1/n, n)). `mu`: the dynamic shift (required with use_dynamic_shifting;
        `calculate_shift`). diffusers: `set_timesteps(n, sigmas=sigmas, mu=mu)`."""
        cfg = self.config
        total = cfg["num_train_timesteps"]
        if cfg["use_dynamic_shifting"] and mu is None:
            raise ValueError("this scheduler shifts by picture size (use_dynamic_shifting): "
                             "pass mu=calculate_shift(image tokens, config)")
        # 1. unshifted sigmas: given (stored float32 by diffusers) or linear in time
        if sigmas is not None:
            sigmas = np.asarray(sigmas, np.float32)
            if sigmas.ndim != 1 or not sigmas.size:
                raise ValueError(f"sigmas must be a non-empty 1-D list, got shape {sigmas.shape}")
            if num_inference_steps is not None and num_inference_steps != sigmas.size:
                raise ValueError(f"{sigmas.size} sigmas given for {num_inference_steps} steps")
        else:
            if num_inference_steps is None:
                raise ValueError("pass num_inference_steps or sigmas")
            self._check_steps(num_inference_steps)
            sigmas = np.linspace(self.sigma_max * total, self.sigma_min * total,
                                 num_inference_steps) / total
        # 2. the shift: by picture size (mu) or the config's constant
        if cfg["use_dynamic_shifting"]:
            assert mu is not None  # checked above
            sigmas = self._time_shift(mu, sigmas)
        else:
            sigmas = shift_constant(sigmas, cfg["shift"])
        # 3. optionally stretched so the last sigma is shift_terminal
        if cfg["shift_terminal"]:
            one_minus = 1 - sigmas
            sigmas = 1 - one_minus / (one_minus[-1] / (1 - cfg["shift_terminal"]))
        sigmas = _f32(sigmas)
        self._reset(_f32(sigmas * total))
        self.sigmas = np.concatenate([sigmas, [0.0]])

    def step(self, model_output: Any, timestep: float, sample: Any, *,
             noise: Any = None, generator: np.random.Generator | None = None) -> np.ndarray:
        """One step from `timestep` (a value of `timesteps`) to the next. `model_output`: the
        velocity, shaped like `sample`. `noise`/`generator`: the fresh noise of
        `stochastic_sampling` (unused otherwise). diffusers: `step(v, t, x).prev_sample`."""
        i = self._current_index(timestep)
        x, velocity = as_float64(sample), as_float64(model_output)
        sigma, sigma_next = self.sigmas[i], self.sigmas[i + 1]
        if self.config["stochastic_sampling"]:
            # 1. predicted x0, 2. re-noised to the next sigma with fresh noise
            x0 = x - sigma * velocity
            prev = (1.0 - sigma_next) * x0 + sigma_next * self._noise(x.shape, noise, generator)
        else:
            # 1. Euler step along the predicted velocity
            prev = x + (sigma_next - sigma) * velocity
        self._step_index = i + 1
        return result(prev, model_output)

    def scale_noise(self, sample: Any, timestep: Any, noise: Any) -> np.ndarray:
        """The forward process for img2img: sigma noise + (1 - sigma) sample at `timestep`
        (a scalar or (B,) values of `timesteps`). diffusers: `scale_noise(sample, t, noise)`."""
        t = np.asarray(timestep, np.float64).reshape(-1)
        sigma = self.sigmas[self._noise_indices(t)]
        sigma = sigma.reshape(_batch_shape(t, sample)) if t.size > 1 else sigma[0]
        return sigma * as_float64(noise) + (1.0 - sigma) * as_float64(sample)

    def add_noise(self, original: Any, noise: Any, timesteps: Any) -> np.ndarray:
        """Flow models noise by `scale_noise` (a straight path), not by alphas_cumprod."""
        return self.scale_noise(original, timesteps, noise)
