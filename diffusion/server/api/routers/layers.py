"""POST /avx/layers: Qwen-Image-Layered on the server's queue, a picture split into RGBA layers
as `python -m diffusion layers` splits it (pipelines.flow.qwen_image_layered): a
Qwen-Image-Layered folder of the models directory by name or title, the picture (base64; its
transparency kept), the prompt saying what it shows, the number of layers, and the CLI's
settings as JSON; back come the layers as base64 RGBA PNGs, first to last, and the seed.
Neither the WebUI nor its forks define such an API, so this one is the server's own. The job
runs on the worker's queue like a picture's: /sdapi/v1/progress follows its steps and
/sdapi/v1/interrupt stops it after the current one (the layers are then decoded from where it
stopped). Each worker keeps the last Qwen-Image-Layered folder it ran loaded; it loads whole
(no memory mode: a server started with one refuses the route in one line).

    POST /avx/layers {"model": "Qwen-Image-Layered", "image": "<base64 PNG>",
                      "prompt": "a cat on a sofa", "layers": 4, "seed": 7}
    -> {"images": ["<base64 RGBA PNG>", ...], "seed": 7, "width": 640, "height": 640,
        "interrupted": false}
"""

from __future__ import annotations

import secrets
from pathlib import Path
from typing import Any, Literal

import numpy as np
from fastapi import APIRouter
from pydantic import BaseModel, Field

from ....loaders.qwen_image import qwenimage_layered_family
from ...images import decode_image, encode_png
from ..generation import RequestError
from ..state import ServerState, State, submit, wait

__all__ = ["LayersRequest", "avx", "forget_layers"]

avx = APIRouter()
# a worker's device (its id) -> its Qwen-Image-Layered folder and pipeline
_loaded: dict[int, tuple[Path, Any]] = {}


class LayersRequest(BaseModel):
    model: str = Field(description="a Qwen-Image-Layered folder of the models directory, by "
                                   "name or title")
    image: str = Field(description="the picture to split, base64 (PNG, JPEG, WebP; its "
                                   "transparency is kept)")
    prompt: str = Field(description="what the picture shows (diffusers' automatic caption is "
                                    "not supported)")
    layers: int = Field(4, ge=1, le=64, description="how many layers")
    resolution: Literal[640, 1024] = Field(640, description="the model's size bucket: about "
                                           "640x640 or 1024x1024 pixels")
    steps: int = Field(50, ge=1, le=1000)
    cfg_scale: float = Field(4.0, ge=0.0, le=100.0, description="true CFG scale against the "
                             "negative prompt, 1 for none")
    negative_prompt: str = " "
    cfg_normalize: bool = Field(False, description="rescale the guided prediction to the "
                                "prompt's norm per token")
    seed: int = Field(-1, ge=-1, lt=2**64, description="-1 for a random one")
    rng: Literal["torch", "numpy"] = Field("torch", description="torch gives diffusers' "
                                           "layers for a seed")
    force_task_id: str | None = Field(None, description="the id /internal/progress, "
                                                        "/interrupt and /skip know the job by")


def forget_layers() -> None:
    """Drop the Qwen-Image-Layered pipelines this process's workers keep (unload-checkpoint)."""
    _loaded.clear()


def _folder(state: ServerState, body: LayersRequest) -> Path:
    """The request's folder, after every check that needs no GPU (RequestError: 422)."""
    if not body.prompt.strip():
        raise RequestError("prompt is empty: say what the picture shows (diffusers' automatic "
                           "caption is not supported)")
    if state.memory is not None:
        raise RequestError(f"Qwen-Image-Layered loads whole, without a memory mode; this "
                           f"server runs in {state.memory.label}: start one without "
                           "--medvram, --lowvram or --max-vram for /avx/layers")
    entry = state.registry.find(body.model)
    if entry is None or qwenimage_layered_family(entry.path) is None:
        raise RequestError(f"model {body.model!r} is not a Qwen-Image-Layered folder of the "
                           "models directory (its model_index.json names a "
                           "QwenImageLayeredPipeline); /sdapi/v1/sd-models lists the folders")
    return Path(entry.path)


def _pipeline(folder: Path, device: Any) -> Any:
    """The worker's pipeline for `folder` in `layers`' dtype (float16 where the device has
    matrix units, else float32), loaded on first use (another folder replaces it)."""
    from gpucore import default_device

    from ....pipelines.flow.qwen_image_layered import QwenImageLayeredPipeline
    from ....pipelines.load import auto_dtype

    key = id(device)
    if key not in _loaded or _loaded[key][0] != folder:
        _loaded.pop(key, None)
        place = device or default_device()  # (a slot's None: the default one)
        _loaded[key] = (folder, QwenImageLayeredPipeline.from_pretrained(
            folder, dtype=auto_dtype(place), device=place))
    return _loaded[key][1]


@avx.post("/layers")
async def layers(body: LayersRequest, state: State) -> dict[str, Any]:
    folder = _folder(state, body)
    picture = decode_image(body.image, "image")  # ImageError: 422
    seed = body.seed if body.seed != -1 else secrets.randbelow(2**32)
    worker = state.worker  # what job() takes along, not the state (a worker process's own)

    def job() -> dict[str, Any]:
        observer, device = worker.begin_job("layers")
        split = _pipeline(folder, device)(
            picture, body.prompt, layers=body.layers, resolution=body.resolution,
            num_inference_steps=body.steps, true_cfg_scale=body.cfg_scale,
            negative_prompt=body.negative_prompt, cfg_normalize=body.cfg_normalize,
            seed=seed, rng=body.rng, callback=observer.step)
        pixels = (np.clip(split, 0.0, 1.0) * 255).round().astype(np.uint8)  # as `layers`
        return {"images": [encode_png(layer) for layer in pixels], "seed": seed,
                "width": pixels.shape[2], "height": pixels.shape[1],
                "interrupted": observer.interrupted()}

    try:
        return await wait(submit(state, job, task=body.force_task_id))  # type: ignore[no-any-return]
    except ValueError as error:  # the pipeline's own refusals (a VAE that is not RGBA's)
        raise RequestError(str(error)) from None
