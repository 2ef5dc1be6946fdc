"""HunyuanImage 2.1's guidance (CFG, then APG with momentum, by step ranges) against
diffusers' AdaptiveProjectedMixGuidance over a run of random predictions; HunyuanVideo 1.5's
ClassifierFreeGuidance read into the same guider against diffusers' own."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("diffusers", reason="diffusers is a test-only reference")
import torch
from diffusers.guiders import AdaptiveProjectedMixGuidance, ClassifierFreeGuidance
from support import assert_close

from diffusion.pipelines.flow.hunyuanimage_guidance import MixGuidance

pytestmark = pytest.mark.nodevice
TOL = 3e-7  # float32 against our float64: passes at 3e-7, fails at 1e-7
SETTINGS = [dict(),  # the defaults (the released guider's but its scales)
            dict(guidance_scale=4.0, adaptive_projected_guidance_start_step=2, stop=0.8,
                 start=0.1, eta=0.3, guidance_rescale=0.5,
                 adaptive_projected_guidance_rescale=3.0),
            dict(adaptive_projected_guidance_momentum=None, use_original_formulation=True),
            dict(guidance_scale=1.0)]


def _run(settings: dict, steps: int = 9, seed: int = 0, kind: type = AdaptiveProjectedMixGuidance
         ) -> tuple[list[np.ndarray], list[np.ndarray]]:
    reference = kind(**settings)
    ours = MixGuidance.from_config({"_class_name": kind.__name__,
                                    "_diffusers_version": "0.42.1", **settings})
    state = ours.start_run()
    rng = np.random.default_rng(seed)
    got, expected = [], []
    for step in range(steps):
        cond, uncond = (rng.standard_normal((2, 4, 3, 5)).astype(np.float32) for _ in "cu")
        reference.set_state(step=step, num_inference_steps=steps, timestep=None)
        guided = reference.num_conditions > 1
        assert guided == ours.cfg_at(step, steps)
        reference.prepare_inputs({"x": (torch.zeros(1), torch.zeros(1))})
        out = reference.forward(torch.from_numpy(cond),
                                torch.from_numpy(uncond) if guided else None).pred
        expected.append(out.numpy())
        got.append(ours.combine(cond, uncond if guided else None, step=step, steps=steps,
                                state=state))
    return got, expected


@pytest.mark.parametrize("settings", SETTINGS)
def test_guidance_equals_diffusers(settings: dict) -> None:
    got, expected = _run(settings)
    for g, e in zip(got, expected, strict=True):
        assert_close(g, e, tol=TOL)


def test_momentum_and_apg_visibly_act() -> None:
    got, _ = _run(SETTINGS[0])
    plain, _ = _run({**SETTINGS[0], "adaptive_projected_guidance_momentum": None})
    assert np.allclose(got[5], plain[5], atol=0)  # CFG steps: the buffer is only filled
    assert np.abs(got[6] - plain[6]).mean() > 0.05 * np.abs(got[6]).mean()


def test_bad_config_in_one_line() -> None:
    with pytest.raises(ValueError, match="guider PerturbedAttentionGuidance is not supported"):
        MixGuidance.from_config({"_class_name": "PerturbedAttentionGuidance"})
    with pytest.raises(ValueError, match=r"unknown guider settings \['scale'\]"):
        MixGuidance.from_config({"scale": 2})


@pytest.mark.parametrize("settings", [
    dict(guidance_scale=6.0),  # HunyuanVideo 1.5's t2v and i2v guiders
    dict(guidance_scale=4.0, start=0.2, stop=0.7, guidance_rescale=0.5),
    dict(guidance_scale=3.0, use_original_formulation=True)])
def test_classifier_free_guidance_equals_diffusers(settings: dict) -> None:
    got, expected = _run(settings, kind=ClassifierFreeGuidance)
    for g, e in zip(got, expected, strict=True):
        assert_close(g, e, tol=TOL)
    with pytest.raises(ValueError, match="unknown guider settings"):  # no APG settings
        MixGuidance.from_config({"_class_name": "ClassifierFreeGuidance", "eta": 0.5})
