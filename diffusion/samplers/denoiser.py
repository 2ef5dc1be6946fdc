"""The WebUI's discrete-timestep denoiser: k-diffusion's `external.DiscreteSchedule` and the
`CompVisDenoiser` / `CompVisVDenoiser` scalings, in numpy float64.

The k-diffusion samplers work in sigma (x = x0 + sigma * eps) while an SD UNet is trained on
1000 discrete timesteps. The WebUI bridges the two with k-diffusion's wrappers: the model's
`alphas_cumprod` (a float32 buffer in the LDM code) give one sigma per training timestep, the
UNet sees x * c_in at the fractional timestep `sigma_to_t(sigma)` (log-sigma interpolation),
and its output becomes the denoised x0 = c_skip * x + c_out * output.

Zero terminal SNR (a config with `rescale_betas_zero_snr`) makes the last sigma infinite. The
WebUI (`modules/sd_models.py`, `rescale_zero_terminal_snr_abar`) pins the last alpha_bar to
4.8973451890853435e-08, so sigma_max is about 4519; `from_config` does the same. A schedule
given directly whose alphas_cumprod reach 0 is refused.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from diffusion.schedulers._base import BETA_DEFAULTS, make_betas

__all__ = ["PREDICTION_TYPES", "ZERO_SNR_ALPHA_BAR", "DiscreteSchedule"]

PREDICTION_TYPES = ("epsilon", "v_prediction")  # diffusers' names for the UNet's output

# The WebUI's last alpha_bar under zero terminal SNR (modules/sd_models.py)
ZERO_SNR_ALPHA_BAR = 4.8973451890853435e-08


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
        quantize = self.quantize if quantize is None else quantize
        sigma = np.asarray(sigma, dtype=np.float64)
        with np.errstate(divide="ignore"):  # sigma 0 gives log -inf and timestep 0, as in torch
            log_sigma = np.log(sigma)
        dists = log_sigma.reshape(-1) - self.log_sigmas[:, np.newaxis]
        if quantize:
            return np.abs(dists).argmin(axis=0).reshape(sigma.shape)
        low = np.cumsum(dists >= 0, axis=0).argmax(axis=0).clip(max=self.sigmas.size - 2)
        lo, hi = self.log_sigmas[low], self.log_sigmas[low + 1]
        with np.errstate(invalid="ignore"):
            w = np.clip((lo - log_sigma.reshape(-1)) / (lo - hi), 0, 1)
        return ((1 - w) * low + w * (low + 1)).reshape(sigma.shape)

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
