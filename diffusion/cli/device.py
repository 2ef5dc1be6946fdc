"""--backend and --adapter: which GPU the generating commands (txt2img, img2img, inpaint,
txt2vid, img2vid) open, as gpucore's GPUCORE_BACKEND and GPUCORE_ADAPTER choose it.

--backend is checked as it is parsed: a name that is no GPU API is a usage error (exit status
2) naming those there are, not a GPU error after the settings are read. A GPU API this machine
lacks is still found where the adapter is chosen, with the adapters present."""

from __future__ import annotations

import argparse
import os

__all__ = ["BACKENDS", "add_device_options", "backend", "use_device_options"]

# gpucore's backend names (gpucore._adapters: an adapter's `backend`)
BACKENDS = ("vulkan", "metal", "dx12", "gl")


def backend(text: str) -> str:
    """--backend's value, lower case: one of BACKENDS, else argparse's one-line error."""
    name = text.strip().lower()
    if name not in BACKENDS:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not a GPU API; give one of {', '.join(BACKENDS)} (`python -m gpucore "
            "info` lists this machine's adapters)")
    return name


def add_device_options(parser: argparse.ArgumentParser) -> None:
    """--backend and --adapter on `parser`."""
    parser.add_argument("--backend", metavar="NAME", type=backend,
                        help=f"GPU API: {', '.join(BACKENDS[:-1])} or {BACKENDS[-1]} (sets "
                             "GPUCORE_BACKEND)")
    parser.add_argument("--adapter", metavar="INDEX|NAME",
                        help="adapter index or name substring, see `python -m gpucore info` "
                             "(sets GPUCORE_ADAPTER)")


def use_device_options(args: argparse.Namespace) -> None:
    """GPUCORE_BACKEND and GPUCORE_ADAPTER as --backend and --adapter say (before the default
    device opens)."""
    if args.backend:
        os.environ["GPUCORE_BACKEND"] = args.backend
    if args.adapter:
        os.environ["GPUCORE_ADAPTER"] = args.adapter
