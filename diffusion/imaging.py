"""Pictures as the pipelines, the server and the CLI take and give them: init images and masks
from PIL or arrays (16-bit ones too), fitted by the WebUI's resize modes, at latent size, laid
back over the original after inpainting, and decoder output as 8-bit pictures. numpy and Pillow
only: every layer of diffusion may use it.
"""

from __future__ import annotations

from typing import Any

import numpy as np

__all__ = ["condition_picture", "eight_bit", "fit_picture", "latent_mask", "mask_picture",
           "overlay_original", "rgb_picture", "see_through_picture", "to_mask", "to_unit_image"]


def eight_bit(image: Any) -> Any:
    """A PIL image of 16- or 32-bit integers (a 16-bit PNG, such as a depth map, opens as
    I;16) scaled to 8 bits ("L"): Pillow's convert() to L or RGB clips every value over 255,
    which turns such a picture white. Other images are returned as they are."""
    from PIL import Image

    if not image.mode.startswith("I"):
        return image
    values = np.asarray(image)
    if image.mode == "I" and values.size and values.max() <= 255:  # 8-bit values in 32 bits
        return Image.fromarray(values.clip(0, 255).astype(np.uint8))
    return Image.fromarray((values.clip(0, 65535).astype(np.uint32) >> 8).astype(np.uint8))


def _check_not_empty(name: str, image: Any) -> None:
    """Pillow resizes a 0-pixel image to a black one without a word."""
    if 0 in image.size:
        raise ValueError(f"{name} is empty ({image.size[0]}x{image.size[1]} pixels): give a "
                         "picture with pixels")


def _eight_bit_picture(image: Any, name: str) -> Any:
    """A picture (PIL, or uint8 HxWx3 / HxWx4) as an 8-bit PIL image, as it is; ValueError
    naming it (`name`) for another array or an empty picture."""
    from PIL import Image

    if not isinstance(image, Image.Image):
        array = np.asarray(image)
        if array.dtype != np.uint8 or array.ndim != 3 or array.shape[2] not in (3, 4):
            raise ValueError(f"{name} is a PIL image or uint8 HxWx3 / HxWx4; got "
                             f"{array.dtype} {array.shape}")
        image = Image.fromarray(array)
    _check_not_empty(name, image)
    return eight_bit(image)


def rgb_picture(image: Any) -> Any:
    """An init image (PIL, or HxWx3 / HxWx4 uint8 array) as an RGB PIL picture, an RGBA one's
    transparency flattened over white as the WebUI flattens init images
    (`images.flatten(img, opts.img2img_background_color)`, white by default), so a
    transparent pixel's hidden colour never reaches the model."""
    from PIL import Image

    image = _eight_bit_picture(image, "init image")
    if image.mode == "RGBA":
        white = Image.new("RGB", image.size, (255, 255, 255))
        white.paste(image, mask=image.getchannel("A"))
        return white
    return image.convert("RGB")


def see_through_picture(image: Any, name: str = "a condition picture") -> Any:
    """A picture (PIL, or uint8 HxWx3 / HxWx4) as an 8-bit PIL image that keeps its
    transparency: RGBA where it has any (an alpha band, or a palette's or colour key's
    transparent entry), RGB otherwise. Resized so, its colours are weighted by alpha (Pillow
    premultiplies RGBA), as diffusers' VaeImageProcessor.resize resizes an RGBA picture before
    the image processor composites it; `name` says what it is in an error."""
    image = _eight_bit_picture(image, name)
    see_through = "A" in image.getbands() or image.info.get("transparency") is not None
    return image.convert("RGBA" if see_through else "RGB")


def condition_picture(image: Any, name: str = "a condition picture") -> Any:
    """A picture a vision tower reads (PIL, or uint8 HxWx3 / HxWx4) as an RGB PIL image, any
    transparency composited over white, so a transparent pixel's hidden colour never shows:
    transformers' `convert_to_rgb` in its image processors (Pillow's alpha_composite over
    white) and diffusers' QwenImage21Pipeline (Pillow's paste over white, the same bytes)."""
    from PIL import Image

    image = see_through_picture(image, name)
    if image.mode == "RGB":
        return image
    white = Image.new("RGB", image.size, (255, 255, 255))
    white.paste(image, mask=image.getchannel("A"))
    return white


def to_unit_image(image: Any, width: int, height: int) -> np.ndarray:
    """An RGB image (PIL, or HxWx3 uint8 array) resized to (height, width), as
    (1, 3, H, W) float32 in [-1, 1]."""
    from PIL import Image

    image = rgb_picture(image)
    if image.size != (width, height):
        image = image.resize((width, height), Image.Resampling.LANCZOS)
    pixels = np.asarray(image, np.float32) / 127.5 - 1.0
    return pixels.transpose(2, 0, 1)[None]


def mask_picture(mask: Any) -> Any:
    """A mask (PIL / array; white = repaint) as an 'L' picture: an array's values above half
    are white, the rest black; a picture keeps its grays (a blurred edge)."""
    from PIL import Image

    if not isinstance(mask, Image.Image):
        array = np.asarray(mask)
        if array.ndim == 3:
            array = array[..., 0]
        if array.ndim != 2:
            raise ValueError(f"mask must be a 2-D image, got shape {array.shape}")
        mask = Image.fromarray((array > (0.5 if array.dtype != np.uint8 else 127)).astype(
            np.uint8) * 255)
    _check_not_empty("mask", mask)
    return eight_bit(mask).convert("L")


def to_mask(mask: Any, width: int, height: int, *, rounded: bool = True) -> np.ndarray:
    """A mask (PIL / array; white = repaint) as (1, 1, H, W) float32: 0 and 1 (`rounded`, as
    the WebUI's inpainting conditioning rounds it), else its levels / 255."""
    from PIL import Image

    mask = mask_picture(mask)
    if mask.size != (width, height):
        mask = mask.resize((width, height), Image.Resampling.NEAREST)
    values = np.asarray(mask, np.float32) / 255
    return (np.round(values) if rounded else values)[None, None]


def latent_mask(mask: Any, size: tuple[int, int], *, rounded: bool = True) -> np.ndarray:
    """The repaint mask at latent size (h, w) as (1, 1, h, w), as the WebUI makes it (its
    latmask): the mask picture with its blurred edge (mask_picture) shrunk by Pillow's
    default (bicubic) resize, then rounded to 0 and 1 (`rounded`: its mask_round), so an edge
    counts where it is more than half white over the latent pixel's patch, not where most of
    its pixels are."""
    small = mask_picture(mask).convert("RGB").resize((size[1], size[0]))
    values = np.asarray(small, np.float32)[..., 0] / 255
    return (np.around(values) if rounded else values)[None, None]


def fit_picture(image: Any, width: int, height: int, mode: int) -> Any:
    """A PIL picture at width x height by the WebUI's resize mode (modules/images.py
    resize_image, Lanczos): 0 stretched; 1 scaled to cover, the middle kept (crop and resize);
    2 scaled to fit inside, the bands left filled by stretching its outer rows or columns
    (resize and fill). diffusers: VaeImageProcessor.resize(resize_mode="default" / "crop" /
    "fill")."""
    from PIL import Image

    lanczos = Image.Resampling.LANCZOS
    if mode == 0:
        return image.resize((width, height), lanczos)
    ratio, own = width / height, image.width / image.height
    by_width = ratio > own if mode == 1 else ratio < own  # the side that meets the target's
    src_w = width if by_width else image.width * height // image.height
    src_h = image.height * width // image.width if by_width else height
    resized = image.resize((src_w, src_h), lanczos)
    out = Image.new(image.mode, (width, height))
    left, top = width // 2 - src_w // 2, height // 2 - src_h // 2
    out.paste(resized, (left, top))
    # mode 2's bands: its edge row / column stretched (Pillow's default resampling, as the
    # WebUI's); none of 0 pixels, which Pillow cannot make (the WebUI would fail there)
    if mode == 2 and by_width and top > 0:
        out.paste(resized.resize((width, top), box=(0, 0, width, 0)), (0, 0))
        out.paste(resized.resize((width, top), box=(0, src_h, width, src_h)), (0, top + src_h))
    elif mode == 2 and ratio != own and left > 0:
        out.paste(resized.resize((left, height), box=(0, 0, 0, height)), (0, 0))
        out.paste(resized.resize((left, height), box=(src_w, 0, src_w, height)),
                  (left + src_w, 0))
    return out


def overlay_original(images: list[np.ndarray], init_image: Any, mask: Any, *,
                     paste_to: tuple[int, int, int, int] | None = None) -> list[np.ndarray]:
    """The WebUI's last step of inpainting (processing.apply_overlay): the original picture,
    fitted to the result's size as the init image is, laid over each result where the mask
    is under half (weight 1 - min(2 x mask, 1)), so what was not repainted keeps its own
    pixels rather than the VAE's round trip of them. diffusers:
    `VaeImageProcessor.apply_overlay` (which takes the mask as it is, not doubled).

    With `paste_to` (x, y, width, height; "Inpaint area: Only masked",
    diffusion.pipelines.inpaint_area) the results show that part of the picture: each is
    fitted back to it (resize mode 1, the WebUI's uncrop) and laid there, on the original at
    its own size, and the original over it with weight 1 - mask: in this mode the WebUI's
    mask_for_overlay is the blurred mask itself, not doubled. Outside that part the
    original's pixels are kept as they are."""
    from PIL import Image

    picture, mask = rgb_picture(init_image), mask_picture(mask)
    if paste_to is None:
        height, width = images[0].shape[:2]
        picture = picture.resize((width, height), Image.Resampling.LANCZOS) if (
            picture.size != (width, height)) else picture
    if mask.size != picture.size:
        mask = mask.resize(picture.size, Image.Resampling.LANCZOS)
    weight = np.asarray(mask, np.float32)[..., None]
    if paste_to is None:
        weight = np.minimum(weight * 2.0, 255.0)
    else:
        x, y, width, height = paste_to
        pasted = []
        for image in images:
            canvas = np.array(picture)
            canvas[y:y + height, x:x + width] = np.asarray(
                fit_picture(Image.fromarray(image), width, height, 1))
            pasted.append(canvas)
        images = pasted
    original, keep = np.asarray(picture, np.float32), 1.0 - weight / 255.0
    return [np.round(original * keep + image * (1.0 - keep)).clip(0, 255).astype(np.uint8)
            for image in images]
