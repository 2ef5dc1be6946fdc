"""`img2vid --model FOLDER --image IN.png` for a FramePack folder (a
HunyuanVideoFramepackPipeline's: lllyasviel's FramePackI2V_HY or F1 transformer with
HunyuanVideo's text encoders and VAE and FLUX Redux's SigLIP): cli.txt2vid checks the
settings and fills in the family's defaults (129 frames of 480 x 832, 30 steps, distilled
guidance 9, 30 fps), then hands over here. The video is made in sections of 33 frames
(`--sampling-type`: inverted_anti_drifting, backwards, FramePackI2V_HY's; vanilla, forwards,
F1's), each with its own progress bar; --frames sets how many sections, the video has
their frames. --cfg-scale is the guidance the distilled transformer reads;
--true-cfg-scale above 1 with --negative-prompt adds true classifier-free guidance.
--lora patches the transformer; --medvram / --lowvram / --max-vram run as the flow
families'. txt2vid (FramePack animates a picture) and what is Wan's alone are refused in
one line before the weights load."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

import numpy as np

from .progress import ProgressBar
from .video_family import flow_video_cache, load_flow_video, refuse_command, refuse_wan_only
from .video_out import finish_video

__all__ = ["SectionBars", "refuse_framepack_options", "refuse_hunyuan_only", "run_framepack"]


def refuse_hunyuan_only(args: argparse.Namespace, family: str) -> None:
    """ValueError in one line for --true-cfg-scale on a model other than HunyuanVideo's and
    FramePack's, --sampling-type on one other than FramePack's."""
    if args.true_cfg_scale is not None and family not in ("hunyuan-video", "framepack"):
        raise ValueError("--true-cfg-scale is for HunyuanVideo models; this model's guidance "
                         "is --cfg-scale")
    if getattr(args, "sampling_type", None) and family != "framepack":
        raise ValueError("--sampling-type is for FramePack models")


def refuse_framepack_options(args: argparse.Namespace) -> None:
    """ValueError in one line for an option FramePack does not take."""
    refuse_command(args, True, text_model="FramePack", picture_model="FramePack (image to "
                   "video)")
    refuse_wan_only(args, "FramePack")


class SectionBars:
    """A progress bar per section: `section(k, count)` starts section k's, `step(done,
    total, latents)` (the pipeline's count over every section) draws it."""

    def __init__(self, label: str) -> None:
        self.label, self.bar, self.count, self.k = label, ProgressBar(label), 1, 0

    def section(self, k: int, count: int) -> None:
        self.k, self.count = k, count
        self.bar = ProgressBar(f"{self.label} section {k + 1}/{count}")

    def step(self, done: int, total: int, latents: np.ndarray) -> None:
        steps = total // self.count
        self.bar(done - self.k * steps, steps)


def run_framepack(args: argparse.Namespace, out: Path, dtype: Any, image: Any) -> int:
    """Generate and write the video as `args` say (checked by cli.txt2vid, then
    `refuse_framepack_options` before the weights load) with the FramePack folder
    `args.model`, its weights in `dtype`, animating `image`; prints the path."""
    from ..pipelines.video.hunyuan_video_framepack import HunyuanVideoFramepackPipeline

    refuse_framepack_options(args)
    true_cfg = args.true_cfg_scale is not None and args.true_cfg_scale > 1
    if true_cfg != (args.negative_prompt is not None):
        print("note: FramePack's true CFG takes --true-cfg-scale above 1 and "
              "--negative-prompt together; with one alone it is off", file=sys.stderr)
    cache = flow_video_cache(args, "FramePack")
    pipe = load_flow_video(HunyuanVideoFramepackPipeline, args, dtype)
    bars = SectionBars(args.command)
    videos = pipe(args.prompt, image=image, negative_prompt=args.negative_prompt,
                  height=args.height, width=args.width, num_frames=args.frames,
                  num_inference_steps=args.steps, guidance_scale=args.cfg_scale,
                  true_cfg_scale=args.true_cfg_scale or 1.0,
                  sampling_type=args.sampling_type or "inverted_anti_drifting",
                  seed=args.seed, rng=args.rng, callback=bars.step,
                  section_callback=bars.section, cache=cache)
    return finish_video(pipe, videos, cache, out, args.fps, args.verbose)
