"""The WebUI's "Prompts from file or textbox" script through the API: `script_args` are
(iterate seed every line, use the same random seed for all lines, [prompt position,] the
lines). Each non-empty line is one request on the queue: the line's text as the prompt, or
its `--prompt "..." --steps 20 ...` options as the WebUI parses them; the pictures in order."""

from __future__ import annotations

import json
import secrets
import shlex
from collections.abc import Awaitable, Callable
from typing import Any

from ..generation import RequestError
from ..schemas import Txt2ImgRequest

__all__ = ["ARG_LABELS", "line_settings", "run_prompts_file"]

MAX_LINES = 100  # the most requests one call queues (as many as n_iter's limit)
Generate = Callable[[Txt2ImgRequest], Awaitable[dict[str, Any]]]
Check = Callable[[Txt2ImgRequest], None]

ARG_LABELS: tuple[tuple[str, Any], ...] = (
    ("Iterate seed every line", False), ("Use same random seed for all lines", False),
    ("Insert prompts at the", "start"), ("List of prompt inputs", ""))


def _flag(text: str) -> bool:
    return text == "true"


# the options a line may set, as the WebUI's prompt_tags (sd_model: the checkpoint)
TAGS: dict[str, Callable[[str], Any]] = {
    "sd_model": str, "prompt": str, "negative_prompt": str, "styles": str, "seed": int,
    "subseed_strength": float, "subseed": int, "seed_resize_from_h": int,
    "seed_resize_from_w": int, "sampler_name": str, "batch_size": int, "n_iter": int,
    "steps": int, "cfg_scale": float, "width": int, "height": int, "restore_faces": _flag,
    "tiling": _flag, "do_not_save_samples": _flag, "do_not_save_grid": _flag,
    "outpath_samples": str, "outpath_grids": str, "prompt_for_display": str,
}
IGNORED = ("outpath_samples", "outpath_grids", "prompt_for_display")


def line_settings(line: str) -> dict[str, Any]:
    """A line's settings: `--name value` pairs (a prompt runs on to the next `--`), or the
    whole line as the prompt when it has no `--` or is not such a list (as in the WebUI)."""
    if "--" not in line:
        return {"prompt": line}
    try:
        words = shlex.split(line)
    except ValueError:
        return {"prompt": line}
    settings: dict[str, Any] = {}
    at = 0
    while at < len(words):
        word = words[at]
        tag = word[2:]
        if not word.startswith("--") or at + 1 >= len(words) or tag not in TAGS:
            return {"prompt": line}
        if tag in ("prompt", "negative_prompt"):
            at += 1
            parts = [words[at]]
            at += 1
            while at < len(words) and not words[at].startswith("--"):
                parts.append(words[at])
                at += 1
            settings[tag] = " ".join(parts)
            continue
        try:
            settings[tag] = TAGS[tag](words[at + 1])
        except ValueError:
            return {"prompt": line}
        at += 2
    return settings


def _body(base: Txt2ImgRequest, settings: dict[str, Any], position: str | None
          ) -> Txt2ImgRequest:
    update = {k: v for k, v in settings.items() if k not in (*IGNORED, "sd_model", "styles")}
    if "styles" in settings:
        update["styles"] = [s.strip() for s in settings["styles"].split(",")]
    if "sd_model" in settings:
        update["override_settings"] = {**(base.override_settings or {}),
                                       "sd_model_checkpoint": settings["sd_model"]}
    if position is not None:  # the newer WebUI's: the line joins the request's own prompt
        for name in ("prompt", "negative_prompt"):
            own = getattr(base, name) or ""
            if settings.get(name) and own:
                update[name] = (f"{settings[name]} {own}" if position == "start"
                                else f"{own} {settings[name]}")
    return base.model_copy(update=update)


async def run_prompts_file(body: Txt2ImgRequest, args: list[Any], generate: Generate,
                           check: Check) -> dict[str, Any]:
    """Every line's pictures, in order; every line is checked with `check` before the first is
    queued (RequestError naming the line)."""
    if len(args) >= 4:
        iterate, same_seed, position, text = args[:4]
    else:
        iterate, same_seed, text = (list(args) + [False, False, ""][len(args):])[:3]
        position = None
    if position not in (None, "start", "end"):
        raise RequestError(f"script_args[2] (Insert prompts at the) must be \"start\" or "
                           f"\"end\", got {position!r}")
    if not isinstance(text, str):
        raise RequestError(f"the script's last argument (List of prompt inputs) must be text, "
                           f"one prompt per line, got {type(text).__name__}")
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    if not lines:
        raise RequestError("List of prompt inputs is empty: send one prompt (or a line of "
                           "--prompt \"...\" --steps N options) per line")
    if len(lines) > MAX_LINES:
        raise RequestError(f"List of prompt inputs has {len(lines)} lines, over this server's "
                           f"limit of {MAX_LINES}; send fewer lines per request")
    base = body.model_copy(update={"script_name": None, "script_args": [],
                                   "send_images": True})
    seed = base.seed
    if (iterate or same_seed) and seed == -1:
        seed = secrets.randbelow(4294967294)
    bodies = []
    for number, line in enumerate(lines, 1):
        cell = _body(base.model_copy(update={"seed": seed}), line_settings(line), position)
        try:
            check(cell)
        except ValueError as exc:
            raise RequestError(f"List of prompt inputs, line {number} ({line!r}): "
                               f"{exc}") from None
        bodies.append(cell)
        if iterate:
            seed += base.batch_size * base.n_iter
    answers, infos = [], []
    for cell in bodies:  # after an interrupted line (/sdapi/v1/interrupt) none is queued
        answers.append(await generate(cell))
        infos.append(json.loads(answers[-1]["info"]))
        if infos[-1].get("interrupted"):
            break
    merged = {**infos[0], "prompt": body.prompt}
    for key in ("infotexts", "all_prompts", "all_negative_prompts", "all_seeds",
                "all_subseeds"):
        merged[key] = [item for info in infos for item in info[key]]
    images = [image for answer in answers for image in answer["images"]]
    parameters = {**answers[0]["parameters"], "prompt": body.prompt,
                  "script_name": body.script_name, "script_args": body.script_args}
    return {"images": images if body.send_images else [], "parameters": parameters,
            "info": json.dumps(merged)}
