"""`python -m diffusion upscale IN.png --upscaler NAME --scale 4`: the WebUI's Extras upscale from
the command line (a model from --upscaler-dir, or Lanczos / Nearest)."""

from __future__ import annotations

import argparse
import os
from pathlib import Path

import numpy as np

__all__ = ["add_parser", "run"]


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Add the `upscale` sub-command to `python -m diffusion`'s sub-parsers."""
    text = ("upscale a picture with an ESRGAN/Real-ESRGAN/SwinIR/HAT model or Lanczos (the "
            "WebUI's Extras)")
    sub = subparsers.add_parser("upscale", help=text, description=text)
    sub.add_argument("image", metavar="IN.png", help="the picture to upscale")
    sub.add_argument("--upscaler", default="Lanczos", metavar="NAME",
                     help="an upscaler name (\"R-ESRGAN 4x+\", a .pth file's stem, Lanczos, "
                          "Nearest) or a model file's path (Lanczos)")
    sub.add_argument("--scale", type=float, default=4.0,
                     help="factor, 1 to 8: the network runs until it is reached, then Lanczos "
                          "fits the size (4)")
    sub.add_argument("--upscaler-dir", metavar="DIR",
                     help="where model upscalers are (the WebUI's models/ or models/ESRGAN)")
    sub.add_argument("--tile", type=int, default=192, metavar="PX",
                     help="tile size for model upscalers, 0 for one pass (192)")
    sub.add_argument("--out", metavar="PATH",
                     help="output file (default: IN-NAME-xSCALE.png beside the input)")
    sub.set_defaults(run=run)
    return sub


def run(args: argparse.Namespace) -> int:
    """Upscale as `args` say; prints the written path. Raises ValueError/OSError with what to
    fix (unknown upscaler, unreadable image, bad scale)."""
    from PIL import Image, UnidentifiedImageError

    from ..imaging import eight_bit
    from ..upscalers.by_name import upscale
    from ..upscalers.models import MODEL_UPSCALERS, ModelUpscaler, register_upscaler_dir

    if not 1.0 <= args.scale <= 8.0:
        raise ValueError(f"--scale must be from 1 to 8, got {args.scale}")
    if args.tile < 0:
        raise ValueError(f"--tile must be 0 (one pass) or a tile size in pixels, got {args.tile}")
    name = args.upscaler
    if args.upscaler_dir:
        register_upscaler_dir(args.upscaler_dir)
    if name not in MODEL_UPSCALERS and Path(name).suffix.lower() in (".pth", ".pt",
                                                                     ".safetensors"):
        if not Path(name).is_file():
            raise ValueError(f"--upscaler {name!r}: no such file")
        MODEL_UPSCALERS[name] = ModelUpscaler(Path(name).stem, Path(name))
    if name in MODEL_UPSCALERS:
        MODEL_UPSCALERS[name].tile = args.tile
    source = Path(args.image)
    label = Path(name).stem if name in MODEL_UPSCALERS else name
    target = Path(args.out) if args.out else source.with_name(
        f"{source.stem}-{label.replace(' ', '_')}-x{args.scale:g}.png")
    kind = _picture_format(target)  # before the work: a bad --out costs no upscaling
    try:
        with Image.open(source) as opened:
            image = np.asarray(eight_bit(opened).convert("RGB"))  # a 16-bit PNG: not white
    except FileNotFoundError:
        raise ValueError(f"{source}: no such image") from None
    except UnidentifiedImageError:
        raise ValueError(f"{source}: not a readable image (PNG, JPEG, WebP...)") from None
    except OSError as exc:  # a folder, a truncated file: else the bare reason, no file name
        raise ValueError(f"{source}: not a readable image ({exc.strerror or exc})") from None
    out = upscale(image, name, args.scale)
    # written beside the target and renamed: an interrupted run leaves no partial picture
    partial = target.with_name(f".{target.name}.{os.getpid()}.partial")
    try:
        Image.fromarray(out).save(partial, format=kind)
        os.replace(partial, target)
    finally:
        partial.unlink(missing_ok=True)
    print(target, flush=True)
    return 0


def _picture_format(target: Path) -> str:
    """PIL's format for writing `target` (PNG without a suffix); ValueError saying what to
    change for a suffix PIL cannot write, a missing or unwritable folder or a folder's name."""
    from PIL import Image

    from .paths import check_output_file

    check_output_file(target, "--out", ".png")
    kind = Image.registered_extensions().get(target.suffix.lower(),
                                             None if target.suffix else "PNG")
    if kind not in Image.SAVE:
        raise ValueError(f"--out {str(target)!r}: cannot write {target.suffix!r} pictures; "
                         "name it .png, .jpg or .webp")
    return kind
