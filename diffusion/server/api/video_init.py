"""Wan video-to-video on POST /avx/txt2vid: `init_video`, the video to redraw as the prompt says
(a base64 video file: MP4 / WebM through PyAV, an animated WebP or GIF; or a list of base64
pictures, one a frame, as the Animate and VACE fields take videos), and `denoising_strength`
(0.8 unless given), as `txt2vid --init-video ... --denoising-strength S` (cli.init_video). The
video's frame count and size are the request's unless it gives them (its first `frames`;
resized to `width` x `height`); what it cannot take (a count or size Wan cannot make, a
strength leaving no step, another model's or another mode's fields) is refused in one line
before the queue. For a Cosmos Predict2.5 or Predict2 Video2World folder `init_video` is the
video to continue (video2world, video_cosmos25): its last frames are kept (Predict2.5: 5;
Predict2: `frames`), the request's size and count its own. For a Lucy Edit folder it is the
video to edit as the prompt says, read as Wan's, and required; it takes no
`denoising_strength` (the whole schedule runs from noise). A Helios folder continues it from its
last whole chunks (video_helios)."""

from __future__ import annotations

import base64
import binascii
import tempfile
from pathlib import Path
from typing import Any

from ...imaging import eight_bit
from ...loaders.cosmos import cosmos_family
from ...loaders.helios import helios_family
from ...loaders.wan import WanFiles, wan_family
from ...loaders.wan.sources import is_wan_animate
from ...pipelines.video.models import video_family_name
from ..images import decode_image
from .video_sources import video_source

__all__ = ["DEFAULT_STRENGTH", "MAX_FRAMES", "init_video_of", "refuse_init_video"]

MAX_FRAMES = 1001  # as the request's `frames`
DEFAULT_STRENGTH = 0.8  # diffusers' WanVideoToVideoPipeline's
_DATA_URL = "base64,"


def _video_file(text: str, limit: int | None, last: int | None = None) -> list[Any]:
    """The first `limit` (or the `last`) frames of a base64 video file, read as `txt2vid
    --init-video FILE` reads one."""
    from ...pipelines.video.files import read_frames

    try:
        raw = base64.b64decode(text.split(_DATA_URL, 1)[-1], validate=False)
    except (binascii.Error, ValueError):
        raw = b""
    if not raw:
        raise ValueError("init_video is not base64: send a video file's bytes (MP4, WebM, "
                         "animated WebP or GIF) base64-encoded, or a list of base64 pictures")
    # PyAV reads MP4 (an "ftyp" box) and WebM (EBML); Pillow the rest, whatever its suffix
    suffix = ".mp4" if raw[4:8] == b"ftyp" else ".webm" if raw[:4] == b"\x1aE\xdf\xa3" \
        else ".webp"
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / f"init{suffix}"
        path.write_bytes(raw)
        try:
            return read_frames(path, "init_video", limit=limit, last=last)
        except ValueError as error:  # without the temporary file's name
            raise ValueError(str(error).replace(f" {path}", "")) from None


def init_video_of(body: Any, registry: Any) -> tuple[list[Any] | None, Any]:
    """The request's init video (PIL images, as the run takes them) and the request with the
    frames, width and height it sets where the request leaves them out, and its strength
    (DEFAULT_STRENGTH unless given; a Lucy Edit folder's None, a strength refused); (None,
    `body`) without one; for a Cosmos Predict2.5 or Predict2 Video2World model (found in
    `registry`) the video's last frames and `body` as it is; for a SkyReels V2 diffusion
    forcing folder the video to extend, for a Helios folder the video to continue, and `body`
    as it is. ValueError (ImageError) in one line."""
    from ...pipelines.video.wan_video2video import fit_init_video

    if body.init_video is None:
        if body.denoising_strength is not None:
            raise ValueError("denoising_strength is for video-to-video: send init_video too")
        return None, body
    model = video_source(registry, body).model
    lucy = wan_family(model) == "lucy-edit"
    if lucy and body.denoising_strength is not None:  # (it stays None: the whole schedule)
        from ...pipelines.video.wan_refuse import refuse_lucy

        refuse_lucy(image=False, cache_kind=None, guidance_scale_2=None, control=None,
                    strength="denoising_strength")
    if helios_family(model):  # the video to continue, every frame of it
        from .video_helios import video_to_continue

        return video_to_continue(body, _video_file(body.init_video, MAX_FRAMES + 1)
                                 if isinstance(body.init_video, str) else
                                 [eight_bit(decode_image(text, f"init_video[{i}]")).convert("RGB")
                                  for i, text in enumerate(body.init_video)]), body
    if wan_family(model) == "skyreels-v2-df":  # the video to extend, every frame of it
        from .video_skyreels import video_to_extend

        return video_to_extend(body, _video_file(body.init_video, MAX_FRAMES + 1)
                               if isinstance(body.init_video, str) else body.init_video), body
    cosmos = cosmos_family(model)
    if cosmos in ("cosmos25", "cosmos2-v2w"):
        from ...pipelines.video.models import COSMOS2_V2W
        from .video_cosmos25 import VIDEO2WORLD_FRAMES, check_predict2_video, check_video2world

        made = body.frames or COSMOS2_V2W.frames
        last = VIDEO2WORLD_FRAMES if cosmos == "cosmos25" else made
        frames = _video_file(body.init_video, None, last) if isinstance(body.init_video, str) \
            else [eight_bit(decode_image(text, "init_video")).convert("RGB")
                  for text in body.init_video[-last:]]
        if cosmos == "cosmos25":
            check_video2world(body, len(frames))
        else:
            check_predict2_video(body, frames, made)
        return frames, body
    limit = body.frames or MAX_FRAMES + 1  # only what the run may take is decoded
    if isinstance(body.init_video, str):
        frames = _video_file(body.init_video, limit)
    else:
        frames = [eight_bit(decode_image(text, f"init_video[{i}]")).convert("RGB")
                  for i, text in enumerate(body.init_video[:limit])]
    if not frames:
        raise ValueError("init_video holds no frames")
    frames, width, height = fit_init_video(frames, "init_video", count=body.frames,
                                           width=body.width, height=body.height,
                                           most=MAX_FRAMES, option="{}={}")
    return frames, body.model_copy(update={
        "frames": len(frames), "width": width, "height": height,
        "denoising_strength": None if lucy else body.denoising_strength or DEFAULT_STRENGTH})


def refuse_init_video(body: Any, model: tuple[Path, WanFiles], steps: int, *, image: bool,
                      control: str | None) -> None:
    """ValueError in one line for an init video `model` (a folder and the files in place of
    its parts) does not redraw (Wan 2.2 Animate, another family than Wan's), or with what it
    does not go with: a first frame (`image`), Wan VACE's fields (`control`: the first
    given), or a strength that leaves none of `steps` to run; a Lucy Edit folder without
    one."""
    from ...pipelines.video.wan_schedule import check_strength
    from ...pipelines.video.wan_video2video import refuse_video2video

    lucy = wan_family(model[0]) == "lucy-edit"
    if body.init_video is None and lucy:
        raise ValueError("Lucy Edit edits a video: send init_video (the video to edit) to "
                         "/avx/txt2vid")
    if body.init_video is None:
        return
    if cosmos_family(model[0]) in ("cosmos25", "cosmos2-v2w"):
        if image:
            raise ValueError("init_video and image do not go together: Cosmos Predict2.5 and "
                             "Predict2 Video2World continue a video (/avx/txt2vid) or a "
                             "picture (/avx/img2vid)")
        return
    if helios_family(model[0]):
        if image:
            raise ValueError("init_video and image do not go together: Helios continues a "
                             "video (/avx/txt2vid) or animates a picture (/avx/img2vid)")
        return
    if wan_family(model[0]) == "skyreels-v2-df":
        if image:
            raise ValueError("init_video and image do not go together: SkyReels V2 diffusion "
                             "forcing extends a video (/avx/txt2vid) or starts from a picture "
                             "(/avx/img2vid)")
        return
    if lucy:  # its own refusals: wan_refusals_of's
        return
    if video_family_name(model[0]) != "wan" or is_wan_animate(*model):
        raise ValueError("init_video is for Wan's text-to-video models (Wan 2.1, Wan 2.2; "
                         "Lucy Edit edits one; Cosmos Predict2.5, Predict2 Video2World and "
                         "Helios continue one); this model does not redraw a video")
    if control is not None:
        raise ValueError(f"init_video and {control} do not go together: a Wan VACE model "
                         "edits a video through control_video and control_mask")
    refuse_video2video(image=image, vace=False, conditioned=False)
    check_strength(body.denoising_strength, steps, ("denoising_strength", "steps"))
