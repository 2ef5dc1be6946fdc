"""`txt2vid`'s video-to-video options, the video counterpart of img2img: `--init-video` (a
video to redraw as the prompt says) and `--denoising-strength` (the WebUI's name: how much of
the schedule is redone, 0.8 unless given), as diffusers' `WanVideoToVideoPipeline(video=,
strength=)`. The video is read before the model loads: its frame count is the run's (or its
first --frames), its size too unless --width / --height resize it (Lanczos, as diffusers'
video processor); a count or size Wan cannot take, a strength that leaves no step and what the
init video does not go with are refused in one line. For Cosmos Predict2.5 `--init-video` is
the video to continue (video2world, cli.txt2vid_cosmos25); for SkyReels V2 diffusion forcing
the video to extend (cli.txt2vid_skyreels); for Lucy Edit the video to edit as the prompt says
(the whole schedule from noise: no strength), read as Wan's; for Helios the video to
continue (cli.txt2vid_helios)."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from .options import number
from .vace import vace_named

__all__ = ["DEFAULT_STRENGTH", "add_init_video_options", "init_video_of"]

DEFAULT_STRENGTH = 0.8  # diffusers' WanVideoToVideoPipeline's


def add_init_video_options(sub: argparse.ArgumentParser) -> None:
    """Add the video-to-video options to `sub` (txt2vid)."""
    group = sub.add_argument_group("video-to-video (Wan's text-to-video models; Lucy Edit; "
                                   "Cosmos Predict2.5's video2world; SkyReels V2's "
                                   "extension)")
    group.add_argument("--init-video", metavar="VIDEO|DIR",
                       help="Wan: a video to redraw as the prompt says: an .mp4 / .webm (PyAV), "
                            "an animated .webp / .gif, or a folder of frames in name order; its "
                            "frame count (1 + 4k; or its first --frames) and size (multiples of "
                            "16; or resized to --width x --height) are the video's. Lucy Edit: "
                            "the video to edit as --prompt says, read likewise. Cosmos "
                            "Predict2.5: the video to continue (video2world): its last 5 frames, "
                            "resized to --width x --height, begin the --frames made (Cosmos "
                            "Predict2 Video2World: all its frames). SkyReels V2 diffusion "
                            "forcing: the video to extend by --frames, from its last "
                            "--overlap-history frames")
    group.add_argument("--denoising-strength", type=number, default=None, metavar="S",
                       help="how much of the init video is redrawn, above 0 to 1: 1 redraws "
                            "it all, lower keeps more of it; runs int(steps x S) of the steps "
                            f"({DEFAULT_STRENGTH:g})")


def init_video_of(args: argparse.Namespace, animate: bool, most: int) -> list[Any] | None:
    """--init-video's frames (PIL images) as the run takes them, its frame count and size set
    as --frames, --width and --height where they are not given (at most `most` frames), and
    --denoising-strength (DEFAULT_STRENGTH unless given; Lucy Edit: None); None without a
    video. ValueError in one line for a strength without a video, a video with what it does
    not go with (Wan Animate, Wan VACE's options, another family than Wan's and Lucy Edit's),
    a strength out of range or leaving no step (Lucy Edit: any strength), a frame count or size
    Wan cannot take, a Lucy Edit folder without a video or on img2vid."""
    from ..pipelines.video.models import video_defaults, video_family_name
    from ..pipelines.video.wan_schedule import check_strength

    path, strength = getattr(args, "init_video", None), getattr(args, "denoising_strength", None)
    if path is None and strength is not None:
        raise ValueError("--denoising-strength is for video-to-video: give --init-video too")
    if path is not None and not animate and video_family_name(args.model) in (
            "cosmos-predict2.5", "cosmos-predict2"):
        from .txt2vid_cosmos25 import video_to_continue

        return video_to_continue(args, Path(path))
    if path is not None and not animate and video_family_name(args.model) == "helios":
        from .txt2vid_helios import video_to_continue as helios_video

        return helios_video(args, Path(path), most)
    if path is not None and not animate and video_family_name(args.model) == "skyreels-v2-df":
        from .txt2vid_skyreels import video_to_extend

        return video_to_extend(args, Path(path), most)
    lucy = not animate and video_family_name(args.model) == "lucy-edit"
    if lucy and (path is None or args.command != "txt2vid"):
        raise ValueError(f"{args.model} is Lucy Edit, which edits a video: use `txt2vid "
                         f"--model {args.model} --init-video IN.mp4 --prompt 'the edit'`")
    if lucy and strength is not None:  # (it stays None: the whole schedule runs)
        from ..pipelines.video.wan_refuse import refuse_lucy

        refuse_lucy(image=False, cache_kind=None, guidance_scale_2=None, control=None,
                    strength="--denoising-strength")
    if not lucy:
        args.denoising_strength = DEFAULT_STRENGTH if strength is None else strength
    if path is None:
        return None
    if not lucy and (animate or video_family_name(args.model) != "wan"):
        raise ValueError("--init-video is for Wan's text-to-video models (Wan 2.1, Wan 2.2; "
                         "Lucy Edit edits one, Cosmos Predict2 and 2.5 continue one, SkyReels V2 "
                         "diffusion forcing extends one); this model does not redraw a video")
    if vace_named(args):
        raise ValueError(f"--init-video and {vace_named(args)} do not go together: a Wan VACE "
                         "model edits a video through --control-video and --control-mask")
    if not lucy:
        steps = video_defaults(args.model).steps if args.steps is None else args.steps
        check_strength(args.denoising_strength, steps, ("--denoising-strength", "--steps"))
    from ..pipelines.video.files import read_frames
    from ..pipelines.video.wan_video2video import fit_init_video

    read = read_frames(Path(path), "--init-video", limit=args.frames or most + 1)
    frames, args.width, args.height = fit_init_video(
        read, f"--init-video {path}", count=args.frames, width=args.width, height=args.height,
        most=most)
    args.frames = len(frames)
    return frames
