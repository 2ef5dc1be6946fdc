"""Schedulers against diffusers (torch CPU): schedules, whole trajectories, add_noise, configs.

Both sides get the same initial sample, the same deterministic stand-in "model" and, for the
stochastic steps, the same noise (diffusers' `randn_tensor` is patched to return ours).
"""

from __future__ import annotations

import importlib

import numpy as np
import pytest
from support import relative_error

from diffusion.sampling import schedulers as ours

pytestmark = [pytest.mark.nodevice,  # host logic: `pytest -m nodevice`
              pytest.mark.filterwarnings("ignore:__array__ implementation:DeprecationWarning")]

torch = pytest.importorskip("torch")
diffusers = pytest.importorskip("diffusers")

SD = {"num_train_timesteps": 1000, "beta_start": 0.00085, "beta_end": 0.012,
      "beta_schedule": "scaled_linear"}
SHAPE = (1, 4, 8, 8)
TOL = 1e-4
SPACINGS = [{"timestep_spacing": "linspace"},
            {"timestep_spacing": "leading", "steps_offset": 1},
            {"timestep_spacing": "trailing"}]

# (case id, our class, diffusers class, config, steps, step kwargs)
CASES = [
    ("ddim", ours.DDIMScheduler, "DDIMScheduler",
     {"clip_sample": False, "set_alpha_to_one": False}, 15, {}),
    ("ddim-eta1", ours.DDIMScheduler, "DDIMScheduler",
     {"clip_sample": False, "set_alpha_to_one": True}, 12, {"eta": 1.0}),
    ("plms", ours.PNDMScheduler, "PNDMScheduler",
     {"skip_prk_steps": True, "set_alpha_to_one": False}, 15, {}),
    ("ddpm", ours.DDPMScheduler, "DDPMScheduler", {"clip_sample": False}, 10, {}),
    ("euler", ours.EulerDiscreteScheduler, "EulerDiscreteScheduler", {}, 15, {}),
    ("euler-karras", ours.EulerDiscreteScheduler, "EulerDiscreteScheduler",
     {"use_karras_sigmas": True}, 15, {}),
    ("euler-a", ours.EulerAncestralDiscreteScheduler, "EulerAncestralDiscreteScheduler",
     {}, 15, {}),
    ("heun", ours.HeunDiscreteScheduler, "HeunDiscreteScheduler", {}, 8, {}),
    ("heun-karras", ours.HeunDiscreteScheduler, "HeunDiscreteScheduler",
     {"use_karras_sigmas": True}, 8, {}),
    ("lms", ours.LMSDiscreteScheduler, "LMSDiscreteScheduler", {}, 15, {}),
    ("lms-karras", ours.LMSDiscreteScheduler, "LMSDiscreteScheduler",
     {"use_karras_sigmas": True}, 15, {}),
    ("dpm++2m", ours.DPMSolverMultistepScheduler, "DPMSolverMultistepScheduler", {}, 15, {}),
    ("dpm++2m-karras", ours.DPMSolverMultistepScheduler, "DPMSolverMultistepScheduler",
     {"use_karras_sigmas": True}, 20, {}),
    ("dpm++2m-sde", ours.DPMSolverMultistepScheduler, "DPMSolverMultistepScheduler",
     {"algorithm_type": "sde-dpmsolver++"}, 15, {}),
    ("dpm++2m-sde-heun", ours.DPMSolverMultistepScheduler, "DPMSolverMultistepScheduler",
     {"algorithm_type": "sde-dpmsolver++", "solver_type": "heun", "use_karras_sigmas": True},
     12, {}),
    ("dpm++2m-heun", ours.DPMSolverMultistepScheduler, "DPMSolverMultistepScheduler",
     {"solver_type": "heun"}, 12, {}),
    ("dpm++1", ours.DPMSolverMultistepScheduler, "DPMSolverMultistepScheduler",
     {"solver_order": 1}, 10, {}),
    ("unipc", ours.UniPCMultistepScheduler, "UniPCMultistepScheduler", {}, 15, {}),
    ("unipc-karras", ours.UniPCMultistepScheduler, "UniPCMultistepScheduler",
     {"use_karras_sigmas": True}, 20, {}),
    ("unipc-bh1-order3", ours.UniPCMultistepScheduler, "UniPCMultistepScheduler",
     {"solver_type": "bh1", "solver_order": 3}, 12, {}),
    ("unipc-order3", ours.UniPCMultistepScheduler, "UniPCMultistepScheduler",
     {"solver_order": 3, "disable_corrector": [2]}, 12, {}),
]


def _theirs(name: str, config: dict) -> object:
    return getattr(diffusers, name).from_config(config)


def _model(x: np.ndarray, t: float, pattern: np.ndarray) -> np.ndarray:
    """A deterministic stand-in for the UNet: depends on the input and the timestep."""
    return 0.1 * x + 0.3 * np.sin(float(t) / 50.0 + pattern)


@pytest.fixture
def same_noise(monkeypatch: pytest.MonkeyPatch) -> dict:
    """Make every diffusers scheduler draw `box["noise"]` instead of torch random numbers."""
    box: dict = {}

    def fake_randn(shape, generator=None, device=None, dtype=None, layout=None):
        assert tuple(shape) == box["noise"].shape
        return torch.from_numpy(box["noise"]).to(dtype or torch.float32)

    for name in ("ddim", "ddpm", "euler_ancestral_discrete", "dpmsolver_multistep", "lcm"):
        module = importlib.import_module(f"diffusers.schedulers.scheduling_{name}")
        monkeypatch.setattr(module, "randn_tensor", fake_randn)
    return box


def _run(mine, theirs, steps: int, kwargs: dict, box: dict, *, start: int = 0,
         strength: float | None = None, nan_final: bool = False, seed: int = 0) -> None:
    """Whole trajectory on both sides; every step's sample must agree.

    `nan_final`: diffusers ends in NaN here (UniPC bh1 onto sigma = 0 multiplies an infinite
    B(h) by a zero correction); we must still agree on every earlier step and end finite.
    """
    rng = np.random.default_rng(seed)
    pattern = rng.uniform(-np.pi, np.pi, SHAPE)
    extra = {} if strength is None else {"strength": strength}
    mine.set_timesteps(steps, **extra)
    theirs.set_timesteps(steps, **extra)
    np.testing.assert_allclose(mine.timesteps, theirs.timesteps.numpy(), rtol=1e-6, atol=1e-3)
    if hasattr(theirs, "sigmas"):
        np.testing.assert_allclose(mine.sigmas, theirs.sigmas.numpy(), rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(float(mine.init_noise_sigma), float(theirs.init_noise_sigma),
                               rtol=1e-5)
    begin = start * mine.order
    if begin == 0:
        x = rng.standard_normal(SHAPE) * float(mine.init_noise_sigma)
        y = torch.tensor(x, dtype=torch.float32)
    else:
        # img2img: noise a "clean latent" to the starting timestep, then sample from there
        clean, noise = rng.uniform(-1, 1, SHAPE), rng.standard_normal(SHAPE)
        mine.set_begin_index(begin)
        if hasattr(theirs, "set_begin_index"):  # DDIM/DDPM/PNDM index by timestep value only
            theirs.set_begin_index(begin)
        x = mine.add_noise(clean, noise, mine.timesteps[begin:begin + 1])
        y = theirs.add_noise(torch.tensor(clean, dtype=torch.float32),
                             torch.tensor(noise, dtype=torch.float32),
                             theirs.timesteps[begin:begin + 1])
        assert relative_error(x, y.numpy()) < TOL, "add_noise at the begin index"
    for k in range(begin, len(mine.timesteps)):
        t_mine, t_theirs = mine.timesteps[k], theirs.timesteps[k]
        box["noise"] = rng.standard_normal(SHAPE)
        in_mine = mine.scale_model_input(x, t_mine)
        in_theirs = theirs.scale_model_input(y, t_theirs)
        assert relative_error(in_mine, in_theirs.numpy()) < TOL, f"model input, step {k}"
        out_mine = _model(in_mine, t_mine, pattern)
        out_theirs = torch.tensor(_model(in_theirs.numpy().astype(np.float64),
                                         float(t_theirs), pattern), dtype=torch.float32)
        x = mine.step(out_mine, t_mine, x, noise=box["noise"], **kwargs)
        y = theirs.step(out_theirs, t_theirs, y, **kwargs).prev_sample
        if nan_final and k == len(mine.timesteps) - 1:
            assert np.isnan(y.numpy()).all()
            break
        err = relative_error(x, y.numpy())
        assert err < TOL, f"step {k} (t={t_mine}): relative error {err:.3g}"
    assert np.all(np.isfinite(x))


@pytest.mark.parametrize("prediction", ["epsilon", "v_prediction"])
@pytest.mark.parametrize("spacing", SPACINGS, ids=lambda s: s["timestep_spacing"])
@pytest.mark.parametrize(("case", "cls", "name", "config", "steps", "kwargs"), CASES,
                         ids=[c[0] for c in CASES])
def test_trajectory_matches_diffusers(case, cls, name, config, steps, kwargs, spacing,
                                      prediction, same_noise):
    mine = cls(**SD, **config, **spacing, prediction_type=prediction)
    _run(mine, _theirs(name, mine.config), steps, kwargs, same_noise,
         nan_final=case == "unipc-bh1-order3")


@pytest.mark.parametrize("prediction", ["epsilon", "v_prediction"])
@pytest.mark.parametrize(("steps", "original", "strength"), [(4, 50, 1.0), (6, 50, 1.0),
                                                              (3, 30, 0.6)])
def test_lcm_matches_diffusers(steps, original, strength, prediction, same_noise):
    config = {**SD, "original_inference_steps": original, "prediction_type": prediction}
    mine = ours.LCMScheduler(**config)
    theirs = _theirs("LCMScheduler", mine.config)
    _run(mine, theirs, steps, {}, same_noise, strength=strength)


@pytest.mark.parametrize(("case", "cls", "name", "config", "steps", "kwargs"),
                         [c for c in CASES if c[0] in ("ddim", "euler-a", "heun", "lms",
                                                        "dpm++2m-karras", "unipc")],
                         ids=lambda c: c if isinstance(c, str) else "")
def test_img2img_from_begin_index_matches_diffusers(case, cls, name, config, steps, kwargs,
                                                    same_noise):
    mine = cls(**SD, **config, timestep_spacing="leading", steps_offset=1)
    _run(mine, _theirs(name, mine.config), steps, kwargs, same_noise, start=steps // 3)


@pytest.mark.parametrize("name", sorted(ours.SCHEDULERS))
def test_add_noise_matches_diffusers(name):
    cls = ours.SCHEDULERS[name]
    mine = cls(**SD)
    theirs = _theirs(name, mine.config)
    mine.set_timesteps(7)
    theirs.set_timesteps(7)
    rng = np.random.default_rng(3)
    clean, noise = rng.uniform(-1, 1, (3, 4, 5, 6)), rng.standard_normal((3, 4, 5, 6))
    picks = [0, 2, len(mine.timesteps) - 1]
    got = mine.add_noise(clean, noise, mine.timesteps[picks])
    want = theirs.add_noise(torch.tensor(clean), torch.tensor(noise), theirs.timesteps[picks])
    assert relative_error(got, want.numpy()) < TOL
    one = mine.add_noise(clean, noise, mine.timesteps[2])  # a scalar timestep broadcasts
    assert relative_error(one[1], got[1]) < 1e-12


def test_sd15_config_through_get_scheduler_matches_diffusers_from_config():
    # runwayml/stable-diffusion-v1-5 scheduler/scheduler_config.json
    sd15 = {"_class_name": "PNDMScheduler", "_diffusers_version": "0.6.0", "beta_end": 0.012,
            "beta_schedule": "scaled_linear", "beta_start": 0.00085, "num_train_timesteps": 1000,
            "set_alpha_to_one": False, "skip_prk_steps": True, "steps_offset": 1,
            "trained_betas": None, "clip_sample": False}
    pairs = {"Euler a": ("EulerAncestralDiscreteScheduler", {}), "PLMS": ("PNDMScheduler", {}),
             "DDIM": ("DDIMScheduler", {}),
             "DPM++ 2M Karras": ("DPMSolverMultistepScheduler", {"use_karras_sigmas": True}),
             "UniPC": ("UniPCMultistepScheduler", {})}
    for sampler, (name, extra) in pairs.items():
        mine = ours.get_scheduler(sampler, sd15)
        theirs = getattr(diffusers, name).from_config(sd15, **extra)
        mine.set_timesteps(20)
        theirs.set_timesteps(20)
        np.testing.assert_allclose(mine.timesteps, theirs.timesteps.numpy(), atol=1e-3)
    assert isinstance(ours.scheduler_from_config(sd15), ours.PNDMScheduler)


def test_samplers_table_and_errors():
    assert set(ours.SAMPLERS) == {"Euler a", "Euler", "DDIM", "PLMS", "LMS", "Heun", "DPM++ 2M",
                                  "DPM++ 2M Karras", "DPM++ 2M SDE", "UniPC", "LCM", "DDPM"}
    for name, (cls, overrides) in ours.SAMPLERS.items():
        scheduler = ours.get_scheduler(name)
        assert type(scheduler) is cls
        assert all(scheduler.config[k] == v for k, v in overrides.items())
    assert ours.get_scheduler("dpm++ 2m karras").config["use_karras_sigmas"] is True
    assert ours.get_scheduler("Euler", {"prediction_type": "v_prediction"}, steps_offset=1) \
        .config == {**ours.EulerDiscreteScheduler.defaults, "prediction_type": "v_prediction",
                    "steps_offset": 1}
    with pytest.raises(ValueError, match="valid names: Euler a, Euler, DDIM"):
        ours.get_scheduler("Euler b")
    with pytest.raises(ValueError, match="not supported"):
        ours.scheduler_from_config({"_class_name": "KarrasVeScheduler"})


def test_config_validation():
    with pytest.raises(TypeError, match=r"no config field.*skip_prk_steps"):
        ours.EulerDiscreteScheduler(skip_prk_steps=True)
    with pytest.raises(ValueError, match="prediction_type='sample'"):
        ours.DDIMScheduler(prediction_type="sample")
    with pytest.raises(ValueError, match="solver_order=3"):
        ours.DPMSolverMultistepScheduler(solver_order=3)
    with pytest.raises(ValueError, match="beta_schedule"):
        ours.EulerDiscreteScheduler(beta_schedule="cubic")
    with pytest.raises(ValueError, match="use_beta_sigmas"):
        ours.EulerDiscreteScheduler.from_config({"use_beta_sigmas": True})
    with pytest.raises(ValueError, match="timestep_spacing"):
        ours.EulerDiscreteScheduler(timestep_spacing="uniform").set_timesteps(5)
    ignored = ours.DDIMScheduler.from_config({"_class_name": "X", "use_beta_sigmas": False,
                                              "solver_order": 3, "clip_sample": False})
    assert ignored.config["clip_sample"] is False


@pytest.mark.parametrize("cls", sorted(ours.SCHEDULERS.values(), key=lambda c: c.__name__),
                         ids=lambda c: c.__name__)
def test_step_misuse_raises(cls):
    scheduler = cls()
    x = np.ones(SHAPE)
    with pytest.raises(ValueError, match="set_timesteps"):
        scheduler.step(x, scheduler.timesteps[0], x)
    scheduler.set_timesteps(4)
    with pytest.raises(ValueError, match="not one of this scheduler's timesteps"):
        scheduler.step(x, 1234.5, x)
    for t in scheduler.timesteps:
        x = scheduler.step(0.1 * x, t, x, noise=np.full(SHAPE, 0.5))
    with pytest.raises(ValueError, match="steps are done"):
        scheduler.step(x, scheduler.timesteps[-1], x)


def test_noise_shape_checked_and_generator_reproducible():
    scheduler = ours.EulerAncestralDiscreteScheduler()
    scheduler.set_timesteps(5)
    x = np.ones(SHAPE, dtype=np.float32)
    with pytest.raises(ValueError, match="noise has shape"):
        scheduler.step(x, scheduler.timesteps[0], x, noise=np.ones((2, 2)))
    runs = []
    for _ in range(2):
        scheduler.set_timesteps(5)
        runs.append(scheduler.step(x, scheduler.timesteps[0], x,
                                   generator=np.random.default_rng(7)))
    np.testing.assert_array_equal(runs[0], runs[1])
    assert runs[0].dtype == np.float32  # float32 latents stay float32


def test_squaredcos_and_zero_snr_betas_match_diffusers():
    for extra in ({"beta_schedule": "squaredcos_cap_v2"}, {"rescale_betas_zero_snr": True},
                  {"beta_schedule": "linear", "beta_start": 1e-4, "beta_end": 0.02}):
        config = {**SD, **extra}
        mine, theirs = ours.DDIMScheduler(**config), _theirs("DDIMScheduler", config)
        np.testing.assert_allclose(mine.alphas_cumprod, theirs.alphas_cumprod.numpy(),
                                   rtol=1e-5, atol=1e-7)


def test_ddim_cfg_pp_step_is_the_webuis() -> None:
    """DDIM CFG++ (the WebUI's ddim_cfgpp): x0 from the guided noise, the direction back to
    x_t from the unconditional noise; written out here from its formula."""
    config = dict(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear",
                  clip_sample=False, set_alpha_to_one=False, steps_offset=1)
    scheduler = ours.DDIMScheduler(**config)
    scheduler.set_timesteps(10)
    rng = np.random.default_rng(4)
    x, guided, uncond = rng.standard_normal((3, 1, 4, 5, 6))
    t = int(scheduler.timesteps[3])
    a_t = scheduler.alphas_cumprod[t]
    a_prev = scheduler.alphas_cumprod[t - 100]
    pred_x0 = (x - np.sqrt(1 - a_t) * guided) / np.sqrt(a_t)
    expected = np.sqrt(a_prev) * pred_x0 + np.sqrt(1 - a_prev) * uncond
    got = scheduler.step(guided, t, x, direction_output=uncond)
    np.testing.assert_allclose(got, expected, rtol=1e-12)
    scheduler.set_timesteps(10)
    plain = scheduler.step(guided, t, x)  # without a direction: ordinary DDIM
    assert not np.allclose(plain, got)
