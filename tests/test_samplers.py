"""Samplers (diffusion.samplers) against k-diffusion 0.1.1 and against exact answers.

1. Every sampler k-diffusion 0.1.1 has: both sides run the same toy denoiser (a fixed random
   nonlinear map; theirs wraps ours in torch float64), the same Karras sigmas (k-diffusion's
   get_sigmas_karras) and the same recorded noise sequence (k-diffusion's noise_sampler, and its
   torch.randn_like patched as the WebUI patches it); final latents agree to ~1e-13.
2. Samplers k-diffusion lacks (ComfyUI's and the WebUI's own): Gaussian data x0 ~ N(mu, s^2),
   whose exact denoiser is D(x, sigma) = (s^2 x + sigma^2 mu) / (s^2 + sigma^2) and whose
   probability-flow ODE has a closed-form solution; errors must shrink with steps (at the
   method's order for the deterministic ones) and moments converge for the stochastic ones.
3. The registry: every name resolves, old combined names split, unknown names list the valid ones.
"""

from __future__ import annotations

import inspect
import math

import numpy as np
import pytest

from diffusion import samplers as ours
from diffusion.samplers import registry
from tests.support import relative_error

torch = pytest.importorskip("torch")

SHAPE = (2, 3, 4, 4)
STEPS = 12


class ToyDenoiser:
    """A fixed random smooth map x -> x0 with the EDM-like shape c_skip x + c_out f(c_in x)."""

    def __init__(self, seed: int = 0):
        rng = np.random.default_rng(seed)
        size = math.prod(SHAPE[1:])
        self.weight = rng.standard_normal((size, size)) / math.sqrt(size)
        self.bias = rng.standard_normal(size) * 0.3
        self.calls: list[float] = []

    def __call__(self, x: np.ndarray, sigma: float) -> np.ndarray:
        self.calls.append(float(sigma))
        c_in = 1 / math.sqrt(sigma**2 + 1)
        flat = x.reshape(len(x), -1) * c_in
        out = np.tanh(flat @ self.weight + self.bias).reshape(x.shape)
        return x / (sigma**2 + 1) + out * sigma * c_in

    def torch(self, x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
        """k-diffusion's side: sigma is a per-batch tensor, all entries equal."""
        assert x.dtype == torch.float64 and torch.all(sigma == sigma.flatten()[0])
        return torch.from_numpy(self(x.numpy(), float(sigma.flatten()[0])))


class RecordedNoise:
    """A reproducible N(0, 1) stream that records the (sigma, sigma_next) of every draw."""

    def __init__(self, seed: int, as_torch: bool = False):
        self.rng = np.random.default_rng(seed)
        self.as_torch = as_torch
        self.calls: list[tuple[float, float]] = []

    def __call__(self, sigma, sigma_next):
        self.calls.append((float(sigma), float(sigma_next)))
        draw = self.rng.standard_normal(SHAPE)
        return torch.from_numpy(draw) if self.as_torch else draw


class PatchedTorch:
    """k-diffusion's `torch` with randn_like drawing from the recorded stream (the WebUI's
    TorchHijack does the same with its per-image generator)."""

    def __init__(self, noise: RecordedNoise):
        self.noise = noise

    def __getattr__(self, name):
        return getattr(torch, name)

    def randn_like(self, x):
        return self.noise(math.nan, math.nan)


def karras_sigmas(n: int = STEPS) -> np.ndarray:
    return K.sampling.get_sigmas_karras(n, 0.0292, 14.6146).double().numpy()


def start_latent(sigmas: np.ndarray, seed: int = 1) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal(SHAPE) * sigmas[0]


def run_both(name: str, options: dict, k_options: dict | None = None, *, sigmas=None,
             monkeypatch=None, float64_default: bool = False):
    """(ours, theirs, our noise calls, their noise calls) for sampler `name`."""
    sigmas = karras_sigmas() if sigmas is None else sigmas
    x = start_latent(sigmas)
    our_noise, their_noise = RecordedNoise(7), RecordedNoise(7, as_torch=True)
    mine = getattr(ours, f"sample_{name}")(ToyDenoiser(), x, sigmas, noise=our_noise, **options)
    monkeypatch.setattr(K.sampling, "torch", PatchedTorch(their_noise))
    function = getattr(K.sampling, f"sample_{name}")
    kwargs = dict(options if k_options is None else k_options)
    if "noise_sampler" in inspect.signature(function).parameters:
        kwargs["noise_sampler"] = their_noise
    if name in ("dpm_fast", "dpm_adaptive"):
        positive = sigmas[sigmas > 0]
        kwargs.update(sigma_min=float(positive.min()), sigma_max=float(sigmas[0]))
        if name == "dpm_fast":
            kwargs["n"] = len(sigmas) - 1
        args = ()
    else:
        args = (torch.from_numpy(sigmas),)
    default = torch.get_default_dtype()
    try:
        if float64_default:
            torch.set_default_dtype(torch.float64)
        theirs = function(ToyDenoiser().torch, torch.from_numpy(x.copy()), *args, disable=True,
                          **kwargs).numpy()
    finally:
        torch.set_default_dtype(default)
    return mine, theirs, our_noise.calls, their_noise.calls


from tests.kdiffusion_ref import K  # noqa: E402  (skips the module without k-diffusion)

CHURN = {"s_churn": 2.0, "s_tmin": 0.3, "s_tmax": 6.0, "s_noise": 1.003}

# (sampler, our options, k-diffusion options if they differ)
K_CASES = [
    ("euler", {}, None),
    ("euler", CHURN, None),
    ("euler_ancestral", {}, None),
    ("euler_ancestral", {"eta": 0.6, "s_noise": 0.9}, None),
    ("heun", {}, None),
    ("heun", CHURN, None),
    ("dpm_2", {}, None),
    ("dpm_2", CHURN, None),
    ("dpm_2_ancestral", {}, None),
    ("dpm_2_ancestral", {"eta": 0.5}, None),
    ("lms", {}, None),
    ("lms", {"order": 2}, None),
    ("dpmpp_2s_ancestral", {}, None),
    ("dpmpp_2s_ancestral", {"eta": 0.4, "s_noise": 1.1}, None),
    ("dpmpp_sde", {}, None),
    ("dpmpp_sde", {"eta": 0.5, "r": 0.3}, None),
    ("dpmpp_2m", {}, None),
    ("dpmpp_2m_sde", {}, None),
    ("dpmpp_2m_sde", {"solver_type": "heun"}, None),
    ("dpmpp_2m_sde", {"eta": 0.0}, None),
    ("dpmpp_2m_sde_heun", {"eta": 0.7}, {"eta": 0.7, "solver_type": "heun"}),
    ("dpmpp_3m_sde", {}, None),
    ("dpmpp_3m_sde", {"eta": 0.3, "s_noise": 0.8}, None),
    ("dpm_fast", {}, None),
    ("dpm_fast", {"eta": 1.0}, None),
    ("dpm_adaptive", {"rtol": 0.01, "atol": 0.001},
     {"rtol": float(np.float32(0.01)), "atol": float(np.float32(0.001))}),
    ("dpm_adaptive", {"eta": 1.0, "order": 2},
     {"eta": 1.0, "order": 2, "rtol": float(np.float32(0.05)),
      "atol": float(np.float32(0.0078))}),
]


@pytest.mark.parametrize(("name", "options", "k_options"), K_CASES,
                         ids=[f"{c[0]}-{i}" for i, c in enumerate(K_CASES)])
def test_matches_kdiffusion(name, options, k_options, monkeypatch):
    if name == "dpmpp_2m_sde_heun":
        monkeypatch.setattr(K.sampling, "sample_dpmpp_2m_sde_heun", K.sampling.sample_dpmpp_2m_sde,
                            raising=False)
    # k-diffusion keeps DPM fast/adaptive's scalars in the default dtype (float32 in the WebUI)
    mine, theirs, our_calls, their_calls = run_both(
        name, options, k_options, monkeypatch=monkeypatch,
        float64_default=name in ("dpm_fast", "dpm_adaptive"))
    assert relative_error(mine, theirs) < 1e-13
    if (name in ("euler", "heun", "dpm_2") and not options
            or name in ("dpm_fast", "dpm_adaptive") and not options.get("eta")):
        return  # k-diffusion draws noise it multiplies by 0; ours draws none
    assert len(our_calls) == len(their_calls)
    if name in ("euler", "heun", "dpm_2"):
        return  # randn_like carries no sigmas
    np.testing.assert_allclose(our_calls, their_calls, rtol=1e-13)


def test_discarded_penultimate_sigma_schedule(monkeypatch):
    """DPM2 as the WebUI runs it: the penultimate sigma dropped."""
    sigmas = karras_sigmas(STEPS + 1)
    sigmas = np.concatenate([sigmas[:-2], sigmas[-1:]])
    mine, theirs, _, _ = run_both("dpm_2_ancestral", {}, sigmas=sigmas, monkeypatch=monkeypatch)
    assert relative_error(mine, theirs) < 1e-13
