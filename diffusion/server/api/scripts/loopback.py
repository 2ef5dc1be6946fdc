"""The WebUI's "Loopback" script (img2img) through the API: `script_args` are (loops,
final_denoising_strength, denoising_curve, append_interrogation). Each loop is one img2img
request on the queue whose init image is the loop before's picture, its seed one more, its
denoising strength moving from the request's to the final one along the curve (Aggressive: a
sine, Linear, Lazy: one minus a cosine), as the WebUI computes it. append_interrogation
"DeepBooru" sets each loop's prompt to the request's, a comma, and DeepDanbooru's tags of the
loop's init image; "CLIP" the same with the CLIP interrogator's terms. Each of n_iter
runs starts again from the init image; the answer's images are the pictures side by side (when
there are several), then the pictures: every loop's with n_iter 1, each run's last otherwise.
"""

from __future__ import annotations

import json
import math
import secrets
from collections.abc import Awaitable, Callable
from typing import Any, cast

import numpy as np

from ...images import decode_image, encode_png
from ..generation import RequestError
from ..schemas import Txt2ImgRequest

__all__ = ["ARG_LABELS", "CURVES", "loop_strength", "run_loopback"]

MAX_LOOPS = 100  # the most requests one call queues (as many as n_iter's limit)
CURVES = ("Aggressive", "Linear", "Lazy")
Generate = Callable[[Txt2ImgRequest], Awaitable[dict[str, Any]]]
Check = Callable[[Txt2ImgRequest], None]
# a base64 picture's text by an interrogator ("DeepBooru", "CLIP")
Interrogate = Callable[[str, str], Awaitable[str]]
INTERROGATIONS = ("None", "CLIP", "DeepBooru")

ARG_LABELS: tuple[tuple[str, Any], ...] = (
    ("Loops", 4), ("Final denoising strength", 0.5), ("Denoising strength curve", "Linear"),
    ("Append interrogated prompt at each iteration", "None"))


def loop_strength(loop: int, loops: int, first: float, final: float, curve: str) -> float:
    """Loop `loop`'s (from 0) denoising strength, the WebUI's calculate_denoising_strength."""
    if loops == 1:
        return first
    progress = loop / (loops - 1)
    if curve == "Aggressive":
        progress = math.sin(progress * math.pi * 0.5)
    elif curve == "Lazy":
        progress = 1 - math.cos(progress * math.pi * 0.5)
    return first + (final - first) * progress


def _arguments(args: list[Any]) -> tuple[int, float, str, str]:
    given = list(args) + [default for _, default in ARG_LABELS[len(args):]]
    loops, final, curve, interrogation = given[:4]
    if isinstance(loops, bool) or not isinstance(loops, int) or not 1 <= loops <= 32:
        raise RequestError(f"script_args[0] (Loops) must be a whole number from 1 to 32, got "
                           f"{loops!r}")
    if isinstance(final, bool) or not isinstance(final, int | float) or not 0 <= final <= 1:
        raise RequestError(f"script_args[1] (Final denoising strength) must be a number from "
                           f"0 to 1, got {final!r}")
    if curve not in CURVES:
        raise RequestError(f"script_args[2] (Denoising strength curve) must be one of "
                           f"{', '.join(CURVES)}, got {curve!r}")
    if interrogation not in INTERROGATIONS:
        raise RequestError(f"script_args[3] (Append interrogated prompt at each iteration) "
                           f"{interrogation!r} is not supported by this server; send "
                           "\"None\", \"CLIP\" or \"DeepBooru\"")
    return loops, float(final), curve, interrogation


async def run_loopback(body: Txt2ImgRequest, kind: str, args: list[Any], generate: Generate,
                       check: Check, _queue: Any = None, *,
                       interrogate: Interrogate | None = None) -> dict[str, Any]:
    """The loops' pictures; the first loop's request is checked with `check` before it is
    queued (RequestError naming the bad argument); `interrogate` tags a loop's init image
    (append_interrogation "DeepBooru" or "CLIP")."""
    if kind != "img2img":
        raise RequestError("Loopback is an img2img script; send it to /sdapi/v1/img2img")
    loops, final, curve, interrogation = _arguments(args)
    if interrogation != "None" and interrogate is None:
        raise RequestError("script_args[3] (Append interrogated prompt at each iteration) "
                           "needs an interrogator, which this route has not; send \"None\"")
    if loops * body.n_iter > MAX_LOOPS:
        raise RequestError(f"Loopback makes {loops} loops x {body.n_iter} runs, over this "
                           f"server's limit of {MAX_LOOPS} requests; send fewer")
    first = body.denoising_strength
    first = 0.75 if first is None else first
    seed = secrets.randbelow(4294967294) if body.seed == -1 else body.seed
    base = body.model_copy(update={"script_name": None, "script_args": [], "n_iter": 1,
                                   "batch_size": 1, "send_images": True, "seed": seed})
    check(base)
    history: list[str] = []
    infos: list[dict[str, Any]] = []
    parameters = None
    interrupted = False
    for _ in range(body.n_iter):
        cell = base
        last = None
        for loop in range(loops):
            if interrogate is not None and interrogation != "None":
                # an img2img body (kind checked above) has its init images
                tags = await interrogate(cast(Any, cell).init_images[0], interrogation)
                cell = cell.model_copy(update={
                    "prompt": (f"{body.prompt}, " if body.prompt else "") + tags})
            answer = await generate(cell)
            info = json.loads(answer["info"])
            if info.get("interrupted"):
                interrupted = True
                break
            parameters = parameters or answer["parameters"]
            infos.append(info)
            last = answer["images"][0]
            if body.n_iter == 1:
                history.append(last)
            # the next loop: this picture, the next seed, "original" under a mask
            update: dict[str, Any] = {
                "init_images": [last], "seed": cell.seed + 1,
                "denoising_strength": loop_strength(loop + 1, loops, first, final, curve)}
            if getattr(cell, "mask", None):
                update["inpainting_fill"] = 1
            cell = cell.model_copy(update=update)
        if body.n_iter > 1 and not interrupted and last is not None:
            history.append(last)
        base = base.model_copy(update={"seed": cell.seed})
        if interrupted:
            break
    images = list(history)
    if len(history) > 1:  # the WebUI's image_grid(history, rows=1)
        pictures = [np.asarray(decode_image(image, "loop").convert("RGB"))
                    for image in history]
        images.insert(0, encode_png(np.concatenate(pictures, axis=1)))
    extra = f", Final denoising strength: {final}, Denoising curve: {curve}"
    merged = {**(infos[0] if infos else {}), "interrupted": interrupted,
              "infotexts": [info["infotexts"][0] + extra for info in infos]}
    for key in ("all_prompts", "all_negative_prompts", "all_seeds", "all_subseeds"):
        merged[key] = [item for info in infos for item in info.get(key, [])]
    parameters = {**(parameters or {}), "script_name": body.script_name,
                  "script_args": body.script_args}
    return {"images": images if body.send_images else [], "parameters": parameters,
            "info": json.dumps(merged)}
