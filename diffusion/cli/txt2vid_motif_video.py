"""`txt2vid` / `img2vid --model FOLDER` for a Motif-Video folder (a MotifVideoPipeline's or
MotifVideoImage2VideoPipeline's): cli.txt2vid checks the settings and fills in the family's
defaults (121 frames of 1280 x 736, 50 steps, the guider's CFG, 24 fps), then hands over here.
img2vid's --image (resized, Lanczos, to the video's size) is the first frame, read by the text
encoder's SigLIP tower too (an image-to-video folder's). The folder's FlowMatchEuler scheduler
and classifier-free guider alone; the memory modes, --offload, --fp16-accumulation,
--no-half-vae and --lora (the transformer's) as for the other flow video families
(video_family.load_flow_video); Wan's options and step caches are refused in one line before
the weights load."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from .progress import ProgressBar
from .video_family import load_flow_video, refuse_wan_only
from .video_out import finish_video

__all__ = ["refuse_motif_video_options", "run_motif_video"]

_FAMILY = "Motif-Video"


def refuse_motif_video_options(args: argparse.Namespace) -> None:
    """ValueError in one line for an option Motif-Video does not take."""
    refuse_wan_only(args, _FAMILY)
    if args.sampler != "diffusers":
        raise ValueError(f"--sampler {args.sampler}: {_FAMILY} runs its folder's "
                         "FlowMatchEuler scheduler (--sampler diffusers)")
    if args.cache:
        raise ValueError(f"--cache: not supported for {_FAMILY} yet; leave it out")


def run_motif_video(args: argparse.Namespace, out: Path, dtype: Any, image: Any = None) -> int:
    """Generate and write the video as `args` say (checked and completed by cli.txt2vid) with
    the Motif-Video folder `args.model`, its weights in `dtype`; `image`: img2vid's first
    frame (a PIL picture); prints the path."""
    from ..pipelines.video.motif_video import MotifVideoPipeline

    refuse_motif_video_options(args)
    pipe = load_flow_video(MotifVideoPipeline, args, dtype)
    bar = ProgressBar(args.command)
    videos = pipe(args.prompt, negative_prompt=args.negative_prompt or None,
                  height=args.height, width=args.width, num_frames=args.frames,
                  num_inference_steps=args.steps, guidance_scale=args.cfg_scale,
                  seed=args.seed, rng=args.rng, image=image, callback=bar.step)
    return finish_video(pipe, videos, None, out, args.fps, args.verbose)
