"""The WebUI's "Inpaint area: Only masked" (`inpaint_full_res`): the part of the picture around
the mask is drawn at the full processing size and pasted back, so a small repaint gets every
pixel of width x height instead of its share of the whole picture.

    request, area = only_masked(request, width, height)    # area None: the whole picture
    images = generate(request)                            # a normal inpaint of width x height
    images = area.paste(images, original_request)         # back into the picture

(diffusion.pipelines.inpaint_plan runs it in the WebUI's order: after the mask's blur, before
the masked content.)

The geometry is the WebUI's (modules/masking.py get_crop_region_v2 and expand_crop_region,
modules/images.py resize_image, processing.py StableDiffusionProcessingImg2Img.init and
apply_overlay):
1. the region: the bounding box of the mask's non-black pixels (after its blur), grown by the
   padding on every side, within the picture;
2. grown along one side to the processing size's aspect ratio, shifted to stay inside the
   picture (where the picture is too small for that, cut at its edge);
3. the picture and the mask cut to it and fitted to width x height (resize mode 2, resize
   and fill), then inpainted as usual; control maps likewise, as the ControlNet extension
   crops its pictures;
4. each result fitted back to the region (mode 1) and laid there, the original laid over it
   by the blurred mask (imaging.overlay_original with paste_to).
A mask with no white pixel leaves nothing to crop to: the WebUI then redraws the whole
picture as img2img ("Unable to perform Inpaint Only mask because mask is blank, switch to
img2img mode"), and so does this, with a warning.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, replace
from typing import Any

import numpy as np

from ..imaging import fit_picture, mask_picture, overlay_original, rgb_picture
from ..preprocessors.resize import RESIZE_MODES, fit_map
from .control import ControlUnit
from .request import GenerationRequest

__all__ = ["Box", "MaskedArea", "crop_region", "expand_crop_region", "only_masked"]

Box = tuple[int, int, int, int]  # (x1, y1, x2, y2), x2 and y2 past the last pixel: PIL's crop


def crop_region(mask: Any, padding: int) -> Box | None:
    """The bounding box of the non-black pixels of an 'L' picture, grown by `padding` pixels
    on every side within the picture; None for an all-black one (the WebUI's
    get_crop_region_v2)."""
    box = mask.getbbox()
    if box is None:
        return None
    x1, y1, x2, y2 = box
    return (max(x1 - padding, 0), max(y1 - padding, 0), min(x2 + padding, mask.width),
            min(y2 + padding, mask.height))


def _grow(start: int, stop: int, more: int, limit: int) -> tuple[int, int]:
    """[start, stop) grown by `more` (half before, the rest after), then shifted back inside
    [0, limit) where it left it, and cut at `limit` where it is longer."""
    start, stop = start - more // 2, stop + more - more // 2
    if stop >= limit:
        start, stop = start - (stop - limit), limit
    if start < 0:
        start, stop = 0, stop - start
    return start, min(stop, limit)


def expand_crop_region(box: Box, width: int, height: int, image_width: int,
                       image_height: int) -> Box:
    """`box` grown along its short side to the aspect ratio of width x height, inside an
    image_width x image_height picture (the WebUI's expand_crop_region: a 128x32 region to be
    drawn at 512x512 becomes 128x128)."""
    x1, y1, x2, y2 = box
    ratio = width / height  # the same float steps as the WebUI, so that int() cuts alike
    if (x2 - x1) / (y2 - y1) > ratio:
        y1, y2 = _grow(y1, y2, int((x2 - x1) / ratio - (y2 - y1)), image_height)
    else:
        x1, x2 = _grow(x1, x2, int((y2 - y1) * ratio - (x2 - x1)), image_width)
    return x1, y1, x2, y2


@dataclass(frozen=True)
class MaskedArea:
    """Where an "Only masked" inpaint draws: `box` of the picture, drawn at width x height,
    found with `padding` (written to the infotext)."""

    box: Box
    width: int
    height: int
    padding: int

    @classmethod
    def find(cls, mask: Any, padding: int, width: int, height: int) -> MaskedArea | None:
        """The area of an 'L' mask (the picture's size) for a width x height inpaint; None
        when the mask is all black."""
        box = crop_region(mask, padding)
        if box is None:
            return None
        return cls(expand_crop_region(box, width, height, mask.width, mask.height), width,
                   height, padding)

    @property
    def paste_to(self) -> tuple[int, int, int, int]:
        """(x, y, width, height) of the box, as the WebUI's paste_to."""
        x1, y1, x2, y2 = self.box
        return x1, y1, x2 - x1, y2 - y1

    @property
    def settings(self) -> dict[str, Any]:
        """The infotext's "Inpaint area: Only masked" and "Masked area padding"."""
        return {"inpaint_area": "Only masked", "inpaint_full_res_padding": self.padding}

    def crop(self, picture: Any) -> Any:
        """The box of a PIL picture at width x height (resize mode 2)."""
        return fit_picture(picture.crop(self.box), self.width, self.height, 2)

    def crop_unit(self, unit: Any, size: tuple[int, int]) -> Any:
        """A ControlNet / T2I-Adapter unit whose map covers the picture (of `size`) with the
        map's part in the box instead: the map fitted to the picture by the unit's resize
        mode, cut and fitted to width x height as the extension fits its cropped pictures
        (resize and fill). Other units (IP-Adapters, maps given as floats) as they are."""
        image = getattr(unit, "image", None)
        if not (isinstance(unit, ControlUnit) and isinstance(image, np.ndarray)
                and image.dtype == np.uint8 and image.ndim == 3):
            return unit
        x1, y1, x2, y2 = self.box
        whole = fit_map(image, *size, unit.resize_mode)
        return replace(unit, image=fit_map(np.ascontiguousarray(whole[y1:y2, x1:x2]),
                                           self.width, self.height, RESIZE_MODES[2]))

    def paste(self, images: list[np.ndarray], request: GenerationRequest) -> list[np.ndarray]:
        """Results of the cropped inpaint laid into `request`'s picture (the request as given,
        before only_masked) through its mask (stretched to the picture where its size
        differs)."""
        return overlay_original(images, request.init_image, request.mask,
                                paste_to=self.paste_to)


def only_masked(request: GenerationRequest, width: int,
                height: int) -> tuple[GenerationRequest, MaskedArea | None]:
    """`request` as it is drawn at width x height, and its area: with `inpaint_full_res` and
    a mask, the picture, mask and control maps cut to the area around the mask; otherwise
    the request as it is and None. A blank mask: the whole picture, all of it repainted (an
    all-white mask: img2img, as the WebUI switches to), with a warning."""
    if not request.inpaint_full_res or request.mask is None:
        return request, None
    from PIL import Image

    picture, mask = rgb_picture(request.init_image), mask_picture(request.mask)
    if mask.size != picture.size:  # stretched to the picture, as the WebUI fits its overlay
        mask = mask.resize(picture.size, Image.Resampling.LANCZOS)
    area = MaskedArea.find(mask, int(request.inpaint_full_res_padding), width, height)
    if area is None:
        warnings.warn("inpaint_full_res (Inpaint area: Only masked): the mask is blank, "
                      "nothing to crop to; the whole picture is redrawn as img2img, as the "
                      "WebUI does", stacklevel=3)
        return replace(request, mask=Image.new("L", mask.size, 255),
                       inpaint_full_res=False), None
    control = tuple(area.crop_unit(unit, picture.size) for unit in request.control)
    return replace(request, init_image=area.crop(picture), mask=area.crop(mask),
                   control=control, inpaint_full_res=False), area
