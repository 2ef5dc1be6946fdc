"""`txt2vid` / `img2vid --model FOLDER` for a Cosmos Predict2.5 folder (a
Cosmos2_5_PredictBasePipeline's): cli.txt2vid checks the settings and fills in the family's
defaults (93 frames of 1280 x 704, 36 steps, CFG 7, 16 fps), then hands over here. txt2vid is
text2world; img2vid's --image (resized to the video's size, bilinear as diffusers) is
image2world's first frame. Its own UniPC alone; Wan's options, LoRAs, step caches and memory
modes are refused in one line before the weights load."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

import numpy as np

from .progress import ProgressBar
from .video_family import memory_mode, refuse_wan_only
from .video_out import finish_video

__all__ = ["run_cosmos25"]

_FAMILY = "Cosmos Predict2.5"


def refuse_cosmos25_options(args: argparse.Namespace) -> None:
    """ValueError in one line for an option Cosmos Predict2.5 does not take."""
    refuse_wan_only(args, _FAMILY)
    if args.sampler != "diffusers":
        raise ValueError(f"--sampler {args.sampler}: {_FAMILY} runs its folder's UniPC "
                         "scheduler (--sampler diffusers)")
    for given, what in ((args.cache, "--cache"), (args.lora, "--lora"),
                        (memory_mode(args), "a memory mode (--medvram, --lowvram, --max-vram)")):
        if given:
            raise ValueError(f"{what}: not supported for {_FAMILY} yet; leave it out")


def run_cosmos25(args: argparse.Namespace, out: Path, dtype: Any, image: Any = None) -> int:
    """Generate and write the video as `args` say (checked and completed by cli.txt2vid) with
    the Cosmos Predict2.5 folder `args.model`, its weights in `dtype`; `image`: img2vid's
    first frame (a PIL picture); prints the path."""
    from PIL import Image

    from ..pipelines.video.cosmos25 import Cosmos25PredictPipeline

    refuse_cosmos25_options(args)
    frames = None
    if image is not None:
        resized = image.resize((args.width, args.height), Image.Resampling.BILINEAR)
        frames = np.asarray(resized, np.float32)[None, None] / 255
    pipe = Cosmos25PredictPipeline.from_pretrained(args.model, dtype=dtype)
    print(f"seed: {args.seed}", file=sys.stderr)
    bar = ProgressBar(args.command)
    videos = pipe(args.prompt, negative_prompt=args.negative_prompt or None, frames=frames,
                  height=args.height, width=args.width, num_frames=args.frames,
                  num_inference_steps=args.steps, guidance_scale=args.cfg_scale,
                  seed=args.seed, rng=args.rng, callback=bar.step)
    return finish_video(pipe, videos, None, out, args.fps, args.verbose)
