"""The models of `txt2img`, `img2img`, `inpaint` as their options say, after everything else
was checked: --model (with --text-encoder's files, --base, --vae) in --dtype on the default
device, the --refiner (the model itself where it is --model's file loaded alike), the
embeddings and LoRA folders, then --int8, --fp16-accumulation, --no-half-vae and the memory
mode, in the order each needs the others in place.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

import numpy as np

from .memory import memory_mode

__all__ = ["load_models"]


def _dtype_and_device(choice: str) -> tuple[Any, Any]:
    """--dtype's weights dtype and the device it was decided for (None: load_pipeline's)."""
    if choice == "float32":
        return np.float32, None
    import gpucore

    from ..pipelines.load import auto_dtype

    device = gpucore.default_device()
    if choice == "auto":
        return auto_dtype(device), device
    if device.has_f16:
        return np.float16, device
    print(f"note: {device.name} has no shader-f16; using float32 weights", file=sys.stderr)
    return np.float32, device


def _same_load(args: argparse.Namespace) -> bool:
    """Whether --refiner is --model's file, the model loaded as a refiner loads (no
    --text-encoder, --base or --vae, which the model alone takes)."""
    if args.model is None or args.text_encoder or args.base or args.vae:
        return False
    return bool(Path(args.refiner).resolve() == Path(args.model).resolve())


def load_models(args: argparse.Namespace) -> tuple[Any, Any]:
    """The model as the options say (dtype, VAE, networks), and the refiner or None."""
    dtype, device = _dtype_and_device(args.dtype)
    embeddings = None
    if args.embeddings_dir:  # read before the model loads
        from ..text.embeddings import EmbeddingDatabase

        embeddings = EmbeddingDatabase(args.embeddings_dir)

    from diffusion import load_pipeline

    modules = list(args.text_encoder or ())
    vae_module = False  # a UNet-only GGUF without --base takes --vae as one of its parts
    if args.vae and not args.base and args.model is not None:
        from ..loaders.sd.gguf_pipeline import is_unet_gguf

        vae_module = is_unet_gguf(args.model)
    if vae_module:
        modules.append(args.vae)
    given: dict[str, Any] = {}  # what the model lacks, or replaces, from other files
    if modules:
        given["text_encoders"] = modules
    if args.base:
        given["base"] = args.base
    mode = memory_mode(args)
    if mode:  # every network loads straight to host memory (the mode brings in its part)
        given["offload"] = True
    pipe = load_pipeline(args.model, dtype=dtype, device=device,
                         prediction_type=args.prediction_type, **given)
    print(f"model: {pipe.name} ({pipe.family})", file=sys.stderr)
    refiner = None
    if args.refiner and _same_load(args):
        refiner = pipe  # the model takes over from itself: no second copy of it
    elif args.refiner:
        to_host: dict[str, Any] = {"offload": True} if mode else {}  # as the model's
        refiner = load_pipeline(args.refiner, dtype=dtype, device=device,
                                prediction_type=args.prediction_type, **to_host)
    if pipe.capabilities.turbo and args.width is None and args.height is None:
        size = pipe.native_size
        print(f"turbo model: --width {size} --height {size}", file=sys.stderr)
    if embeddings is not None:
        pipe.embeddings = embeddings
    pipe.lora_dir = args.lora_dir
    if args.vae and not vae_module:  # a UNet-only GGUF took it as one of its parts
        pipe.use_vae(args.vae)
    models = [pipe] if refiner is None or refiner is pipe else [pipe, refiner]  # each once
    if getattr(args, "int8", None) == "plain":  # before the memory mode: its units hold int8
        from ..pipelines.int8 import use_int8

        for model in models:
            print(use_int8(model), file=sys.stderr)
    if getattr(args, "fp16_accumulation", False):
        from ..pipelines.fp16_accumulation import use_fp16_accumulation

        for model in models:
            print(use_fp16_accumulation(model), file=sys.stderr)
    if getattr(args, "no_half_vae", False):
        from ..pipelines.vae_float32 import use_float32_vae

        for model in models:
            print(use_float32_vae(model), file=sys.stderr)
    # the memory mode is set after the VAE: the mode's units are the models in place now
    for model in models if mode else ():
        model.set_memory_mode(mode)
    return pipe, refiner
