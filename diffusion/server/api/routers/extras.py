"""The WebUI's Extras API: `/sdapi/v1/upscalers`, `/sdapi/v1/latent-upscale-modes` (the hires
fix's latent upscalers), `/sdapi/v1/realesrgan-models`, `/sdapi/v1/extra-single-image` and
`/sdapi/v1/extra-batch-images`.

Upscaling follows the WebUI's `postprocessing_upscale`: resize_mode 0 scales by
`upscaling_resize`, 1 scales to cover `upscaling_resize_w` x `upscaling_resize_h` (then
center-crops to it when `upscaling_crop`); `upscaler_2` at `extras_upscaler_2_visibility` is
blended over `upscaler_1`'s result; `upscaler_1` "None" leaves the picture as it is. Then, in
the WebUI's order, GFPGAN's face restoration blended in at `gfpgan_visibility` and
CodeFormer's (fidelity `codeformer_weight`) at `codeformer_visibility`, where above 0
(diffusion.server.api.faces). Jobs run on the worker's queue, one at a time with generation.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

import numpy as np
from fastapi import APIRouter
from pydantic import BaseModel, Field

from ....faces import FaceRestoration, FaceRestorers
from ....upscalers.by_name import upscale, upscaler_names
from ....upscalers.interpolation import LATENT_UPSCALERS
from ....upscalers.models import MODEL_UPSCALERS
from ...images import MAX_REQUEST_PIXELS, PixelBudget, decode_image, encode_png
from ..faces import check_restorer
from ..generation import RequestError
from ..state import State, submit, wait

__all__ = ["ExtrasBatchRequest", "ExtrasSingleRequest", "api"]

api = APIRouter()
# the pixels a batch's upscaled pictures may come to together: 4 requests' worth of pictures
# (images.MAX_REQUEST_PIXELS), 2 GB as RGB
BATCH_PIXELS = 4 * MAX_REQUEST_PIXELS


class _ExtrasOptions(BaseModel):
    resize_mode: int = Field(0, ge=0, le=1)
    show_extras_results: bool = True
    gfpgan_visibility: float = Field(0.0, ge=0.0, le=1.0)
    codeformer_visibility: float = Field(0.0, ge=0.0, le=1.0)
    codeformer_weight: float = Field(0.0, ge=0.0, le=1.0)
    upscaling_resize: float = Field(2.0, ge=1.0, le=8.0)
    upscaling_resize_w: int = Field(512, ge=8, le=8192)
    upscaling_resize_h: int = Field(512, ge=8, le=8192)
    upscaling_crop: bool = True
    upscaler_1: str = "None"
    upscaler_2: str = "None"
    extras_upscaler_2_visibility: float = Field(0.0, ge=0.0, le=1.0)
    upscale_first: bool = False


class ExtrasSingleRequest(_ExtrasOptions):
    image: str = ""


class _FileData(BaseModel):
    data: str
    name: str = ""


class ExtrasBatchRequest(_ExtrasOptions):
    imageList: list[_FileData] = Field(default_factory=list)  # the WebUI spells it so


def _upscale(image: np.ndarray, options: _ExtrasOptions, device: Callable[[], Any]
             ) -> np.ndarray:
    """One picture through upscaler 1 (and 2, blended), as the WebUI's Extras tab, a model's
    on `device()` (the worker's, asked only once a model runs); upscaler 1 "None" upscales
    nothing (the WebUI's postprocessing_upscale returns at once, upscaler 2 and the resize
    included)."""
    from PIL import Image

    if options.upscaler_1 == "None":
        return image
    height, width = image.shape[:2]
    scale = options.upscaling_resize
    if options.resize_mode == 1:
        scale = max(options.upscaling_resize_w / width, options.upscaling_resize_h / height)
    out = upscale(image, options.upscaler_1, scale, device)
    if options.upscaler_2 != "None" and options.extras_upscaler_2_visibility > 0:
        second = upscale(image, options.upscaler_2, scale, device)
        if second.shape != out.shape:
            second = np.asarray(Image.fromarray(second).resize(out.shape[1::-1]))
        out = np.asarray(Image.blend(Image.fromarray(out), Image.fromarray(second),
                                     options.extras_upscaler_2_visibility))
    if options.resize_mode == 1 and options.upscaling_crop:
        # the WebUI pastes it centred on a black canvas of the size asked: exactly that size,
        # also where the upscale's multiple of 8 fell short of it (1366 wide: 1360)
        w, h = options.upscaling_resize_w, options.upscaling_resize_h
        canvas = Image.new("RGB", (w, h))
        canvas.paste(Image.fromarray(out), (w // 2 - out.shape[1] // 2, h // 2 - out.shape[0] // 2))
        out = np.asarray(canvas)
    return out


def _restorations(options: _ExtrasOptions,
                  restorers: FaceRestorers) -> list[FaceRestoration]:
    """The face restorations asked for, in the WebUI's order (GFPGAN, then CodeFormer)."""
    wanted = []
    if options.gfpgan_visibility > 0:
        wanted.append(FaceRestoration(restorers, "GFPGAN",
                                      visibility=options.gfpgan_visibility))
    if options.codeformer_visibility > 0:
        wanted.append(FaceRestoration(restorers, "CodeFormer",
                                      codeformer_weight=options.codeformer_weight,
                                      visibility=options.codeformer_visibility))
    return wanted


def _postprocess(image: np.ndarray, options: _ExtrasOptions, faces: list[FaceRestoration],
                 device: Callable[[], Any]) -> np.ndarray:
    """One picture upscaled, then its faces restored, the networks on `device()` (the
    worker's that runs the job: each of a thread server's GPUs upscales on its own; asked
    only when a network runs, so a refused size opens no device)."""
    out = _upscale(image, options, device)
    for restoration in faces:
        out = restoration.apply(out, device())
    return out


def _postprocess_all(images: list[np.ndarray], options: _ExtrasOptions,
                     faces: list[FaceRestoration], device: Callable[[], Any]
                     ) -> list[np.ndarray]:
    """The batch's pictures, each upscaled picture taken from BATCH_PIXELS (each alone is held
    to upscale()'s limit; 60 at that limit would take 32 GB)."""
    budget, outs = PixelBudget(BATCH_PIXELS), []
    for i, image in enumerate(images):
        outs.append(_postprocess(image, options, faces, device))
        budget.take(outs[-1].shape[1::-1], f"imageList[{i}] upscaled")
    return outs


def _check(options: _ExtrasOptions, state: State) -> list[FaceRestoration]:
    """The request's face restorations; RequestError for an unknown upscaler or a missing
    face restoration file."""
    # (the face folders looked at only when asked for)
    restoring = options.gfpgan_visibility > 0 or options.codeformer_visibility > 0
    faces = _restorations(options, state.faces) if restoring else []
    for restoration in faces:
        check_restorer(restoration.restorers, restoration.model)
    known = upscaler_names()
    for field in ("upscaler_1", "upscaler_2"):
        if getattr(options, field) not in known:
            raise RequestError(f"{field} {getattr(options, field)!r} is not one of this server's "
                               f"upscalers: {', '.join(known)} (models come from "
                               "--upscaler-dir)")
    return faces


def _html_info(options: _ExtrasOptions, size: tuple[int, int]) -> str:
    fields = []
    if options.upscaler_1 != "None":
        fields.append(f"Postprocess upscale by: {options.upscaling_resize}, Postprocess "
                      f"upscaler: {options.upscaler_1}")
        if options.upscaler_2 != "None" and options.extras_upscaler_2_visibility > 0:
            fields.append(f"Postprocess upscaler 2: {options.upscaler_2}")
    if options.gfpgan_visibility > 0:
        fields.append(f"GFPGAN visibility: {round(options.gfpgan_visibility, 3)}")
    if options.codeformer_visibility > 0:
        fields.append(f"CodeFormer visibility: {round(options.codeformer_visibility, 3)}, "
                      f"CodeFormer weight: {round(options.codeformer_weight, 3)}")
    if not fields:
        return f"<p>{size[0]}x{size[1]}</p>"
    return f"<p>{', '.join(fields)}</p><p>{size[0]}x{size[1]}</p>"


def _declared_scale(name: str) -> int:
    """The factor a model's name states ("4x-UltraSharp", "RealESRGAN_x2plus"); else 4, as the
    WebUI lists most upscalers."""
    match = re.search(r"(?:^|[^a-z0-9])x?([1-8])x?(?:[^a-z0-9]|plus|$)", name.lower())
    return int(match[1]) if match else 4


async def _run(state: State, job: Any) -> Any:
    """`job` on the worker's queue (one at a time with generation); its ValueError is a 422."""
    try:
        return await wait(submit(state, job))
    except ValueError as error:
        raise RequestError(str(error)) from None


@api.get("/upscalers")
async def list_upscalers() -> list[dict[str, Any]]:
    items = [{"name": name, "model_name": None, "model_path": None, "model_url": None,
              "scale": 4} for name in upscaler_names() if name not in MODEL_UPSCALERS]
    items += [{"name": name, "model_name": up.path.stem, "model_path": str(up.path),
               "model_url": None, "scale": _declared_scale(up.path.stem)}
              for name, up in MODEL_UPSCALERS.items()]
    return items


@api.get("/latent-upscale-modes")
async def list_latent_upscale_modes() -> list[dict[str, str]]:
    """The hires fix's latent upscalers by name, as the WebUI lists them (clients such as
    SillyTavern offer them beside /upscalers and fail without this route)."""
    return [{"name": name} for name in LATENT_UPSCALERS]


@api.get("/realesrgan-models")
async def list_realesrgan_models() -> list[dict[str, Any]]:
    """The Real-ESRGAN files among --upscaler-dir's ({name, path, scale}), as the WebUI lists
    its Real-ESRGAN upscalers."""
    return [{"name": name, "path": str(up.path), "scale": _declared_scale(up.path.stem)}
            for name, up in MODEL_UPSCALERS.items() if name.startswith("R-ESRGAN")]


@api.post("/extra-single-image")
async def extra_single_image(request: ExtrasSingleRequest, state: State) -> dict[str, Any]:
    faces = _check(request, state)
    image = np.asarray(decode_image(request.image, "image").convert("RGB"))
    worker = state.worker  # what the job refers to travels to a worker process: not `state`
    out = await _run(state, lambda: _postprocess(image, request, faces,
                                                 lambda: worker.device))
    return {"html_info": _html_info(request, out.shape[1::-1]), "image": encode_png(out)}


@api.post("/extra-batch-images")
async def extra_batch_images(request: ExtrasBatchRequest, state: State) -> dict[str, Any]:
    faces = _check(request, state)
    budget = PixelBudget()  # the pictures together
    images = [np.asarray(decode_image(item.data, f"imageList[{i}]", budget).convert("RGB"))
              for i, item in enumerate(request.imageList)]
    worker = state.worker
    outs = await _run(state, lambda: _postprocess_all(images, request, faces,
                                                      lambda: worker.device))
    info = _html_info(request, outs[0].shape[1::-1]) if outs else ""
    return {"html_info": info, "images": [encode_png(out) for out in outs]}
