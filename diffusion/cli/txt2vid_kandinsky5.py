"""`txt2vid --model FOLDER` for a Kandinsky 5 Video Lite folder (a Kandinsky5T2VPipeline's):
cli.txt2vid checks the settings and fills in the family's defaults (121 frames of 768 x 512,
50 steps, CFG 5, 24 fps), then hands over here. What is Wan's alone (a first frame, --base and
the part files, a second expert, LoRAs, VACE, the memory modes, TeaCache, other samplers) and
sparse NABLA attention are refused in one line before the weights load."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

import numpy as np

from ..pipelines.video.files import write_video
from .memory import memory_mode
from .progress import ProgressBar
from .vace import vace_named

__all__ = ["run_kandinsky5"]

# the Wan options Kandinsky 5 Video does not take (argparse field -> the flag as typed)
_WAN_ONLY = {"base": "--base", "model_2": "--model-2", "text_encoder": "--text-encoder",
             "vae": "--vae", "clip_vision": "--clip-vision", "cfg_scale_2": "--cfg-scale-2",
             "lora": "--lora", "lora_2": "--lora-2"}


def refuse_wan_options(args: argparse.Namespace) -> None:
    """ValueError in one line for an option Kandinsky 5 Video does not take."""
    if args.command == "img2vid":
        raise ValueError(f"{args.model} is Kandinsky 5 Video Lite, which makes videos from text "
                         "only: use txt2vid")
    given = [flag for field, flag in _WAN_ONLY.items() if getattr(args, field, None)]
    if vace_named(args):
        given.append(str(vace_named(args)))
    if given:
        raise ValueError(f"{given[0]} is for Wan models; a Kandinsky 5 Video folder holds its "
                         "own text encoders and VAE (leave it out)")
    if memory_mode(args):
        raise ValueError("Kandinsky 5 Video takes --offload (one network on the GPU at a time), "
                         "not --medvram / --lowvram / --max-vram")


def run_kandinsky5(args: argparse.Namespace, out: Path, dtype: Any) -> int:
    """Generate and write the video as `args` say (checked and completed by cli.txt2vid) with
    the Kandinsky 5 Video folder `args.model`, its weights in `dtype`; prints the path."""
    from ..pipelines.finite import pictures_uint8
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
    pipe = Kandinsky5VideoPipeline.from_pretrained(args.model, dtype=dtype,
                                                   offload=args.offload)
    if args.fp16_accumulation:
        from ..pipelines.fp16_accumulation import use_fp16_accumulation

        print(use_fp16_accumulation(pipe), file=sys.stderr)
    if args.no_half_vae:
        from ..pipelines.vae_float32 import use_float32_vae

        print(use_float32_vae(pipe), file=sys.stderr)
    print(f"seed: {args.seed}", file=sys.stderr)
    bar = ProgressBar(args.command)
    videos = pipe(args.prompt, negative_prompt=args.negative_prompt, height=args.height,
                  width=args.width, num_frames=args.frames, num_inference_steps=args.steps,
                  guidance_scale=args.cfg_scale, seed=args.seed, rng=args.rng,
                  callback=bar.step, cache=cache)
    if cache is not None:
        print(f"cache: {cache.summary()}", file=sys.stderr)
    frames = np.stack(pictures_uint8(videos[0]))  # checked: NaN is an error, not black
    print(write_video(frames, out, args.fps), flush=True)
    return 0
