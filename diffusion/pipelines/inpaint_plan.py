"""An img2img / inpaint request made ready for sampling in the WebUI's order, and its results
laid back into the picture (processing.py: StableDiffusionProcessingImg2Img.init, then
apply_overlay):

1. the mask inverted ("Mask mode: Inpaint not masked", `repainted`) and blurred ("Mask blur",
   diffusion.pipelines.mask_blur), at the size it was given;
2. "Inpaint area: Only masked": the part around the blurred mask cut out and fitted to
   width x height (diffusion.pipelines.inpaint_area); otherwise the picture and the mask
   fitted to width x height by the resize mode (imaging.fit_picture), or with resize mode 3
   (latent upscale: img2img, or a mask "Only masked" found blank, which the WebUI redraws as
   img2img) the picture left at its size for prepare.InpaintInputs;
3. "Masked content: fill": the masked part of that picture painted over from around it
   (diffusion.pipelines.masked_content); "latent noise" and "latent nothing" act later, on the
   init latents (prepare.InpaintInputs.start);
4. after decoding: the drawn part pasted into the picture given ("Only masked"), or the
   fitted original laid over the results outside the mask (imaging.overlay_original).

    plan = InpaintPlan.make(request, width, height)
    images = draw(plan.request)                    # width x height, as an ordinary inpaint
    images = plan.finish(images, overlay=True)     # the WebUI's pictures
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any, TypedDict

import numpy as np

from ..imaging import fit_picture, mask_picture, overlay_original, rgb_picture
from .inpaint_area import MaskedArea, only_masked
from .mask_blur import blur_mask
from .masked_content import MASKED_CONTENT, fill
from .request import GenerationRequest

__all__ = ["InpaintPlan", "blur_sides", "repainted"]


def blur_sides(request: GenerationRequest) -> tuple[int, int]:
    """The request's mask blur as (x, y) pixels."""
    blur = request.mask_blur
    x, y = blur if isinstance(blur, (tuple, list)) else (blur, blur)
    return int(x), int(y)


def repainted(request: GenerationRequest) -> Any:
    """The request's mask as the 'L' picture of what is repainted (white): inverted for the
    WebUI's "Inpaint not masked" (`mask_invert`), as the WebUI inverts it before the blur."""
    from PIL import ImageOps

    mask = mask_picture(request.mask)
    return ImageOps.invert(mask) if request.mask_invert else mask


class _Done(TypedDict, total=False):
    """The request's settings the plan has carried out, as the pass must then see them."""

    mask_blur: int
    resize_mode: int
    inpaint_full_res: bool
    inpainting_fill: int


@dataclass(frozen=True)
class InpaintPlan:
    """`request` as it is drawn: at width x height, its picture and mask fitted or cut out, the
    mask inverted and blurred and the picture filled (so mask_invert off, mask_blur 0,
    resize_mode 0, inpaint_full_res off and inpainting_fill 1, "original", unless latent noise
    or latent nothing is left for the latents, or resize mode 3's resize of the latents of a
    picture of another size); `settings`: the infotext's Mask mode, Mask blur, Inpaint area,
    Masked area padding and Masked content where they apply; `area`: where "Only masked"
    draws; `laid_back`: the request whose picture and blurred mask the results go back into
    (None: they are the pictures)."""

    request: GenerationRequest
    settings: dict[str, Any] = field(default_factory=dict)
    area: MaskedArea | None = None
    laid_back: GenerationRequest | None = None

    @classmethod
    def make(cls, request: GenerationRequest, width: int, height: int) -> InpaintPlan:
        """The plan of `request` drawn at width x height (txt2img: the request as it is)."""
        if request.init_image is None:
            return cls(request)
        done = _Done(mask_blur=0, resize_mode=0, inpaint_full_res=False)
        settings: dict[str, Any] = {}
        if request.mask is not None:  # 1. inverted and blurred, written as the WebUI writes
            if request.mask_invert:
                settings["mask_mode"] = "Inpaint not masked"
            blur_x, blur_y = blur_sides(request)
            if blur_x == blur_y and blur_x > 0:  # (x = y)
                settings["mask_blur"] = blur_x
            request = replace(request, mask=blur_mask(repainted(request), blur_x, blur_y),
                              mask_invert=False)
        # 2. "Only masked", or the whole picture fitted (a blank mask: redrawn as img2img)
        drawn, area = only_masked(request, width, height)
        if area is not None:
            settings.update(area.settings)
            laid_back: GenerationRequest | None = request
        else:
            picture, mode = rgb_picture(drawn.init_image), request.resize_mode
            if mode == 3 and picture.size == (width, height):
                mode = 0  # latents of the size wanted: nothing to resize
            # "Only masked" found the mask blank: the WebUI drops it, img2img in any mode
            blank = request.inpaint_full_res and request.mask is not None
            if mode == 3 and drawn.mask is not None and not blank:
                raise ValueError(
                    f"resize_mode 3 (just resize, latent upscale) resizes the latents of the "
                    f"{picture.width}x{picture.height} init image, not the picture, so the "
                    f"mask and the original cannot be laid back over the {width}x{height} "
                    "results (the WebUI fails there too); with a mask give resize_mode 0, 1 "
                    f"or 2, or an init image of {width}x{height}")
            # mode 3 keeps the picture's size; its mask is then a blank one's all white
            drawn = replace(drawn, init_image=picture if mode == 3 else fit_picture(
                                picture, width, height, mode),
                            mask=None if drawn.mask is None else fit_picture(
                                mask_picture(drawn.mask), width, height, mode % 3))
            done["resize_mode"] = mode if mode == 3 else 0  # 3: left for the latents
            laid_back = None if drawn.mask is None or blank else drawn
        # 3. the masked content, where a mask says what to repaint
        content = request.inpainting_fill if laid_back is not None else 1
        if content != 1:
            settings["masked_content"] = MASKED_CONTENT[content]
        if content == 0:
            drawn = replace(drawn, init_image=fill(drawn.init_image, drawn.mask))
        done["inpainting_fill"] = content if content in (2, 3) else 1
        return cls(replace(drawn, **done), settings, area, laid_back)

    def finish(self, images: list[np.ndarray], *, overlay: bool = True) -> list[np.ndarray]:
        """The results (H, W, 3 uint8 at width x height) as the WebUI gives them: "Only
        masked" pasted into the picture given; otherwise, with `overlay` (off for diffusers'
        own pictures), the original laid over them outside the mask."""
        if self.area is not None:
            assert self.laid_back is not None  # make() lays "Only masked" back into the request
            return self.area.paste(images, self.laid_back)
        if overlay and self.laid_back is not None:
            return overlay_original(images, self.laid_back.init_image, self.laid_back.mask)
        return images
