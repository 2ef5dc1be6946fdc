"""`txt2vid` / `img2vid --model FOLDER` for a Helios folder (a HeliosPipeline's): cli.txt2vid
checks the settings and fills in the family's defaults (129 frames of 640 x 384, 50 steps, CFG
5, 24 fps), then hands over here; img2vid's --image (resized, Lanczos, to the video's size)
stands ahead of every chunk; txt2vid's --init-video is a video to continue (its first frame
ahead of every chunk, its last whole chunks the history). Helios draws 33-frame chunks one
after another, each in front of the ones before it: --frames asks for ceil(frames / 33)
chunks, the video cut to 1 + 4k frames (diffusers' count; a note says when that is not
--frames). The folder's HeliosScheduler alone; the memory modes, --offload, LoRAs,
--fp16-accumulation and --no-half-vae as on Wan; Wan's own options and step caches are refused
in one line before the weights load."""

from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path
from typing import Any

from .progress import ProgressBar
from .video_family import load_flow_video, refuse_wan_only
from .video_out import finish_video

__all__ = ["helios_frames", "refuse_helios_options", "run_helios", "video_to_continue"]

_FAMILY = "Helios"
_CHUNK = 33  # the frames of a chunk of 9 latent frames (HeliosPipeline's)


def helios_frames(frames: int) -> int:
    """The frames a Helios video asked for `frames` has: whole 33-frame chunks, cut to
    1 + 4k (diffusers' HeliosPipeline)."""
    made = max(1, math.ceil(frames / _CHUNK)) * _CHUNK
    return (made - 1) // 4 * 4 + 1


def video_to_continue(args: argparse.Namespace, path: Path, most: int) -> list[Any]:
    """--init-video's frames (PIL images), the video Helios continues. ValueError in one line
    for --denoising-strength (Wan's), a video shorter than a chunk or longer than `most`."""
    from ..pipelines.video.files import read_frames

    if args.denoising_strength is not None:
        raise ValueError(f"--denoising-strength: {_FAMILY} does not redraw --init-video, it "
                         "continues it; leave --denoising-strength out")
    frames = read_frames(path, "--init-video", limit=most + 1)
    if len(frames) > most:
        raise ValueError(f"--init-video {path}: more than {most} frames; give its last part "
                         "(the chunks Helios continues from)")
    if len(frames) < _CHUNK:
        raise ValueError(f"--init-video {path}: {len(frames)} frames; {_FAMILY} continues a "
                         f"video from whole chunks of {_CHUNK} (for one picture: img2vid "
                         "--image)")
    return frames


def refuse_helios_options(args: argparse.Namespace) -> None:
    """ValueError in one line for an option Helios does not take."""
    refuse_wan_only(args, _FAMILY)
    if args.sampler != "diffusers":
        raise ValueError(f"--sampler {args.sampler}: {_FAMILY} runs its folder's "
                         "HeliosScheduler (--sampler diffusers)")
    if args.cache:
        raise ValueError(f"--cache: not supported for {_FAMILY} yet; leave it out")


def run_helios(args: argparse.Namespace, out: Path, dtype: Any, image: Any = None,
               video: list[Any] | None = None) -> int:
    """Generate and write the video as `args` say (checked and completed by cli.txt2vid) with
    the Helios folder `args.model`, its weights in `dtype`; `image`: img2vid's picture (PIL);
    `video`: --init-video's frames, continued; prints the path."""
    from ..pipelines.video.helios import HeliosPipeline

    refuse_helios_options(args)
    if helios_frames(args.frames) != args.frames:
        print(f"note: Helios draws {_CHUNK}-frame chunks: {helios_frames(args.frames)} frames "
              f"for --frames {args.frames}", file=sys.stderr)
    pipe = load_flow_video(HeliosPipeline, args, dtype)
    bar = ProgressBar(args.command)
    videos = pipe(args.prompt, negative_prompt=args.negative_prompt or "",
                  height=args.height, width=args.width, num_frames=args.frames,
                  num_inference_steps=args.steps, guidance_scale=args.cfg_scale,
                  seed=args.seed, rng=args.rng, image=image, video=video, callback=bar.step)
    return finish_video(pipe, videos, None, out, args.fps, args.verbose)
