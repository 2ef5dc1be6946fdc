"""The video families the `txt2vid` command and the server's /avx/txt2vid run, told from a
model's folder or file before anything loads: Wan (WanPipeline: its folders and ComfyUI's
transformer files) and Kandinsky 5 Video Lite (Kandinsky5VideoPipeline: a Kandinsky5T2VPipeline
folder); Wan 2.2 Animate runs as Wan with its own defaults; LTX-2 (LTX2Pipeline: an
LTX2Pipeline folder; txt2vid only, its video with audio). Each family's defaults are its
diffusers pipeline's (the frames, size, steps and guidance of its `__call__`; the fps its model
card writes videos at), and `refuse_video` says in one line what a Kandinsky 5 folder's
transformer does not run."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from ...loaders.formats.diffusers_folder import component_config
from ...loaders.kandinsky5 import kandinsky5_video_family
from ...loaders.ltx2.folder import ltx2_family
from ...loaders.wan.sources import is_wan_animate

__all__ = ["KANDINSKY5_VIDEO", "LTX2", "WAN", "WAN_ANIMATE", "VideoDefaults", "refuse_video",
           "video_defaults", "video_family_name"]


@dataclass(frozen=True)
class VideoDefaults:
    """What a family's video is made with where the request or the command line says
    nothing."""

    frames: int
    width: int
    height: int
    steps: int
    cfg_scale: float
    fps: float


WAN = VideoDefaults(frames=81, width=832, height=480, steps=50, cfg_scale=5.0, fps=16.0)
# Kandinsky5T2VPipeline's __call__ (121 frames of 768 x 512, 50 steps, guidance 5), written at
# 24 fps as its model card does
KANDINSKY5_VIDEO = VideoDefaults(frames=121, width=768, height=512, steps=50, cfg_scale=5.0,
                                 fps=24.0)
# LTX2Pipeline's __call__ (121 frames of 768 x 512 at 24 fps, 30 steps, video guidance 3)
LTX2 = VideoDefaults(frames=121, width=768, height=512, steps=30, cfg_scale=3.0, fps=24.0)

# WanAnimatePipeline's __call__ (1280 x 720, 20 steps, unguided; its segment of 77 frames, the
# pose video's length being the video's), written at 30 fps as its example does
WAN_ANIMATE = VideoDefaults(frames=77, width=1280, height=720, steps=20, cfg_scale=1.0,
                            fps=30.0)


def video_family_name(path: str | os.PathLike[str]) -> str:
    """"kandinsky-5-video" for a Kandinsky 5 Video Lite folder, "ltx-2" for an LTX-2 one, else
    "wan" (Wan's loaders name what is wrong with anything that is not Wan's either)."""
    return kandinsky5_video_family(path) or ltx2_family(path) or "wan"


def video_defaults(path: str | os.PathLike[str]) -> VideoDefaults:
    """The defaults of the video family at `path` (video_family_name; a Wan 2.2 Animate
    folder's or transformer file's are WAN_ANIMATE)."""
    family = video_family_name(path)
    if family == "kandinsky-5-video":
        return KANDINSKY5_VIDEO
    if family == "ltx-2":
        return LTX2
    return WAN_ANIMATE if is_wan_animate(Path(path)) else WAN


def refuse_video(path: str | os.PathLike[str]) -> None:
    """ValueError in one line where the Kandinsky 5 Video folder `path`'s transformer takes
    sparse NABLA attention (the 10-second models): run densely its videos would not be the
    ones diffusers' sparse attention makes, and no reference can say how far apart they are."""
    config = component_config(Path(path), "transformer") or {}
    kind = config.get("attention_type", "regular")
    if kind != "regular":
        raise ValueError(f"{path}: its transformer takes sparse {kind!r} (NABLA) attention, "
                         "which is not run here; use a 5-second Kandinsky 5 Video Lite model "
                         "(regular attention)")
