"""What txt2vid's and img2vid's runs for the video families that hold their own text encoders and
VAE (Kandinsky 5 Video in cli.txt2vid_kandinsky5, HunyuanVideo 1.5 in
cli.txt2vid_hunyuan_video15, Motif-Video's loading in cli.txt2vid_motif_video) do alike: refuse
Wan's options, the samplers and step caches those families do not run (in one line, before the
weights load), and load the pipeline with the memory mode, the precision options and the LoRAs
the command line gives; and read the pictures img2vid takes (`read_picture`)."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from .memory import memory_mode
from .vace import vace_named
from .video_lora import patch_loras

__all__ = ["WAN_ONLY", "flow_video_cache", "load_flow_video", "read_picture", "refuse_command",
           "refuse_wan_only"]

# the Wan options these families do not take (argparse field -> the flag as typed)
WAN_ONLY = {"base": "--base", "model_2": "--model-2", "text_encoder": "--text-encoder",
            "vae": "--vae", "clip_vision": "--clip-vision", "cfg_scale_2": "--cfg-scale-2",
            "lora_2": "--lora-2"}


def refuse_command(args: argparse.Namespace, animates: bool, *, text_model: str,
                   picture_model: str) -> None:
    """ValueError in one line where the command does not fit the folder: img2vid for a
    text-to-video model (`text_model`, as the error names it), txt2vid for an image-to-video
    one (`picture_model`); `animates`: the folder's is the latter."""
    if args.command == "img2vid" and not animates:
        raise ValueError(f"{args.model} is {text_model}, which makes videos from text only: "
                         "use txt2vid")
    if args.command == "txt2vid" and animates:
        raise ValueError(f"{args.model} is {picture_model}, which animates a picture: use "
                         "img2vid --image IN.png")


def refuse_wan_only(args: argparse.Namespace, family: str) -> None:
    """ValueError in one line where `args` give a Wan-only option (WAN_ONLY, VACE's) to the
    `family` folder."""
    given = [flag for field, flag in WAN_ONLY.items() if getattr(args, field, None)]
    if vace_named(args):
        given.append(str(vace_named(args)))
    if given:
        raise ValueError(f"{given[0]} is for Wan models; a {family} folder holds its own text "
                         "encoders and VAE (leave it out)")


def flow_video_cache(args: argparse.Namespace, family: str) -> Any:
    """The step cache `args.cache` names (None without one); ValueError in one line for
    TeaCache or a sampler other than the folder's flow-match Euler, which `family` does not
    run."""
    from ..pipelines.video import video_cache

    if args.sampler != "diffusers":
        raise ValueError(f"--sampler {args.sampler}: {family} runs its folder's flow-match "
                         "Euler scheduler (--sampler diffusers)")
    cache = video_cache(args.cache, "--cache", args.steps)
    if cache is not None and cache.spec.kind != "fbc":
        raise ValueError(f"--cache {args.cache}: {family} runs First Block Cache "
                         "(fbc[:THRESHOLD]); TeaCache's tables are Wan's")
    return cache


def load_flow_video(pipeline: Any, args: argparse.Namespace, dtype: Any, **parts: Any) -> Any:
    """`pipeline.from_pretrained(args.model, **parts)` in `dtype` (FramePack's transformer
    file: `args.base`'s folder with `transformer=args.model`), set as `args` say: the memory
    mode (its networks loaded straight to host memory), --fp16-accumulation, --no-half-vae,
    --lora on the transformer; the seed said on stderr once the settings hold."""
    mode = memory_mode(args)
    folder = args.model if "transformer" not in parts else args.base
    pipe = pipeline.from_pretrained(folder, dtype=dtype, offload=args.offload or bool(mode),
                                    **parts)
    pipe.set_memory_mode(mode)
    if args.fp16_accumulation:
        from ..pipelines.fp16_accumulation import use_fp16_accumulation

        print(use_fp16_accumulation(pipe), file=sys.stderr)
    if args.no_half_vae:
        from ..pipelines.vae_float32 import use_float32_vae

        print(use_float32_vae(pipe), file=sys.stderr)
    if args.lora:  # the transformer's (Kandinsky 5's read as its picture family's)
        patch_loras(pipe.lora_targets(), args.lora)
    print(f"seed: {args.seed}", file=sys.stderr)
    return pipe


def read_picture(path: str, option: str = "--image") -> object:
    """`option`'s picture as an RGB PIL image; ValueError in one line when it cannot be
    read."""
    from PIL import Image, UnidentifiedImageError

    from ..imaging import eight_bit

    try:
        with Image.open(path) as opened:
            return eight_bit(opened).convert("RGB")
    except FileNotFoundError:
        raise ValueError(f"{option} {path}: no such file") from None
    except (UnidentifiedImageError, OSError):
        raise ValueError(f"{option} {path}: not a readable picture (PNG, JPEG, WebP...)") from None
