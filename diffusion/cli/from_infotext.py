"""`--from-infotext FILE.png`: start from the settings another picture was made with."""

from __future__ import annotations

import argparse
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ..pipelines.masked_content import masked_content

__all__ = ["apply_infotext", "existing"]


# infotext setting -> (our option, how to convert it); the settings --from-infotext takes
_FROM_INFOTEXT: dict[str, tuple[str, Callable[[Any], Any]]] = {
    "prompt": ("prompt", str), "negative_prompt": ("negative_prompt", str),
    "steps": ("steps", int), "cfg_scale": ("cfg_scale", float), "seed": ("seed", int),
    "width": ("width", int), "height": ("height", int), "rng": ("rng", str),
    "clip_skip": ("clip_skip", lambda v: int(v) + 1), "subseed": ("subseed", int),
    "subseed_strength": ("subseed_strength", float), "ensd": ("ensd", int),
    "scheduler": ("scheduler", str), "strength": ("strength", float),
    "hires_scale": ("hr_scale", float), "hires_resize": ("hr_resize", tuple),
    "hires_upscaler": ("hr_upscaler", str), "hires_steps": ("hr_steps", int),
    "hires_denoise": ("hr_denoise", float), "seed_resize_from": ("seed_resize_from", tuple),
    "eta": ("eta", float), "s_churn": ("s_churn", float), "s_noise": ("s_noise", float),
    "refiner_switch_at": ("refiner_switch_at", float),
    "hires_refiner_pass": ("hires_refiner_pass", str),
    "distilled_cfg_scale": ("distilled_cfg_scale", float),
    "hires_distilled_cfg": ("hr_distilled_cfg", float),
    "hires_prompt": ("hr_prompt", str), "hires_negative_prompt": ("hr_negative_prompt", str),
    "hires_sampler": ("hr_sampler", str), "hires_scheduler": ("hr_scheduler", str),
    "noise_multiplier": ("initial_noise_multiplier", float),
    "inpaint_area": ("inpaint_full_res", lambda v: v == "Only masked"),
    "inpaint_full_res_padding": ("inpaint_full_res_padding", int),
    "mask_blur": ("mask_blur", int), "masked_content": ("inpainting_fill", masked_content),
    "mask_mode": ("mask_invert", lambda v: v == "Inpaint not masked"),
    "cache": ("cache", str),  # "fbc 0.12, 14/28 steps computed": the kind and threshold
    "tiling": ("tiling", bool), "emphasis": ("emphasis", str),
}


def apply_infotext(args: argparse.Namespace, parser: argparse.ArgumentParser) -> None:
    """Fill the options left at their defaults from --from-infotext's PNG (given ones win)."""
    from ..infotext import parse_infotext, read_infotext

    try:
        text = read_infotext(existing(args.from_infotext, "--from-infotext"))
    except OSError as exc:  # PIL's UnidentifiedImageError: else a line without the option
        raise ValueError(f"--from-infotext {args.from_infotext!r} is not a readable image "
                         f"(PNG, JPEG, WebP...): {exc}") from None
    if text is None:
        raise ValueError(f"--from-infotext {args.from_infotext!r}: the PNG has no parameters "
                         "(infotext) to start from")
    settings = parse_infotext(text)
    required = {"img2img": ["--init-image", "x"], "inpaint": ["--init-image", "x", "--mask", "x"]}
    defaults = parser.parse_args([args.command, *required.get(args.command, [])])
    for key, (option, convert) in _FROM_INFOTEXT.items():
        left_out = getattr(args, option, None) == getattr(defaults, option, None)
        if key in settings and hasattr(args, option) and left_out:
            setattr(args, option, convert(settings[key]))
    if args.sampler is None and "sampler" in settings:
        args.sampler = str(settings["sampler"])
    from .control import control_from_infotext

    control_from_infotext(args, settings)


def existing(path: str, flag: str) -> Path:
    if not Path(path).is_file():
        raise ValueError(f"{flag} {path!r} does not exist or is not a file")
    return Path(path)
