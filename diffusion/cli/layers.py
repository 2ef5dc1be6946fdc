"""`python -m diffusion layers --model FOLDER --image IN.png --prompt TEXT --layers N --out DIR`:
Qwen-Image-Layered from the command line, a picture split into N RGBA layers written as
DIR/IN-layer1.png .. IN-layerN.png (each written beside its name and renamed, so an
interrupted run leaves no partial picture)."""

from __future__ import annotations

import argparse
import os
import secrets
import sys
import typing
from pathlib import Path
from typing import Any

import numpy as np

from .device import add_device_options, use_device_options

__all__ = ["add_parser", "run"]


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Add the `layers` sub-command to `python -m diffusion`'s sub-parsers."""
    text = "split a picture into RGBA layers with Qwen-Image-Layered"
    sub = subparsers.add_parser("layers", help=text, description=text)
    sub.add_argument("--model", required=True, metavar="FOLDER",
                     help="a Qwen-Image-Layered diffusers folder")
    sub.add_argument("--image", required=True, metavar="IN.png",
                     help="the picture to split (its transparency is kept)")
    sub.add_argument("--prompt", required=True,
                     help="what the picture shows (diffusers' automatic caption is not "
                          "supported)")
    sub.add_argument("--layers", type=int, default=4, help="how many layers, 1 to 64 (4)")
    sub.add_argument("--resolution", type=int, choices=(640, 1024), default=640,
                     help="the model's size bucket: about 640x640 or 1024x1024 pixels (640)")
    sub.add_argument("--steps", type=int, default=50, help="sampling steps (50)")
    sub.add_argument("--cfg-scale", type=float, default=4.0,
                     help="true CFG scale against the negative prompt, 1 for none (4)")
    sub.add_argument("--negative-prompt", default=" ", help="(' ', as the model card)")
    sub.add_argument("--cfg-normalize", action="store_true",
                     help="rescale the guided prediction to the prompt's norm per token")
    sub.add_argument("--seed", type=int, default=-1, help="-1 for a random one (-1)")
    sub.add_argument("--rng", choices=("torch", "numpy"), default="torch",
                     help="noise source; torch gives diffusers' pictures for a seed (torch)")
    sub.add_argument("--dtype", choices=("auto", "float32", "float16"), default="auto",
                     help="weights: auto is float16 on matrix units, else float32 (auto)")
    sub.add_argument("--out", metavar="DIR", help="the folder written (default: "
                                                  "outputs/layers-SEED)")
    add_device_options(sub)
    sub.set_defaults(run=run)
    return sub


def _check(args: argparse.Namespace) -> tuple[Path, Any]:
    """Everything that needs no model, in one line each: the output folder and the picture."""
    from PIL import Image, UnidentifiedImageError

    from ..imaging import eight_bit
    from ..loaders.qwen_image import qwenimage_layered_family
    from .paths import check_output_file

    if qwenimage_layered_family(args.model) is None:
        raise ValueError(f"--model {args.model}: not a Qwen-Image-Layered folder (its "
                         "model_index.json names a QwenImageLayeredPipeline)")
    if not args.prompt.strip():
        raise ValueError("--prompt is empty: say what the picture shows (diffusers' automatic "
                         "caption is not supported)")
    if not 1 <= args.layers <= 64:
        raise ValueError(f"--layers must be from 1 to 64, got {args.layers}")
    if not 1 <= args.steps <= 1000:
        raise ValueError(f"--steps must be from 1 to 1000, got {args.steps}")
    if not 0 <= args.cfg_scale <= 100:  # NaN too
        raise ValueError(f"--cfg-scale must be a number from 0 to 100, got {args.cfg_scale}")
    if not -1 <= args.seed < 2**64:
        raise ValueError(f"--seed must be -1 (random) or a whole number >= 0, got {args.seed}")
    out = Path(args.out) if args.out else Path("outputs") / f"layers-{args.seed}"
    if out.exists() and not out.is_dir():
        raise ValueError(f"--out {str(out)!r} is a file; give a folder for the layers")
    check_output_file(out / "layer.png", "--out", ".png", make_folders=True)
    try:
        with Image.open(args.image) as opened:
            picture = eight_bit(opened)
            picture.load()
    except FileNotFoundError:
        raise ValueError(f"--image {args.image}: no such file") from None
    except (UnidentifiedImageError, OSError):
        raise ValueError(f"--image {args.image}: not a readable picture (PNG, JPEG, "
                         "WebP...)") from None
    return out, picture


def run(args: argparse.Namespace) -> int:
    """Split the picture as `args` say; prints each written path."""
    from PIL import Image

    from ..pipelines.flow.qwen_image_layered import QwenImageLayeredPipeline
    from .progress import ProgressBar
    from .txt2vid import _dtype

    if args.seed == -1:
        args.seed = secrets.randbelow(2**32)
    out, picture = _check(args)
    use_device_options(args)
    pipe = typing.cast(QwenImageLayeredPipeline, QwenImageLayeredPipeline.from_pretrained(
        args.model, dtype=_dtype(args.dtype)))
    print(f"seed: {args.seed}", file=sys.stderr)
    layers = pipe(picture, args.prompt, layers=args.layers, resolution=args.resolution,
                  num_inference_steps=args.steps, true_cfg_scale=args.cfg_scale,
                  negative_prompt=args.negative_prompt, cfg_normalize=args.cfg_normalize,
                  seed=args.seed, rng=args.rng, callback=ProgressBar("layers").step)
    out.mkdir(parents=True, exist_ok=True)
    for index, layer in enumerate(layers, 1):
        target = out / f"{Path(args.image).stem}-layer{index}.png"
        partial = target.with_name(f".{target.name}.{os.getpid()}.partial")
        try:
            pixels = (np.clip(layer, 0.0, 1.0) * 255).round().astype(np.uint8)
            Image.fromarray(pixels, "RGBA").save(partial, format="PNG")
            os.replace(partial, target)
        finally:
            partial.unlink(missing_ok=True)
        print(target, flush=True)
    return 0
