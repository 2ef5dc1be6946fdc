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
import sys
from pathlib import Path
from typing import Any

from .memory import memory_mode
from .progress import ProgressBar
from .txt2vid_kandinsky5 import WAN_ONLY
from .vace import vace_named
from .video_lora import patch_loras
from .video_out import finish_video

__all__ = ["refuse_hunyuan_video15_options", "run_hunyuan_video15"]


def refuse_hunyuan_video15_options(args: argparse.Namespace, sized: bool) -> None:
    """ValueError in one line for an option HunyuanVideo 1.5 does not take; `sized`: the
    command line gave --width or --height."""
    from ..loaders.hunyuan_video15.folder import hunyuan_video15_image_to_video

    animates = hunyuan_video15_image_to_video(args.model)
    if args.command == "img2vid" and not animates:
        raise ValueError(f"{args.model} is HunyuanVideo 1.5 text-to-video, which makes videos "
                         "from text only: use txt2vid")
    if args.command == "txt2vid" and animates:
        raise ValueError(f"{args.model} is HunyuanVideo 1.5 image-to-video, which animates a "
                         "picture: use img2vid --image IN.png")
    if animates and sized:
        raise ValueError("HunyuanVideo 1.5 image-to-video makes the size of the picture's "
                         "aspect bucket: leave --width and --height out")
    given = [flag for field, flag in WAN_ONLY.items() if getattr(args, field, None)]
    if vace_named(args):
        given.append(str(vace_named(args)))
    if given:
        raise ValueError(f"{given[0]} is for Wan models; a HunyuanVideo 1.5 folder holds its "
                         "own text encoders and VAE (leave it out)")
    if args.sampler != "diffusers":
        raise ValueError(f"--sampler {args.sampler}: HunyuanVideo 1.5 runs its folder's "
                         "flow-match Euler scheduler (--sampler diffusers)")


def run_hunyuan_video15(args: argparse.Namespace, out: Path, dtype: Any, image: Any = None
                        ) -> int:
    """Generate and write the video as `args` say (checked by cli.txt2vid and
    `refuse_hunyuan_video15_options`) with the HunyuanVideo 1.5 folder `args.model`, its
    weights in `dtype`; `image`: img2vid's first frame; prints the path."""
    from ..pipelines.video import video_cache
    from ..pipelines.video.hunyuan_video15 import HunyuanVideo15Pipeline

    cache = video_cache(args.cache, "--cache", args.steps)
    if cache is not None and cache.spec.kind != "fbc":
        raise ValueError(f"--cache {args.cache}: HunyuanVideo 1.5 runs First Block Cache "
                         "(fbc[:THRESHOLD]); TeaCache's tables are Wan's")
    mode = memory_mode(args)  # a memory mode loads each network straight to host memory
    pipe = HunyuanVideo15Pipeline.from_pretrained(args.model, dtype=dtype,
                                                  offload=args.offload or bool(mode))
    pipe.set_memory_mode(mode)
    if args.fp16_accumulation:
        from ..pipelines.fp16_accumulation import use_fp16_accumulation

        print(use_fp16_accumulation(pipe), file=sys.stderr)
    if args.no_half_vae:
        from ..pipelines.vae_float32 import use_float32_vae

        print(use_float32_vae(pipe), file=sys.stderr)
    if args.lora:
        patch_loras(pipe.lora_targets(), args.lora)
    print(f"seed: {args.seed}", file=sys.stderr)
    bar = ProgressBar(args.command)
    size = {} if image is not None else {"height": args.height, "width": args.width}
    videos = pipe(args.prompt, negative_prompt=args.negative_prompt, num_frames=args.frames,
                  num_inference_steps=args.steps, guidance_scale=args.cfg_scale,
                  seed=args.seed, rng=args.rng, callback=bar.step, cache=cache, image=image,
                  **size)
    return finish_video(pipe, videos, cache, out, args.fps, args.verbose)
