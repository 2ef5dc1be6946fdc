"""`txt2vid` / `img2vid --model FOLDER` for a Cosmos Predict2.5 folder (a
Cosmos2_5_PredictBasePipeline's): cli.txt2vid checks the settings and fills in the family's
defaults (93 frames of 1280 x 704, 36 steps, CFG 7, 16 fps), then hands over here. txt2vid is
text2world; img2vid's --image (resized to the video's size, bilinear as diffusers) is
image2world's first frame; txt2vid's --init-video is the video video2world continues (its
last 5 frames, resized bilinear to the video's size, as diffusers' video processor). Its own
UniPC alone; Wan's options, LoRAs, step caches and memory modes are refused in one line before
the weights load."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

import numpy as np

from ..pipelines.video.cosmos25 import VIDEO2WORLD_FRAMES
from .progress import ProgressBar
from .video_family import memory_mode, refuse_wan_only
from .video_out import finish_video

__all__ = ["run_cosmos25", "video_to_continue"]

_FAMILY = "Cosmos Predict2.5"


def refuse_cosmos25_options(args: argparse.Namespace, family: str = _FAMILY,
                            sampler: str = "UniPC") -> None:
    """ValueError in one line for an option Cosmos Predict2.5 (or `family`, whose folder's
    `sampler` it runs) does not take."""
    refuse_wan_only(args, family)
    if args.sampler != "diffusers":
        raise ValueError(f"--sampler {args.sampler}: {family} runs its folder's {sampler} "
                         "scheduler (--sampler diffusers)")
    for given, what in ((args.cache, "--cache"), (args.lora, "--lora"),
                        (memory_mode(args), "a memory mode (--medvram, --lowvram, --max-vram)")):
        if given:
            raise ValueError(f"{what}: not supported for {family} yet; leave it out")


def video_to_continue(args: argparse.Namespace, path: Path) -> list[Any]:
    """--init-video's last VIDEO2WORLD_FRAMES frames (PIL images; the others read and
    dropped), for video2world; for Cosmos Predict2 Video2World its last --frames ones, all
    held. ValueError in one line for a shorter video, a --frames that leaves nothing to draw
    after them, or --denoising-strength (Wan's)."""
    from ..pipelines.video.files import read_frames
    from ..pipelines.video.models import video_defaults, video_family_name

    if args.denoising_strength is not None:
        raise ValueError("--denoising-strength: Cosmos does not redraw --init-video, it "
                         "continues it; leave --denoising-strength out")
    if video_family_name(args.model) == "cosmos-predict2":
        count = args.frames or video_defaults(args.model).frames
        frames = read_frames(path, "--init-video", last=count)
        if (len(frames) - 1) // 4 >= (count - 1) // 4:
            raise ValueError(f"--init-video {path}: its last {len(frames)} frames fill the "
                             f"{count} made; Cosmos Predict2 draws after them: give more "
                             "--frames or a shorter video")
        return frames
    if args.frames is not None and args.frames <= VIDEO2WORLD_FRAMES:
        raise ValueError(f"--frames {args.frames}: {_FAMILY} begins the video with "
                         f"--init-video's last {VIDEO2WORLD_FRAMES} frames; give --frames 9 or "
                         "more (1 + 4k)")
    frames = read_frames(path, "--init-video", last=VIDEO2WORLD_FRAMES)
    if len(frames) < VIDEO2WORLD_FRAMES:
        raise ValueError(f"--init-video {path}: {len(frames)} frames; {_FAMILY} continues a "
                         f"video from its last {VIDEO2WORLD_FRAMES} (for one picture: img2vid "
                         "--image)")
    return frames


def run_cosmos25(args: argparse.Namespace, out: Path, dtype: Any, image: Any = None,
                 video: list[Any] | None = None) -> int:
    """Generate and write the video as `args` say (checked and completed by cli.txt2vid) with
    the Cosmos Predict2.5 folder `args.model`, its weights in `dtype`; `image`: img2vid's
    first frame (a PIL picture); `video`: the frames video2world continues
    (`video_to_continue`'s); prints the path."""
    from PIL import Image

    from ..pipelines.video.cosmos25 import Cosmos25PredictPipeline, continued_frames
    from ..pipelines.video.models import video_family_name

    if video_family_name(args.model) == "cosmos-predict2":
        return _run_predict2(args, out, dtype, [image] if image is not None else video)
    refuse_cosmos25_options(args)
    frames = None
    if image is not None:
        resized = image.resize((args.width, args.height), Image.Resampling.BILINEAR)
        frames = np.asarray(resized, np.float32)[None, None] / 255
    elif video is not None:
        frames = continued_frames(video, args.width, args.height)
    pipe = Cosmos25PredictPipeline.from_pretrained(args.model, dtype=dtype)
    print(f"seed: {args.seed}", file=sys.stderr)
    bar = ProgressBar(args.command)
    videos = pipe(args.prompt, negative_prompt=args.negative_prompt or None, frames=frames,
                  height=args.height, width=args.width, num_frames=args.frames,
                  num_inference_steps=args.steps, guidance_scale=args.cfg_scale,
                  seed=args.seed, rng=args.rng, callback=bar.step)
    return finish_video(pipe, videos, None, out, args.fps, args.verbose)


def _run_predict2(args: argparse.Namespace, out: Path, dtype: Any,
                  pictures: list[Any] | None) -> int:
    """run_cosmos25 for a Cosmos Predict2 Video2World folder: `pictures` (img2vid's picture,
    or --init-video's frames), resized Lanczos as diffusers' video processor, all held; the
    video's --fps its frame-rate conditioning too."""
    from ..pipelines.video.cosmos2_video2world import Cosmos2VideoToWorldPipeline, held_frames

    family = "Cosmos Predict2 Video2World"
    refuse_cosmos25_options(args, family, "flow-match Euler")
    if pictures is None:
        raise ValueError(f"{family} continues a picture or a video: give img2vid --image "
                         "IN.png, or txt2vid --init-video VIDEO")
    frames = held_frames(pictures, args.width, args.height)
    pipe = Cosmos2VideoToWorldPipeline.from_pretrained(args.model, dtype=dtype)
    print(f"seed: {args.seed}", file=sys.stderr)
    bar = ProgressBar(args.command)
    videos = pipe(args.prompt, frames, negative_prompt=args.negative_prompt or None,
                  height=args.height, width=args.width, num_frames=args.frames,
                  num_inference_steps=args.steps, guidance_scale=args.cfg_scale, fps=args.fps,
                  seed=args.seed, rng=args.rng, callback=bar.step)
    return finish_video(pipe, videos, None, out, args.fps, args.verbose)
