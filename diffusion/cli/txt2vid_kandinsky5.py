"""`txt2vid --model FOLDER` for a Kandinsky 5 Video Lite folder (a Kandinsky5T2VPipeline's):
cli.txt2vid checks the settings and fills in the family's defaults (121 frames of 768 x 512,
50 steps, CFG 5, 24 fps), then hands over here; --lora patches the transformer (the picture
family's code: its LoRAs are read as Kandinsky 5's), and --medvram / --lowvram / --max-vram
run as for Kandinsky 5's pictures (flow_memory). What is Wan's alone (a first frame, --base
and the part files, a second expert, VACE, TeaCache, other samplers) and sparse NABLA
attention are refused in one line before the weights load. A Kandinsky5I2VPipeline folder
(the image-to-video model) runs as `img2vid --image`, from at least 17 frames."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from .memory import memory_mode
from .progress import ProgressBar
from .vace import vace_named
from .video_lora import patch_loras
from .video_out import finish_video

__all__ = ["WAN_ONLY", "run_kandinsky5"]

# the Wan options Kandinsky 5 Video does not take (argparse field -> the flag as typed)
WAN_ONLY = {"base": "--base", "model_2": "--model-2", "text_encoder": "--text-encoder",
             "vae": "--vae", "clip_vision": "--clip-vision", "cfg_scale_2": "--cfg-scale-2",
             "lora_2": "--lora-2"}


def refuse_wan_options(args: argparse.Namespace) -> None:
    """ValueError in one line for an option Kandinsky 5 Video does not take."""
    from ..loaders.kandinsky5 import kandinsky5_image_to_video
    from ..pipelines.video.kandinsky5_i2v import refuse_short

    animates = kandinsky5_image_to_video(args.model)
    if args.command == "img2vid" and not animates:
        raise ValueError(f"{args.model} is Kandinsky 5 Video Lite, which makes videos from text "
                         "only: use txt2vid")
    if args.command == "txt2vid" and animates:
        raise ValueError(f"{args.model} is Kandinsky 5's image-to-video model, which animates a "
                         "picture: use img2vid --image IN.png")
    if animates:
        refuse_short(args.frames)
    given = [flag for field, flag in WAN_ONLY.items() if getattr(args, field, None)]
    if vace_named(args):
        given.append(str(vace_named(args)))
    if given:
        raise ValueError(f"{given[0]} is for Wan models; a Kandinsky 5 Video folder holds its "
                         "own text encoders and VAE (leave it out)")


def run_kandinsky5(args: argparse.Namespace, out: Path, dtype: Any, image: Any = None) -> int:
    """Generate and write the video as `args` say (checked and completed by cli.txt2vid) with
    the Kandinsky 5 Video folder `args.model`, its weights in `dtype`; `image`: img2vid's
    first frame (the image-to-video model's); prints the path."""
    from ..pipelines.video import video_cache
    from ..pipelines.video.kandinsky5 import Kandinsky5VideoPipeline
    from ..pipelines.video.models import refuse_video

    refuse_wan_options(args)
    refuse_video(args.model)
    cache = video_cache(args.cache, "--cache", args.steps)
    if cache is not None and cache.spec.kind != "fbc":
        raise ValueError(f"--cache {args.cache}: Kandinsky 5 Video runs First Block Cache "
                         "(fbc[:THRESHOLD]); TeaCache's tables are Wan's")
    if args.sampler != "diffusers":
        raise ValueError(f"--sampler {args.sampler}: Kandinsky 5 Video runs its folder's "
                         "flow-match Euler scheduler (--sampler diffusers)")
    mode = memory_mode(args)  # a memory mode loads each network straight to host memory
    pipe = Kandinsky5VideoPipeline.from_pretrained(args.model, dtype=dtype,
                                                   offload=args.offload or bool(mode))
    pipe.set_memory_mode(mode)
    if args.fp16_accumulation:
        from ..pipelines.fp16_accumulation import use_fp16_accumulation

        print(use_fp16_accumulation(pipe), file=sys.stderr)
    if args.no_half_vae:
        from ..pipelines.vae_float32 import use_float32_vae

        print(use_float32_vae(pipe), file=sys.stderr)
    if args.lora:  # the picture family's transformer code: its LoRAs' names too
        patch_loras(pipe.lora_targets(), args.lora)
    print(f"seed: {args.seed}", file=sys.stderr)
    bar = ProgressBar(args.command)
    videos = pipe(args.prompt, negative_prompt=args.negative_prompt, height=args.height,
                  width=args.width, num_frames=args.frames, num_inference_steps=args.steps,
                  guidance_scale=args.cfg_scale, seed=args.seed, rng=args.rng,
                  callback=bar.step, cache=cache, image=image)
    return finish_video(pipe, videos, cache, out, args.fps, args.verbose)
