"""`txt2vid`'s Wan VACE options: a control video (`--control-video`: a pose or depth video, or
a video to edit), its mask (`--control-mask`, white = regenerate), reference pictures
(`--reference-image`, repeatable) and the conditioning scale (`--control-scale`), as diffusers'
`WanVACEPipeline(video=, mask=, reference_images=, conditioning_scale=)`. The paths and the
scale are checked with the other settings, the files read and fitted to the video
(vace_inputs.vace_pixels) before the model loads; a model without VACE refuses them in one
line (wan_refuse)."""

from __future__ import annotations

import argparse
import math
from pathlib import Path
from typing import Any

from .options import number

__all__ = ["add_vace_options", "check_vace", "vace_control", "vace_named"]

MAX_SCALE = 10.0  # --control-scale's largest: past a few the control's hints swamp the video
_OPTIONS = (("control_video", "--control-video"), ("control_mask", "--control-mask"),
            ("reference_image", "--reference-image"), ("control_scale", "--control-scale"))


def add_vace_options(sub: argparse.ArgumentParser) -> None:
    """Add the Wan VACE options to `sub` (txt2vid)."""
    group = sub.add_argument_group("Wan VACE (a WanVACEPipeline folder, or a VACE transformer "
                                   "file with --base)")
    group.add_argument("--vace-module", metavar="FILE",
                       help="a VACE module alone (Wan2_1-VACE_module_14B_bf16.safetensors: "
                            "its vace_* tensors) joined to --model, the Wan 2.1 text-to-video "
                            "transformer file of its size; needs --base")
    group.add_argument("--control-video", metavar="VIDEO|DIR",
                       help="the control video, --frames frames (resized to --width x "
                            "--height): an .mp4 / .webm (PyAV), an animated .webp / .gif, or a "
                            "folder of frames in name order; a pose or depth video, or a video "
                            "to edit with --control-mask (default: a gray video, all "
                            "regenerated)")
    group.add_argument("--control-mask", metavar="VIDEO|DIR",
                       help="the control video's mask, the same forms and frame count, read as "
                            "grey levels: white = regenerate, black = keep (default: all "
                            "white); needs --control-video")
    group.add_argument("--reference-image", action="append", default=[], metavar="PIC",
                       help="a picture of a subject or style to keep (fitted inside --width x "
                            "--height on white); repeat for several")
    group.add_argument("--control-scale", type=number, default=None, metavar="F",
                       help=f"how strongly the control steers the video, 0 to {MAX_SCALE:g} "
                            "(1; 0: Wan without the control)")


def vace_named(args: argparse.Namespace) -> str | None:
    """The first VACE option given, as the user typed it (None: none given)."""
    return next((flag for field, flag in _OPTIONS if getattr(args, field, None)), None)


def check_vace(args: argparse.Namespace) -> None:
    """What needs no file read: the paths exist, a mask comes with a video, the scale is in
    range. ValueError in one line."""
    if getattr(args, "control_mask", None) and not args.control_video:
        raise ValueError("--control-mask needs --control-video (the video it masks)")
    scale = getattr(args, "control_scale", None)
    if scale is not None and not (math.isfinite(scale) and 0 <= scale <= MAX_SCALE):
        raise ValueError(f"--control-scale must be a number from 0 to {MAX_SCALE:g}, got "
                         f"{scale}")
    for field, flag in _OPTIONS[:2]:
        value = getattr(args, field, None)
        if value and not Path(value).exists():
            raise ValueError(f"{flag} {value}: no such file or folder")
    for picture in getattr(args, "reference_image", []):
        if not Path(picture).is_file():
            raise ValueError(f"--reference-image {picture}: no such file")


def _frames(path: str, flag: str, count: int, mode: str) -> list[Any]:
    from ..pipelines.video.files import read_frames

    frames = read_frames(Path(path), flag, mode)
    if len(frames) != count:
        raise ValueError(f"{flag} {path} has {len(frames)} frames but --frames is {count}: "
                         "give a video of as many frames as the video is to have")
    return frames


def _reference(path: str) -> Any:
    from PIL import Image, UnidentifiedImageError

    from ..imaging import eight_bit

    try:
        with Image.open(path) as opened:
            return eight_bit(opened).convert("RGBA" if "A" in opened.mode else "RGB")
    except (UnidentifiedImageError, OSError):
        raise ValueError(f"--reference-image {path}: not a readable picture (PNG, JPEG, "
                         "WebP...)") from None


def vace_control(args: argparse.Namespace) -> Any:
    """The control video, mask and reference pictures read and fitted to --width x --height
    (vace_inputs.VacePixels, host only), None where none is given (the model's defaults)."""
    video = getattr(args, "control_video", None)
    pictures = getattr(args, "reference_image", [])
    if not video and not pictures:
        return None
    from ..pipelines.video.vace_inputs import vace_pixels

    mask = args.control_mask
    return vace_pixels(
        args.height, args.width, args.frames,
        video=_frames(video, "--control-video", args.frames, "RGB") if video else None,
        mask=_frames(mask, "--control-mask", args.frames, "L") if mask else None,
        references=[_reference(p) for p in pictures])
