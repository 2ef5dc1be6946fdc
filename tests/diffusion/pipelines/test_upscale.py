"""Hires fix's upscalers against torch's F.interpolate (the WebUI's call) and Pillow."""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch", reason="test-only reference (extra: reference)")
import torch.nn.functional as F  # noqa: E402
from PIL import Image  # noqa: E402

from diffusion.upscalers.interpolation import (  # noqa: E402
    LATENT_UPSCALERS,
    HiresFix,
    upscale_image,
    upscale_latents,
)

pytestmark = pytest.mark.nodevice  # host logic: `pytest -m nodevice`


@pytest.mark.parametrize("upscaler", list(LATENT_UPSCALERS))
@pytest.mark.parametrize("size", [(13, 22), (9, 5), (7, 11)])  # up, down, mixed; odd sizes
def test_latent_upscalers_match_torch_interpolate(upscaler: str, size: tuple[int, int]) -> None:
    latents = np.random.default_rng(0).standard_normal((2, 4, 7, 11))
    mode, antialias = LATENT_UPSCALERS[upscaler]
    expected = F.interpolate(torch.from_numpy(latents), size=size, mode=mode,
                             antialias=antialias).numpy()
    np.testing.assert_allclose(upscale_latents(latents, size, upscaler), expected,
                               rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize(("upscaler", "resample"), [("Lanczos", Image.Resampling.LANCZOS),
                                                    ("Nearest", Image.Resampling.NEAREST),
                                                    ("None", Image.Resampling.LANCZOS)])
def test_image_upscalers_are_pillows(upscaler: str, resample: Image.Resampling) -> None:
    image = np.random.default_rng(1).integers(0, 256, (12, 20, 3), dtype=np.uint8)
    expected = np.asarray(Image.fromarray(image).resize((44, 24), resample=resample))
    np.testing.assert_array_equal(upscale_image(image, (44, 24), upscaler), expected)


def test_hires_settings_and_target_size() -> None:
    assert HiresFix(scale=1.5).target(512, 512) == (768, 768)
    assert HiresFix(scale=1.3).target(100, 64) == (128, 80)  # 130 -> 128, 83 -> 80
    assert HiresFix(resize=(1000, 600)).target(512, 512) == (1000, 600)
    with pytest.raises(ValueError, match=r"unknown hires upscaler 'ESRGAN'.*Latent"):
        HiresFix(upscaler="ESRGAN")
    with pytest.raises(ValueError, match="denoising strength"):
        HiresFix(denoise=0.0)
    with pytest.raises(ValueError, match="scale must be from 1 to 8"):
        HiresFix(scale=0.5)


@pytest.mark.parametrize(("first", "resize"), [((512, 512), (1000, 600)),
                                               ((512, 768), (1024, 1024)),
                                               ((640, 384), (768, 768)),
                                               ((512, 512), (768, 768))])
def test_hires_resize_of_another_aspect_crops_as_the_webui(first, resize) -> None:
    """Both hr_resize sides of another aspect ratio: the WebUI enlarges the latents to cover
    them and truncates the overflow around the centre, without stretching the picture."""
    from types import SimpleNamespace

    from diffusion.pipelines.sd.prepare import Pass, hires_latents

    (width, height), (x, y) = first, resize
    if width / height < x / y:  # the WebUI's hr_upscale_to_x/y and truncate_x/y
        to_x, to_y = x, x * height // width
    else:
        to_x, to_y = y * width // height, y
    tx, ty = (to_x - x) // 8, (to_y - y) // 8
    latents = np.random.default_rng(2).standard_normal((1, 4, height // 8, width // 8))
    samples = F.interpolate(torch.from_numpy(latents), size=(to_y // 8, to_x // 8),
                            mode="bilinear")
    want = samples[:, :, ty // 2:samples.shape[2] - (ty + 1) // 2,
                   tx // 2:samples.shape[3] - (tx + 1) // 2].numpy()
    r = Pass("", "", 1, 7.0, 0, width, height, 1, 1, 1.0, "cpu", "txt2img")
    start, second = hires_latents(SimpleNamespace(vae_scale_factor=8), r, latents,
                                  HiresFix(resize=resize))
    assert (second.width, second.height) == resize
    np.testing.assert_allclose(start, want, rtol=1e-10, atol=1e-12)
