"""`txt2vid`'s Wan 2.2 Animate options: the character picture (`--animate-image`), the pose
video and the face video (`--pose-video`, `--face-video`: Wan Animate's preprocessing gives
them, the face video's frames cropped to the face) and, to put the character in place of the
person in a video, that video and its mask (`--background-video`, `--mask-video`: white where
the person is); the segments a long video is made in (`--segment-frames`, `--segment-overlap`),
as diffusers' `WanAnimatePipeline(image=, pose_video=, face_video=, background_video=,
mask_video=, mode=, segment_frame_length=, prev_segment_conditioning_frames=)`. The pose
video's length is the video's (--frames is refused); the paths are checked with the other
settings, the files read and fitted (animate_inputs.animate_pixels) before the model loads; a
model that is not Wan Animate, or Wan Animate without its inputs, is refused in one line."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from .options import whole

__all__ = ["add_animate_options", "animate_named", "animate_pixels_of", "check_animate",
           "refuse_animate"]

SEGMENT = 77  # Wan Animate's segment: 21 latent frames
_VIDEOS = (("pose_video", "--pose-video"), ("face_video", "--face-video"),
           ("background_video", "--background-video"), ("mask_video", "--mask-video"))
_OPTIONS = (("animate_image", "--animate-image"), *_VIDEOS,
            ("segment_frames", "--segment-frames"), ("segment_overlap", "--segment-overlap"))


def add_animate_options(sub: argparse.ArgumentParser) -> None:
    """Add the Wan 2.2 Animate options to `sub` (txt2vid)."""
    group = sub.add_argument_group("Wan 2.2 Animate (a WanAnimatePipeline folder, or "
                                   "Wan2_2-Animate-14B.safetensors with --base)")
    group.add_argument("--animate-image", metavar="PIC",
                       help="the character to animate (fitted inside --width x --height on "
                            "black)")
    video = ("an .mp4 / .webm (PyAV), an animated .webp / .gif, or a folder of frames in name "
             "order")
    group.add_argument("--pose-video", metavar="VIDEO|DIR",
                       help=f"the pose video (resized to --width x --height): {video}; its "
                            "length is the video's")
    group.add_argument("--face-video", metavar="VIDEO|DIR",
                       help="the face crops, one per pose frame (resized to the model's 512 x "
                            "512)")
    group.add_argument("--background-video", metavar="VIDEO|DIR",
                       help="replace: the video whose person the character replaces, one frame "
                            "per pose frame; needs --mask-video")
    group.add_argument("--mask-video", metavar="VIDEO|DIR",
                       help="replace: the person's mask, read as grey levels: white = the "
                            "character is drawn, black = the background kept")
    group.add_argument("--segment-frames", type=whole, default=None, metavar="N",
                       help=f"frames made at a time, 1 + 4k ({SEGMENT}, or fewer for a "
                            "shorter pose video); longer videos are made segment by segment")
    group.add_argument("--segment-overlap", type=whole, default=1, choices=(1, 5),
                       help="the previous segment's last frames a segment continues from (1)")


def animate_named(args: argparse.Namespace) -> str | None:
    """The first Wan Animate option given, as the user typed it (None: none given)."""
    return next((flag for field, flag in _OPTIONS[:5] if getattr(args, field, None)), None)


def check_animate(args: argparse.Namespace) -> None:
    """What needs no file read: the files exist, the replace videos come together and with
    the others, the segment is 1 + 4k frames. ValueError in one line."""
    if not animate_named(args):  # (img2vid has none of these options)
        if getattr(args, "segment_frames", None) is not None:
            raise ValueError("--segment-frames is for Wan Animate: give --animate-image, "
                             "--pose-video and --face-video")
        return
    for field, flag in (("animate_image", "--animate-image"), *_VIDEOS[:2]):
        if not getattr(args, field, None):
            raise ValueError(f"Wan Animate needs {flag} (the character picture, the pose video "
                             "and the face video)")
    if bool(args.background_video) != bool(args.mask_video):
        raise ValueError("replacing a person needs both --background-video and --mask-video "
                         "(white where the person is); give both, or neither to animate the "
                         "picture")
    if args.segment_frames is not None:
        from ..pipelines.video.animate_inputs import check_segments

        check_segments(args.segment_frames, args.segment_overlap)
    if not Path(args.animate_image).is_file():
        raise ValueError(f"--animate-image {args.animate_image}: no such file")
    for field, flag in _VIDEOS:
        value = getattr(args, field, None)
        if value and not Path(value).exists():
            raise ValueError(f"{flag} {value}: no such file or folder")


def refuse_animate(args: argparse.Namespace, animate: bool) -> None:
    """ValueError in one line for Wan Animate's options on another model, or Wan Animate
    without them or with what it does not take."""
    named = animate_named(args)
    if named and not animate:
        raise ValueError(f"{named} needs a Wan 2.2 Animate model (a diffusers folder whose "
                         "model_index.json names WanAnimatePipeline, or its transformer file "
                         "with --base)")
    if not animate:
        return
    if args.command == "img2vid":
        raise ValueError("Wan Animate runs as txt2vid: give the character as --animate-image, "
                         "with --pose-video and --face-video")
    if not named:
        raise ValueError("this is Wan 2.2 Animate: give --animate-image, --pose-video and "
                         "--face-video (and --background-video with --mask-video to replace a "
                         "person)")
    if args.cfg_scale_2:
        raise ValueError("Wan Animate does not take --cfg-scale-2")


def _picture(path: str) -> Any:
    from PIL import Image, UnidentifiedImageError

    from ..imaging import eight_bit

    try:
        with Image.open(path) as opened:
            return eight_bit(opened).convert("RGBA" if "A" in opened.mode else "RGB")
    except (UnidentifiedImageError, OSError):
        raise ValueError(f"--animate-image {path}: not a readable picture (PNG, JPEG, "
                         "WebP...)") from None


def animate_pixels_of(args: argparse.Namespace, face_size: int, max_frames: int) -> Any:
    """The picture and videos read and fitted (animate_inputs.AnimatePixels, host only);
    --segment-frames made its default where not given."""
    from ..pipelines.video.animate_inputs import TEMPORAL, animate_pixels
    from ..pipelines.video.files import read_frames

    videos = {field: read_frames(Path(getattr(args, field)), flag, "L" if field == "mask_video"
                                 else "RGB")
              for field, flag in _VIDEOS if getattr(args, field, None)}
    count = len(videos["pose_video"])
    if count > max_frames:
        raise ValueError(f"--pose-video {args.pose_video} has {count} frames; give at most "
                         f"{max_frames}")
    if args.segment_frames is None:  # 77, or the least 1 + 4k past the overlap that covers
        least = max(count, args.segment_overlap + 1)
        args.segment_frames = min(SEGMENT, -(-(least - 1) // TEMPORAL) * TEMPORAL + 1)
    if count <= args.segment_overlap:
        raise ValueError(f"--pose-video {args.pose_video} has {count} frames; give more than "
                         f"--segment-overlap {args.segment_overlap}")
    return animate_pixels(
        _picture(args.animate_image), videos["pose_video"], videos["face_video"],
        height=args.height, width=args.width, face_size=face_size,
        background=videos.get("background_video"), mask=videos.get("mask_video"),
        names=[flag for _, flag in _VIDEOS])
