"""The model's sampling: how a model's sigma maps to the timestep it was trained on, how a start
latent is noised to a sigma, and how the model's output becomes the denoised x0. Written once
here for every family, after ComfyUI's `comfy/model_sampling.py`; every sampler, scheduler and
pipeline takes its conversions from here.

- `DiscreteSchedule`: the UNet models' discrete timesteps, epsilon or v-prediction (ComfyUI's
  `ModelSamplingDiscrete` with `EPS` / `V_PREDICTION`; k-diffusion's `DiscreteSchedule` and
  `CompVisDenoiser` / `CompVisVDenoiser`), in numpy float64.
- `FlowSchedule`: the flow-matching models (FLUX, SD3), sigma = t / 1000 shifted by a constant
  or by the picture size `mu` (ComfyUI's `ModelSamplingDiscreteFlow` / `ModelSamplingFlux` with
  `CONST`).

Discrete. The k-diffusion samplers work in sigma (x = x0 + sigma * eps) while an SD UNet is
trained on 1000 discrete timesteps. The model's `alphas_cumprod` (a float32 buffer in the LDM
code) give one sigma per training timestep, the UNet sees x * c_in at the fractional timestep
`sigma_to_t(sigma)` (log-sigma interpolation), and its output becomes the denoised
x0 = c_skip * x + c_out * output. Zero terminal SNR (a config with `rescale_betas_zero_snr`)
makes the last sigma infinite. The WebUI (`modules/sd_models.py`,
`rescale_zero_terminal_snr_abar`) pins the last alpha_bar to 4.8973451890853435e-08, so
sigma_max is about 4519; `from_config` does the same. A schedule given directly whose
alphas_cumprod reach 0 is refused.

Flow matching. The model predicts the velocity v = noise - x0 along the straight path
x_sigma = (1 - sigma) x0 + sigma noise: x0 = x - sigma v, a start latent is
sigma noise + (1 - sigma) init, and the transformer sees the timestep 1000 sigma.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any, Protocol

import numpy as np

__all__ = ["BETA_DEFAULTS", "PREDICTION_TYPES", "ZERO_SNR_ALPHA_BAR", "DiscreteSchedule",
           "FlowSchedule", "ModelSampling", "calculate_shift", "discrete_sigma_to_t", "make_betas",
           "shift_constant", "shift_exponential", "shift_linear"]

PREDICTION_TYPES = ("epsilon", "v_prediction")  # diffusers' names for the UNet's output

# The WebUI's last alpha_bar under zero terminal SNR (modules/sd_models.py)
ZERO_SNR_ALPHA_BAR = 4.8973451890853435e-08

# Stable Diffusion's training schedule; diffusers' own class defaults (1e-4, 0.02, linear)
# belong to the original DDPM paper, which no SD checkpoint uses.
BETA_DEFAULTS: dict[str, Any] = {
    "num_train_timesteps": 1000,
    "beta_start": 0.00085,
    "beta_end": 0.012,
    "beta_schedule": "scaled_linear",
    "trained_betas": None,
}


class ModelSampling(Protocol):
    """What a sampling pass needs of a model's sampling (`DiscreteSchedule`, `FlowSchedule`):
    its training sigma range, the timestep of a sigma, a start latent noised to a sigma, and
    x0 from the model's output. ComfyUI: a `model_sampling` object."""

    @property
    def sigma_min(self) -> float: ...

    @property
    def sigma_max(self) -> float: ...

    def sigma_to_t(self, sigma: Any) -> Any: ...

    def noise_scaling(self, sigma: Any, noise: np.ndarray,
                      latent: np.ndarray | None = None) -> np.ndarray: ...

    def denoised(self, x: Any, sigma: Any, model_output: Any) -> Any: ...


def make_betas(config: Mapping[str, Any]) -> np.ndarray:
    """The training noise schedule beta_t, float64, shape (num_train_timesteps,)."""
    n = config["num_train_timesteps"]
    if config.get("trained_betas") is not None:
        betas = np.asarray(config["trained_betas"], dtype=np.float64)
    elif config["beta_schedule"] == "linear":
        betas = np.linspace(config["beta_start"], config["beta_end"], n)
    elif config["beta_schedule"] == "scaled_linear":
        betas = np.linspace(config["beta_start"] ** 0.5, config["beta_end"] ** 0.5, n) ** 2
    elif config["beta_schedule"] == "squaredcos_cap_v2":
        # Nichol & Dhariwal 2021, eq. 17, betas capped at 0.999
        def cosine(t: float) -> float:
            return math.cos((t + 0.008) / 1.008 * math.pi / 2) ** 2
        betas = np.array([min(1 - cosine((i + 1) / n) / cosine(i / n), 0.999)
                          for i in range(n)])
    else:
        raise ValueError(f"beta_schedule {config['beta_schedule']!r} is not supported; use "
                         "'linear', 'scaled_linear' or 'squaredcos_cap_v2'")
    if config.get("rescale_betas_zero_snr"):
        # Lin et al. 2023, Algorithm 1: shift/scale sqrt(alpha_bar) so the last step has SNR 0
        root = np.sqrt(np.cumprod(1.0 - betas))
        first, last = root[0], root[-1]
        root = (root - last) * first / (first - last)
        alpha_bar = root**2
        betas = 1 - np.concatenate([alpha_bar[:1], alpha_bar[1:] / alpha_bar[:-1]])
    return betas


def discrete_sigma_to_t(sigma: Any, log_sigmas: np.ndarray, quantize: bool = False
                        ) -> np.ndarray:
    """Fractional training timestep(s) of `sigma` on a table of ascending `log_sigmas` (index =
    timestep): linear interpolation in log sigma between the two neighbouring training sigmas,
    clamped to [0, T-1]; the nearest timestep (int) when quantizing. Sigma 0 is timestep 0.
    k-diffusion: `DiscreteSchedule.sigma_to_t`; diffusers: `EulerDiscreteScheduler._sigma_to_t`."""
    sigma = np.asarray(sigma, dtype=np.float64)
    with np.errstate(divide="ignore"):  # sigma 0 gives log -inf and timestep 0, as in torch
        log_sigma = np.log(sigma)
    dists = log_sigma.reshape(-1) - log_sigmas[:, np.newaxis]
    if quantize:
        return np.abs(dists).argmin(axis=0).reshape(sigma.shape)
    low = np.cumsum(dists >= 0, axis=0).argmax(axis=0).clip(max=log_sigmas.size - 2)
    lo, hi = log_sigmas[low], log_sigmas[low + 1]
    with np.errstate(invalid="ignore"):
        w = np.clip((lo - log_sigma.reshape(-1)) / (lo - hi), 0, 1)
    return ((1 - w) * low + w * (low + 1)).reshape(sigma.shape)


class DiscreteSchedule:
    """Sigmas of the training timesteps and the maps between sigma and timestep.

    `sigmas` ascend (index t = training timestep t), hold float32 values as the WebUI's buffer
    does (computed from float32 alphas_cumprod in float32, as torch does), stored as float64.
    `quantize` is the WebUI's "Enable quantization in K samplers" setting (off by default): the
    timestep is rounded to the nearest training timestep.
    """

    def __init__(self, alphas_cumprod: Any, *, quantize: bool = False,
                 prediction: str = "epsilon") -> None:
        abar = np.asarray(alphas_cumprod, dtype=np.float32)
        if abar.ndim != 1 or abar.size < 2:
            raise ValueError(f"alphas_cumprod must be a 1-D array of at least 2 values, got "
                             f"shape {abar.shape}")
        if not np.all((abar > 0) & (abar <= 1)):
            raise ValueError("alphas_cumprod must lie in (0, 1]; a zero (zero terminal SNR) "
                             "makes sigma infinite: build the schedule with "
                             "DiscreteSchedule.from_config({..., 'rescale_betas_zero_snr': True}),"
                             " which pins the last value as the WebUI does")
        _check_prediction(prediction)
        self.alphas_cumprod = abar.astype(np.float64)
        self.sigmas = np.sqrt((1 - abar) / abar).astype(np.float64)
        if np.any(np.diff(self.sigmas) <= 0):
            raise ValueError("alphas_cumprod must decrease strictly (sigmas must ascend)")
        self.log_sigmas = np.log(self.sigmas)
        self.quantize = quantize
        self.prediction = prediction

    @classmethod
    def from_config(cls, config: Mapping[str, Any] | None = None, *,
                    quantize: bool = False) -> DiscreteSchedule:
        """From a diffusers `scheduler_config.json` dict (beta schedule fields, SD's defaults for
        missing ones, `prediction_type`, `rescale_betas_zero_snr`).

        alphas_cumprod are computed in float64 and stored in float32, as the LDM code and the
        WebUI's SDXL loader do; zero terminal SNR pins the last one as the WebUI does.
        """
        merged = {**BETA_DEFAULTS, **(config or {})}
        abar = np.cumprod(1.0 - make_betas(merged)).astype(np.float32)
        if merged.get("rescale_betas_zero_snr"):
            abar[-1] = ZERO_SNR_ALPHA_BAR
        return cls(abar, quantize=quantize,
                   prediction=merged.get("prediction_type") or "epsilon")

    def __repr__(self) -> str:
        return (f"DiscreteSchedule({self.sigmas.size} timesteps, sigma_min={self.sigma_min:.6g}, "
                f"sigma_max={self.sigma_max:.6g}, prediction={self.prediction!r})")

    @property
    def sigma_min(self) -> float:
        """The smallest training sigma (timestep 0); the WebUI's schedules end there."""
        return float(self.sigmas[0])

    @property
    def sigma_max(self) -> float:
        """The largest training sigma (the last timestep); the WebUI's schedules start there."""
        return float(self.sigmas[-1])

    def sigma_to_t(self, sigma: Any, quantize: bool | None = None) -> np.ndarray:
        """Fractional training timestep(s) of `sigma`: linear interpolation in log sigma between
        the two neighbouring training sigmas, clamped to [0, T-1]; the nearest timestep (int)
        when quantizing. k-diffusion: `DiscreteSchedule.sigma_to_t`."""
        return discrete_sigma_to_t(sigma, self.log_sigmas,
                                   self.quantize if quantize is None else quantize)

    def t_to_sigma(self, t: Any) -> np.ndarray:
        """Sigma at fractional timestep(s) `t` in [0, T-1], interpolated in log sigma.
        k-diffusion: `DiscreteSchedule.t_to_sigma`."""
        t = np.asarray(t, dtype=np.float64)
        if np.any((t < 0) | (t > self.sigmas.size - 1)) or not np.all(np.isfinite(t)):
            raise ValueError(f"timesteps must lie in [0, {self.sigmas.size - 1}], got {t}")
        low = np.floor(t).astype(np.int64)
        high = np.ceil(t).astype(np.int64)
        w = t - low
        return np.exp((1 - w) * self.log_sigmas[low] + w * self.log_sigmas[high])

    def get_sigmas(self, n: int | None = None) -> np.ndarray:
        """`n` sigmas at timesteps evenly spaced from T-1 down to 0, then 0 (n + 1 values); all
        training sigmas, descending, when `n` is None. The WebUI's "Uniform" schedule and its
        default for samplers without one. k-diffusion: `DiscreteSchedule.get_sigmas`."""
        if n is None:
            return np.append(self.sigmas[::-1], 0.0)
        if not isinstance(n, (int, np.integer)) or n < 1:
            raise ValueError(f"the number of steps must be a positive int, got {n!r}")
        t = np.linspace(self.sigmas.size - 1, 0, n)
        return np.append(self.t_to_sigma(t), 0.0)

    def scalings(self, sigma: Any, prediction: str | None = None
                 ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(c_skip, c_out, c_in) at `sigma` for an epsilon or v-prediction UNet (sigma_data 1):
        the UNet sees x * c_in at timestep `sigma_to_t(sigma)`, and the denoised x0 is
        c_skip * x + c_out * output. k-diffusion: `DiscreteEpsDDPMDenoiser.get_scalings`
        (c_skip 1) and `DiscreteVDDPMDenoiser.get_scalings`."""
        prediction = _check_prediction(prediction or self.prediction)
        sigma = np.asarray(sigma, dtype=np.float64)
        c_in = 1 / np.sqrt(sigma**2 + 1)
        if prediction == "v_prediction":
            return 1 / (sigma**2 + 1), -sigma * c_in, c_in
        return np.ones_like(sigma), -sigma, c_in

    def noise_scaling(self, sigma: Any, noise: np.ndarray,
                      latent: np.ndarray | None = None) -> np.ndarray:
        """The start latent at `sigma`: noise * sigma (txt2img), or latent + noise * sigma
        (img2img from the init `latent`). ComfyUI: `EPS.noise_scaling`."""
        return noise * sigma if latent is None else latent + noise * sigma

    def denoised(self, x: Any, sigma: Any, model_output: Any,
                 prediction: str | None = None) -> np.ndarray:
        """The denoised x0 from the noisy `x` (B, ...) at `sigma` (a scalar or one per batch
        item) and the UNet's `model_output` for `x * c_in`. k-diffusion: the wrappers' forward."""
        x = np.asarray(x, dtype=np.float64)
        sigma = np.asarray(sigma, dtype=np.float64)
        if sigma.ndim:
            if sigma.ndim != 1 or sigma.size not in (1, x.shape[0]):
                raise ValueError(f"sigma must be a scalar or one value per batch item "
                                 f"({x.shape[0]}), got shape {sigma.shape}")
            sigma = sigma.reshape((-1,) + (1,) * (x.ndim - 1))
        c_skip, c_out, _ = self.scalings(sigma, prediction)
        return c_skip * x + c_out * np.asarray(model_output, dtype=np.float64)


def _check_prediction(prediction: str) -> str:
    if prediction not in PREDICTION_TYPES:
        raise ValueError(f"prediction type {prediction!r} is not supported; use one of "
                         f"{list(PREDICTION_TYPES)}")
    return prediction


def calculate_shift(image_seq_len: int, config: Mapping[str, Any]) -> float:
    """mu for `use_dynamic_shifting`: linear in the number of image tokens, from `base_shift`
    at `base_image_seq_len` to `max_shift` at `max_image_seq_len` (FLUX dev: 0.5 at 256 tokens,
    1.15 at 4096, i.e. 1024x1024). diffusers: `pipelines.flux.pipeline_flux.calculate_shift`."""
    base_len = config.get("base_image_seq_len", 256)
    max_len = config.get("max_image_seq_len", 4096)
    base_shift = config.get("base_shift", 0.5)
    max_shift = config.get("max_shift", 1.15)
    slope = (max_shift - base_shift) / (max_len - base_len)
    return image_seq_len * slope + (base_shift - slope * base_len)


def shift_constant(t: Any, shift: Any) -> Any:
    """Unshifted flow times `t` in (0, 1] bent towards 1 by a constant `shift` (SD3: 3.0):
    shift t / (1 + (shift - 1) t), in the dtype of the operands. ComfyUI: `time_snr_shift`."""
    return shift * t / (1 + (shift - 1) * t)


def shift_exponential(t: Any, mu: float) -> Any:
    """`t` shifted by picture size (FLUX dev; `mu` from `calculate_shift`):
    e^mu / (e^mu + (1 / t - 1)). ComfyUI: `flux_time_shift`; diffusers' "exponential"."""
    return math.exp(mu) / (math.exp(mu) + (1 / t - 1))


def shift_linear(t: Any, mu: float) -> Any:
    """`t` shifted by `mu` linearly: mu / (mu + (1 / t - 1)); diffusers' "linear"
    `time_shift_type`."""
    return mu / (mu + (1 / t - 1))


class FlowSchedule:
    """The sigmas of a flow-matching model (FLUX, SD3) from its diffusers scheduler config:
    sigma = t / T of the training times t = 1..T (T = `num_train_timesteps`), shifted by the
    config's constant `shift`, or with `use_dynamic_shifting` by `mu` (the picture size's,
    `calculate_shift`; required then). ComfyUI: `ModelSamplingDiscreteFlow` (constant) and
    `ModelSamplingFlux` (mu), with `CONST` prediction. A config's `shift_terminal` (Qwen-Image:
    0.02) stretches each schedule of steps so that its last sigma before 0 is that value, as
    diffusers' `stretch_shift_to_terminal` does; the training table stays unstretched.
    `label`: the infotext's "Schedule type" of `get_sigmas` (a family with a schedule of its
    own subclasses this: Ideogram 4's logit-normal one)."""

    label = "Simple"

    def __init__(self, config: Mapping[str, Any] | None = None, *,
                 mu: float | None = None) -> None:
        config = config or {}
        self.num_train_timesteps = int(config.get("num_train_timesteps", 1000))
        self.dynamic = bool(config.get("use_dynamic_shifting"))
        self.shift = float(config.get("shift", 1.0))
        self.shift_terminal = config.get("shift_terminal") or None
        self.mu = mu

    def __repr__(self) -> str:
        by = f"mu={self.mu!r}" if self.dynamic else f"shift={self.shift!r}"
        return f"FlowSchedule({self.num_train_timesteps} timesteps, {by})"

    def shifted(self, t: Any) -> Any:
        """Unshifted times `t` in (0, 1] as the model's sigmas."""
        if not self.dynamic:
            return shift_constant(t, self.shift)
        if self.mu is None:
            raise ValueError("this model shifts its schedule by picture size: pass mu")
        return shift_exponential(t, self.mu)

    @property
    def sigma_min(self) -> float:
        """The smallest training sigma (t = 1)."""
        return float(self.shifted(1 / self.num_train_timesteps))

    @property
    def sigma_max(self) -> float:
        """The largest training sigma (t = T: 1)."""
        return float(self.shifted(1.0))

    def sigma_to_t(self, sigma: Any) -> Any:
        """The timestep the model sees at `sigma`: sigma * T (0..1000)."""
        return sigma * self.num_train_timesteps

    def t_to_sigma(self, t: Any) -> Any:
        """The sigma of timestep `t`: t / T."""
        return t / self.num_train_timesteps

    def get_sigmas(self, steps: int) -> np.ndarray:
        """ComfyUI's "simple" schedule (steps + 1 values, the last 0): of the training table
        sigma(t / T), t = 1..T, every T/steps-th from the top. At steps dividing T this is
        diffusers' FLUX schedule; with `shift_terminal`, stretched to end there (diffusers:
        `FlowMatchEulerDiscreteScheduler.stretch_shift_to_terminal`; one step's lone sigma 1,
        which diffusers turns into NaN, stays 1)."""
        total = self.num_train_timesteps
        stride = total / steps
        t = np.array([(total - int(x * stride)) / total for x in range(steps)], np.float64)
        sigmas = self.shifted(t)
        if self.shift_terminal is not None and sigmas[-1] < 1:  # (one step: 1 alone stays)
            one_minus = 1 - sigmas
            sigmas = 1 - one_minus / (one_minus[-1] / (1 - float(self.shift_terminal)))
        return np.append(sigmas, 0.0)

    def noise_scaling(self, sigma: Any, noise: np.ndarray,
                      latent: np.ndarray | None = None) -> np.ndarray:
        """The start latent at `sigma`: noise * sigma (txt2img), or the straight path's
        sigma * noise + (1 - sigma) * latent (img2img, in float64). ComfyUI:
        `CONST.noise_scaling`."""
        if latent is None:
            return noise * sigma
        return sigma * noise + (1 - sigma) * latent.astype(np.float64)

    def denoised(self, x: Any, sigma: Any, model_output: Any) -> Any:
        """x0 from the noisy `x` at `sigma` and the model's velocity: x - sigma * v. ComfyUI:
        `CONST.calculate_denoised`."""
        return x - sigma * model_output
