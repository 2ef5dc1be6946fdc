"""Wan 2.2 Animate on POST /avx/txt2vid: the character picture (`animate_image`), the pose and
face videos (`pose_video`, `face_video`) and, to replace a person in a video, that video and
its mask (`background_video`, `mask_video`: white where the person is), each a list of base64
pictures, one a frame; `segment_frames` and `segment_overlap`, as `txt2vid --animate-image PIC
--pose-video DIR ...` takes them (cli.animate). The pose video's length is the video's
(`frames` is refused); what a request leaves out is Wan Animate's defaults
(pipelines.video.models.WAN_ANIMATE: 1280 x 720, 20 steps, unguided). What another model or
Wan Animate does not take is refused in one line before the queue."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ...loaders.wan import WanFiles
from ...loaders.wan.sources import animate_face_size, is_wan_animate

__all__ = ["FIELDS", "animate_named", "animate_pixels_of", "refuse_animate"]

FIELDS = ("animate_image", "pose_video", "face_video", "background_video", "mask_video")
SEGMENT = 77  # Wan Animate's segment: 21 latent frames


def animate_named(body: Any) -> str | None:
    """The first Wan Animate field the request gives (None: none)."""
    return next((name for name in FIELDS if getattr(body, name, None)), None)


def refuse_animate(body: Any, model: tuple[Path, WanFiles], image: bool,
                   control: str | None) -> bool:
    """Whether `model` (a folder and the files in place of its parts) is Wan 2.2 Animate,
    after the refusals: its fields for another model, a Wan Animate request without them or
    with what it does not take (`image`: a first frame; `control`: the VACE field given),
    ValueError in one line."""
    animate, named = is_wan_animate(*model), animate_named(body)
    if named and not animate:
        raise ValueError(f"{named} needs a Wan 2.2 Animate model (a diffusers folder whose "
                         "model_index.json names WanAnimatePipeline, or its transformer file "
                         "with a base)")
    if body.segment_frames is not None and not animate:
        raise ValueError("segment_frames is for Wan 2.2 Animate models")
    if not animate:
        return False
    if body.frames is not None:
        raise ValueError("Wan 2.2 Animate makes as many frames as pose_video has: leave frames "
                         "out")
    for name in FIELDS[:3]:
        if not getattr(body, name):
            raise ValueError(f"Wan 2.2 Animate needs {name} (the character picture, the pose "
                             "video and the face video)")
    if bool(body.background_video) != bool(body.mask_video):
        raise ValueError("replacing a person needs both background_video and mask_video "
                         "(white where the person is); send both, or neither to animate the "
                         "picture")
    for given, what in ((image, "a first frame (img2vid's image; send the character as "
                                "animate_image)"),
                        (body.cfg_scale_2 is not None, "cfg_scale_2"), (control, control)):
        if given:
            raise ValueError(f"Wan 2.2 Animate does not take {what}")
    return True


def animate_pixels_of(body: Any, model: tuple[Path, WanFiles], settings: Any
                      ) -> tuple[Any, int | None]:
    """The request's picture and videos decoded and fitted (animate_inputs.AnimatePixels,
    host only) at `settings`' size (the request's, or the family's defaults) and its segment
    length (77, or fewer for a shorter pose video); (None, None) for a request without them.
    ValueError (ImageError) in one line."""
    from ...imaging import eight_bit
    from ...pipelines.video.animate_inputs import TEMPORAL, animate_pixels, check_segments
    from ..images import decode_image

    if not animate_named(body):
        return None, None
    videos = {name: [eight_bit(decode_image(text, f"{name}[{i}]")).convert(
        "L" if name == "mask_video" else "RGB") for i, text in enumerate(getattr(body, name))]
        for name in FIELDS[1:] if getattr(body, name)}
    count, overlap = len(videos["pose_video"]), body.segment_overlap
    segment = body.segment_frames
    if segment is None:  # the least 1 + 4k past the overlap that covers the video, up to 77
        least = max(count, overlap + 1)
        segment = min(SEGMENT, -(-(least - 1) // TEMPORAL) * TEMPORAL + 1)
    check_segments(segment, overlap)
    if count <= overlap:
        raise ValueError(f"pose_video has {count} frames; send more than segment_overlap "
                         f"({overlap})")
    pixels = animate_pixels(
        decode_image(body.animate_image, "animate_image"), videos["pose_video"],
        videos["face_video"], height=settings.height, width=settings.width,
        face_size=animate_face_size(*model),
        background=videos.get("background_video"), mask=videos.get("mask_video"),
        names=FIELDS[1:])
    return pixels, segment
