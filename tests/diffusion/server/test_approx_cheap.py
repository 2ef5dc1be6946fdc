"""Approx cheap by each family's latent space: the preview is a numpy einsum of the first latent
with the published latent-to-RGB matrix (+ its bias; FLUX.2's after its 2x2 patches are put
back), in the WebUI's bytes, and differs from SD's; the server's observer draws it with the
latent space the generation hands it. Host logic only, random latents of odd sizes."""

from __future__ import annotations

import base64
import io
import threading
from typing import Any

import numpy as np
import pytest
from PIL import Image

from diffusion.models.latent_rgb import LATENT_RGB, cheap_picture
from diffusion.server.jobs.slots import Slot, SlotObserver
from diffusion.server.previews import Previews

pytestmark = pytest.mark.nodevice

# (rows, first row, last row, bias) as their sources print them: the WebUI's
# sd_vae_approx.cheap_approximation (SD 1/2, SDXL, SD3), Forge's FLUX latent format,
# ComfyUI's Flux2, Wan21 and Wan22 latent formats (FLUX.2; Qwen-Image; Bria FIBO)
PUBLISHED: dict[str, tuple[int, list[float], list[float], list[float] | None]] = {
    "sd1": (4, [0.298, 0.207, 0.208], [-0.184, -0.271, -0.473], None),
    "sdxl": (4, [0.3448, 0.4168, 0.4395], [-0.3730, -0.2499, -0.2088], None),
    "sd3": (16, [-0.0645, 0.0177, 0.1052], [-0.1418, -0.1457, -0.1259], None),
    "flux": (16, [-0.0404, 0.0159, 0.0609], [-0.1273, -0.0932, -0.0680], None),
    "flux2": (32, [0.0058, 0.0113, 0.0073], [-0.0111, -0.0460, -0.0614],
              [-0.0329, -0.0718, -0.0851]),
    "qwen-image": (16, [-0.1299, -0.1692, 0.2932], [0.1984, 0.0913, 0.1861],
                   [-0.1835, -0.0868, -0.3360]),
    "wan2.2": (48, [0.0119, 0.0103, 0.0046], [-0.0837, 0.0168, 0.0055],
               [0.0317, -0.0878, -0.1388]),
}


def _webui_bytes(rgb: np.ndarray) -> np.ndarray:
    """(3, h, w) float32 -> (h, w, 3) uint8 as sd_samplers_common.single_sample_to_image."""
    half = np.float32(0.5)
    return (np.clip(rgb * half + half, 0, 1) * np.float32(255)).transpose(1, 2, 0).astype(
        np.uint8)


def _unpatch(latent: np.ndarray) -> np.ndarray:
    """(4C, h, w) -> (C, 2h, 2w): channel 4c + 2i + j is pixel (2y + i, 2x + j) of channel c."""
    out = np.empty((latent.shape[0] // 4, 2 * latent.shape[1], 2 * latent.shape[2]),
                   latent.dtype)
    for i in range(2):
        for j in range(2):
            out[:, i::2, j::2] = latent[2 * i + j::4]
    return out


def _latents(space: str, seed: int = 0) -> np.ndarray:
    """Random latents (2, C, 5, 7) scaled so the preview spans and clips the byte range."""
    rows = PUBLISHED[space][0]
    patch = 2 if space == "flux2" else 1
    factors = np.asarray(LATENT_RGB[space].factors)
    rng = np.random.default_rng(seed)
    scale = 1.5 / np.linalg.norm(factors, axis=0).max()
    return (rng.standard_normal((2, rows * patch * patch, 5, 7)) * scale).astype(np.float32)


@pytest.mark.parametrize("space", sorted(PUBLISHED))
def test_each_family_previews_by_its_published_matrix(space: str) -> None:
    rows, first, last, bias = PUBLISHED[space]
    rgb = LATENT_RGB[space]
    factors = np.asarray(rgb.factors, np.float32)
    assert factors.shape == (rows, 3)
    np.testing.assert_array_equal(factors[[0, -1]], np.float32([first, last]))
    assert rgb.bias == (None if bias is None else tuple(bias))
    latents = _latents(space)
    latent = _unpatch(latents[0]) if space == "flux2" else latents[0]
    expected = np.einsum("lxy,lr->rxy", latent, factors)
    if bias is not None:
        expected = expected + np.float32(bias)[:, None, None]
    picture = cheap_picture(latents, space)
    np.testing.assert_array_equal(picture, _webui_bytes(expected))
    assert picture.shape == (*latent.shape[1:], 3)
    # the latents matter, past the clip at both ends and between
    assert (picture == 0).any() and (picture == 255).any() and (
        (picture > 20) & (picture < 235)).mean() > 0.3
    if space != "sd1":  # another family's matrix: not SD 1.x's picture of the same latents
        sd = cheap_picture(latents[:, :4], "sd1")
        assert picture.shape != sd.shape or np.abs(picture.astype(int) - sd).mean() > 10


def test_shared_vaes_share_a_matrix_and_others_draw_as_sd() -> None:
    assert LATENT_RGB["sd2"] is LATENT_RGB["sd1"] and LATENT_RGB["chroma"] is LATENT_RGB["flux"]
    latents = _latents("sd3")
    # no matrix for the space, or latents its matrix does not read: SD 1.x's, four channels
    for space in ("", "video-space", "sdxl"):
        np.testing.assert_array_equal(cheap_picture(latents, space),
                                      cheap_picture(latents[:, :4], "sd1"))


def test_the_server_draws_approx_cheap_by_the_models_latent_space() -> None:
    slot = Slot(0, None)
    observer = SlotObserver(threading.Lock(), slot, Previews())  # the default, Approx cheap
    observer.on_begin(lambda latents: [], "flux")
    x0 = _latents("flux", seed=1)[:1]
    observer.on_denoised(x0)
    assert observer.step(1, 4, x0 + 3.0)  # the step's latents: not what is shown
    np.testing.assert_array_equal(slot.picture, cheap_picture(x0, "flux"))
    preview = slot.preview_of(dict(slot.state, sampling_step=1), slot.latents, iter([7]))
    assert preview is not None and preview[0] == 7
    shown: Any = Image.open(io.BytesIO(base64.b64decode(preview[1])))
    np.testing.assert_array_equal(np.asarray(shown), slot.picture)
