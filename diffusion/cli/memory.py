"""The memory options of the generation commands and `serve` (the WebUI's --medvram, --lowvram,
and --max-vram SIZE; diffusion.pipelines.sd.memory), and --verbose's memory figures."""

from __future__ import annotations

import argparse
from typing import Any

from ..pipelines.sd.memory import MemoryMode, parse_size

__all__ = ["add_memory_options", "memory_line", "memory_mode"]


def _size(text: str) -> int:
    try:
        return parse_size(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def add_memory_options(parser: argparse.ArgumentParser, *, verbose: bool = True) -> None:
    """The "memory" group: --medvram, --lowvram, --max-vram SIZE (and --verbose)."""
    group = parser.add_argument_group("memory (GPUs short of memory)")
    group.add_argument("--medvram", action="store_true",
                       help="keep one of text encoders / denoiser (UNet or transformer) / VAE on "
                            "the GPU at a time (the others wait in host memory)")
    group.add_argument("--lowvram", action="store_true",
                       help="as --medvram, and stream the denoiser's blocks to the GPU as they "
                            "run (much less memory, slower)")
    group.add_argument("--max-vram", type=_size, metavar="SIZE",
                       help="keep the GPU within SIZE (4G, 2500M): weights leave for host memory, "
                            "least recently used first, and come back when needed; the VAE "
                            "decodes in tiles if it must")
    if verbose:
        group.add_argument("--verbose", action="store_true",
                           help="after each generation, print the GPU memory it took (peak, "
                                "allocated, pool reserve); at the end, where the time went, by "
                                "phase (import, read, compile, denoise, ...)")


def memory_mode(args: argparse.Namespace) -> MemoryMode:
    """The MemoryMode the options ask for."""
    return MemoryMode(medvram=bool(getattr(args, "medvram", False)),
                      lowvram=bool(getattr(args, "lowvram", False)),
                      max_vram=getattr(args, "max_vram", None))


def _gib(n: int) -> str:
    return f"{n / (1 << 30):.2f} GiB"


def memory_line(device: Any, mode: MemoryMode | None = None) -> str:
    """--verbose's line: the device's memory_stats() since the last reset_peak_memory()."""
    s = device.memory_stats()
    budget = "" if mode is None or mode.max_vram is None else f", budget {_gib(mode.max_vram)}"
    return (f"memory: peak {_gib(s.peak_allocated)} allocated, {_gib(s.peak_reserved)} reserved; "
            f"now {_gib(s.allocated)} allocated + {_gib(s.pooled)} pool reserve = "
            f"{_gib(s.reserved)}{budget} (mode: {(mode or MemoryMode()).label})")
