"""The WebUI 1.10 schedule types: the sigma array a sampler steps through, by label or name.

Each function mirrors `modules/sd_schedulers.py` of AUTOMATIC1111/stable-diffusion-webui 1.10
(Karras, Exponential and Polyexponential are k-diffusion's `get_sigmas_*`), and `sigmas` mirrors
`KDiffusionSampler.get_sigmas`: sigma_min and sigma_max are the model's (its smallest and largest
training sigma), Karras and Polyexponential take the WebUI's default rho (7 and 1), and
`discard_next_to_last_sigma` (DPM2, DPM2 a) computes one step more and drops the penultimate
sigma. The WebUI's quirks are kept, since they decide the image:

- "Uniform" and "Normal" are the same schedule (timesteps evenly spaced from T-1 to 0); "SGM
  Uniform" spaces n + 1 timesteps and drops the last, so it never reaches sigma_min.
- "KL Optimal" ends at sigma_min, not 0 (the WebUI appends no 0; ComfyUI's version does).
- "Align Your Steps" interpolates its 11-value table (SD 1.5 or SDXL) log-linearly to n values
  and appends 0; n = 11 gives the table itself. The WebUI has no "AYS 11/32" variants.
- "DDIM" takes every (T // n)-th training sigma from timestep 1 up, so it gives more than n
  steps when T // n * n < T - 1 (7 steps -> 8, 33 -> 34), as in the WebUI and ComfyUI.
- "Beta" spaces sigma (not timesteps) by the Beta(0.6, 0.6) quantiles between sigma_min and
  sigma_max.
- "Automatic" is the sampler's own default, which the caller resolves (e.g. Karras for DPM++
  2M); given here it is the WebUI's fallback for samplers without one, the Uniform schedule.

All math is numpy float64; the WebUI computes in float32, so arrays agree to float32 rounding.
"""

from __future__ import annotations

import difflib
import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from ..model_sampling import DiscreteSchedule
from ..schedulers._sigmas import karras_sigmas

__all__ = ["SCHEDULE_LABELS", "SCHEDULE_TYPES", "ScheduleType", "lookup", "sigmas"]

# Align Your Steps (Sabour et al. 2024), the 10-step tables the WebUI ships
AYS_SD15 = (14.615, 6.475, 3.861, 2.697, 1.886, 1.396, 0.963, 0.652, 0.399, 0.152, 0.029)
AYS_SDXL = (14.615, 6.315, 3.771, 2.181, 1.342, 0.862, 0.555, 0.380, 0.234, 0.113, 0.029)


@dataclass(frozen=True)
class ScheduleType:
    """One entry of the WebUI's schedule list: `name` (API value), `label` (UI and infotext
    "Schedule type"), other accepted spellings, and the default rho where rho applies."""

    name: str
    label: str
    aliases: tuple[str, ...] = ()
    default_rho: float | None = None


SCHEDULE_TYPES = (
    ScheduleType("automatic", "Automatic"),
    ScheduleType("uniform", "Uniform"),
    ScheduleType("karras", "Karras", default_rho=7.0),
    ScheduleType("exponential", "Exponential"),
    ScheduleType("polyexponential", "Polyexponential", default_rho=1.0),
    ScheduleType("sgm_uniform", "SGM Uniform", aliases=("SGMUniform",)),
    ScheduleType("kl_optimal", "KL Optimal"),
    ScheduleType("align_your_steps", "Align Your Steps"),
    ScheduleType("simple", "Simple"),
    ScheduleType("normal", "Normal"),
    ScheduleType("ddim", "DDIM", aliases=("ddim_uniform",)),
    ScheduleType("beta", "Beta"),
)
"""The WebUI 1.10's schedule types, in its order ("Automatic" = the sampler's default): the
one list of them; everything else that names schedule types derives from it."""

SCHEDULE_LABELS = tuple(schedule.label for schedule in SCHEDULE_TYPES)
"""The labels as the WebUI writes them (UI, infotext "Schedule type"): "Karras", "SGM Uniform"."""


def lookup(name: str) -> ScheduleType:
    """The schedule type called `name` (its name, label or an alias, any letter case)."""
    wanted = str(name).casefold()
    for schedule in SCHEDULE_TYPES:
        if wanted in (s.casefold() for s in (schedule.name, schedule.label, *schedule.aliases)):
            return schedule
    valid = ", ".join(f"{s.label!r} ({s.name})" for s in SCHEDULE_TYPES)
    names = {n.casefold(): s.label for s in SCHEDULE_TYPES for n in (s.name, s.label, *s.aliases)}
    close = difflib.get_close_matches(wanted, names, n=1)
    guess = f" (did you mean {names[close[0]]!r}?)" if close else ""
    raise ValueError(f"unknown schedule type {name!r}{guess}; use one of: {valid}")


@dataclass(frozen=True)
class _Request:
    """What one schedule function needs: step count, model schedule, range and options."""

    n: int
    discrete: DiscreteSchedule
    sigma_min: float
    sigma_max: float
    rho: float | None
    is_sdxl: bool
    beta_alpha: float
    beta_beta: float


def sigmas(schedule: str, n: int, discrete: DiscreteSchedule, *, is_sdxl: bool = False,
           discard_next_to_last_sigma: bool = False, sigma_min: float | None = None,
           sigma_max: float | None = None, rho: float | None = None, beta_alpha: float = 0.6,
           beta_beta: float = 0.6) -> np.ndarray:
    """The sigmas of `n` steps of schedule type `schedule`, descending, float64.

    n + 1 values ending in 0 for most types (see the module notes for DDIM's extra steps and
    KL Optimal's last value). `sigma_min`/`sigma_max` override the model's range, `rho` the
    Karras/Polyexponential default, `beta_alpha`/`beta_beta` the Beta schedule's shape (the
    WebUI settings "Schedule min/max sigma", "Schedule rho", "Beta scheduler alpha/beta").
    `is_sdxl` picks the SDXL Align Your Steps table. WebUI: `KDiffusionSampler.get_sigmas`.
    """
    kind = lookup(schedule)
    if not isinstance(n, (int, np.integer)) or isinstance(n, bool) or n < 1:
        raise ValueError(f"the number of steps must be a positive int, got {n!r}")
    low = discrete.sigma_min if sigma_min is None else float(sigma_min)
    high = discrete.sigma_max if sigma_max is None else float(sigma_max)
    if not 0 < low < high < math.inf:
        raise ValueError(f"need 0 < sigma_min < sigma_max < inf, got {low} and {high}")
    if rho is not None and not rho > 0:
        raise ValueError(f"rho must be positive, got {rho}")
    if not (beta_alpha > 0 and beta_beta > 0):
        raise ValueError(f"the Beta schedule's alpha and beta must be positive, got "
                         f"{beta_alpha} and {beta_beta}")
    steps = int(n) + (1 if discard_next_to_last_sigma else 0)
    request = _Request(steps, discrete, low, high, rho if rho is not None else kind.default_rho,
                       is_sdxl, beta_alpha, beta_beta)
    result = np.asarray(_FUNCTIONS[kind.name](request), dtype=np.float64)
    if discard_next_to_last_sigma:
        result = np.append(result[:-2], result[-1:])
    return result


def _uniform(r: _Request) -> np.ndarray:
    return r.discrete.get_sigmas(r.n)


def _karras(r: _Request) -> np.ndarray:
    assert r.rho is not None  # Karras has a default rho
    return np.append(karras_sigmas(r.sigma_min, r.sigma_max, r.n, r.rho), 0.0)


def _exponential(r: _Request) -> np.ndarray:
    return np.append(np.exp(np.linspace(math.log(r.sigma_max), math.log(r.sigma_min), r.n)), 0.0)


def _polyexponential(r: _Request) -> np.ndarray:
    assert r.rho is not None  # Polyexponential has a default rho
    ramp = np.linspace(1, 0, r.n) ** r.rho
    low, high = math.log(r.sigma_min), math.log(r.sigma_max)
    return np.append(np.exp(ramp * (high - low) + low), 0.0)


def _timesteps(r: _Request, count: int) -> np.ndarray:
    """`count` timesteps evenly spaced from sigma_max's to sigma_min's."""
    start, end = r.discrete.sigma_to_t([r.sigma_max, r.sigma_min], quantize=False)
    return np.linspace(start, end, count)


def _sgm_uniform(r: _Request) -> np.ndarray:
    return np.append(r.discrete.t_to_sigma(_timesteps(r, r.n + 1)[:-1]), 0.0)


def _normal(r: _Request) -> np.ndarray:
    return np.append(r.discrete.t_to_sigma(_timesteps(r, r.n)), 0.0)


def _kl_optimal(r: _Request) -> np.ndarray:
    # Sabour et al. 2024 ("Align Your Steps"), eq. 10: uniform in arctan(sigma), n + 1 values
    fraction = np.arange(r.n + 1) / r.n
    return np.tan(fraction * math.atan(r.sigma_min) + (1 - fraction) * math.atan(r.sigma_max))


def _align_your_steps(r: _Request) -> np.ndarray:
    table = np.array(AYS_SDXL if r.is_sdxl else AYS_SD15)
    if r.n != table.size:
        # log-linear interpolation of the ascending table, as NVIDIA's how-to page does it
        fine = np.interp(np.linspace(0, 1, r.n), np.linspace(0, 1, table.size),
                         np.log(table[::-1]))
        table = np.exp(fine)[::-1]
    return np.append(table, 0.0)


def _simple(r: _Request) -> np.ndarray:
    train = r.discrete.sigmas
    stride = train.size / r.n
    return np.append([train[-(1 + int(x * stride))] for x in range(r.n)], 0.0)


def _ddim(r: _Request) -> np.ndarray:
    train = r.discrete.sigmas
    stride = max(train.size // r.n, 1)
    return np.append(train[1::stride][::-1], 0.0)


def _beta(r: _Request) -> np.ndarray:
    # Lee et al. 2024, "Beta Sampling is All You Need" (arXiv:2407.12173)
    quantiles = _beta_ppf(1 - np.linspace(0, 1, r.n), r.beta_alpha, r.beta_beta)
    return np.append(r.sigma_min + quantiles * (r.sigma_max - r.sigma_min), 0.0)


_FUNCTIONS: dict[str, Callable[[_Request], np.ndarray]] = {
    "automatic": _uniform, "uniform": _uniform, "karras": _karras, "exponential": _exponential,
    "polyexponential": _polyexponential, "sgm_uniform": _sgm_uniform, "kl_optimal": _kl_optimal,
    "align_your_steps": _align_your_steps, "simple": _simple, "normal": _normal, "ddim": _ddim,
    "beta": _beta,
}


def _beta_ppf(p: np.ndarray, a: float, b: float) -> np.ndarray:
    """Quantiles of the Beta(a, b) distribution (scipy's `stats.beta.ppf`) by bisection on the
    regularized incomplete beta function, to double precision."""
    low, high = np.zeros_like(p), np.ones_like(p)
    for _ in range(64):  # 2**-64 is below float64 resolution on [0, 1]
        mid = 0.5 * (low + high)
        below = _betainc(a, b, mid) < p
        low, high = np.where(below, mid, low), np.where(below, high, mid)
    return np.where(p <= 0, 0.0, np.where(p >= 1, 1.0, 0.5 * (low + high)))


def _betainc(a: float, b: float, x: np.ndarray) -> np.ndarray:
    """The regularized incomplete beta function I_x(a, b) for x in [0, 1]: the continued
    fraction of Numerical Recipes (3rd ed., eq. 6.4.5), on the side of x where it converges."""
    x = np.asarray(x, dtype=np.float64)
    flip = x > (a + 1) / (a + b + 2)
    xs = np.where(flip, 1 - x, x)
    aa, bb = np.where(flip, b, a), np.where(flip, a, b)
    inner = np.clip(xs, 1e-300, 1 - 1e-16)
    log_front = (aa * np.log(inner) + bb * np.log1p(-inner)
                 + _lgamma(aa + bb) - _lgamma(aa) - _lgamma(bb))
    value = np.exp(log_front) * _beta_fraction(aa, bb, inner) / aa
    value = np.where(xs <= 0, 0.0, value)
    return np.where(flip, 1 - value, value)


def _lgamma(v: np.ndarray) -> np.ndarray:
    return np.vectorize(math.lgamma, otypes=[np.float64])(v)


def _beta_fraction(a: np.ndarray, b: np.ndarray, x: np.ndarray) -> np.ndarray:
    """Lentz's evaluation of the incomplete beta continued fraction (Numerical Recipes betacf)."""
    tiny = 1e-300

    def guard(v: np.ndarray) -> np.ndarray:
        return np.where(np.abs(v) < tiny, tiny, v)

    c = np.ones_like(x)
    d = 1 / guard(1 - (a + b) * x / (a + 1))
    h = d.copy()
    for m in range(1, 1000):
        for coeff in (m * (b - m) * x / ((a + 2 * m - 1) * (a + 2 * m)),
                      -(a + m) * (a + b + m) * x / ((a + 2 * m) * (a + 2 * m + 1))):
            d = 1 / guard(1 + coeff * d)
            c = guard(1 + coeff / c)
            h = h * d * c
        if np.all(np.abs(d * c - 1) < 1e-15):
            break
    return h
