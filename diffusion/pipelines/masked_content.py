"""The WebUI's "Masked content" (`inpainting_fill`): what the part to repaint starts from.

    0 fill            the masked part of the picture painted over with the colours around it,
                      before the picture is encoded (`fill`, the WebUI's masking.fill)
    1 original        the picture as it is (the WebUI page's default; its API's is fill)
    2 latent noise    the init latents replaced by the seed's noise where the latent mask is
    3 latent nothing  ... by zeros there (`latent_content`)

The WebUI (processing.py, StableDiffusionProcessingImg2Img.init) fills the picture once it is
at width x height (fitted, or cut out for "Only masked"), with the blurred mask at that size,
and puts noise or zeros in the init latents through the same latent mask the sampling keeps
the rest with. It writes "Masked content: fill / latent noise / latent nothing" to the
infotext, and nothing for "original".
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from ..noise.image_noise import ImageNoise

__all__ = ["MASKED_CONTENT", "fill", "latent_content", "masked_content"]

MASKED_CONTENT = ("fill", "original", "latent noise", "latent nothing")  # by inpainting_fill

# The fill's blurs, widest first, and how often each is laid on: the wide ones reach the middle
# of a large hole, the narrow ones give its edge the colours right beside it; radius 0 lays the
# picture itself on last, so nothing outside the mask changes.
FILL_PASSES = ((256, 1), (64, 1), (16, 2), (4, 4), (2, 2), (0, 1))


def masked_content(value: Any) -> int:
    """`inpainting_fill` from its number (0-3) or the WebUI's name ("fill", "original",
    "latent noise", "latent nothing", any case); ValueError naming both otherwise."""
    if isinstance(value, str):
        text = value.strip().lower()
        if text in MASKED_CONTENT:
            return MASKED_CONTENT.index(text)
        if text.isdigit():
            value = int(text)
    if isinstance(value, (int, np.integer)) and not isinstance(value, bool) and (
            0 <= value < len(MASKED_CONTENT)):
        return int(value)
    choices = ", ".join(f"{i} ({name})" for i, name in enumerate(MASKED_CONTENT))
    raise ValueError(f"inpainting_fill (masked content) must be one of {choices}; got "
                     f"{value!r}")


def fill(picture: Any, mask: Any) -> Any:
    """The WebUI's "fill": an RGB picture with its masked part (an 'L' mask of its size,
    white = repaint, grays blend) painted over with the colours around it; unmasked pixels
    keep their values.

    The kept part, as an RGBA layer whose alpha is 255 - mask, is blurred at each of
    FILL_PASSES' radii in premultiplied form (so the hole's black does not darken what spreads
    into it) and laid over a transparent canvas again and again, widest first: each pixel of
    the hole ends with the colours of the nearest kept pixels over those further away. A mask
    white all over leaves nothing to spread: black, as in the WebUI."""
    from PIL import Image, ImageFilter, ImageOps

    picture = picture.convert("RGB")
    kept = Image.new("RGBa", picture.size)
    kept.paste(picture.convert("RGBA").convert("RGBa"), mask=ImageOps.invert(mask.convert("L")))
    canvas = Image.new("RGBA", picture.size)
    for radius, times in FILL_PASSES:
        layer = kept.filter(ImageFilter.GaussianBlur(radius)).convert("RGBA")
        for _ in range(times):
            canvas.alpha_composite(layer)
    return canvas.convert("RGB")


def latent_content(latents: np.ndarray, repaint: np.ndarray, content: int, *, rng: str,
                   seeds: Sequence[int]) -> np.ndarray:
    """Init latents (B, C, h, w) with "latent noise" (content 2: image k's seed's noise, the
    first draw of a fresh generator, as the WebUI's create_random_tensors) or "latent nothing"
    (3: zeros) where `repaint` (1, 1, h, w; the WebUI's latent mask, rounded unless its
    mask_round is off) is, blended by its levels; other contents leave them as they are."""
    if content == 2:
        noise = ImageNoise(rng, list(seeds), latents.shape[1:]).first()
        return latents * (1.0 - repaint) + noise * repaint
    if content == 3:
        return latents * (1.0 - repaint)
    return latents
