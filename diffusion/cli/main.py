"""`python -m diffusion txt2img|img2img|inpaint`: Stable Diffusion from the command line.

Sampling options left out (--steps, --cfg-scale, --sampler) come from the model folder's
defaults.json where it has one. Everything that can be checked without the model (sizes,
sampler, defaults.json, images, paths) is checked before it loads, and a bad input ends in
one `error: ...` line on stderr and exit status 2 (1 for a GPU failure), never a traceback.
Written paths go to stdout, one a line; the seed, notes and progress go to stderr.
"""

from __future__ import annotations

import argparse
import sys
import time
import warnings
from typing import Any, NoReturn, TextIO

from .control import add_control_options
from .from_infotext import existing
from .generate import run
from .memory import add_memory_options
from .options import add_generation_options, add_mask_options
from .progress import ProgressBar
from .serve import add_serve_parser, serve

__all__ = ["ProgressBar", "build_parser", "main"]

EPILOG = """examples:
  python -m diffusion txt2img --model ./stable-diffusion-v1-5 --prompt "a lighthouse at dusk"
  python -m diffusion txt2img --model sd15.safetensors --prompt "a red fox" \\
      --negative-prompt "blurry" --sampler "DPM++ 2M Karras" --steps 25 --seed 42 --fp16
  python -m diffusion img2img --model sd15.safetensors --init-image photo.png \\
      --prompt "watercolor painting" --strength 0.6 --out painted.png
  python -m diffusion inpaint --model sd15-inpainting --init-image room.png --mask mask.png \\
      --prompt "a green armchair"
  python -m diffusion txt2img --model sd_xl_base_1.0.safetensors --prompt "a red fox" \\
      --refiner sd_xl_refiner_1.0.safetensors --refiner-switch-at 0.8 --fp16
  python -m diffusion txt2img --model ./sdxl-turbo --prompt "a red fox"   # 1 step, no CFG
  python -m diffusion txt2img --model sd15.safetensors --prompt "a lighthouse at dusk" \\
      --controlnet control_v11p_sd15_canny.pth --control-image photo.png \\
      --control-module canny --control-pixel-perfect
  python -m diffusion txt2img --model ./FLUX.1-dev --prompt "a red fox" \\
      --distilled-cfg-scale 3.5 --text-encoder t5xxl_fp16.safetensors   # Euler, CFG 1

Images are numbered like the WebUI (outputs/00000-42.png, ...) and carry their settings in
the PNG text chunk "parameters" (the WebUI's PNG Info reads them).
"""


class _UsageError(Exception):
    """Raised by the parser instead of argparse's print-usage-and-exit."""


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        raise _UsageError(message)


def build_parser() -> argparse.ArgumentParser:
    """The argparse parser of `python -m diffusion` (a sub-command per pipeline)."""
    parser = _Parser(prog="python -m diffusion", epilog=EPILOG,
                     description="Pictures and videos on any GPU (WebGPU): Stable Diffusion "
                                 "1.x/2.x, SDXL and Turbo,\nSD 3/3.5, FLUX.1 (Kontext, Fill, "
                                 "Redux), FLUX.2, Chroma, Z-Image, Qwen-Image (Edit)\nand Wan "
                                 "2.1/2.2 video, from diffusers folders, checkpoint files or "
                                 "GGUFs.",
                     formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = parser.add_subparsers(dest="command",
                                     metavar="{txt2img,img2img,inpaint,txt2vid,img2vid,layers,"
                                             "png-info,serve,quantize,convert,upscale,cache}")
    for name, strength, text in (("txt2img", None, "generate images from a prompt"),
                                 ("img2img", 0.75, "redraw an image following a prompt"),
                                 ("inpaint", 1.0, "repaint the white part of a mask")):
        sub = commands.add_parser(name, help=text, description=text, epilog=EPILOG,
                                  formatter_class=argparse.RawDescriptionHelpFormatter)
        add_generation_options(sub, strength=strength, hires=name != "inpaint")
        add_memory_options(sub)
        add_control_options(sub)
        if name == "inpaint":
            add_mask_options(sub)
    info = commands.add_parser("png-info", help="print the settings a PNG was made with",
                               description="print the infotext (the WebUI's 'parameters') a "
                                           "PNG carries, or with --json the settings read "
                                           "from it")
    info.add_argument("file", metavar="FILE.png",
                      help="a PNG made here or by the WebUI (its 'parameters' text chunk)")
    info.add_argument("--json", action="store_true", help="the parsed settings as JSON")
    add_serve_parser(commands)
    from . import convert, disk_cache, layers, quantize, txt2vid, upscale  # their own modules

    txt2vid.add_parsers(commands)
    layers.add_parser(commands)
    quantize.add_parser(commands)
    convert.add_parser(commands)
    upscale.add_parser(commands)
    disk_cache.add_parser(commands)
    return parser


def png_info(args: argparse.Namespace) -> None:
    """`png-info FILE`: the PNG's infotext, or its parsed settings as JSON."""
    import json

    from PIL import UnidentifiedImageError

    from ..infotext import parse_infotext, read_infotext

    try:
        text = read_infotext(existing(args.file, "png-info"))
    except UnidentifiedImageError:
        raise ValueError(f"{args.file}: not a readable image (PNG, JPEG, WebP...)") from None
    if text is None:
        raise ValueError(f"{args.file} carries no parameters (no WebUI infotext)")
    print(json.dumps(parse_infotext(text), indent=2, ensure_ascii=False) if args.json else text)


def main(argv: list[str] | None = None) -> int:
    """Entry point of `python -m diffusion`; returns the exit status. Warnings (a float16 VAE
    made float32, a blank inpaint mask) print as its errors do: `warning: ...`, one line, not
    Python's file, line and source."""
    with warnings.catch_warnings():
        warnings.showwarning = _warning_line
        return _main(argv)


def _warning_line(message: Warning | str, category: type[Warning], filename: str,
                  lineno: int, file: TextIO | None = None, line: str | None = None,
                  **_: Any) -> None:
    print(f"warning: {message}", file=sys.stderr if file is None else file)


def _main(argv: list[str] | None) -> int:
    import gpucore

    imported = time.perf_counter()
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
        if args.command is None:
            parser.print_usage(sys.stderr)
            raise _UsageError("choose a command: txt2img, img2img, inpaint, txt2vid, img2vid, "
                              "layers, png-info, serve, quantize, convert, upscale or cache")
        if args.command == "serve":
            return serve(args)
        if args.command == "png-info":
            png_info(args)
            return 0
        if hasattr(args, "run"):  # txt2vid, img2vid, layers, quantize, ...: their run()
            return args.run(args)
        if not args.verbose:
            paths = run(args, parser)
        else:  # where the time went, by phase (gpucore.Phases)
            started = gpucore.process_started()
            with gpucore.Phases(started=started) as phases:
                if started is not None:  # the interpreter's start and the imports
                    phases.add("import", imported - started)
                paths = run(args, parser)
            print(f"time: {phases.table()}", file=sys.stderr)
        for path in paths:
            print(path, flush=True)
    except (_UsageError, ValueError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except gpucore.GpuError as exc:
        print(f"error: GPU: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("\ninterrupted (no partial files are left)", file=sys.stderr)
        return 130
    return 0
