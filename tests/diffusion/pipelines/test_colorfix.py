"""tile_colorfix / tile_colorfix+sharp's correction of a UNet call's noise prediction against
a torch reference typed from the ControlNet extension's scripts/hook.py (its blur,
predict_start_from_noise and predict_noise_from_start, and the colorfix post-processing)."""

from __future__ import annotations

import numpy as np
import pytest

from diffusion.pipelines.colorfix import ColorFix, box_blur, colorfix_prediction

torch = pytest.importorskip("torch")
pytestmark = pytest.mark.nodevice


def blur(x: torch.Tensor, k: int) -> torch.Tensor:  # hook.py's
    y = torch.nn.functional.pad(x, (k, k, k, k), mode="replicate")
    return torch.nn.functional.avg_pool2d(y, (k * 2 + 1, k * 2 + 1), stride=(1, 1))


def hook_colorfix(h: torch.Tensor, xt: torch.Tensor, t: float, latent: torch.Tensor,
                  abar: torch.Tensor, name: str, k: int, sharpness: float, weight: float,
                  cond_mark: torch.Tensor) -> torch.Tensor:
    step = torch.round(torch.tensor(t)).long()
    recip, recip_m1 = torch.sqrt(1.0 / abar)[step], torch.sqrt(1.0 / abar - 1)[step]
    x0_prd = recip * xt - recip_m1 * h
    x0 = x0_prd - blur(x0_prd, k) + blur(latent, k)
    if "+sharp" in name:
        detail_weight = sharpness * 0.01
        neg = detail_weight * blur(x0, k) + (1 - detail_weight) * x0
        x0 = cond_mark * x0 + (1 - cond_mark) * neg
    eps_prd = (recip * xt - x0) / recip_m1
    w = max(0.0, min(1.0, weight))
    return eps_prd * w + h * (1 - w)


@pytest.mark.parametrize("k", [0, 1, 3, 8])
def test_box_blur_is_the_extensions_blur(k: int) -> None:
    x = np.random.default_rng(k).standard_normal((2, 4, 7, 11))
    want = blur(torch.from_numpy(x), k).numpy()
    np.testing.assert_allclose(box_blur(x, k), want, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize(("name", "k", "sharpness", "weight", "t"), [
    ("tile_colorfix", 3, 1.0, 1.0, 731.4),
    ("tile_colorfix+sharp", 5, 1.7, 0.6, 20.6),
    ("tile_colorfix+sharp", 8, 0.0, 1.4, 999.0),
])
def test_colorfix_prediction_equals_the_hook(name: str, k: int, sharpness: float,
                                             weight: float, t: float) -> None:
    rng = np.random.default_rng(k)
    eps, xt = rng.standard_normal((2, 3, 4, 13, 9), dtype=np.float32)
    latent = rng.standard_normal((1, 4, 13, 9), dtype=np.float32)
    betas = np.linspace(0.00085 ** 0.5, 0.012 ** 0.5, 1000, dtype=np.float64) ** 2
    abar = np.cumprod(1 - betas)
    fix = ColorFix(k, sharpness if "+sharp" in name else None)
    got = colorfix_prediction(eps.astype(np.float64), xt.astype(np.float64), t, latent, abar,
                              fix, weight=weight, uncond_rows=1)
    mark = torch.tensor([0.0, 1.0, 1.0], dtype=torch.float64)[:, None, None, None]
    want = hook_colorfix(*(torch.from_numpy(a.astype(np.float64)) for a in (eps, xt)), t,
                         torch.from_numpy(latent.astype(np.float64)), torch.from_numpy(abar),
                         name, k, sharpness, weight, mark).numpy()
    np.testing.assert_allclose(got, want, rtol=1e-9, atol=1e-9)
    # the control picture's latents matter
    other = colorfix_prediction(eps.astype(np.float64), xt.astype(np.float64), t, latent + 1,
                                abar, fix, weight=weight, uncond_rows=1)
    assert np.abs(other - got).max() > 1e-3


def test_the_hook_picks_units_by_hires_pass_and_doubles_the_blur_in_the_second() -> None:
    from types import SimpleNamespace

    from diffusion.pipelines.colorfix import colorfix_hook

    config = {"beta_schedule": "scaled_linear", "beta_start": 0.00085, "beta_end": 0.012,
              "num_train_timesteps": 1000}
    picture = np.random.default_rng(1).integers(0, 256, (12, 16, 3), dtype=np.uint8)
    latent = np.random.default_rng(2).standard_normal((1, 4, 6, 8))

    def unit(fix: ColorFix | None, hr_option: str = "Both") -> SimpleNamespace:
        return SimpleNamespace(image=picture, weight=1.0, resize_mode="Just Resize",
                               hr_option=hr_option, colorfix=fix)

    units = [unit(ColorFix(3)), unit(None), unit(ColorFix(4), "Low res only")]
    assert colorfix_hook(units[1:2], size=(16, 12), encode=lambda p: latent,
                         scheduler_config=config) is None
    first = colorfix_hook(units, size=(16, 12), encode=lambda p: latent,
                          scheduler_config=config, hires_stage="first")
    second = colorfix_hook(units, size=(16, 12), encode=lambda p: latent,
                           scheduler_config=config, hires_stage="second")
    assert first is not None and second is not None
    assert [u.colorfix for u in first.units] == [ColorFix(3), ColorFix(4)]
    assert [u.colorfix for u in second.units] == [ColorFix(3)] and second.hires
    eps, xt = np.random.default_rng(3).standard_normal((2, 2, 4, 6, 8))
    inpainting_in = np.concatenate([xt, np.ones((2, 5, 6, 8))], axis=1)  # 9 channels
    want = colorfix_prediction(eps, xt, 300.0, latent, second.alphas_cumprod, ColorFix(6),
                               weight=1.0, uncond_rows=1)
    np.testing.assert_allclose(second(eps, inpainting_in, 300.0, uncond_rows=1), want)


def test_a_bad_variation_is_refused() -> None:
    with pytest.raises(ValueError, match="Variation must be a whole number"):
        ColorFix(-1)
