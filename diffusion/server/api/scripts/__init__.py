"""The WebUI's selectable scripts, run through txt2img/img2img's `script_name` and
`script_args` (the positional values of the script's UI, as the WebUI's API takes them).

| module | what |
|---|---|
| `values` | an X/Y/Z axis's values text: lists and ranges |
| `axes` | the X/Y/Z plot's axis types in the WebUI's order |
| `grid` | the labelled grid picture |
| `xyz` | "X/Y/Z plot": one queued request per cell, the grid first |
| `prompts_file` | "Prompts from file or textbox": one queued request per line |
| `sd_upscale` | "SD upscale" (img2img): upscaled, then one queued img2img per tile |
| `loopback` | "Loopback" (img2img): one queued img2img per loop, on the loop before's picture |
| `outpaint` | "Poor man's outpainting" (img2img): the border tiles inpainted, one request each |
| `outpaint_mk2` | "Outpainting mk2" (img2img): noise-matched fill, one request per direction |

Imports point down: this registry -> the scripts -> values, axes, grid; a script is given the
route's `generate` (queue one body, wait for its answer), `check` (refuse a bad body before
anything is queued) and `queue` (run other work on the queue), so nothing here imports the
routers.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from ..generation import RequestError
from ..schemas import Txt2ImgRequest
from . import loopback, outpaint, outpaint_mk2, prompts_file, sd_upscale, xyz
from .axes import axes_for

__all__ = ["SCRIPTS", "run_script", "script_info", "script_names"]

# the WebUI's titles, whose lower-case forms are the names /sdapi/v1/scripts lists
SCRIPTS: dict[str, tuple[tuple[str, Any], ...]] = {
    "X/Y/Z plot": xyz.ARG_LABELS,
    "Prompts from file or textbox": prompts_file.ARG_LABELS,
    "SD upscale": sd_upscale.ARG_LABELS, "Loopback": loopback.ARG_LABELS,
    "Poor man's outpainting": outpaint.ARG_LABELS, "Outpainting mk2": outpaint_mk2.ARG_LABELS,
}


async def _poor_mans(body: Txt2ImgRequest, kind: str, args: Any, generate: Any, check: Any,
                     queue: Any) -> dict[str, Any]:
    return await outpaint.run_poor_mans(body, args, generate, check)


async def _mk2(body: Txt2ImgRequest, kind: str, args: Any, generate: Any, check: Any,
               queue: Any) -> dict[str, Any]:
    return await outpaint_mk2.run_mk2(body, args, generate, check)


# the img2img tab's only (the WebUI's Script.show: is_img2img), each run by its function
IMG2IMG_ONLY: dict[str, Callable[..., Awaitable[dict[str, Any]]]] = {
    "sd upscale": sd_upscale.run_sd_upscale, "loopback": loopback.run_loopback,
    "poor man's outpainting": _poor_mans, "outpainting mk2": _mk2}


def script_titles(kind: str) -> list[str]:
    """The WebUI's titles of the scripts a tab ("txt2img" or "img2img") offers."""
    return [title for title in SCRIPTS if kind == "img2img" or title.lower() not in IMG2IMG_ONLY]


def script_names(kind: str = "img2img") -> list[str]:
    """A tab's selectable scripts' names as the WebUI lists them (lower-case titles)."""
    return [title.lower() for title in script_titles(kind)]


def script_info() -> list[dict[str, Any]]:
    """/sdapi/v1/script-info's entries for the selectable scripts, txt2img's then img2img's:
    each argument's label and the UI's default value."""
    return [{"name": title.lower(), "is_alwayson": False, "is_img2img": img2img,
             "args": [{"label": label, "value": value, "minimum": None, "maximum": None,
                       "step": None, "choices": _choices(title, label, img2img)}
                      for label, value in labels]}
            for img2img in (False, True) for title, labels in SCRIPTS.items()
            if title in script_titles("img2img" if img2img else "txt2img")]


def _choices(title: str, label: str, img2img: bool) -> list[str] | None:
    """A dropdown's choices, as the WebUI's script-info gives them: the X/Y/Z plot's axis
    types of the tab, in its order (an index into them is an axis too)."""
    if title == "X/Y/Z plot" and label.endswith(" type"):
        return [axis.label for axis in axes_for("img2img" if img2img else "txt2img")]
    return None


async def run_script(body: Txt2ImgRequest, kind: str,
                     generate: Callable[[Txt2ImgRequest], Awaitable[dict[str, Any]]],
                     check: Callable[[Txt2ImgRequest], None],
                     queue: Callable[[Callable[..., Any]], Awaitable[Any]] | None = None,
                     interrogate: loopback.Interrogate | None = None) -> dict[str, Any]:
    """The answer of the script `body.script_name` names, run with `body.script_args`;
    `queue` runs other GPU work on the worker's queue, called with the worker's `device=`
    (SD upscale's upscaler), `interrogate`
    tags a picture (Loopback's append_interrogation)."""
    name = (body.script_name or "").lower()
    if kind == "txt2img" and name in IMG2IMG_ONLY:
        raise RequestError(f"script_name {body.script_name!r} is an img2img script: send it "
                           "to /sdapi/v1/img2img with init_images")
    if name not in script_names(kind):
        raise RequestError(f"script_name {body.script_name!r} is not one of this server's "
                           f"scripts: {', '.join(script_titles(kind))} (see /sdapi/v1/scripts)")
    if name == "loopback":
        return await loopback.run_loopback(body, kind, body.script_args, generate, check,
                                           queue, interrogate=interrogate)
    if name in IMG2IMG_ONLY:
        return await IMG2IMG_ONLY[name](body, kind, body.script_args, generate, check, queue)
    if name == "x/y/z plot":
        return await xyz.run_xyz(body, kind, body.script_args, generate, check)
    return await prompts_file.run_prompts_file(body, body.script_args, generate, check)
