"""The ControlNet extension's own routes: `/controlnet/version`, `/controlnet/model_list`,
`/controlnet/module_list`, `/controlnet/settings`, `/controlnet/detect` (clients look for
the extension in `/sdapi/v1/scripts`: routers.scripts).

The models are `serve --controlnet-dir DIR`'s (diffusion.loaders.control.catalog), named as
the extension names them ("control_v11p_sd15_canny [d14c016b]"); the units of txt2img /
img2img are read by diffusion.server.api.controlnet_units.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter
from pydantic import BaseModel, Field

from ....pipelines.control_spec import ControlSpec
from ....preprocessors import module_detail, module_list, preprocess
from ....preprocessors.dwpose import dw_openpose_with_json
from ....preprocessors.openpose import POSE_MODULES, openpose_with_json
from ....preprocessors.registry import MODULE_ALIASES, PREPROCESSORS, control_picture, module_name
from ...images import ImageError, PixelBudget, decode_image, encode_png
from ..generation import RequestError
from ..state import State, submit, wait

__all__ = ["DetectRequest", "router"]

API_VERSION = 3  # the extension's get_api_version()
router = APIRouter(prefix="/controlnet")


class DetectRequest(BaseModel):
    """POST /controlnet/detect, with the extension's names (and webuiapi's
    `controlnet_images`)."""

    controlnet_module: str = "none"
    controlnet_input_images: list[str] = Field(default_factory=list)
    controlnet_images: list[str] = Field(default_factory=list)
    controlnet_processor_res: int = -1
    controlnet_threshold_a: float = -1
    controlnet_threshold_b: float = -1
    controlnet_masks: list[str] = Field(default_factory=list)
    low_vram: bool = False


@router.get("/version")
def version() -> dict[str, int]:
    return {"version": API_VERSION}


@router.get("/model_list")
def model_list(state: State, update: bool = True) -> dict[str, list[str]]:
    if update:
        state.controlnets.refresh()
    return {"model_list": state.controlnets.titles()}


@router.get("/module_list")
def modules(alias_names: bool = False) -> dict[str, Any]:
    return {"module_list": module_list(), "module_detail": module_detail()}


@router.get("/settings")
def settings() -> dict[str, int]:
    return {"control_net_unit_count": 3}


@router.post("/detect")
async def detect(body: DetectRequest, state: State) -> dict[str, Any]:
    """The module's maps of the pictures (base64 PNGs), detected on the worker's device."""
    module = module_name(body.controlnet_module)
    if module not in PREPROCESSORS:
        raise RequestError(f"controlnet_module {module!r} is not one of "
                           f"{', '.join(PREPROCESSORS)} (or the extension's names "
                           f"{', '.join(MODULE_ALIASES)})")
    texts = body.controlnet_input_images or body.controlnet_images
    if not texts:
        raise RequestError("controlnet_input_images is empty; send base64-encoded pictures")
    try:
        budget = PixelBudget()  # the pictures together
        pictures = [control_picture(decode_image(text, f"controlnet_input_images[{i}]", budget))
                    for i, text in enumerate(texts)]
    except ImageError as exc:
        raise RequestError(str(exc)) from None
    spec = ControlSpec(model="detect", module=module,
                       processor_res=body.controlnet_processor_res,
                       threshold_a=body.controlnet_threshold_a,
                       threshold_b=body.controlnet_threshold_b)
    res, low, high = spec.bounded()
    worker = state.worker  # what the job refers to travels to a worker process: not `state`

    def run() -> dict[str, Any]:
        device = worker.device
        if module in POSE_MODULES:  # the maps and, as the extension, their people's JSON
            found = [openpose_with_json(picture, res, module=module, device=device)
                     for picture in pictures]
            return {"images": [encode_png(detected) for detected, _ in found],
                    "poses": [poses for _, poses in found]}
        if module == "dw_openpose_full":
            found = [dw_openpose_with_json(picture, res, device=device) for picture in pictures]
            return {"images": [encode_png(detected) for detected, _ in found],
                    "poses": [poses for _, poses in found]}
        preprocessor = PREPROCESSORS[module]
        return {"images": [encode_png(preprocess(module, picture, threshold_a=low,
                                                 threshold_b=high,
                                                 resolution=res if preprocessor.resolution
                                                 else None, device=device))
                           for picture in pictures]}

    return {**await wait(submit(state, run)), "info": "Success"}

