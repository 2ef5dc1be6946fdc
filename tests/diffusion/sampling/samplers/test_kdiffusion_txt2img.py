"""txt2img with the WebUI's samplers and schedule types against the WebUI's recipe on k-diffusion.

The reference is what the WebUI runs, rebuilt from parts independent of our code: diffusers'
UNet and CLIP on torch CPU (a tiny random model), k-diffusion 0.1.1's samplers and sigma
functions, its discrete epsilon denoiser (`DiscreteEpsDDPMDenoiser`: the UNet at
`sigma_to_t(sigma)` on `x * c_in`) over the LDM model's float32 `alphas_cumprod`, guidance on the
denoised predictions (uncond + scale * (cond - uncond)), and the WebUI's noise: one torch CPU
generator per image seeded with seed + k, whose first draw is the initial noise and whose later
draws are the ancestral step noise; the SDE samplers get `BrownianTreeNoiseSampler` seeded with
the images' seeds.

Compared: the final latents (the last `on_step` latents), relative error |ours - ref| / |ref|.
The GPU computes the UNet in float32 in another order than torch CPU (a relative difference near
1e-6 per call); a few steps, second-order evaluations and the scheduler math in float64 keep the
final latents within 5e-4 (measured: up to 1.1e-4, DPM++ SDE, whose Brownian noise agrees with
torchsde's to 2 float32 ulps). A wrong coefficient, sigma or noise draw moves them by 1e-2 or
more.
"""

from __future__ import annotations

import inspect
import json
import math
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import pytest

diffusers = pytest.importorskip("diffusers", reason="test-only reference (extra: reference)")
import torch  # noqa: E402
from kdiffusion_ref import K  # noqa: E402
from sd_tiny import write_pipeline  # noqa: E402
from test_sigma_schedules import (  # noqa: E402
    AYS_PUBLISHED,
    _loglinear,
    _webui_beta,
    _webui_ddim,
    _webui_kl_optimal,
    _webui_normal,
    _webui_sgm_uniform,
    _webui_simple,
)

import gpucore  # noqa: E402
from diffusion import load_pipeline  # noqa: E402
from diffusion.infotext import format_infotext  # noqa: E402

SIZE, STEPS, CFG = 16, 4, 6.5  # 8x8 latents (the tiny VAE downsamples by 2): ~0.3 s a UNet call
PROMPT, NEGATIVE = "a lighthouse at dusk, oil painting", "blurry"
SEED = 1234
TOLERANCE = 5e-4


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_pipeline(tmp_path_factory.mktemp("tiny-sd-k"))


@pytest.fixture(scope="module")
def ours(model_dir: Path, first_device: gpucore.Device) -> Any:
    return load_pipeline(model_dir, device=first_device)


class _Eps(K.external.DiscreteEpsDDPMDenoiser):
    """k-diffusion's epsilon wrapper around diffusers' UNet (as the WebUI's CompVisDenoiser
    wraps the LDM UNet)."""

    def get_eps(self, x: torch.Tensor, t: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        return self.inner_model(x, t, encoder_hidden_states=cond).sample


WEBUI_FORMULAS = {"sgm_uniform": _webui_sgm_uniform, "normal": _webui_normal,
                  "simple": _webui_simple, "ddim": _webui_ddim, "kl_optimal": _webui_kl_optimal,
                  "beta": _webui_beta}


def _to_tensor(formula: Any, n: int, denoiser: Any) -> torch.Tensor:
    return torch.as_tensor(formula(n, denoiser), dtype=torch.float64)


class Reference:
    """The WebUI's txt2img for the tiny model, on torch CPU with k-diffusion."""

    def __init__(self, folder: Path) -> None:
        pipe = diffusers.StableDiffusionPipeline.from_pretrained(
            folder, safety_checker=None, requires_safety_checker=False)
        # the LDM model's buffer: float64 betas, cumulative product, stored as float32
        betas = np.linspace(0.00085**0.5, 0.012**0.5, 1000, dtype=np.float64) ** 2
        abar = torch.tensor(np.cumprod(1 - betas), dtype=torch.float32)
        self.denoiser = _Eps(pipe.unet, abar, quantize=False)
        self.pipe = pipe
        self.contexts = [self.context_of(PROMPT)]  # per model call; the last one repeats
        self.calls = 0

    def context_of(self, prompt: str) -> torch.Tensor:
        with torch.no_grad():
            cond, uncond = self.pipe.encode_prompt(prompt, "cpu", 1, True, NEGATIVE)
        return torch.cat([cond, uncond])

    def model(self, x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
        """CFG on denoised predictions, cond first as in the WebUI's CFGDenoiser."""
        batch = x.shape[0]
        context = self.contexts[min(self.calls, len(self.contexts) - 1)]
        self.calls += 1
        out = self.denoiser(torch.cat([x, x]), torch.cat([sigma, sigma]),
                            cond=context.repeat_interleave(batch, 0))
        cond, uncond = out[:batch], out[batch:]
        return uncond + (cond - uncond) * CFG

    def sigmas(self, schedule: str, steps: int, discard: bool) -> torch.Tensor:
        n = steps + discard
        low, high = self.denoiser.sigma_min.item(), self.denoiser.sigma_max.item()
        sigmas = {
            "uniform": lambda: self.denoiser.get_sigmas(n),
            "karras": lambda: K.sampling.get_sigmas_karras(n, low, high),
            "exponential": lambda: K.sampling.get_sigmas_exponential(n, low, high),
            "polyexponential": lambda: K.sampling.get_sigmas_polyexponential(n, low, high,
                                                                             rho=1.0),
            # the WebUI's other schedule types, as tests/test_sigma_schedules.py writes them
            # out over a k-diffusion denoiser (and NVIDIA's published Align Your Steps table)
            **{name: partial(_to_tensor, formula, n, self.denoiser)
               for name, formula in WEBUI_FORMULAS.items()},
            "align_your_steps": lambda: torch.tensor([*_loglinear(AYS_PUBLISHED[False], n), 0.0]),
        }[schedule]().to(torch.float32)
        return torch.cat([sigmas[:-2], sigmas[-1:]]) if discard else sigmas

    def sample(self, function: str, schedule: str, *, discard: bool = False,
               brownian: bool = False, seeds: tuple[int, ...] = (SEED,),
               options: dict[str, Any] | None = None,
               contexts: list[torch.Tensor] | None = None, init: torch.Tensor | None = None,
               sigmas: torch.Tensor | None = None,
               resize_from: tuple[int, int] | None = None) -> np.ndarray:
        """The WebUI's sampling pass: from noise, or img2img from `init` (its `sigmas`);
        `resize_from`: the seeds' noise drawn at that latent (height, width) ("Resize seed
        from"). Samplers that take no noise sampler (Euler, Heun, DPM2 with churn) draw their
        noise with torch.randn_like, which the WebUI's TorchHijack points at the same
        per-image generators."""
        self.calls = 0
        if contexts is not None:
            self.contexts = contexts
        generators = [torch.Generator().manual_seed(s) for s in seeds]
        side = SIZE // 2 if init is None else init.shape[-1]

        def draw() -> torch.Tensor:
            return torch.stack([torch.randn((4, side, side), generator=g) for g in generators])

        sigmas = self.sigmas(schedule, STEPS, discard) if sigmas is None else sigmas
        first = draw() if resize_from is None else torch.stack(
            [_webui_resized_first(seed, g, (4, side, side), resize_from)
             for seed, g in zip(seeds, generators)])
        x = first * sigmas[0] + (0 if init is None else init)
        kwargs: dict[str, Any] = dict(options or {})
        if brownian:
            positive = sigmas[sigmas > 0]
            kwargs["noise_sampler"] = K.sampling.BrownianTreeNoiseSampler(
                x, positive.min(), sigmas.max(), seed=list(seeds))
        elif "noise_sampler" in inspect.signature(getattr(K.sampling, function)).parameters:
            kwargs["noise_sampler"] = lambda sigma, sigma_next: draw()
        sampler = getattr(K.sampling, function)
        hijack = _TorchHijack(draw)
        with torch.no_grad(), pytest.MonkeyPatch.context() as patch:
            patch.setattr(K.sampling, "torch", hijack)
            if function == "sample_dpm_fast":  # the WebUI: the model's whole sigma range
                low, high = self.denoiser.sigma_min.item(), self.denoiser.sigma_max.item()
                out = sampler(self.model, x, low, high, STEPS, disable=True, eta=1.0, **kwargs)
            else:
                out = sampler(self.model, x, sigmas, disable=True, **kwargs)
        return out.double().numpy()


class _TorchHijack:
    """k-diffusion's `torch` with randn_like drawing the images' generators' next noise (the
    WebUI's sd_samplers_common.TorchHijack)."""

    def __init__(self, draw: Any) -> None:
        self.draw = draw

    def __getattr__(self, name: str) -> Any:
        return getattr(torch, name)

    def randn_like(self, x: torch.Tensor) -> torch.Tensor:
        return self.draw().to(x.dtype)


def _webui_resized_first(seed: int, generator: torch.Generator, shape: tuple[int, int, int],
                         noise_hw: tuple[int, int]) -> torch.Tensor:
    """ImageRNG.first() of the WebUI's modules/rng.py (1.10) for one image with a seed resize,
    typed from its source (CPU RNG): the seed's noise at the other size from a freshly seeded
    generator, pasted centred into the image generator's own first draw."""
    noise_shape = (shape[0], *noise_hw)
    torch.manual_seed(seed)
    noise = torch.randn(noise_shape)
    x = torch.randn(shape, generator=generator)
    dx = (shape[2] - noise_shape[2]) // 2
    dy = (shape[1] - noise_shape[1]) // 2
    w = noise_shape[2] if dx >= 0 else noise_shape[2] + 2 * dx
    h = noise_shape[1] if dy >= 0 else noise_shape[1] + 2 * dy
    tx = 0 if dx < 0 else dx
    ty = 0 if dy < 0 else dy
    dx = max(-dx, 0)
    dy = max(-dy, 0)
    x[:, ty:ty + h, tx:tx + w] = noise[:, dy:dy + h, dx:dx + w]
    return x


@pytest.fixture(scope="module")
def reference(model_dir: Path) -> Reference:
    return Reference(model_dir)


def _ours(pipe: Any, sampler: str, scheduler: str = "Automatic", batch_size: int = 1,
          prompt: str = PROMPT) -> tuple[np.ndarray, dict[str, Any]]:
    final: list[np.ndarray] = []
    result = pipe.txt2img(prompt, negative_prompt=NEGATIVE, steps=STEPS, cfg_scale=CFG,
                          seed=SEED, width=SIZE, height=SIZE, sampler=sampler,
                          scheduler=scheduler, batch_size=batch_size, rng="torch",
                          on_step=lambda done, total, latents: final.append(latents))
    return final[-1], result.settings


def _error(ours: np.ndarray, theirs: np.ndarray) -> float:
    return float(np.linalg.norm(ours - theirs) / np.linalg.norm(theirs))


def _assert_close(ours: np.ndarray, theirs: np.ndarray) -> None:
    error = _error(ours, theirs)
    assert error < TOLERANCE, f"relative error {error:.2e}"


def _assert_moves(picture: np.ndarray, other: np.ndarray, what: str) -> None:
    """`other` (the picture without one input) is at least 10x the tolerance away."""
    moved = _error(other, picture)
    assert moved > 10 * TOLERANCE, f"{what} moves the result by only {moved:.2e}"


# (our name, k-diffusion function, the WebUI's default schedule, discard penultimate sigma,
#  Brownian-tree noise, extra k-diffusion options the WebUI passes)
SAMPLERS = [
    ("LMS", "sample_lms", "uniform", False, False, {}),
    ("DPM2 a", "sample_dpm_2_ancestral", "karras", True, False, {}),
    ("DPM++ 2S a", "sample_dpmpp_2s_ancestral", "karras", False, False, {}),
    ("DPM++ 2M", "sample_dpmpp_2m", "karras", False, False, {}),
    ("DPM++ SDE", "sample_dpmpp_sde", "karras", False, True, {}),
    ("DPM++ 2M SDE Heun", "sample_dpmpp_2m_sde", "exponential", False, True,
     {"solver_type": "heun"}),
    ("DPM++ 3M SDE", "sample_dpmpp_3m_sde", "exponential", True, True, {}),
    ("DPM fast", "sample_dpm_fast", "uniform", False, False, {}),
]
# The WebUI's other k-diffusion samplers run end to end against the recipe below, not twice:
# Euler and Heun in test_prompt_editing_switches_at_the_webuis_step (Automatic schedule) and
# Euler again in test_chosen_schedule_type_runs_end_to_end; Euler a in
# test_batch_images_have_their_own_seeds (whose first image is the one-image run), the hires
# fix and the eta tests. DPM2 and DPM++ 2M SDE take the pipeline path of DPM2 a (Karras,
# penultimate sigma dropped, off-schedule midpoints) and of DPM++ 2M SDE Heun (the same
# function, Brownian noise) with only the algorithm differing, which tests/test_samplers.py
# checks against k-diffusion to 1e-13.
# DPM adaptive is left to tests/test_samplers.py (k-diffusion's algorithm to 1e-13 on a toy
# denoiser): its step-size control turns the UNet's float32 differences into other accepted
# steps (1.9e-3 here) and its dozens of UNet calls take half a minute on lavapipe.


@pytest.mark.parametrize(("name", "function", "schedule", "discard", "brownian", "options"),
                         SAMPLERS, ids=[s[0] for s in SAMPLERS])
def test_sampler_matches_the_webuis_recipe(ours: Any, reference: Reference, name: str,
                                           function: str, schedule: str, discard: bool,
                                           brownian: bool, options: dict[str, Any]) -> None:
    latents, settings = _ours(ours, name)
    expected = reference.sample(function, schedule, discard=discard, brownian=brownian,
                                options=options)
    _assert_close(latents, expected)
    assert settings["sampler"] == name
    assert settings["scheduler"] == ("Automatic" if schedule == "uniform"
                                     else schedule.capitalize())


# The schedule types a user picks (Uniform, Karras and Exponential also run above as defaults)
CHOSEN_SCHEDULES = ["Karras", "Polyexponential", "SGM Uniform", "KL Optimal", "Align Your Steps",
                    "Simple", "Normal", "DDIM", "Beta"]


@pytest.mark.nodevice
@pytest.mark.parametrize("schedule", CHOSEN_SCHEDULES)
def test_chosen_schedule_type_plans_the_webuis_sigmas(model_dir: Path, reference: Reference,
                                                      schedule: str) -> None:
    """What the pipeline runs for a chosen schedule type: the WebUI's sigmas (float32, as the
    WebUI computes them) and its infotext label. Host logic: sampling.plan."""
    from diffusion.sampling.kdiffusion import plan
    from diffusion.sampling.model_sampling import DiscreteSchedule

    config = json.loads((model_dir / "scheduler" / "scheduler_config.json").read_text())
    planned = plan("Euler", schedule, STEPS, DiscreteSchedule.from_config(config))
    expected = reference.sigmas(schedule.lower().replace(" ", "_"), STEPS, False).double()
    np.testing.assert_allclose(planned.sigmas, expected.numpy(), rtol=1e-6, atol=1e-7)
    assert planned.schedule_label == schedule


@pytest.mark.nodevice
@pytest.mark.parametrize("sampler", ["DPM++ SDE", "DPM++ 2M SDE", "DPM++ 2M SDE Heun",
                                     "DPM++ 3M SDE"])
def test_sde_samplers_run_a_single_step(sampler: str) -> None:
    """One step straight to sigma 0 (1 step, a hires pass of 1 step) draws no Brownian noise,
    so it runs as in the WebUI, whose tree over the empty range is never asked. Host logic."""
    from diffusion.sampling import kdiffusion as sampling
    from diffusion.sampling.model_sampling import DiscreteSchedule

    discrete = DiscreteSchedule.from_config({"beta_start": 0.00085, "beta_end": 0.012,
                                             "beta_schedule": "scaled_linear"})
    for planned in (sampling.plan(sampler, "Karras", 1, discrete),
                    sampling.plan(sampler, "Automatic", 3, discrete, t_enc=0)):
        x = np.ones((2, 4, 2, 2)) * planned.sigmas[0]
        out = sampling.sample(planned, lambda x, sigma: 0.5 * x / (1 + sigma**2) ** 0.5, x,
                              seeds=[1, 2], image_noise=None,
                              model_sampling=discrete)
        assert np.all(np.isfinite(out))


def test_chosen_schedule_type_runs_end_to_end(ours: Any, reference: Reference) -> None:
    """A chosen schedule type through the whole pipeline. The others differ from it only in
    the sigmas planned (the test above); KL Optimal is the one whose last sigma is not 0."""
    latents, settings = _ours(ours, "Euler", "KL Optimal")
    _assert_close(latents, reference.sample("sample_euler", "kl_optimal"))
    assert settings["scheduler"] == "KL Optimal"


def test_batch_images_have_their_own_seeds(ours: Any, reference: Reference) -> None:
    """Image k of a batch is seed + k's image, ancestral noise included (the WebUI)."""
    latents, settings = _ours(ours, "Euler a", batch_size=2)
    expected = reference.sample("sample_euler_ancestral", "uniform", seeds=(SEED, SEED + 1))
    _assert_close(latents, expected)
    assert settings["seeds"] == [SEED, SEED + 1]


def test_old_combined_name_runs_the_pair(ours: Any, reference: Reference) -> None:
    """The old combined name "DPM++ 2M Karras" runs DPM++ 2M on the Karras schedule."""
    combined, settings = _ours(ours, "DPM++ 2M Karras")
    _assert_close(combined, reference.sample("sample_dpmpp_2m", "karras"))
    assert (settings["sampler"], settings["scheduler"]) == ("DPM++ 2M", "Karras")


@pytest.mark.parametrize(("sampler", "function", "calls_per_step"),
                         [("Euler", "sample_euler", 1), ("Heun", "sample_heun", 2)])
def test_prompt_editing_switches_at_the_webuis_step(ours: Any, reference: Reference,
                                                     sampler: str, function: str,
                                                     calls_per_step: int) -> None:
    """[from:to:2] over 4 steps: "from" for the WebUI's steps 0-2 (model evaluations, counted
    twice per step by second-order samplers), "to" after."""
    before, after = (reference.context_of(f"a {what} at dusk, oil painting")
                     for what in ("lighthouse", "red barn"))
    latents, _ = _ours(ours, sampler, prompt="a [lighthouse:red barn:2] at dusk, oil painting")
    switch = 3  # evaluations 0, 1, 2 use "from"
    expected = reference.sample(function, "uniform",
                                contexts=[before] * switch + [after] * STEPS * calls_per_step)
    reference.contexts = [reference.context_of(PROMPT)]
    _assert_close(latents, expected)


def test_hires_fix_is_the_webuis_second_pass(ours: Any, reference: Reference) -> None:
    """First pass, latents upscaled x2 by F.interpolate (bilinear), then img2img at strength
    0.6 running 3 steps of a schedule of int(3 / 0.6) = 5 (the WebUI's hires pass, whose
    generators start again from the seeds)."""
    from diffusion.upscalers.interpolation import HiresFix

    final: list[np.ndarray] = []
    result = ours.txt2img(PROMPT, negative_prompt=NEGATIVE, steps=STEPS, cfg_scale=CFG,
                          seed=SEED, width=SIZE, height=SIZE, sampler="Euler a", rng="torch",
                          hires=HiresFix(scale=2.0, upscaler="Latent", steps=3, denoise=0.6),
                          on_step=lambda done, total, latents: final.append(latents))
    first = torch.from_numpy(reference.sample("sample_euler_ancestral", "uniform")).float()
    upscaled = torch.nn.functional.interpolate(first, scale_factor=2, mode="bilinear")
    sigmas = reference.sigmas("uniform", 5, False)[5 - 2 - 1:]  # t_enc = 3 - 1
    expected = reference.sample("sample_euler_ancestral", "uniform", init=upscaled,
                                sigmas=sigmas)
    _assert_close(final[-1], expected)
    assert result.images[0].shape == (2 * SIZE, 2 * SIZE, 3)
    text = format_infotext(result.settings)
    assert "Denoising strength: 0.6, " in text and text.endswith(
        "Hires upscale: 2, Hires steps: 3, Hires upscaler: Latent")


@pytest.mark.parametrize("sampler", ["Euler", "DDIM"])
def test_hires_pass_counts_prompt_editing_on_from_the_first_pass(
        ours: Any, monkeypatch: pytest.MonkeyPatch, sampler: str) -> None:
    """[from:to:3] of a 4-step first pass is "to" all through the hires pass: its times count
    on from the first pass (the WebUI's hires_steps scheduling), not from 0 again."""
    from diffusion.text import conditioning
    from diffusion.upscalers.interpolation import HiresFix

    schedules: list[tuple] = []
    encode = conditioning.encode

    def recording(*args: Any, **kwargs: Any) -> Any:
        result = encode(*args, **kwargs)
        schedules.append(result.prompts[0].schedule)
        return result

    monkeypatch.setattr(conditioning, "encode", recording)
    ours.txt2img("a [lighthouse:red barn:3]", steps=STEPS, seed=SEED, width=SIZE, height=SIZE,
                 sampler=sampler, hires=HiresFix(scale=1.0, steps=2, denoise=0.5))
    first, hires = schedules[0], schedules[2]  # cond and uncond of each pass
    assert first == ((3, "a lighthouse"), (STEPS, "a red barn"))
    assert [text for _, text in hires] == ["a red barn"]


def test_eta_reaches_the_ancestral_sampler(ours: Any, reference: Reference) -> None:
    """The WebUI's 'Eta' setting: k-diffusion's eta argument, written as "Eta: 0.5"."""
    from diffusion.sampling.kdiffusion import SamplerOptions

    final: list[np.ndarray] = []
    result = ours.txt2img(PROMPT, negative_prompt=NEGATIVE, steps=STEPS, cfg_scale=CFG,
                          seed=SEED, width=SIZE, height=SIZE, sampler="Euler a", rng="torch",
                          sampler_options=SamplerOptions(eta=0.5),
                          on_step=lambda done, total, latents: final.append(latents))
    expected = reference.sample("sample_euler_ancestral", "uniform", options={"eta": 0.5})
    _assert_close(final[-1], expected)
    assert format_infotext(result.settings).endswith("RNG: CPU, Eta: 0.5")


def test_churn_reaches_the_sampler(ours: Any, reference: Reference) -> None:
    """Sigma churn, tmin, tmax and noise (the WebUI's settings for Euler, Heun and DPM2):
    k-diffusion's sample_euler with the same values, its churn noise the images' generators'
    next draws. The uniform schedule's sigmas here are 14.6, 2.9, 0.93, 0.029: tmin 1 and
    tmax 10 leave churn on the second step alone; each value moves the picture."""
    from diffusion.sampling.kdiffusion import SamplerOptions

    churn = {"s_churn": 1.5, "s_tmin": 1.0, "s_tmax": 10.0, "s_noise": 1.2}
    final: list[np.ndarray] = []
    ours.txt2img(PROMPT, negative_prompt=NEGATIVE, steps=STEPS, cfg_scale=CFG, seed=SEED,
                 width=SIZE, height=SIZE, sampler="Euler", rng="torch",
                 sampler_options=SamplerOptions(**churn),
                 on_step=lambda done, total, latents: final.append(latents))
    expected = reference.sample("sample_euler", "uniform", options=churn)
    _assert_close(final[-1], expected)
    for name, default in (("s_churn", 0.0), ("s_tmin", 0.0), ("s_tmax", math.inf),
                          ("s_noise", 1.0)):
        _assert_moves(expected, reference.sample("sample_euler", "uniform",
                                                 options={**churn, name: default}), name)


def test_seed_resize_is_the_webuis_noise(ours: Any, reference: Reference) -> None:
    """"Resize seed from" 8x24 pixels (4x12 latents with the tiny VAE's factor 2; the WebUI
    divides by SD's 8): its noise cropped in height and padded in width into the 8x8 latents'
    first draw, then Euler a's steps from the same generators."""
    final: list[np.ndarray] = []
    result = ours.txt2img(PROMPT, negative_prompt=NEGATIVE, steps=STEPS, cfg_scale=CFG,
                          seed=SEED, width=SIZE, height=SIZE, sampler="Euler a", rng="torch",
                          seed_resize_from=(8, 24),
                          on_step=lambda done, total, latents: final.append(latents))
    expected = reference.sample("sample_euler_ancestral", "uniform", resize_from=(12, 4))
    _assert_close(final[-1], expected)
    _assert_moves(expected, reference.sample("sample_euler_ancestral", "uniform"),
                  "the seed resize")
    assert "Seed resize from: 8x24" in format_infotext(result.settings)
