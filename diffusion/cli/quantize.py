"""`python -m diffusion quantize MODEL --type q8_0 OUT.gguf`: a model's UNet written as a
UNet-only GGUF (diffusers' tensor names, architecture "sd1"/"sd2"), which
`diffusion.loaders.gguf_unet.load_unet_gguf` loads with its weights kept quantized."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

__all__ = ["add_parser", "run"]


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Add the `quantize` sub-command to `subparsers` (argparse's add_subparsers result)."""
    from ..loaders.gguf_write import WRITABLE

    text = "write a model's UNet as a quantized GGUF file"
    parser = subparsers.add_parser("quantize", help=text, description=text + (
        ": matrices and conv kernels in TYPE, biases and norms as floats (as ComfyUI-GGUF and "
        "stable-diffusion.cpp convert)"))
    parser.add_argument("model", metavar="MODEL",
                        help="a diffusers folder or single-file .safetensors (SD 1.x/2.x)")
    parser.add_argument("--type", default="q8_0", choices=WRITABLE, type=str.lower,
                        help="quantization of the weights (default q8_0: 8.5 bits a value)")
    parser.add_argument("out", metavar="OUT.gguf", help="the file to write")
    parser.set_defaults(run=run)  # how diffusion.cli.main dispatches its sub-commands
    return parser


def run(args: argparse.Namespace) -> int:
    """Quantize args.model's UNet into args.out; prints what was written. Returns 0; bad input
    raises ValueError (WeightsError) saying what was wrong, and no file is left."""
    from ..loaders import load_pipeline_weights
    from ..loaders.errors import WeightsError
    from ..loaders.gguf_write import write_gguf

    out = Path(args.out)
    if out.suffix.lower() != ".gguf":
        raise ValueError(f"{out}: the output must be a .gguf file")
    weights = load_pipeline_weights(args.model)
    family = weights.info.family
    if family not in ("sd1", "sd2"):
        raise WeightsError(f"{args.model}: a {family} model; quantize supports SD 1.x/2.x UNets "
                           "so far")
    unet = weights.unet
    counts = write_gguf(out, ((name, unet[name]) for name in unet), args.type,
                        architecture=family)
    summary = ", ".join(f"{n} {kind}" for kind, n in sorted(counts.items()))
    print(f"wrote {out} ({out.stat().st_size / 2**20:.1f} MiB; tensors: {summary})",
          file=sys.stderr)
    return 0
