"""OpenAI's images API (`/v1/images/generations`, `/v1/images/edits`) mapped onto the WebUI's
txt2img / img2img bodies, so that both APIs run through the same queue, workers and checks.

| OpenAI field | WebUI body |
|---|---|
| `prompt` | `prompt` |
| `n` | `batch_size` (the server's limit of images per job) |
| `size` "WxH" (or "auto") | `width`, `height` (auto: the model's native size) |
| `quality` | `steps`: QUALITY_STEPS |
| `model` | `override_settings.sd_model_checkpoint` when it names one of the server's models; |
| | OpenAI's own names (dall-e-*, gpt-image-*) run the loaded model |
| `image` + `mask` (edits) | `init_images` + `mask`: alpha 0 in OpenAI's mask = repaint |
| `image[]` several (edits) | `init_images`: an edit model's reference pictures, in order |

Our additions a client may send (the openai client's `extra_body`): `steps`, `seed`,
`negative_prompt`, `cfg_scale`, `strength` (edits' denoising strength).
"""

from __future__ import annotations

import base64
import io
import re
from typing import Any

from pydantic import BaseModel, ConfigDict

from ..catalog.models_dir import ModelRegistry
from ..images import ImageError, PixelBudget
from .generation import LIMITS, RequestError
from .schemas import Img2ImgRequest, Txt2ImgRequest

__all__ = ["QUALITY_STEPS", "ImagesRequest", "OpenAIError", "edit_body", "generation_body",
           "image_from_bytes", "openai_mask"]

# OpenAI's quality -> sampling steps; "auto" and no quality: "medium"
QUALITY_STEPS = {"low": 10, "medium": 20, "standard": 20, "auto": 20, "high": 30, "hd": 40}
# the model names OpenAI clients send by default: they run the loaded model
_OPENAI_MODELS = ("dall-e-", "gpt-image-")
_SIZE = re.compile(r"^\s*(\d+)\s*[xX]\s*(\d+)\s*$")
RESPONSE_FORMATS = ("b64_json", "url")


class OpenAIError(RequestError):
    """Bad input to the OpenAI routes: `param` names the field (OpenAI's error `param`)."""

    def __init__(self, message: str, param: str | None = None) -> None:
        super().__init__(message)
        self.param = param


class ImagesRequest(BaseModel):
    """POST /v1/images/generations (JSON), and the form fields of /v1/images/edits. Fields
    OpenAI has that do not apply here (style, background, moderation, output_format, user,
    ...) are accepted and ignored."""

    model_config = ConfigDict(extra="allow", protected_namespaces=())

    prompt: str
    model: str | None = None
    n: int | None = 1
    size: str | None = None
    quality: str | None = None
    response_format: str | None = "b64_json"
    # ours (extra_body)
    steps: int | None = None
    seed: int = -1
    negative_prompt: str = ""
    cfg_scale: float | None = None
    strength: float | None = None


def _size(text: str | None, max_size: int) -> tuple[int | None, int | None]:
    if text is None or text.strip() == "auto":
        return None, None
    match = _SIZE.match(text)
    if match is None:
        raise OpenAIError(f"size {text!r} is not WIDTHxHEIGHT; send e.g. \"512x512\" or "
                          "\"auto\" (the model's native size)", "size")
    width, height = int(match[1]), int(match[2])
    if max(width, height) > max_size:
        raise OpenAIError(f"size {text} is above this server's limit of {max_size} px a side "
                          "(--max-size); ask for a smaller size", "size")
    if min(width, height) < 8:
        raise OpenAIError(f"size {text} is too small; each side needs at least 8 px", "size")
    return width, height


def _common(body: ImagesRequest, registry: ModelRegistry, max_size: int) -> dict[str, Any]:
    """The WebUI fields both routes share, checked with OpenAI's field names."""
    low, high = LIMITS["batch_size"]
    n = 1 if body.n is None else body.n
    if not low <= n <= high:
        raise OpenAIError(f"n must be between {low} and {high} on this server, got {n}", "n")
    if body.response_format not in (None, *RESPONSE_FORMATS):
        raise OpenAIError(f"response_format must be 'b64_json' or 'url', got "
                          f"{body.response_format!r}", "response_format")
    quality = body.quality or "auto"
    if quality not in QUALITY_STEPS:
        raise OpenAIError(f"quality must be one of {', '.join(QUALITY_STEPS)}, got "
                          f"{body.quality!r}", "quality")
    width, height = _size(body.size, max_size)
    fields: dict[str, Any] = {
        "prompt": body.prompt, "negative_prompt": body.negative_prompt, "batch_size": n,
        "width": width, "height": height, "seed": body.seed,
        "steps": body.steps if body.steps is not None else QUALITY_STEPS[quality],
        "save_images": body.response_format == "url", "sampler_name": "Euler a"}
    if body.cfg_scale is not None:
        fields["cfg_scale"] = body.cfg_scale
    if body.model and not body.model.startswith(_OPENAI_MODELS):
        entry = registry.find(body.model)
        if entry is None:
            raise OpenAIError(f"model {body.model!r} is not one of this server's models: "
                              f"{', '.join(e.name for e in registry.entries)} (GET /v1/models "
                              "lists them)", "model")
        fields["override_settings"] = {"sd_model_checkpoint": entry.title}
    return fields


def generation_body(body: ImagesRequest, registry: ModelRegistry,
                    max_size: int) -> Txt2ImgRequest:
    """The txt2img body a generations request runs as."""
    return Txt2ImgRequest(**_common(body, registry, max_size))


def image_from_bytes(data: bytes, param: str, budget: PixelBudget | None = None) -> Any:
    """A PIL image from an uploaded file's bytes (with `budget`, its pixels taken from it
    before it is decoded); OpenAIError naming `param` otherwise."""
    from PIL import Image

    if not data:
        raise OpenAIError(f"{param} is empty; upload a PNG, JPEG or WebP file", param)
    try:
        image = Image.open(io.BytesIO(data))
        if budget is not None:
            budget.take(image.size, param)
        image.load()
    except ImageError as exc:  # the budget's: it says what to do
        raise OpenAIError(str(exc), param) from None
    except Image.UnidentifiedImageError:  # its text names only the BytesIO object
        raise OpenAIError(f"{param} is not an image this server can read (no format Pillow "
                          "reads); upload a PNG, JPEG or WebP file", param) from None
    # DecompressionBombError is no OSError: a picture of too many pixels
    except (OSError, Image.DecompressionBombError, SyntaxError, ValueError) as exc:
        raise OpenAIError(f"{param} is not an image this server can read ({exc}); upload a "
                          "PNG, JPEG or WebP file", param) from None
    return image


def openai_mask(mask: Any, image: Any) -> Any:
    """OpenAI's mask (an image with alpha, the same size as `image`; alpha 0 = edit) as the
    WebUI's 'L' mask (white = repaint); OpenAIError saying what to send otherwise."""
    if mask.size != image.size:
        raise OpenAIError(f"mask is {mask.size[0]}x{mask.size[1]} but image is "
                          f"{image.size[0]}x{image.size[1]}; send a mask of the image's size",
                          "mask")
    if "A" not in mask.getbands() and "transparency" not in mask.info:
        raise OpenAIError("mask has no alpha channel; send a PNG whose fully transparent "
                          "pixels (alpha 0) mark the part to edit", "mask")
    alpha = mask.convert("RGBA").getchannel("A")
    return alpha.point(lambda value: 255 if value == 0 else 0)


def _png_base64(image: Any) -> str:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return base64.b64encode(buffer.getvalue()).decode("ascii")


def edit_body(body: ImagesRequest, images: Any, mask: Any | None, registry: ModelRegistry,
              max_size: int) -> Img2ImgRequest:
    """The img2img body an edits request runs as: inpainting the mask's transparent part at
    full strength over the whole picture, or, without a mask, img2img (strength 0.75).
    `images`: the picture, or a list of them (an edit model's references; the mask goes with
    the first)."""
    images = list(images) if isinstance(images, (list, tuple)) else [images]
    image = images[0]
    fields = _common(body, registry, max_size)
    strength = body.strength if body.strength is not None else (1.0 if mask is not None
                                                                 else 0.75)
    fields.update(init_images=[_png_base64(picture) for picture in images],
                  denoising_strength=strength)
    if mask is not None:
        fields.update(mask=_png_base64(openai_mask(mask, image)), mask_blur=0,
                      inpainting_fill=1, inpaint_full_res=False)
    return Img2ImgRequest(**fields)
