"""Schedule types and the discrete-timestep denoiser against k-diffusion (torch CPU) and the
WebUI's published formulas and tables.

References: k-diffusion 0.1.1's `CompVisDenoiser`/`CompVisVDenoiser` and `get_sigmas_*` (what
the WebUI 1.10 runs), built on alphas_cumprod computed as the LDM code does (torch float64
linspace, float32 buffer); the WebUI's own schedule functions (`modules/sd_schedulers.py`),
written out here in torch over k-diffusion's denoiser; scipy's beta quantiles. The WebUI works
in float32, we in float64: arrays agree to float32 rounding.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from diffusion.sampling.model_sampling import ZERO_SNR_ALPHA_BAR, DiscreteSchedule
from diffusion.sampling.samplers import schedules

torch = pytest.importorskip("torch")
stats = pytest.importorskip("scipy.stats")
from kdiffusion_ref import K  # noqa: E402  (skips the module without k-diffusion)

pytestmark = pytest.mark.nodevice  # host logic: `pytest -m nodevice`

STEPS = (1, 7, 20, 33)
RTOL = 2e-6  # float32 reference, float64 here


def _ldm_alphas_cumprod(beta_schedule: str) -> torch.Tensor:
    """alphas_cumprod as ldm.modules.diffusionmodules.util.make_beta_schedule computes them."""
    if beta_schedule == "scaled_linear":
        betas = torch.linspace(0.00085**0.5, 0.012**0.5, 1000, dtype=torch.float64) ** 2
    else:
        betas = torch.linspace(0.00085, 0.012, 1000, dtype=torch.float64)
    return torch.tensor(np.cumprod(1.0 - betas.numpy()), dtype=torch.float32)


class _Model:
    """A CompVis model stand-in: alphas_cumprod, and an apply_model that records its inputs
    and returns a fixed random output."""

    def __init__(self, alphas_cumprod: torch.Tensor, output: torch.Tensor) -> None:
        self.alphas_cumprod = alphas_cumprod
        self.output = output
        self.seen: tuple[torch.Tensor, torch.Tensor] | None = None

    def apply_model(self, x: torch.Tensor, t: torch.Tensor, *args: object,
                    **kwargs: object) -> torch.Tensor:
        self.seen = (x, t)
        return self.output


@pytest.fixture(scope="module", params=["scaled_linear", "linear"])
def pair(request: pytest.FixtureRequest) -> tuple[DiscreteSchedule, object]:
    """(ours from a diffusers config, k-diffusion's CompVisDenoiser over the LDM schedule)."""
    ours = DiscreteSchedule.from_config({"beta_schedule": request.param})
    return ours, K.external.CompVisDenoiser(_Model(_ldm_alphas_cumprod(request.param), None))


def _close(ours: np.ndarray, reference: torch.Tensor | np.ndarray, rtol: float = RTOL) -> None:
    reference = np.asarray(reference, dtype=np.float64)
    assert ours.shape == reference.shape, (ours.shape, reference.shape)
    np.testing.assert_allclose(ours, reference, rtol=rtol, atol=0)


# -- the discrete-timestep denoiser ------------------------------------------------------

def test_training_sigmas_are_the_webuis(pair):
    ours, kd = pair
    _close(ours.sigmas, kd.sigmas, rtol=3e-7)
    assert ours.sigma_min == pytest.approx(kd.sigma_min.item(), rel=3e-7)
    assert ours.sigma_max == pytest.approx(kd.sigma_max.item(), rel=3e-7)


@pytest.mark.parametrize("quantize", [False, True])
def test_sigma_to_t(pair, quantize):
    ours, kd = pair
    rng = np.random.default_rng(11)
    sigma = np.exp(rng.uniform(np.log(ours.sigma_min), np.log(ours.sigma_max), 64))
    sigma = np.concatenate([sigma, [ours.sigma_min, ours.sigma_max]]).astype(np.float32)
    reference = kd.sigma_to_t(torch.from_numpy(sigma), quantize=quantize).numpy()
    np.testing.assert_allclose(ours.sigma_to_t(sigma, quantize=quantize), reference, atol=1e-3)
    assert ours.sigma_to_t(float(sigma[0])).shape == ()


def test_t_to_sigma_and_get_sigmas(pair):
    ours, kd = pair
    t = np.random.default_rng(12).uniform(0, 999, 64).astype(np.float32)
    _close(ours.t_to_sigma(t), kd.t_to_sigma(torch.from_numpy(t)))
    for n in STEPS:
        _close(ours.get_sigmas(n), kd.get_sigmas(n))
    _close(ours.get_sigmas(), kd.get_sigmas(), rtol=3e-7)
    with pytest.raises(ValueError, match="timesteps must lie in"):
        ours.t_to_sigma(1000.5)


@pytest.mark.parametrize("prediction", ["epsilon", "v_prediction"])
def test_scalings_and_denoised_match_the_compvis_wrappers(prediction):
    rng = np.random.default_rng(13)
    x = rng.standard_normal((3, 4, 5, 5)).astype(np.float32)
    output = rng.standard_normal(x.shape).astype(np.float32)
    sigma = np.exp(rng.uniform(np.log(0.03), np.log(14.6), 3)).astype(np.float32)
    model = _Model(_ldm_alphas_cumprod("scaled_linear"), torch.from_numpy(output))
    wrapper = (K.external.CompVisVDenoiser if prediction == "v_prediction"
               else K.external.CompVisDenoiser)(model)
    ours = DiscreteSchedule.from_config({"prediction_type": prediction})
    reference = wrapper(torch.from_numpy(x), torch.from_numpy(sigma), cond=None).numpy()
    np.testing.assert_allclose(ours.denoised(x, sigma, output), reference, rtol=1e-5, atol=1e-5)
    # the UNet saw x * c_in at timestep sigma_to_t(sigma)
    c_in = ours.scalings(sigma)[2].reshape(-1, 1, 1, 1)
    np.testing.assert_allclose(x * c_in, model.seen[0].numpy(), rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(ours.sigma_to_t(sigma), model.seen[1].numpy(), atol=1e-3)
    scalings = wrapper.get_scalings(torch.from_numpy(sigma))
    if prediction == "epsilon":  # k-diffusion's eps wrapper has no c_skip: it is 1
        scalings = (torch.ones(3), *tuple(scalings))
    for mine, theirs in zip(ours.scalings(sigma), scalings, strict=True):
        _close(mine, theirs, rtol=1e-6)


def test_zero_terminal_snr_is_pinned_as_the_webui_pins_it():
    config = {"rescale_betas_zero_snr": True, "prediction_type": "v_prediction"}
    ours = DiscreteSchedule.from_config(config)
    # sd_models.rescale_zero_terminal_snr_abar: the last alpha_bar is set to 4.897e-08
    assert ours.sigma_max == pytest.approx(math.sqrt((1 - 4.8973451890853435e-08)
                                                     / 4.8973451890853435e-08), rel=1e-6)
    assert ZERO_SNR_ALPHA_BAR == 4.8973451890853435e-08
    abar = _ldm_alphas_cumprod("scaled_linear").double().sqrt()
    first, last = abar[0].item(), abar[-1].item()
    rescaled = ((abar - last) * first / (first - last)) ** 2
    _close(ours.alphas_cumprod[:-1], rescaled[:-1], rtol=2e-5)
    with pytest.raises(ValueError, match="zero terminal SNR"):
        DiscreteSchedule(np.append(rescaled[:-1].numpy(), 0.0))


def test_bad_inputs_raise():
    with pytest.raises(ValueError, match="prediction type 'sample'"):
        DiscreteSchedule.from_config({"prediction_type": "sample"})
    with pytest.raises(ValueError, match="1-D array"):
        DiscreteSchedule([0.5])
    with pytest.raises(ValueError, match="decrease strictly"):
        DiscreteSchedule([0.5, 0.9, 0.1])
    ours = DiscreteSchedule.from_config({})
    with pytest.raises(ValueError, match="one value per batch item"):
        ours.denoised(np.zeros((2, 3)), np.ones(3), np.zeros((2, 3)))


# -- schedule types: k-diffusion's functions -----------------------------------------------

@pytest.mark.parametrize("n", STEPS)
@pytest.mark.parametrize("name, function, rho", [
    ("Karras", "get_sigmas_karras", None), ("karras", "get_sigmas_karras", 3.5),
    ("Exponential", "get_sigmas_exponential", None),
    ("Polyexponential", "get_sigmas_polyexponential", None),
    ("polyexponential", "get_sigmas_polyexponential", 2.25)])
def test_kdiffusion_schedules(pair, n, name, function, rho):
    ours, kd = pair
    extra = {} if rho is None else {"rho": rho}
    reference = getattr(K.sampling, function)(n, kd.sigma_min.item(), kd.sigma_max.item(),
                                              **extra)
    _close(schedules.sigmas(name, n, ours, **extra), reference)


@pytest.mark.parametrize("n", STEPS)
def test_uniform_is_the_denoisers_get_sigmas(pair, n):
    ours, kd = pair
    _close(schedules.sigmas("Uniform", n, ours), kd.get_sigmas(n))
    _close(schedules.sigmas("Automatic", n, ours), kd.get_sigmas(n))


# -- schedule types: the WebUI's formulas, written out over k-diffusion's denoiser ------------

def _webui_sgm_uniform(n, kd):
    start = kd.sigma_to_t(torch.tensor(kd.sigma_max.item()))
    end = kd.sigma_to_t(torch.tensor(kd.sigma_min.item()))
    return [kd.t_to_sigma(t).item() for t in torch.linspace(start, end, n + 1)[:-1]] + [0.0]


def _webui_normal(n, kd):
    start = kd.sigma_to_t(torch.tensor(kd.sigma_max.item()))
    end = kd.sigma_to_t(torch.tensor(kd.sigma_min.item()))
    return [kd.t_to_sigma(t).item() for t in torch.linspace(start, end, n)] + [0.0]


def _webui_simple(n, kd):
    # simple_scheduler of the WebUI's modules/sd_schedulers.py (1.10), typed from its source
    sigs = []
    ss = len(kd.sigmas) / n
    for x in range(n):
        sigs += [float(kd.sigmas[-(1 + int(x * ss))])]
    sigs += [0.0]
    return torch.FloatTensor(sigs)


def _webui_ddim(n, kd):
    stride, x, out = max(len(kd.sigmas) // n, 1), 1, []
    while x < len(kd.sigmas):
        out.append(float(kd.sigmas[x]))
        x += stride
    return [*out[::-1], 0.0]


def _webui_kl_optimal(n, kd):
    # Sabour et al. 2024, eq. 10; the WebUI appends no final 0
    i = torch.arange(n + 1)
    return torch.tan(i / n * torch.arctan(kd.sigma_min) + (1 - i / n) * torch.arctan(kd.sigma_max))


def _webui_beta(n, kd):
    low, high = kd.sigma_min.item(), kd.sigma_max.item()
    quantiles = stats.beta.ppf(1 - np.linspace(0, 1, n), 0.6, 0.6)
    return [low + q * (high - low) for q in quantiles] + [0.0]


@pytest.mark.parametrize("n", STEPS)
@pytest.mark.parametrize("label, formula", [
    ("SGM Uniform", _webui_sgm_uniform), ("Normal", _webui_normal), ("Simple", _webui_simple),
    ("DDIM", _webui_ddim), ("KL Optimal", _webui_kl_optimal), ("Beta", _webui_beta)])
def test_webui_schedules(pair, n, label, formula):
    ours, kd = pair
    _close(schedules.sigmas(label, n, ours), np.asarray(formula(n, kd), dtype=np.float64))


def test_ddim_gives_the_webuis_extra_steps():
    ours = DiscreteSchedule.from_config({})
    assert [schedules.sigmas("DDIM", n, ours).size - 1 for n in STEPS] == [1, 8, 20, 34]
    # past 500 steps the stride stays 1: every training sigma but the first
    assert schedules.sigmas("DDIM", 600, ours).size - 1 == 999


def test_beta_quantiles_match_scipy():
    rng = np.random.default_rng(14)
    p = np.concatenate([[0.0, 1.0, 1e-9, 1 - 1e-9], rng.uniform(0, 1, 40)])
    for a, b in [(0.6, 0.6), (0.05, 1.9), (1.7, 0.3), (1.0, 1.0)]:
        np.testing.assert_allclose(schedules._beta_ppf(p, a, b), stats.beta.ppf(p, a, b),
                                   rtol=1e-9, atol=1e-12)
    ours = DiscreteSchedule.from_config({})
    low, high = ours.sigma_min, ours.sigma_max
    reference = [low + q * (high - low) for q in stats.beta.ppf(1 - np.linspace(0, 1, 9), 0.3,
                                                                 0.8)] + [0.0]
    _close(schedules.sigmas("beta", 9, ours, beta_alpha=0.3, beta_beta=0.8), np.array(reference))


# -- Align Your Steps: the published tables ---------------------------------------------------

AYS_PUBLISHED = {  # research.nvidia.com/labs/toronto-ai/AlignYourSteps/howto.html, 10 steps
    False: [14.615, 6.475, 3.861, 2.697, 1.886, 1.396, 0.963, 0.652, 0.399, 0.152, 0.029],
    True: [14.615, 6.315, 3.771, 2.181, 1.342, 0.862, 0.555, 0.380, 0.234, 0.113, 0.029],
}


def _loglinear(table: list[float], n: int) -> list[float]:
    """Piecewise-linear interpolation of log sigma at n evenly spaced positions, point by point."""
    out = []
    for j in range(n):
        position = (j / (n - 1) if n > 1 else 0.0) * (len(table) - 1)
        k = min(int(position), len(table) - 2)
        w = position - k
        out.append(math.exp((1 - w) * math.log(table[k]) + w * math.log(table[k + 1])))
    return out


@pytest.mark.parametrize("is_sdxl", [False, True])
@pytest.mark.parametrize("n", (*STEPS, 10, 11))
def test_align_your_steps(n, is_sdxl):
    ours = DiscreteSchedule.from_config({})
    table = AYS_PUBLISHED[is_sdxl]
    # the WebUI interpolates the ascending table from position 0, so n = 1 gives the last value
    expected = (table if n == len(table) else _loglinear(table, n) if n > 1 else [table[-1]])
    _close(schedules.sigmas("Align Your Steps", n, ours, is_sdxl=is_sdxl),
           np.array([*expected, 0.0]), rtol=1e-12)
    if not is_sdxl:  # SD 1.5's table unless told
        _close(schedules.sigmas("Align Your Steps", n, ours), np.array([*expected, 0.0]),
               rtol=1e-12)


# -- the WebUI's get_sigmas options --------------------------------------------------------------

@pytest.mark.parametrize("n", STEPS)
@pytest.mark.parametrize("name", [s.name for s in schedules.SCHEDULE_TYPES])
def test_discard_next_to_last_sigma(n, name):
    ours = DiscreteSchedule.from_config({})
    longer = schedules.sigmas(name, n + 1, ours)
    dropped = schedules.sigmas(name, n, ours, discard_next_to_last_sigma=True)
    np.testing.assert_array_equal(dropped, np.append(longer[:-2], longer[-1]))
    plain = schedules.sigmas(name, n, ours)
    assert np.all(np.isfinite(plain)) and np.all(np.diff(plain) < 0)
    assert plain[-1] == (ours.sigma_min if name == "kl_optimal" else 0.0)


def test_sigma_range_override():
    ours = DiscreteSchedule.from_config({})
    reference = K.sampling.get_sigmas_karras(7, 0.1, 10.0)
    _close(schedules.sigmas("karras", 7, ours, sigma_min=0.1, sigma_max=10.0), reference)
    assert schedules.sigmas("Normal", 7, ours, sigma_min=0.1)[-2] == pytest.approx(0.1, rel=1e-6)


def test_lookup_by_name_label_and_alias():
    assert schedules.lookup("SGMUniform").name == "sgm_uniform"
    assert schedules.lookup("align your steps").label == "Align Your Steps"
    for schedule in schedules.SCHEDULE_TYPES:
        assert schedules.lookup(schedule.name) is schedules.lookup(schedule.label) is schedule
    with pytest.raises(ValueError, match=r"unknown schedule type .Karass.*.Karras. \(karras\)"):
        schedules.lookup("Karass")


@pytest.mark.parametrize("kwargs, message", [
    ({"n": 0}, "positive int"), ({"n": 2.5}, "positive int"), ({"n": True}, "positive int"),
    ({"sigma_min": 20.0}, "sigma_min < sigma_max"), ({"sigma_max": math.inf}, "< inf"),
    ({"sigma_min": 0.0}, "0 < sigma_min"), ({"sigma_min": 3.0, "sigma_max": 3.0}, "sigma_min <"),
    ({"rho": -1.0}, "rho must be positive"), ({"rho": 0.0}, "rho must be positive"),
    ({"beta_alpha": 0.0}, "must be positive"), ({"beta_beta": 0.0}, "must be positive")])
def test_bad_schedule_arguments_raise(kwargs, message):
    assert schedules.sigmas("karras", 7, DiscreteSchedule.from_config({}), rho=0.5).size == 8
    arguments = {"n": 7, **kwargs}
    with pytest.raises(ValueError, match=message):
        schedules.sigmas("karras", arguments.pop("n"), DiscreteSchedule.from_config({}),
                         **arguments)
