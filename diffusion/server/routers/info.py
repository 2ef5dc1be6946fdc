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
async def memory(state: State) -> dict[str, Any]:
    """The WebUI's answer (modules/api/api.py `get_memory`): "cuda" holds the first worker's
    GPU (gpucore `memory_stats()`, in torch.cuda's names: allocated/active = buffers in use,
    reserved = those and the pool's idle buffers, inactive = the pool's idle buffers, whose
    peak is not tracked: null). "system" knows only what this process holds, and a total
    where --max-vram sets one; no out-of-memory retries happen ("events" zeros)."""
    import gpucore

    slot = state.worker.slots[0]
    s = (slot.device or gpucore.default_device()).memory_stats()  # no --devices: the default
    system: dict[str, Any] = {"used": s.reserved}
    plan = getattr(slot.pipe, "memory", None)
    budget = plan.mode.max_vram if plan is not None else None
    if budget is not None:
        system.update(free=max(budget - s.reserved, 0), total=budget)
    return {"ram": _ram(), "cuda": {
        "system": system,
        "active": {"current": s.allocated, "peak": s.peak_allocated},
        "allocated": {"current": s.allocated, "peak": s.peak_allocated},
        "reserved": {"current": s.reserved, "peak": s.peak_reserved},
        "inactive": {"current": s.pooled, "peak": None},
        "events": {"retries": 0, "oom": 0}}}


def _ram() -> dict[str, int]:
    try:
        page = os.sysconf("SC_PAGE_SIZE")
        total = os.sysconf("SC_PHYS_PAGES") * page
        free = os.sysconf("SC_AVPHYS_PAGES") * page
    except (ValueError, OSError, AttributeError):
        return {}
    return {"free": free, "used": total - free, "total": total}
