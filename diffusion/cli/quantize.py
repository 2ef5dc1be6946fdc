"""`python -m diffusion quantize MODEL --type q8_0 OUT.gguf`: a whole SD 1.x/2.x/SDXL model
(UNet, VAE, text encoders, with their configs and the scheduler's in the metadata:
diffusion.loaders.sd.gguf_model) as one GGUF that `--model OUT.gguf` loads alone, the UNet's
weights kept quantized; `--unet-only`: the UNet alone (diffusers' names, architecture "sd1",
"sd2", "sdxl"), as ComfyUI-GGUF's UNet files, which `--model` loads with `--base` or module
files for the other parts. Either carries the folder's defaults.json (its recommended steps,
sampler, CFG scale) as the metadata key diffusion.defaults, which txt2img reads as it reads
the folder's."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

__all__ = ["add_parser", "run"]


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Add the `quantize` sub-command to `subparsers` (argparse's add_subparsers result)."""
    from ..loaders.formats.gguf_write import WRITABLE

    text = "write a model as a quantized GGUF file"
    parser = subparsers.add_parser("quantize", help=text, description=text + (
        ": matrices and conv kernels in TYPE, biases, norms and embeddings as floats (as "
        "ComfyUI-GGUF and stable-diffusion.cpp convert); by default the whole model (UNet, VAE, "
        "text encoders, configs), which --model loads alone"))
    parser.add_argument("model", metavar="MODEL",
                        help="a diffusers folder or single-file checkpoint (SD 1.x/2.x, SDXL)")
    parser.add_argument("--type", default="q8_0", choices=WRITABLE, type=str.lower,
                        help="quantization of the weights (default q8_0: 8.5 bits a value)")
    parser.add_argument("--unet-only", action="store_true",
                        help="write only the UNet (as ComfyUI-GGUF's UNet files); --model then "
                             "takes the other parts from --base or --vae/--text-encoder files")
    parser.add_argument("out", metavar="OUT.gguf", help="the file to write")
    parser.set_defaults(run=run)  # how diffusion.cli.main dispatches its sub-commands
    return parser


def _keep_float(name: str) -> bool:
    """A text encoder's token and position embeddings stay floats (looked up, not multiplied)."""
    return ".embeddings." in name or name.startswith("embeddings.")


def _defaults_text(model: str) -> str | None:
    """The model's defaults.json as the JSON the GGUF carries (checked, sampler names in their
    canonical spelling); None where it has none or it sets nothing."""
    from ..pipelines.contract import SAMPLING_SETTINGS
    from ..pipelines.model_defaults import read_defaults

    recommended = read_defaults(model)
    settings = {name: getattr(recommended, name) for name in SAMPLING_SETTINGS
                if getattr(recommended, name) is not None}
    return json.dumps(settings) if settings else None


def run(args: argparse.Namespace) -> int:
    """Quantize args.model (its UNet with --unet-only) into args.out; prints what was written.
    Returns 0; bad input raises ValueError (WeightsError) saying what was wrong, and no file
    is left."""
    from ..loaders import load_pipeline_weights
    from ..loaders.formats.gguf_write import write_gguf
    from ..loaders.sd.gguf_model import model_metadata, model_tensors
    from ..pipelines.families import family_of
    from ..pipelines.model_defaults import DEFAULTS_KEY
    from .paths import check_output_file

    out = Path(args.out)
    if out.suffix.lower() != ".gguf":
        raise ValueError(f"{out}: the output must be a .gguf file")
    check_output_file(out, "output", ".gguf")  # before the model is read
    _, family = family_of(args.model)  # "unet": the SD line, which claims every other path
    if family != "unet":  # else the loader's "the pipeline has no 'unet' component"
        raise ValueError(f"{args.model} is a {family} model; quantize writes SD 1.x/2.x and "
                         "SDXL models")
    defaults = _defaults_text(args.model)  # a bad defaults.json refused before the weights
    carried = {} if defaults is None else {DEFAULTS_KEY: defaults}
    weights = load_pipeline_weights(args.model)
    family = weights.info.family
    if args.unet_only:
        unet = weights.unet
        counts = write_gguf(out, ((name, unet[name]) for name in unet), args.type,
                            architecture=family, metadata=carried)
    else:
        counts = write_gguf(out, model_tensors(weights), args.type, architecture=family,
                            metadata=model_metadata(weights) | carried, keep_float=_keep_float)
    summary = ", ".join(f"{n} {kind}" for kind, n in sorted(counts.items()))
    print(f"wrote {out} ({out.stat().st_size / 2**20:.1f} MiB; tensors: {summary})",
          file=sys.stderr)
    return 0
