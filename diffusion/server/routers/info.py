"""Facts about a picture and the server: /sdapi/v1/png-info, /cmd-flags, /memory."""

from __future__ import annotations

import os
from typing import Any

from fastapi import APIRouter

from ..images import decode_image, png_info, webui_parameters
from ..schemas import PNGInfoRequest, PNGInfoResponse
from ..state import State

__all__ = ["api"]

api = APIRouter()


@api.post("/png-info", response_model=PNGInfoResponse)
async def png_info_route(body: PNGInfoRequest) -> dict[str, Any]:
    text, items = png_info(decode_image(body.image, "image"))
    return {"info": text, "items": items, "parameters": webui_parameters(text)}


@api.get("/cmd-flags")
async def cmd_flags(state: State) -> dict[str, Any]:
    flags = dict(state.cmd_flags)
    if flags.get("api_auth"):
        flags["api_auth"] = "***"
    return flags


@api.get("/memory")
async def memory() -> dict[str, Any]:
    return {"ram": _ram(), "cuda": {"error": "no CUDA: this server runs on WebGPU (wgpu); GPU "
                                             "memory is not reported"}}


def _ram() -> dict[str, int]:
    try:
        page = os.sysconf("SC_PAGE_SIZE")
        total = os.sysconf("SC_PHYS_PAGES") * page
        free = os.sysconf("SC_AVPHYS_PAGES") * page
    except (ValueError, OSError, AttributeError):
        return {}
    return {"free": free, "used": total - free, "total": total}
