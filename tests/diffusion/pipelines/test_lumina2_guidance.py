"""Lumina 2's CFG against diffusers' Lumina2Pipeline loop: the guided prediction with and
without normalisation (the formula on PyTorch), and truncation's step-by-step choice on
diffusers' own scheduler timesteps (constant and dynamic shifts)."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("diffusers", reason="diffusers is a test-only reference (extra: reference)")
import diffusers
import torch

from diffusion.pipelines.flow.lumina2_guidance import guided_until, lumina2_cfg


@pytest.mark.parametrize("normalize", [False, True])
def test_lumina2_cfg_is_diffusers(normalize: bool) -> None:
    """diffusers' `uncond + g * (cond - uncond)`, rescaled by `torch.norm(dim=-1)` norms."""
    rng = np.random.default_rng(4)
    positive, negative = (rng.standard_normal((2, 4, 6, 5)).astype(np.float32)
                          for _ in range(2))
    cond, uncond = torch.from_numpy(positive), torch.from_numpy(negative)
    expected = uncond + 4.0 * (cond - uncond)
    if normalize:
        expected = expected * (torch.norm(cond, dim=-1, keepdim=True)
                               / torch.norm(expected, dim=-1, keepdim=True))
    got = lumina2_cfg(positive, negative, 4.0, normalize)
    np.testing.assert_allclose(got, expected.numpy(), rtol=2e-6, atol=2e-6)
    if normalize:  # the rescaling visibly changes the prediction (the test's premise)
        assert np.abs(got - lumina2_cfg(positive, negative, 4.0, False)).max() > 0.1


@pytest.mark.parametrize("config", [{"shift": 6.0}, {"use_dynamic_shifting": True}])
def test_lumina2_truncation_is_diffusers(config: dict[str, object]) -> None:
    """Each step of diffusers' schedule is guided exactly where Lumina2Pipeline runs the
    negative pass: `(i + 1) / n <= cfg_trunc_ratio`."""
    mu = 0.7
    for steps in (1, 2, 5, 7, 30):
        scheduler = diffusers.FlowMatchEulerDiscreteScheduler(**config)
        scheduler.set_timesteps(sigmas=np.linspace(1.0, 1 / steps, steps), mu=mu)
        timesteps = scheduler.timesteps.numpy()
        for ratio in (0.0, 0.1, 0.25, 0.5, 0.6, 1.0, 1.5):
            cut = guided_until(config, steps, mu, ratio)
            ours = [float(t) >= cut for t in timesteps]
            theirs = [not (i + 1) / steps > ratio for i in range(steps)]
            assert ours == theirs, (steps, ratio)


def test_lumina2_truncation_refuses_nan() -> None:
    with pytest.raises(ValueError, match="cfg_trunc_ratio must be a number"):
        guided_until({}, 4, None, float("nan"))
