"""tile_colorfix+sharp on one guided call of a tiny UNet with a tiny ControlNet: our
GuidedUNet's uncond and cond outputs equal diffusers' (ControlNet residuals at the unit's
weight, then the UNet) corrected by the extension's hook.py formulas typed in torch, and the
control picture's latents matter."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("diffusers", reason="diffusers is a test-only reference (extra: reference)")
import torch
from sd_tiny import UNET_TINY, state_dict, tiny_unet
from support import assert_close
from test_controlnet import tiny_controlnet

import gpucore
import gpustd
from diffusion.models import UNet2DConditionModel
from diffusion.models.controlnet import ControlNetModel
from diffusion.pipelines.colorfix import ColorFix, colorfix_hook
from diffusion.pipelines.control import Control, ControlUnit
from diffusion.pipelines.sd.guided_unet import GuidedUNet, unet_call

CONFIG = {"beta_schedule": "scaled_linear", "beta_start": 0.00085, "beta_end": 0.012,
          "num_train_timesteps": 1000}


def blur(x: torch.Tensor, k: int) -> torch.Tensor:  # hook.py's
    y = torch.nn.functional.pad(x, (k, k, k, k), mode="replicate")
    return torch.nn.functional.avg_pool2d(y, (k * 2 + 1, k * 2 + 1), stride=(1, 1))


def test_one_guided_call_equals_the_hook(first_device: gpucore.Device) -> None:
    rng = np.random.default_rng(21)
    reference, cn = tiny_unet(), tiny_controlnet(UNET_TINY, seed=14)
    ours = UNet2DConditionModel(dict(reference.config), device=first_device)
    ours.load_state_dict(state_dict(reference))
    control_net = ControlNetModel(dict(cn.config), device=first_device)
    control_net.load_state_dict(state_dict(cn))
    height, width = 14, 10  # latents; the tiny VAE's factor is 2
    picture = rng.integers(0, 256, (2 * height, 2 * width, 3), dtype=np.uint8)
    x = rng.standard_normal((1, 4, height, width)).astype(np.float32)
    uncond, cond = (rng.standard_normal((1, 6, 32)).astype(np.float32) for _ in range(2))
    latent = rng.standard_normal((1, 4, height, width)).astype(np.float32) * 3
    encoded: list[np.ndarray] = []

    def encode(pixels: np.ndarray, shift: float = 0.0) -> np.ndarray:
        encoded.append(pixels)
        return latent + shift

    def run(shift: float) -> np.ndarray:
        unit = ControlUnit(control_net, picture, weight=0.7, resize_mode="Just Resize",
                           colorfix=ColorFix(3, 1.5))
        hook = colorfix_hook([unit], size=(2 * width, 2 * height),
                             encode=lambda p: encode(p, shift), scheduler_config=CONFIG)
        contexts = tuple(gpustd.asarray(c, device=first_device) for c in (uncond, cond))
        guided = GuidedUNet(lambda *a: unet_call(ours, *a), lambda step: contexts,
                            dtype=np.float32, control=Control([unit], total_steps=1),
                            colorfix=hook)
        got_uncond, got_cond = guided(x, 420.6, 0)
        return np.concatenate([got_uncond, got_cond])

    got = run(0.0)
    np.testing.assert_allclose(encoded[0], picture.transpose(2, 0, 1)[None] / 255 * 2 - 1,
                               atol=1e-6)
    # diffusers: the ControlNet's residuals at weight 0.7 (Balanced), the UNet, the hook
    xs, t = torch.from_numpy(np.concatenate([x, x])), torch.full((2,), 420.6)
    context = torch.from_numpy(np.concatenate([uncond, cond]))
    hint = torch.from_numpy(np.repeat(picture.transpose(2, 0, 1)[None] / 255.0, 2, 0)).float()
    with torch.no_grad():
        down, mid = cn(xs, t, context, hint, return_dict=False)
        h = reference(xs, t, context, down_block_additional_residuals=[d * 0.7 for d in down],
                      mid_block_additional_residual=mid * 0.7).sample.double()
    betas = torch.linspace(0.00085 ** 0.5, 0.012 ** 0.5, 1000, dtype=torch.float32) ** 2
    abar = torch.cumprod(1 - betas, 0).double()
    step, xt, k = 421, xs.double(), 3
    recip, recip_m1 = torch.sqrt(1.0 / abar)[step], torch.sqrt(1.0 / abar - 1)[step]
    x0_prd = recip * xt - recip_m1 * h
    x0 = x0_prd - blur(x0_prd, k) + blur(torch.from_numpy(latent).double().expand(2, -1, -1, -1),
                                         k)
    cond_mark = torch.tensor([0.0, 1.0], dtype=torch.float64)[:, None, None, None]
    neg = 1.5 * 0.01 * blur(x0, k) + (1 - 1.5 * 0.01) * x0
    x0 = cond_mark * x0 + (1 - cond_mark) * neg
    want = ((recip * xt - x0) / recip_m1) * 0.7 + h * 0.3
    assert_close(got, want.numpy(), tol=1e-3)
    # the control picture's latents matter
    assert np.abs(run(1.0) - got).max() > 0.1
