"""The WebUI's script lists: /sdapi/v1/scripts and /sdapi/v1/script-info (the scripts
themselves run through txt2img/img2img's script_name: diffusion.server.api.scripts)."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter

from ..scripts import script_info, script_names

__all__ = ["api"]

api = APIRouter()
# the always-on scripts: the ControlNet extension's and ADetailer's units
# (alwayson_scripts), where clients (webuiapi) look for the extensions
ALWAYSON = ("controlnet", "adetailer")


@api.get("/scripts")
def scripts() -> dict[str, list[str]]:
    """The WebUI's script names per tab: the selectable scripts, then the always-on ones."""
    return {kind: [*script_names(kind), *ALWAYSON] for kind in ("txt2img", "img2img")}


@api.get("/script-info")
def info() -> list[dict[str, Any]]:
    """Each script's arguments in the order script_args takes them (label, default value)."""
    return [*script_info(), *({"name": name, "is_alwayson": True, "is_img2img": img2img,
                               "args": []} for img2img in (False, True) for name in ALWAYSON)]
