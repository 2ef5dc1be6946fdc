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
from pathlib import Path
from typing import Any

from .progress import ProgressBar
from .video_family import flow_video_cache, load_flow_video, refuse_command, refuse_wan_only
from .video_out import finish_video

__all__ = ["run_kandinsky5"]


def refuse_wan_options(args: argparse.Namespace) -> None:
    """ValueError in one line for an option Kandinsky 5 Video does not take."""
    from ..loaders.kandinsky5 import kandinsky5_image_to_video
    from ..pipelines.video.kandinsky5_i2v import refuse_short

    animates = kandinsky5_image_to_video(args.model)
    refuse_command(args, animates, text_model="Kandinsky 5 Video Lite",
                   picture_model="Kandinsky 5's image-to-video model")
    if animates:
        refuse_short(args.frames)
    refuse_wan_only(args, "Kandinsky 5 Video")


def run_kandinsky5(args: argparse.Namespace, out: Path, dtype: Any, image: Any = None) -> int:
    """Generate and write the video as `args` say (checked and completed by cli.txt2vid) with
    the Kandinsky 5 Video folder `args.model`, its weights in `dtype`; `image`: img2vid's
    first frame (the image-to-video model's); prints the path."""
    from ..pipelines.video.kandinsky5 import Kandinsky5VideoPipeline
    from ..pipelines.video.models import refuse_video

    refuse_wan_options(args)
    refuse_video(args.model)
    cache = flow_video_cache(args, "Kandinsky 5 Video")
    pipe = load_flow_video(Kandinsky5VideoPipeline, args, dtype)
    bar = ProgressBar(args.command)
    videos = pipe(args.prompt, negative_prompt=args.negative_prompt, height=args.height,
                  width=args.width, num_frames=args.frames, num_inference_steps=args.steps,
                  guidance_scale=args.cfg_scale, seed=args.seed, rng=args.rng,
                  callback=bar.step, cache=cache, image=image)
    return finish_video(pipe, videos, cache, out, args.fps, args.verbose)
