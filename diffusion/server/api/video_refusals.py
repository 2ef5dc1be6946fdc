"""What the video folders that hold their own text encoders and VAE (Kandinsky 5 Video Lite,
HunyuanVideo 1.5, HunyuanVideo and FramePack) do not take on /avx/txt2vid and /avx/img2vid, said in
one line before the request is queued (routers.video calls these, RequestError: 422): a picture
where the model makes videos from text, none where it animates one, and Wan's own fields (the second
expert's guidance, VACE's control, Wan's samplers, TeaCache), as `txt2vid` and `img2vid` refuse
them."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ...loaders.hunyuan_video.folder import refuse_not_run
from ...loaders.hunyuan_video15.folder import hunyuan_video15_image_to_video
from ...loaders.kandinsky5 import kandinsky5_image_to_video
from ...pipelines.video.models import VideoDefaults

__all__ = ["refuse_hunyuan_video", "refuse_hunyuan_video15", "refuse_kandinsky5"]


def _wan_only(body: Any, control: str | None, cache_kind: str | None) -> str | None:
    """The first of Wan's own fields the request gives (`control`: the VACE field it names),
    None for none."""
    return next((name for name, given in (
        ("cfg_scale_2", body.cfg_scale_2 is not None),
        (str(control), control is not None),
        (f"sampler {body.sampler!r}", body.sampler != "diffusers"),
        (f"cache {body.cache!r}", cache_kind not in (None, "fbc"))) if given), None)


def refuse_kandinsky5(folder: Path, body: Any, s: VideoDefaults, image: Any,
                      cache_kind: str | None, control: str | None) -> None:
    """ValueError in one line for what a Kandinsky 5 Video folder does not take: its
    image-to-video model without a picture or with fewer than 17 frames (as `img2vid` refuses
    them), a picture for Video Lite, Wan's own fields."""
    from ...pipelines.video.kandinsky5_i2v import refuse_short
    from ...pipelines.video.models import refuse_video

    refuse_video(folder)
    animates = kandinsky5_image_to_video(folder)
    if animates and image is None:
        raise ValueError(f"{folder.name} is Kandinsky 5's image-to-video model, which animates a "
                         "picture: use /avx/img2vid with its first frame as `image`")
    if animates:
        refuse_short(s.frames)
    given = "image" if image is not None and not animates else _wan_only(body, control,
                                                                         cache_kind)
    if given:
        raise ValueError(f"{given} is for Wan models; Kandinsky 5 Video Lite makes "
                         "videos from text (its image-to-video model from a first frame) with "
                         "its own scheduler (sampler \"diffusers\") and First Block Cache")


def refuse_hunyuan_video15(folder: Path, body: Any, image: Any, cache_kind: str | None,
                           control: str | None) -> None:
    """ValueError in one line for what a HunyuanVideo 1.5 folder does not take: its
    image-to-video model without a picture or with a size (the picture's bucket is the
    video's), a picture for text to video, Wan's own fields."""
    animates = hunyuan_video15_image_to_video(folder)
    if animates != (image is not None):
        raise ValueError(f"{folder.name} is HunyuanVideo 1.5 " + (
            "image-to-video, which animates a picture: use /avx/img2vid with its first frame "
            "as `image`" if animates else "text-to-video: use /avx/txt2vid, without a picture"))
    if animates and (body.width is not None or body.height is not None):
        raise ValueError("HunyuanVideo 1.5 image-to-video makes the size of the picture's "
                         "aspect bucket: leave width and height out")
    given = _wan_only(body, control, cache_kind)
    if given:
        raise ValueError(f"{given} is for Wan models; HunyuanVideo 1.5 runs its own "
                         "scheduler (sampler \"diffusers\") and First Block Cache")


def refuse_hunyuan_video(folder: Path, body: Any, image: Any, cache_kind: str | None,
                         control: str | None) -> None:
    """ValueError in one line for what a HunyuanVideo folder does not take: a picture for
    text to video, none for image to video (HunyuanVideo-I2V, FramePack), diffusers' other
    HunyuanVideo pipelines (refuse_not_run), Wan's own fields."""
    from ...loaders.formats.diffusers_folder import pipeline_class
    from ...loaders.hunyuan_video.folder import I2V_CLASS
    from ...loaders.hunyuan_video.framepack import FRAMEPACK_CLASS

    if pipeline_class(folder) == FRAMEPACK_CLASS:
        if image is None:
            raise ValueError(f"{folder.name} is FramePack, which animates a picture: use "
                             "/avx/img2vid with its first frame as `image`")
    else:
        refuse_not_run(folder)
    animates = pipeline_class(folder) in (I2V_CLASS, FRAMEPACK_CLASS)
    if image is not None and not animates:
        raise ValueError(f"{folder.name} is HunyuanVideo text-to-video: use /avx/txt2vid, "
                         "without a picture")
    if image is None and animates:
        raise ValueError(f"{folder.name} is HunyuanVideo-I2V, which animates a picture: use "
                         "/avx/img2vid with its first frame as `image`")
    given = _wan_only(body, control, cache_kind)
    if given:
        raise ValueError(f"{given} is for Wan models; HunyuanVideo runs its own scheduler "
                         "(sampler \"diffusers\") and First Block Cache")
