"""`img2vid --model FOLDER --image IN.png` for a FramePack folder (a
HunyuanVideoFramepackPipeline's: lllyasviel's FramePackI2V_HY or F1 transformer with
HunyuanVideo's text encoders and VAE and FLUX Redux's SigLIP): cli.txt2vid checks the
settings and fills in the family's defaults (129 frames of 480 x 832, 30 steps, distilled
guidance 9, 30 fps), then hands over here. The video is made in sections (`--sampling-type`:
inverted_anti_drifting, backwards, FramePackI2V_HY's, --last-image the frame it ends on;
vanilla, forwards, F1's), each of --latent-window-size latent frames (diffusers'
`latent_window_size`: 9, 33 frames) with its own progress bar; --frames sets how many
sections, the video has their frames. --cfg-scale is the guidance the distilled transformer
reads; --true-cfg-scale above 1 with --negative-prompt adds true classifier-free guidance.
--lora patches the transformer; --medvram / --lowvram / --max-vram run as the flow
families'. txt2vid (FramePack animates a picture) and what is Wan's alone are refused in one
line before the weights load."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

import numpy as np

from .progress import ProgressBar
from .video_family import (
    flow_video_cache,
    load_flow_video,
    read_picture,
    refuse_command,
    refuse_wan_only,
)
from .video_out import finish_video

__all__ = ["SectionBars", "add_framepack_options", "refuse_framepack_options",
           "refuse_hunyuan_only", "run_framepack"]

_OPTIONS = (("sampling_type", "--sampling-type"), ("last_image", "--last-image"),
            ("latent_window_size", "--latent-window-size"))


def add_framepack_options(sub: argparse.ArgumentParser) -> None:
    """FramePack's own options on `txt2vid` / `img2vid`."""
    from .options import whole

    sub.add_argument("--sampling-type", choices=("inverted_anti_drifting", "vanilla"),
                     help="FramePack: sections made backwards (FramePackI2V_HY's, the default) "
                          "or forwards (vanilla: F1's)")
    sub.add_argument("--last-image", default=None, metavar="END.png",
                     help="FramePack (backwards sampling) and SkyReels V2 diffusion forcing "
                          "(img2vid, one window): the frame the video ends on")
    sub.add_argument("--latent-window-size", type=whole, default=None, metavar="N",
                     help="FramePack: latent frames a section makes, 1 to 33 (9: 33 frames)")


def refuse_hunyuan_only(args: argparse.Namespace, family: str) -> None:
    """ValueError in one line for --true-cfg-scale on a model other than HunyuanVideo's and
    FramePack's, FramePack's own options on one other than FramePack's (--last-image: also
    SkyReels V2 diffusion forcing's)."""
    if args.true_cfg_scale is not None and family not in ("hunyuan-video", "framepack"):
        raise ValueError("--true-cfg-scale is for HunyuanVideo models; this model's guidance "
                         "is --cfg-scale")
    given = next((flag for name, flag in _OPTIONS if getattr(args, name, None) is not None
                  and not (name == "last_image" and family == "skyreels-v2-df")), None)
    if given and family != "framepack":
        raise ValueError(f"{given} is for FramePack models")


def refuse_framepack_options(args: argparse.Namespace) -> None:
    """ValueError in one line for an option FramePack does not take (--base: the folder a
    transformer file --model needs, checked by cli.txt2vid, a FramePack one)."""
    from ..loaders.hunyuan_video.framepack import framepack_family

    refuse_command(args, True, text_model="FramePack", picture_model="FramePack (image to "
                   "video)")
    refuse_wan_only(argparse.Namespace(**{**vars(args), "base": None}), "FramePack")
    if args.base is not None and framepack_family(args.base) is None:
        raise ValueError(f"--base {args.base}: not a FramePack folder (its model_index.json "
                         "must name a HunyuanVideoFramepackPipeline)")
    window = args.latent_window_size
    if window is not None and not 1 <= window <= 33:
        raise ValueError(f"--latent-window-size must be 1 to 33 latent frames, got {window}")
    if args.last_image is not None and args.sampling_type == "vanilla":
        raise ValueError("--last-image needs --sampling-type inverted_anti_drifting (the video "
                         "made backwards from its end); leave it out for F1's vanilla")


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
    last = None if args.last_image is None else read_picture(args.last_image, "--last-image")
    true_cfg = args.true_cfg_scale is not None and args.true_cfg_scale > 1
    if true_cfg != (args.negative_prompt is not None):
        print("note: FramePack's true CFG takes --true-cfg-scale above 1 and "
              "--negative-prompt together; with one alone it is off", file=sys.stderr)
    cache = flow_video_cache(args, "FramePack")
    file = {"transformer": args.model} if args.base is not None else {}
    pipe = load_flow_video(HunyuanVideoFramepackPipeline, args, dtype, **file)
    bars = SectionBars(args.command)
    videos = pipe(args.prompt, image=image, negative_prompt=args.negative_prompt,
                  height=args.height, width=args.width, num_frames=args.frames,
                  num_inference_steps=args.steps, guidance_scale=args.cfg_scale,
                  true_cfg_scale=args.true_cfg_scale or 1.0,
                  sampling_type=args.sampling_type or "inverted_anti_drifting",
                  latent_window_size=args.latent_window_size or 9, last_image=last,
                  seed=args.seed, rng=args.rng, callback=bars.step,
                  section_callback=bars.section, cache=cache)
    return finish_video(pipe, videos, cache, out, args.fps, args.verbose)
