"""The WebUI's "Masked content" (diffusion.pipelines.masked_content) and its latent mask
(diffusion.imaging.latent_mask): the fill by hand and against a re-derivation of the WebUI's
masking.fill in floats (true Gaussians, premultiplied colours, the "over" operator: the
WebUI's Pillow layers are 8-bit and its blurs box-blur approximations, a few levels apart),
latent noise and latent nothing by hand. Host logic, no device."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image, ImageFilter, ImageOps

from diffusion.imaging import latent_mask, to_mask
from diffusion.noise.rng import make_generator
from diffusion.pipelines.masked_content import fill, latent_content, masked_content

pytestmark = pytest.mark.nodevice

# the blur radii and repeats of the WebUI's modules/masking.py fill (1.10), typed from its source
WEBUI_PASSES = [(256, 1), (64, 1), (16, 2), (4, 4), (2, 2), (0, 1)]


def _webui_fill(image: Image.Image, mask: Image.Image) -> Image.Image:
    """The WebUI's modules/masking.py `fill` (1.10), typed from its source."""
    image_mod = Image.new("RGBA", (image.width, image.height))
    image_masked = Image.new("RGBa", (image.width, image.height))
    image_masked.paste(image.convert("RGBA").convert("RGBa"),
                       mask=ImageOps.invert(mask.convert("L")))
    image_masked = image_masked.convert("RGBa")
    for radius, repeats in WEBUI_PASSES:
        blurred = image_masked.filter(ImageFilter.GaussianBlur(radius)).convert("RGBA")
        for _ in range(repeats):
            image_mod.alpha_composite(blurred)
    return image_mod.convert("RGB")


def _gaussian(values: np.ndarray, sigma: float) -> np.ndarray:
    """A true Gaussian blur of (H, W, C) floats along both sides, edges repeated (as Pillow's
    box blurs repeat them)."""
    if sigma == 0:
        return values
    reach = int(np.ceil(4 * sigma))
    offsets = np.arange(-reach, reach + 1)
    weights = np.exp(-offsets ** 2 / (2 * sigma ** 2))
    weights /= weights.sum()
    for axis in (0, 1):
        padding = [(0, 0)] * values.ndim
        padding[axis] = (reach, reach)
        padded = np.pad(values, padding, mode="edge")
        length = values.shape[axis]
        values = sum(w * np.take(padded, np.arange(i, i + length), axis=axis)
                     for i, w in enumerate(weights))
    return values


def _fill_in_floats(picture: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """masking.fill re-derived: the kept part (alpha 1 - mask) premultiplied, blurred at each
    radius, and laid over the canvas that many times with the "over" operator."""
    alpha = 1.0 - mask.astype(np.float64)[..., None] / 255
    layer = np.concatenate([picture / 255 * alpha, alpha], axis=-1)
    colour, cover = np.zeros(picture.shape), np.zeros(alpha.shape)
    for radius, times in WEBUI_PASSES:
        blurred = _gaussian(layer, radius)
        top_alpha = blurred[..., 3:]
        top = blurred[..., :3] / np.maximum(top_alpha, 1e-12)
        for _ in range(times):
            covered = top_alpha + cover * (1 - top_alpha)
            colour = (top * top_alpha + colour * cover * (1 - top_alpha)) / np.maximum(covered,
                                                                                      1e-12)
            cover = covered
    return colour * 255


def test_names_and_numbers() -> None:
    assert [masked_content(v) for v in ("fill", "Original", " latent noise", "LATENT NOTHING",
                                        0, 3, "2")] == [0, 1, 2, 3, 0, 3, 2]
    for bad in (4, -1, "noise", True, 1.0):
        with pytest.raises(ValueError, match=r"0 \(fill\), 1 \(original\), 2 \(latent noise\)"):
            masked_content(bad)


def test_fill_by_hand() -> None:
    """One colour around a hole fills it with that colour (within a few levels: where a
    narrow blur leaves a layer little alpha, its 8-bit premultiplied colour loses digits); what
    is not masked keeps its pixels, even beside a blurred edge; a mask white all over leaves
    black (nothing to spread, as in the WebUI); an all-black one the picture."""
    mask = Image.new("L", (40, 32))
    mask.paste(255, (10, 8, 30, 24))
    mask = mask.filter(ImageFilter.GaussianBlur(2))
    for colour in ((90, 160, 30), (255, 255, 255), (3, 3, 3)):
        off = np.abs(np.asarray(fill(Image.new("RGB", (40, 32), colour), mask), np.int16)
                     - colour)
        assert off.max() <= 6 and off.mean() < 0.5
    picture = np.random.default_rng(2).integers(0, 256, (32, 40, 3), dtype=np.uint8)
    filled = np.asarray(fill(Image.fromarray(picture), mask))
    kept = np.asarray(mask) == 0
    assert np.array_equal(filled[kept], picture[kept])
    assert not np.array_equal(filled[~kept], picture[~kept])
    assert np.asarray(fill(Image.fromarray(picture), Image.new("L", (40, 32), 255))).max() == 0
    assert np.array_equal(np.asarray(fill(Image.fromarray(picture), Image.new("L", (40, 32)))),
                          picture)


def test_fill_against_a_rederivation() -> None:
    """Two colours (red left, blue right, a yellow band on top) with a hole across their
    border, and noise: the fill is the float re-derivation's within a few levels; inside the
    hole the left side is red, the right side blue."""
    picture = np.zeros((48, 64, 3), np.uint8)
    picture[:, :32], picture[:, 32:], picture[:16] = (220, 40, 30), (20, 60, 200), (250, 250, 40)
    mask = Image.new("L", (64, 48))
    mask.paste(255, (20, 22, 44, 40))
    mask = mask.filter(ImageFilter.GaussianBlur(2))
    noise = np.random.default_rng(0).integers(0, 256, (48, 64, 3), dtype=np.uint8)
    for source in (picture, noise):
        ours = np.asarray(fill(Image.fromarray(source), mask), np.float64)
        difference = np.abs(ours - _fill_in_floats(source, np.asarray(mask)))
        assert difference.max() <= 8 and difference.mean() <= 1
    ours = np.asarray(fill(Image.fromarray(picture), mask), np.int16)
    assert np.abs(ours[32, 24] - (220, 40, 30)).max() <= 30
    assert np.abs(ours[32, 40] - (20, 60, 200)).max() <= 30


def test_fill_is_the_webuis_byte_for_byte() -> None:
    """Random pictures of odd sizes under soft and hard masks: every byte the WebUI's fill's."""
    rng = np.random.default_rng(31)
    for height, width in ((37, 53), (64, 29)):
        picture = Image.fromarray(rng.integers(0, 256, (height, width, 3), dtype=np.uint8))
        hard = Image.new("L", (width, height))
        hard.paste(255, (width // 4, height // 3, width - 5, height - 7))
        soft = Image.fromarray(rng.integers(0, 256, (height, width), dtype=np.uint8))
        for mask in (hard, hard.filter(ImageFilter.GaussianBlur(3)), soft):
            ours = np.asarray(fill(picture, mask))
            assert np.array_equal(ours, np.asarray(_webui_fill(picture, mask)))
            assert not np.array_equal(ours, np.asarray(picture))


def test_latent_noise_and_nothing_by_hand() -> None:
    """2: image k's seed's first draw where the latent mask is 1; 3: zeros there; 0 and 1
    leave the latents alone."""
    latents = np.ones((2, 4, 3, 5))
    repaint = np.zeros((1, 1, 3, 5))
    repaint[..., 1:, 2:] = 1
    where = np.broadcast_to(repaint == 1, latents.shape)
    noisy = latent_content(latents, repaint, 2, rng="torch", seeds=[7, 8])
    for k, seed in enumerate((7, 8)):
        want = make_generator("torch", seed).standard_normal((4, 3, 5))
        assert np.array_equal(noisy[k][where[k]], want[where[k]])
    assert np.array_equal(noisy[~where], latents[~where])
    nothing = latent_content(latents, repaint, 3, rng="numpy", seeds=[7, 8])
    assert not nothing[where].any() and np.array_equal(nothing[~where], latents[~where])
    for content in (0, 1):
        assert latent_content(latents, repaint, content, rng="numpy", seeds=[7, 8]) is latents


def test_the_latent_mask_shrinks_the_blurred_mask_then_rounds() -> None:
    """The WebUI shrinks its (blurred) mask to latent size and rounds: a 64x64 mask of columns
    130, 130, 130, 0 over and over averages 97.5 / 255 = 0.38 on every latent pixel, none of
    them repainted; rounding each pixel first (as before) made three in four of them white,
    every latent pixel repainted."""
    row = np.tile(np.array([130, 130, 130, 0], np.uint8), 16)
    mask = Image.fromarray(np.tile(row, (64, 1)))
    assert not latent_mask(mask, (8, 8)).any()
    rounded_first = to_mask(mask, 64, 64)[0, 0]
    assert latent_mask(Image.fromarray((rounded_first * 255).astype(np.uint8)), (8, 8)).all()
    half = Image.new("L", (64, 64))
    half.paste(255, (0, 0, 32, 64))  # a hard edge on a latent border: its 4 columns
    assert np.array_equal(latent_mask(half, (8, 8))[0, 0],
                          np.repeat([[1, 1, 1, 1, 0, 0, 0, 0]], 8, 0))
