"""`txt2vid --model FOLDER` for a SkyReels V2 diffusion forcing folder (a
SkyReelsV2DiffusionForcingPipeline's): cli.txt2vid checks the settings and fills in the family's
defaults (97 frames of 960 x 544, 50 steps, CFG 6, 24 fps), then hands over here. The diffusion
forcing options keep diffusers' argument names (--ar-step, --causal-block-size,
--base-num-frames, --overlap-history, --addnoise-condition); --fps is also the fps the model is
conditioned on (16, or 24 for any other). `img2vid --image` starts the video from a picture
(diffusers' SkyReelsV2DiffusionForcingImageToVideoPipeline, on the same folders), `--last-image`
the frame it ends on (one window); `txt2vid
--init-video` extends a video by --frames from its last --overlap-history frames (diffusers'
SkyReelsV2DiffusionForcingVideoToVideoPipeline), the file written holding the video, then what
was made. What is Wan's alone (--base and the part files, a second expert, VACE, step caches,
--denoising-strength) is refused in one line before the weights load. SkyReels V2's text- and
image-to-video folders run as Wan's."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from .options import number, whole
from .progress import ProgressBar
from .video_family import load_flow_video, read_picture, refuse_wan_only
from .video_out import finish_video

__all__ = ["add_skyreels_options", "refuse_skyreels_only", "run_skyreels_df",
           "video_to_extend"]

# argparse field -> the flag as typed
_FLAGS = {"ar_step": "--ar-step", "causal_block_size": "--causal-block-size",
          "base_num_frames": "--base-num-frames", "overlap_history": "--overlap-history",
          "addnoise_condition": "--addnoise-condition"}


def add_skyreels_options(sub: argparse.ArgumentParser) -> None:
    """SkyReels V2 diffusion forcing's options (diffusers' argument names)."""
    sub.add_argument("--ar-step", type=whole, default=None, metavar="N",
                     help="SkyReels V2 diffusion forcing: 0 (default) denoises every frame "
                          "together; N > 0 starts each causal block N steps after the one "
                          "before it (asynchronous, e.g. 5)")
    sub.add_argument("--causal-block-size", type=whole, default=None, metavar="N",
                     help="SkyReels V2 diffusion forcing: latent frames per causal block, "
                          "each seeing only itself and the blocks before it (the model's own "
                          "unless given; 5 with --ar-step 5)")
    sub.add_argument("--base-num-frames", type=whole, default=None, metavar="N",
                     help="SkyReels V2 diffusion forcing: the frames made at once (default "
                          "97); a longer --frames is made in overlapping windows of N")
    sub.add_argument("--overlap-history", type=whole, default=None, metavar="N",
                     help="SkyReels V2 diffusion forcing, long videos: the frames each window "
                          "takes over from the one before (e.g. 17); needed when --frames "
                          "passes --base-num-frames")
    sub.add_argument("--addnoise-condition", type=number, default=None, metavar="X",
                     help="SkyReels V2 diffusion forcing, long videos: noise (0-999, e.g. "
                          "20) put back on the frames taken over, for smoother continuations")


def refuse_skyreels_only(args: argparse.Namespace) -> None:
    """ValueError in one line for a diffusion forcing option given to another model."""
    given = [flag for field, flag in _FLAGS.items() if getattr(args, field, None) is not None]
    if given:
        raise ValueError(f"{given[0]} is a SkyReels V2 diffusion forcing option; {args.model} "
                         "is another model: leave it out")


def video_to_extend(args: argparse.Namespace, path: Path, most: int) -> list[Any]:
    """--init-video's frames (PIL images, at most `most`), the video the run extends.
    ValueError in one line for --denoising-strength (Wan's), a missing --overlap-history or a
    video shorter than it."""
    from ..pipelines.video.files import read_frames

    if args.denoising_strength is not None:
        raise ValueError("--denoising-strength: SkyReels V2 does not redraw --init-video, it "
                         "extends it; leave --denoising-strength out")
    if args.overlap_history is None:
        raise ValueError("--init-video: SkyReels V2 extends a video from its last "
                         "--overlap-history frames; give --overlap-history (e.g. 17)")
    frames = read_frames(path, "--init-video", limit=most)
    if len(frames) < args.overlap_history:
        raise ValueError(f"--init-video {path}: {len(frames)} frames, fewer than "
                         f"--overlap-history {args.overlap_history}; give a smaller one")
    return frames


def run_skyreels_df(args: argparse.Namespace, out: Path, dtype: Any, image: Any = None,
                    video: list[Any] | None = None) -> int:
    """Generate and write the video as `args` say (checked and completed by cli.txt2vid)
    with the SkyReels V2 diffusion forcing folder `args.model`, its weights in `dtype`;
    `image`: img2vid's first frame; `video`: --init-video's frames, to extend; prints the
    path."""
    from ..pipelines.video.skyreels_v2_df import SkyReelsV2DiffusionForcingPipeline

    refuse_wan_only(args, "SkyReels V2 diffusion forcing")
    if args.cache:
        raise ValueError("--cache: SkyReels V2 diffusion forcing runs without a step cache "
                         "(its frames are at different timesteps); leave it out")
    last = None
    if args.last_image is not None:
        if image is None:
            raise ValueError("--last-image is the frame an image-to-video run ends on: use "
                             "img2vid --image FIRST.png --last-image END.png")
        last = read_picture(args.last_image, "--last-image")
    pipe = load_flow_video(SkyReelsV2DiffusionForcingPipeline, args, dtype)
    bar = ProgressBar(args.command)
    forcing = {field: getattr(args, field) for field in _FLAGS
               if getattr(args, field) is not None}
    videos = pipe(args.prompt, negative_prompt=args.negative_prompt, height=args.height,
                  width=args.width, num_frames=args.frames, num_inference_steps=args.steps,
                  guidance_scale=args.cfg_scale, seed=args.seed, rng=args.rng,
                  sampler=args.sampler, callback=bar.step, fps=round(args.fps), image=image,
                  last_image=last, video=video, **forcing)
    return finish_video(pipe, videos, None, out, args.fps, args.verbose)
