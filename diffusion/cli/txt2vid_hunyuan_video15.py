"""`txt2vid --model FOLDER` for a HunyuanVideo 1.5 text-to-video folder (a
HunyuanVideo15Pipeline's) and `img2vid --model FOLDER --image IN.png` for its image-to-video
one (HunyuanVideo15ImageToVideoPipeline): cli.txt2vid checks the settings and fills in the
folder's defaults (121 frames, 50 steps, its guider's CFG, 16:9 at its target size, 24 fps),
then hands over here. Image to video makes the size of the picture's aspect bucket, so
--width and --height are refused there. --lora patches the transformer; --medvram /
--lowvram / --max-vram run as the flow families' (flow_memory). What is Wan's alone (--base
and the part files, a second expert, VACE, TeaCache, other samplers) is refused in one line
before the weights load."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from .progress import ProgressBar
from .video_family import flow_video_cache, load_flow_video, refuse_command, refuse_wan_only
from .video_out import finish_video

__all__ = ["refuse_hunyuan_video15_options", "run_hunyuan_video15"]


def refuse_hunyuan_video15_options(args: argparse.Namespace, sized: bool) -> None:
    """ValueError in one line for an option HunyuanVideo 1.5 does not take; `sized`: the
    command line gave --width or --height."""
    from ..loaders.hunyuan_video15.folder import hunyuan_video15_image_to_video

    animates = hunyuan_video15_image_to_video(args.model)
    refuse_command(args, animates, text_model="HunyuanVideo 1.5 text-to-video",
                   picture_model="HunyuanVideo 1.5 image-to-video")
    if animates and sized:
        raise ValueError("HunyuanVideo 1.5 image-to-video makes the size of the picture's "
                         "aspect bucket: leave --width and --height out")
    refuse_wan_only(args, "HunyuanVideo 1.5")


def run_hunyuan_video15(args: argparse.Namespace, out: Path, dtype: Any, image: Any = None
                        ) -> int:
    """Generate and write the video as `args` say (checked by cli.txt2vid and
    `refuse_hunyuan_video15_options`) with the HunyuanVideo 1.5 folder `args.model`, its
    weights in `dtype`; `image`: img2vid's first frame; prints the path."""
    from ..pipelines.video.hunyuan_video15 import HunyuanVideo15Pipeline

    cache = flow_video_cache(args, "HunyuanVideo 1.5")
    pipe = load_flow_video(HunyuanVideo15Pipeline, args, dtype)
    bar = ProgressBar(args.command)
    size = {} if image is not None else {"height": args.height, "width": args.width}
    videos = pipe(args.prompt, negative_prompt=args.negative_prompt, num_frames=args.frames,
                  num_inference_steps=args.steps, guidance_scale=args.cfg_scale,
                  seed=args.seed, rng=args.rng, callback=bar.step, cache=cache, image=image,
                  **size)
    return finish_video(pipe, videos, cache, out, args.fps, args.verbose)
