"""Samplers (diffusion.sampling.samplers) against k-diffusion 0.1.1 and against exact answers.

1. Every sampler k-diffusion 0.1.1 has: both sides run the same toy denoiser (a fixed random
   nonlinear map; theirs wraps ours in torch float64), the same Karras sigmas (k-diffusion's
   get_sigmas_karras) and the same recorded noise sequence (k-diffusion's noise_sampler, and its
   torch.randn_like patched as the WebUI patches it); final latents agree to ~1e-13.
2. Samplers k-diffusion lacks (ComfyUI's and the WebUI's own): Gaussian data x0 ~ N(mu, s^2),
   whose exact denoiser is D(x, sigma) = (s^2 x + sigma^2 mu) / (s^2 + sigma^2) and whose
   probability-flow ODE has a closed-form solution; errors must shrink with steps (at the
   method's order for the deterministic ones) and moments converge for the stochastic ones.
   (Their every step against ComfyUI's own implementation: test_comfy_trajectories.py.)
3. Every sampler in the registry takes its WebUI options and draws noise as it says
   (the names themselves: test_registry.py).
"""

from __future__ import annotations

import inspect
import itertools
import math

import numpy as np
import pytest
from support import relative_error

from diffusion.sampling import samplers as ours
from diffusion.sampling.samplers import registry

torch = pytest.importorskip("torch")

from kdiffusion_ref import K  # noqa: E402  (skips the module without k-diffusion)

pytestmark = pytest.mark.nodevice  # host logic: `pytest -m nodevice`

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
    if ((name in ("euler", "heun", "dpm_2") and not options)
            or (name in ("dpm_fast", "dpm_adaptive") and not options.get("eta"))):
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


# --- 2. exact answers: Gaussian data -------------------------------------------------------------

MU, VAR = 0.3, 0.25  # x0 ~ N(MU, VAR) in every dimension


class GaussianDenoiser:
    """The exact denoiser of N(MU, VAR) data, E[x0 | x] = (VAR x + sigma^2 MU) / (VAR + sigma^2);
    `uncond` is set as a CFG++ model sets it (here equal: cond == uncond)."""

    uncond = None

    def __call__(self, x: np.ndarray, sigma: float) -> np.ndarray:
        self.uncond = (VAR * x + sigma**2 * MU) / (VAR + sigma**2)
        return self.uncond


def gaussian_sigmas(n: int) -> np.ndarray:
    """Karras et al. (2022) eq. 5 (rho = 7) from 14.6 to 0.03, then 0, written out here."""
    ramp = np.linspace(0, 1, n)
    return np.append((14.6 ** (1 / 7) + ramp * (0.03 ** (1 / 7) - 14.6 ** (1 / 7))) ** 7, 0.0)


def gaussian_start(sigmas: np.ndarray, count: int, seed: int = 0) -> np.ndarray:
    """Samples of the exact noisy marginal N(MU, VAR + sigma_max^2)."""
    z = np.random.default_rng(seed).standard_normal((1, count))
    return MU + math.sqrt(VAR + sigmas[0] ** 2) * z


def exact_ode_answer(x_start: np.ndarray, sigmas: np.ndarray) -> np.ndarray:
    """The probability-flow ODE solved exactly from sigmas[0] to the last positive sigma,
    x - MU scales by sqrt((VAR + sigma^2) / (VAR + sigma_0^2)), then the final denoising step
    into sigma = 0 that every sampler here takes."""
    low = sigmas[-2]
    x_low = MU + (x_start - MU) * math.sqrt((VAR + low**2) / (VAR + sigmas[0] ** 2))
    return GaussianDenoiser()(x_low, low)


# (case id, sampler, stated order of the ODE error in the number of steps)
ORDER_CASES = [
    ("euler", ours.sample_euler, 1.0),
    ("heun", ours.sample_heun, 2.0),
    ("heunpp2", ours.sample_heunpp2, 1.0),  # its weights sigma / (3 sigma_0) vanish at low sigma
    ("ipndm", ours.sample_ipndm, 2.0),  # equal-step weights on Karras's unequal steps
    ("ipndm_v", ours.sample_ipndm_v, 1.5),  # variable-step weights; error irregular in n
    ("deis", ours.sample_deis, 3.0),
    ("deis-rhoab", lambda *a, **k: ours.sample_deis(*a, deis_mode="rhoab", **k), 3.0),
    ("res_multistep", ours.sample_res_multistep, 2.0),
    ("sa_solver-ode", lambda *a, **k: ours.sample_sa_solver(*a, eta=0.0, **k), 3.0),
]


@pytest.mark.parametrize(("name", "sampler", "order"), ORDER_CASES,
                         ids=[c[0] for c in ORDER_CASES])
def test_deterministic_samplers_converge_at_their_order(name, sampler, order):
    """Error against the exact ODE answer from 16 to 64 steps shrinks like steps^-order."""
    errors = []
    for steps in (16, 64):
        sigmas = gaussian_sigmas(steps)
        x = gaussian_start(sigmas, 2048)
        result = sampler(GaussianDenoiser(), x, sigmas)
        errors.append(np.max(np.abs(result - exact_ode_answer(x, sigmas))))
    observed = math.log2(errors[0] / errors[1]) / 2
    assert observed >= order - 0.3, f"observed order {observed:.2f}, errors {errors}"


def gaussian_moments(sampler, steps: int, seed: int, count: int = 20000, **options):
    sigmas = gaussian_sigmas(steps)
    rng = np.random.default_rng(seed + 1000)  # independent of the start's draws
    result = sampler(GaussianDenoiser(), gaussian_start(sigmas, count, seed), sigmas,
                     noise=lambda sigma, sigma_next: rng.standard_normal((1, count)), **options)
    return result.mean() - MU, result.var() - VAR


STOCHASTIC_CASES = [
    ("ddpm", ours.sample_ddpm),
    ("sa_solver", ours.sample_sa_solver),
    ("sa_solver_pece", ours.sample_sa_solver_pece),
    ("restart", ours.sample_restart),
    ("euler_ancestral_cfg_pp", ours.sample_euler_ancestral_cfg_pp),
    ("dpmpp_2s_ancestral_cfg_pp", ours.sample_dpmpp_2s_ancestral_cfg_pp),
    ("res_multistep_ancestral", ours.sample_res_multistep_ancestral),
    ("res_multistep_ancestral_cfg_pp", ours.sample_res_multistep_ancestral_cfg_pp),
]


@pytest.mark.parametrize(("name", "sampler"), STOCHASTIC_CASES,
                         ids=[c[0] for c in STOCHASTIC_CASES])
def test_stochastic_samplers_reach_the_data_moments(name, sampler):
    """20000 samples: at 160 steps mean and variance are within ~6 standard errors (+ a first
    order bias) of N(MU, VAR), and the variance error is smaller than at 10 steps."""
    _, coarse_var = gaussian_moments(sampler, 10, seed=1)
    mean_error, var_error = gaussian_moments(sampler, 160, seed=2)
    assert abs(mean_error) < 0.02
    assert abs(var_error) < 0.02
    assert abs(var_error) < abs(coarse_var)


@pytest.mark.parametrize(("name", "sampler"), [
    *STOCHASTIC_CASES, ("lcm", ours.sample_lcm), ("dpmpp_sde", ours.sample_dpmpp_sde)],
    ids=lambda v: v if isinstance(v, str) else "")
def test_stochastic_samplers_are_deterministic_per_seed(name, sampler):
    first = gaussian_moments(sampler, 20, seed=5, count=64)
    assert gaussian_moments(sampler, 20, seed=5, count=64) == first
    assert gaussian_moments(sampler, 20, seed=6, count=64) != first


def test_lcm_with_a_consistency_function_samples_exactly():
    """LCM's model is a consistency function (the ODE's endpoint, here in closed form): each
    step's marginal is then exact, so even 4 steps give N(MU, VAR) up to sampling error."""

    def consistency(x, sigma):
        return MU + (x - MU) * math.sqrt(VAR / (VAR + sigma**2))

    count = 40000
    sigmas = np.array([14.6, 3.0, 0.8, 0.2, 0.0])
    rng = np.random.default_rng(4)
    result = ours.sample_lcm(consistency, gaussian_start(sigmas, count, 3), sigmas,
                             noise=lambda s, s_next: rng.standard_normal((1, count)))
    assert abs(result.mean() - MU) < 5 * math.sqrt(VAR / count)
    assert abs(result.var() - VAR) < 5 * VAR * math.sqrt(2 / count)


def test_ddpm_is_euler_ancestral():
    """The DDPM posterior step in VP variables is the eta = 1 ancestral step in sigma: given the
    same noise both samplers agree for any denoiser."""
    sigmas = karras_sigmas()
    x = start_latent(sigmas)
    a = ours.sample_ddpm(ToyDenoiser(), x, sigmas, noise=RecordedNoise(4))
    b = ours.sample_euler_ancestral(ToyDenoiser(), x, sigmas, noise=RecordedNoise(4))
    assert relative_error(a, b) < 1e-13


class GuidedToy(ToyDenoiser):
    """A CFG++ model: `uncond` is a second denoiser's output; guided = uncond + w (cond -
    uncond). With w = 1 and the same weights for both, cond == uncond."""

    def __init__(self, scale: float = 1.0, uncond_seed: int = 0):
        super().__init__(0)
        self.other = ToyDenoiser(uncond_seed)
        self.scale = scale
        self.uncond = None

    def __call__(self, x, sigma):
        cond = super().__call__(x, sigma)
        self.uncond = self.other(x, sigma)
        return self.uncond + self.scale * (cond - self.uncond)


CFG_PP_PAIRS = [
    (ours.sample_euler_cfg_pp, ours.sample_euler),
    (ours.sample_euler_ancestral_cfg_pp, ours.sample_euler_ancestral),
    (ours.sample_dpmpp_2m_cfg_pp, ours.sample_dpmpp_2m),
    (ours.sample_dpmpp_2s_ancestral_cfg_pp, ours.sample_dpmpp_2s_ancestral),
    (ours.sample_res_multistep_cfg_pp, ours.sample_res_multistep),
    (ours.sample_res_multistep_ancestral_cfg_pp, ours.sample_res_multistep_ancestral),
]


@pytest.mark.parametrize(("cfg_pp", "plain"), CFG_PP_PAIRS, ids=lambda f: f.__name__)
def test_cfg_pp_with_cond_equal_uncond_is_the_plain_sampler(cfg_pp, plain):
    sigmas = karras_sigmas()
    x = start_latent(sigmas)
    same = cfg_pp(GuidedToy(), x, sigmas, noise=RecordedNoise(9))
    assert relative_error(same, plain(ToyDenoiser(), x, sigmas, noise=RecordedNoise(9))) < 1e-12
    guided = cfg_pp(GuidedToy(scale=3.0, uncond_seed=1), x, sigmas, noise=RecordedNoise(9))
    assert relative_error(guided, same) > 1e-3  # the unconditional prediction is used
    with pytest.raises(ValueError, match="uncond"):
        cfg_pp(ToyDenoiser(), x, sigmas, noise=RecordedNoise(9))


def test_restart_below_20_steps_is_kdiffusion_heun():
    sigmas = karras_sigmas(19)
    x = start_latent(sigmas)
    theirs = K.sampling.sample_heun(ToyDenoiser().torch, torch.from_numpy(x.copy()),
                                    torch.from_numpy(sigmas), disable=True).numpy()
    assert relative_error(ours.sample_restart(ToyDenoiser(), x, sigmas), theirs) < 1e-13


@pytest.mark.parametrize(("steps", "restarts"), [(20, 1), (35, 1), (36, 2), (50, 2)])
def test_restart_plan_keeps_the_step_budget(steps, restarts):
    """The WebUI's Restart re-spaces the schedule so base steps + restart steps = steps, and
    jumps back up (from ~0.1 to ~2) `restarts` times."""
    plan = ours.restart.restart_plan(gaussian_sigmas(steps).tolist())
    assert len(plan) == steps
    jumps = [(a[1], b[0]) for a, b in itertools.pairwise(plan) if b[0] > a[1]]
    assert len(jumps) == restarts
    for low, high in jumps:
        assert 0.05 < low < 0.2 and 1.5 < high < 3.0


# --- contract: inputs, noise, callback -----------------------------------------------------------

def test_bad_sigmas_and_missing_noise_say_what_to_do():
    x = np.ones((1, 4))
    with pytest.raises(ValueError, match="descending"):
        ours.sample_euler(GaussianDenoiser(), x, np.array([0.0, 1.0, 2.0]))
    with pytest.raises(ValueError, match="1-D"):
        ours.sample_euler(GaussianDenoiser(), x, np.array([1.0]))
    with pytest.raises(ValueError, match="pass noise="):
        ours.sample_euler_ancestral(GaussianDenoiser(), x, gaussian_sigmas(4))
    ours.sample_euler_ancestral(GaussianDenoiser(), x, gaussian_sigmas(4), eta=0.0)


def test_callback_sees_every_step_and_can_stop():
    sigmas = gaussian_sigmas(10)
    seen: list[int] = []
    model = ToyDenoiser()
    ours.sample_dpmpp_2m(model, start_latent(sigmas), sigmas, callback=lambda i, x: seen.append(i))
    assert seen == list(range(10))
    model = ToyDenoiser()
    ours.sample_heun(model, start_latent(sigmas), sigmas, callback=lambda i, x: i < 2)
    assert len(model.calls) == 6  # steps 0, 1, 2 of Heun: two calls each, then stopped


# --- 3. every registered sampler runs -------------------------------------------------------

@pytest.mark.parametrize("info", [i for i in registry.SAMPLERS if i.function is not None],
                         ids=lambda i: i.name)
def test_every_sampler_runs_with_its_webui_options(info):
    """Each function takes the contract's keywords and the options the WebUI passes, and draws
    noise exactly when the registry says it is stochastic."""
    parameters = inspect.signature(info.function).parameters
    accepts_any = any(p.kind is p.VAR_KEYWORD for p in parameters.values())
    for option in ("noise", "callback", *info.options, *info.extra_params):
        assert option in parameters or accepts_any, option
    sigmas = gaussian_sigmas(24)
    draws = RecordedNoise(1)
    model = GuidedToy() if info.needs_uncond else ToyDenoiser()
    result = info.function(model, start_latent(sigmas), sigmas, noise=draws, **info.options)
    assert result.shape == SHAPE and np.all(np.isfinite(result))
    assert bool(draws.calls) == info.stochastic
