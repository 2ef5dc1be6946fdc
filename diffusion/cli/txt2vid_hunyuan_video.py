"""`txt2vid --model FOLDER` for a HunyuanVideo (1.0) folder (a HunyuanVideoPipeline's), and
`img2vid --model FOLDER --image IN.png` for a HunyuanVideo-I2V one (a
HunyuanVideoImageToVideoPipeline's: the picture is the first frame, resized to --width x
--height): cli.txt2vid checks the settings and fills in the family's defaults (129 frames of
1280 x 720, 50 steps, embedded guidance 6, 24 fps), then hands over here. --cfg-scale is the
guidance the distilled transformer reads; --true-cfg-scale above 1 with --negative-prompt adds
true classifier-free guidance (two passes a step), as diffusers' `true_cfg_scale`. --lora
patches the transformer; --medvram / --lowvram / --max-vram run as the flow families'
(flow_memory). What is Wan's alone (--base and the part files, a second expert, VACE,
TeaCache, other samplers) is refused in one line before the weights load."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from .progress import ProgressBar
from .video_family import flow_video_cache, load_flow_video, refuse_command, refuse_wan_only
from .video_out import finish_video

__all__ = ["refuse_hunyuan_video_options", "run_hunyuan_video"]


def refuse_hunyuan_video_options(args: argparse.Namespace) -> None:
    """ValueError in one line for an option HunyuanVideo does not take, the command that
    does not fit the folder, or a folder of another HunyuanVideo pipeline (SkyReels,
    FramePack)."""
    from ..loaders.formats.diffusers_folder import pipeline_class
    from ..loaders.hunyuan_video.folder import I2V_CLASS, refuse_not_run

    refuse_not_run(args.model)
    refuse_command(args, pipeline_class(Path(args.model)) == I2V_CLASS,
                   text_model="HunyuanVideo text-to-video", picture_model="HunyuanVideo-I2V")
    refuse_wan_only(args, "HunyuanVideo")


def run_hunyuan_video(args: argparse.Namespace, out: Path, dtype: Any, image: Any = None
                      ) -> int:
    """Generate and write the video as `args` say (checked by cli.txt2vid and
    `refuse_hunyuan_video_options`) with the HunyuanVideo folder `args.model`, its weights in
    `dtype`; `image`: img2vid's first frame; prints the path."""
    from ..pipelines.video.hunyuan_video_i2v import hunyuan_video_class

    # diffusers' pipeline takes either alone and does nothing with it: said, not silent
    true_cfg = args.true_cfg_scale is not None and args.true_cfg_scale > 1
    if true_cfg != (args.negative_prompt is not None):
        print("note: HunyuanVideo's true CFG takes --true-cfg-scale above 1 and "
              "--negative-prompt together; with one alone it is off (--cfg-scale, the "
              "distilled guidance, reads no negative prompt)", file=sys.stderr)
    cache = flow_video_cache(args, "HunyuanVideo")
    pipe = load_flow_video(hunyuan_video_class(args.model), args, dtype)
    bar = ProgressBar(args.command)
    videos = pipe(args.prompt, negative_prompt=args.negative_prompt, height=args.height,
                  width=args.width, num_frames=args.frames, num_inference_steps=args.steps,
                  guidance_scale=args.cfg_scale, true_cfg_scale=args.true_cfg_scale or 1.0,
                  seed=args.seed, rng=args.rng, callback=bar.step, cache=cache, image=image)
    return finish_video(pipe, videos, cache, out, args.fps, args.verbose)
