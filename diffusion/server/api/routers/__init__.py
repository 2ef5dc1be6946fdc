"""The server's routes, one APIRouter per area; each takes the shared state as a dependency
(diffusion.server.api.state).

| module | routes |
|---|---|
| `generate` | POST /sdapi/v1/txt2img, /sdapi/v1/img2img |
| `progress` | /sdapi/v1/progress, /interrupt, /skip; /avx/queue; /internal/progress |
| `models` | sd-models, refresh-checkpoints, options, samplers, schedulers, loras, |
| | embeddings; /avx/defaults |
| `info` | png-info, cmd-flags, memory |
| `extras` | upscalers, extra-single-image, extra-batch-images (the Extras tab) |
| `controlnet` | /controlnet/* (the ControlNet extension's) |
| `adetailer` | /adetailer/v1/ad_model (ADetailer's) |
| `openai` | OpenAI's images API: /v1/images/generations, /v1/images/edits, /v1/models |
| `scripts` | /sdapi/v1/scripts, /sdapi/v1/script-info |
| `interrogate` | /sdapi/v1/interrogate (DeepDanbooru's tags, BLIP + CLIP) |
| `video` | /avx/txt2vid, /avx/img2vid (Wan videos on the same queue), /avx/video-models |
| `layers` | /avx/layers (Qwen-Image-Layered: a picture into RGBA layers, on the same queue) |
| `page` | the web page at / |
"""

from __future__ import annotations

from fastapi import APIRouter, Depends

from ..state import authorized
from . import (
    adetailer,
    controlnet,
    extras,
    generate,
    info,
    interrogate,
    layers,
    models,
    openai,
    page,
    progress,
    scripts,
    video,
)

__all__ = ["routers"]


def routers() -> list[APIRouter]:
    """Every router, the API's behind --api-auth, in the order they are included."""
    api = APIRouter(prefix="/sdapi/v1", dependencies=[Depends(authorized)])
    avx = APIRouter(prefix="/avx", dependencies=[Depends(authorized)])
    for module in (generate, progress, models, info, extras, scripts, interrogate):
        api.include_router(module.api)
        if hasattr(module, "avx"):
            avx.include_router(module.avx)
    avx.include_router(video.avx)
    avx.include_router(layers.avx)
    extension = APIRouter(dependencies=[Depends(authorized)])
    extension.include_router(controlnet.router)
    extension.include_router(adetailer.router)
    extension.include_router(progress.internal)
    return [api, avx, extension, openai.router, page.router]
