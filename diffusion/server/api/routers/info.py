"""Facts about a picture and the server: /sdapi/v1/png-info, /cmd-flags, /memory."""

from __future__ import annotations

import asyncio
import os
from typing import Any

from fastapi import APIRouter

from ...images import decode_image, png_info, webui_parameters
from ..schemas import PNGInfoRequest, PNGInfoResponse
from ..state import State

__all__ = ["api"]

api = APIRouter()


@api.post("/png-info", response_model=PNGInfoResponse)
async def png_info_route(body: PNGInfoRequest, state: State) -> dict[str, Any]:
    text, items = png_info(decode_image(body.image, "image"))
    parameters = webui_parameters(text)
    if not (parameters.get("Hires prompt") or parameters.get("Hires negative prompt")):
        # the WebUI's "Apply if any": the styles the prompts carry, taken out of them
        found, prompt, negative = state.styles.extract(parameters.get("Prompt", ""),
                                                       parameters.get("Negative prompt", ""))
        if found:
            parameters.update({"Prompt": prompt, "Negative prompt": negative,
                               "Styles array": found})
    return {"info": text, "items": items, "parameters": parameters}


@api.get("/cmd-flags")
async def cmd_flags(state: State) -> dict[str, Any]:
    flags = dict(state.cmd_flags)
    if flags.get("api_auth"):
        flags["api_auth"] = "***"
    return flags


@api.get("/memory")
async def memory(state: State) -> dict[str, Any]:
    """The WebUI's answer (modules/api/api.py `get_memory`): "cuda" holds the workers' GPUs
    (gpucore `memory_stats()`, in torch.cuda's names: allocated/active = buffers in use,
    reserved = those and the pool's idle buffers, inactive = the pool's idle buffers, whose
    peak is not tracked: null), summed over the devices (each peak is its device's own, so
    their sum bounds the combined peak from above), and "devices" lists each one's figures
    (with `serve --devices`, each worker process's, asked now). "system" knows only what the
    workers hold, and a total where --max-vram sets one; no out-of-memory retries happen
    ("events" zeros)."""
    devices = await asyncio.to_thread(state.worker.memory)
    counted = [d for d in devices if "error" not in d]

    def total(key: str) -> int:
        return sum(d[key] for d in counted)

    system: dict[str, Any] = {"used": total("reserved")}
    budgets = [d["max_vram"] for d in counted]
    if counted and all(b is not None for b in budgets):
        system.update(free=max(sum(budgets) - total("reserved"), 0), total=sum(budgets))
    return {"ram": _ram(), "cuda": {
        "system": system,
        "active": {"current": total("allocated"), "peak": total("peak_allocated")},
        "allocated": {"current": total("allocated"), "peak": total("peak_allocated")},
        "reserved": {"current": total("reserved"), "peak": total("peak_reserved")},
        "inactive": {"current": total("pooled"), "peak": None},
        "events": {"retries": 0, "oom": 0},
        "devices": devices}}


def _ram() -> dict[str, int]:
    try:
        page = os.sysconf("SC_PAGE_SIZE")
        total = os.sysconf("SC_PHYS_PAGES") * page
        free = os.sysconf("SC_AVPHYS_PAGES") * page
    except (ValueError, OSError, AttributeError):
        return {}
    return {"free": free, "used": total - free, "total": total}
