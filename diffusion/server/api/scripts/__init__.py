"""The WebUI's selectable scripts, run through txt2img/img2img's `script_name` and
`script_args` (the positional values of the script's UI, as the WebUI's API takes them).

| module | what |
|---|---|
| `values` | an X/Y/Z axis's values text: lists and ranges |
| `axes` | the X/Y/Z plot's axis types in the WebUI's order |
| `grid` | the labelled grid picture |
| `xyz` | "X/Y/Z plot": one queued request per cell, the grid first |
| `prompts_file` | "Prompts from file or textbox": one queued request per line |
| `outpaint` | "Poor man's outpainting" (img2img): the border tiles inpainted, one request each |
| `outpaint_mk2` | "Outpainting mk2" (img2img): noise-matched fill, one request per direction |

Imports point down: this registry -> the scripts -> values, axes, grid; a script is given the
route's `generate` (queue one body, wait for its answer) and `check` (refuse a bad body before
anything is queued), so nothing here imports the routers.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from ..generation import RequestError
from ..schemas import Txt2ImgRequest
from . import outpaint, outpaint_mk2, prompts_file, xyz

__all__ = ["SCRIPTS", "run_script", "script_info", "script_names"]

# the WebUI's titles, whose lower-case forms are the names /sdapi/v1/scripts lists
SCRIPTS: dict[str, tuple[tuple[str, Any], ...]] = {
    "X/Y/Z plot": xyz.ARG_LABELS,
    "Prompts from file or textbox": prompts_file.ARG_LABELS,
    "Poor man's outpainting": outpaint.ARG_LABELS,
    "Outpainting mk2": outpaint_mk2.ARG_LABELS,
}
# the scripts the WebUI shows on img2img only (their Script.show: is_img2img)
IMG2IMG_ONLY = ("Poor man's outpainting", "Outpainting mk2")


def script_names(img2img: bool = True) -> list[str]:
    """The selectable scripts' names as the WebUI lists them (lower-case titles) on the
    img2img tab, or the txt2img one."""
    return [title.lower() for title in SCRIPTS if img2img or title not in IMG2IMG_ONLY]


def script_info() -> list[dict[str, Any]]:
    """/sdapi/v1/script-info's entries for the selectable scripts, txt2img's then img2img's:
    each argument's label and the UI's default value."""
    return [{"name": title.lower(), "is_alwayson": False, "is_img2img": img2img,
             "args": [{"label": label, "value": value, "minimum": None, "maximum": None,
                       "step": None, "choices": None} for label, value in labels]}
            for img2img in (False, True) for title, labels in SCRIPTS.items()
            if img2img or title not in IMG2IMG_ONLY]


async def run_script(body: Txt2ImgRequest, kind: str,
                     generate: Callable[[Txt2ImgRequest], Awaitable[dict[str, Any]]],
                     check: Callable[[Txt2ImgRequest], None]) -> dict[str, Any]:
    """The answer of the script `body.script_name` names, run with `body.script_args`."""
    name = (body.script_name or "").lower()
    if name not in script_names():
        raise RequestError(f"script_name {body.script_name!r} is not one of this server's "
                           f"scripts: {', '.join(SCRIPTS)} (see /sdapi/v1/scripts)")
    if kind == "txt2img" and name not in script_names(img2img=False):
        raise RequestError(f"script_name {body.script_name!r} is an img2img script: send it "
                           "to /sdapi/v1/img2img with init_images")
    if name == "poor man's outpainting":
        return await outpaint.run_poor_mans(body, body.script_args, generate, check)
    if name == "outpainting mk2":
        return await outpaint_mk2.run_mk2(body, body.script_args, generate, check)
    if name == "x/y/z plot":
        return await xyz.run_xyz(body, kind, body.script_args, generate, check)
    return await prompts_file.run_prompts_file(body, body.script_args, generate, check)
