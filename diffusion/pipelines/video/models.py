"""The video families the `txt2vid` command and the server's /avx/txt2vid run, told from a
model's folder or file before anything loads: Wan (WanPipeline: its folders and ComfyUI's
transformer files), Kandinsky 5 Video Lite (Kandinsky5VideoPipeline: a Kandinsky5T2VPipeline
folder), HunyuanVideo 1.5 (HunyuanVideo15Pipeline: its t2v and i2v folders), HunyuanVideo
(HunyuanVideoPipeline: a HunyuanVideoPipeline folder; txt2vid only), LTX-2 (LTX2Pipeline: an
LTX2Pipeline folder; txt2vid only, its video with audio), Cosmos Predict2.5
(Cosmos25PredictPipeline: a Cosmos2_5_PredictBasePipeline folder), SkyReels V2 diffusion
forcing (skyreels_v2_df: its folder; txt2vid, img2vid), SANA-Video (SanaVideoPipeline: its
folder; txt2vid only), Lucy Edit (LucyEditPipeline: its folder; txt2vid --init-video, the video
it edits) and Helios (HeliosPipeline: its folder; txt2vid, img2vid, txt2vid --init-video);
Wan 2.2 Animate runs as Wan with its own defaults, SkyReels V2's text- and image-to-video
folders as Wan. Each family's defaults are its diffusers pipeline's (the frames, size, steps
and guidance of its `__call__`, HunyuanVideo 1.5's size and guidance from its folder; the fps
its model card writes videos at), and `refuse_video` says in one line what a Kandinsky 5
folder's transformer does not run."""

from __future__ import annotations

import os
from dataclasses import dataclass, replace
from pathlib import Path

from ...loaders.cosmos import cosmos_family
from ...loaders.formats.diffusers_folder import component_config, read_json
from ...loaders.helios import helios_family
from ...loaders.hunyuan_video.folder import hunyuan_video_family
from ...loaders.hunyuan_video.framepack import framepack_family
from ...loaders.hunyuan_video.framepack_file import framepack_file_family
from ...loaders.hunyuan_video15.folder import hunyuan_video15_family
from ...loaders.kandinsky5 import kandinsky5_video_family
from ...loaders.ltx2.folder import ltx2_family
from ...loaders.motif_video import motif_video_family
from ...loaders.sana.video import sana_video_family
from ...loaders.wan.folder import wan_family
from ...loaders.wan.sources import is_wan_animate

__all__ = ["COSMOS2_V2W", "COSMOS25", "HELIOS", "HUNYUAN_VIDEO", "HUNYUAN_VIDEO15",
           "KANDINSKY5_VIDEO", "LTX2", "LUCY_EDIT", "MOTIF_VIDEO", "SANA_VIDEO", "SKYREELS_DF",
           "WAN", "WAN_ANIMATE", "VideoDefaults", "refuse_video", "video_defaults",
           "video_family_name"]


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
# HunyuanVideo15Pipeline's __call__ (121 frames, 50 steps; 16:9 at a 480p model's target size,
# its guider's scale 6), written at 24 fps as its model card does; a folder's own size and
# guidance replace these (video_defaults)
HUNYUAN_VIDEO15 = VideoDefaults(frames=121, width=848, height=480, steps=50, cfg_scale=6.0,
                                fps=24.0)
# HunyuanVideoPipeline's __call__ (129 frames of 1280 x 720, 50 steps, embedded guidance 6),
# written at 24 fps as the original release's sampler writes them
HUNYUAN_VIDEO = VideoDefaults(frames=129, width=1280, height=720, steps=50, cfg_scale=6.0,
                              fps=24.0)
# LTX2Pipeline's __call__ (121 frames of 768 x 512 at 24 fps, 30 steps, video guidance 3)
LTX2 = VideoDefaults(frames=121, width=768, height=512, steps=30, cfg_scale=3.0, fps=24.0)
# SkyReelsV2DiffusionForcingPipeline's __call__ (97 frames of 960 x 544, 50 steps, guidance 6,
# its fps conditioning 24)
SKYREELS_DF = VideoDefaults(frames=97, width=960, height=544, steps=50, cfg_scale=6.0,
                            fps=24.0)
# HunyuanVideoFramepackPipeline's example (480 x 832, 30 steps, distilled guidance 9, 30 fps)
# with its __call__'s 129 frames
FRAMEPACK = VideoDefaults(frames=129, width=480, height=832, steps=30, cfg_scale=9.0, fps=30.0)

# Cosmos2_5_PredictBasePipeline's __call__ (93 frames of 1280 x 704, 36 steps, guidance 7),
# written at 16 fps as its examples do
COSMOS25 = VideoDefaults(frames=93, width=1280, height=704, steps=36, cfg_scale=7.0, fps=16.0)
# Cosmos2VideoToWorldPipeline's __call__ (93 frames of 1280 x 704, 35 steps, guidance 7, 16 fps)
COSMOS2_V2W = VideoDefaults(frames=93, width=1280, height=704, steps=35, cfg_scale=7.0,
                            fps=16.0)

# SanaVideoPipeline's __call__ (81 frames of 832 x 480, 50 steps, guidance 6), written at 16
# fps as its example does
SANA_VIDEO = VideoDefaults(frames=81, width=832, height=480, steps=50, cfg_scale=6.0, fps=16.0)

# MotifVideoPipeline's __call__ (121 frames of 1280 x 736, 50 steps; the guidance its folder's
# guider's, diffusers' ClassifierFreeGuidance default 7.5 without one), at 24 fps as its example
MOTIF_VIDEO = VideoDefaults(frames=121, width=1280, height=736, steps=50, cfg_scale=7.5,
                            fps=24.0)

# LucyEditPipeline's __call__ (81 frames of 832 x 480, 50 steps, guidance 5), written at 24 fps
# as its example does; an input video's count and size are the run's unless given
LUCY_EDIT = VideoDefaults(frames=81, width=832, height=480, steps=50, cfg_scale=5.0, fps=24.0)

# HeliosPipeline's __call__ (132 frames of 640 x 384, 50 steps, guidance 5: four 33-frame chunks,
# cut to the 129 given here), written at 24 fps as its example does
HELIOS = VideoDefaults(frames=129, width=640, height=384, steps=50, cfg_scale=5.0, fps=24.0)

# WanAnimatePipeline's __call__ (1280 x 720, 20 steps, unguided; its segment of 77 frames, the
# pose video's length being the video's), written at 30 fps as its example does
WAN_ANIMATE = VideoDefaults(frames=77, width=1280, height=720, steps=20, cfg_scale=1.0,
                            fps=30.0)


def video_family_name(path: str | os.PathLike[str]) -> str:
    """"kandinsky-5-video" for a Kandinsky 5 Video Lite folder, "hunyuan-video-1.5" for a
    HunyuanVideo 1.5 one, "ltx-2" for an LTX-2 one, "framepack" for a FramePack one or
    FramePack transformer file, "hunyuan-video" for a HunyuanVideo one, "cosmos-predict2.5"
    for a Cosmos Predict2.5 one, "cosmos-predict2" for a Cosmos Predict2 Video2World one,
    "skyreels-v2-df" for a SkyReels V2 diffusion forcing one, "sana-video" for a SANA-Video
    one, "lucy-edit" for a Lucy Edit one, "helios" for a Helios one, "motif-video" for a
    Motif-Video one, else "wan" (Wan's loaders name what is wrong with anything that is not
    Wan's either)."""
    cosmos = {"cosmos25": "cosmos-predict2.5",
              "cosmos2-v2w": "cosmos-predict2"}.get(cosmos_family(path) or "")
    wan = wan_family(path)
    forcing = wan if wan in ("skyreels-v2-df", "lucy-edit") else None  # (Lucy Edit's too)
    return (kandinsky5_video_family(path) or hunyuan_video15_family(path) or ltx2_family(path)
            or framepack_family(path) or framepack_file_family(path)
            or hunyuan_video_family(path) or cosmos or forcing or sana_video_family(path)
            or helios_family(path) or motif_video_family(path) or "wan")


def _hunyuan_video15_defaults(root: Path) -> VideoDefaults:
    """HUNYUAN_VIDEO15 with the folder's size (16:9 at its transformer's target_size, in
    16-pixel patches: the VAE's factor) and its guider's scale, where its files say them."""
    from .hunyuan_video15_inputs import bucket_size

    target = (component_config(root, "transformer") or {}).get("target_size") or 640
    height, width = bucket_size(9, 16, target_size=int(target))
    guider = root / "guider" / "guider_config.json"
    scale = read_json(guider).get("guidance_scale") if guider.is_file() else None
    return replace(HUNYUAN_VIDEO15, width=width, height=height,
                   cfg_scale=float(HUNYUAN_VIDEO15.cfg_scale if scale is None else scale))


def video_defaults(path: str | os.PathLike[str]) -> VideoDefaults:
    """The defaults of the video family at `path` (video_family_name; a Wan 2.2 Animate
    folder's or transformer file's are WAN_ANIMATE; a HunyuanVideo 1.5 folder's size and
    guidance its own)."""
    family = video_family_name(path)
    if family == "kandinsky-5-video":
        return KANDINSKY5_VIDEO
    if family == "hunyuan-video-1.5":
        return _hunyuan_video15_defaults(Path(path))
    if family == "ltx-2":
        return LTX2
    if family == "hunyuan-video":
        return HUNYUAN_VIDEO
    if family == "framepack":
        return FRAMEPACK
    if family == "cosmos-predict2.5":
        return COSMOS25
    if family == "cosmos-predict2":
        return COSMOS2_V2W
    if family == "skyreels-v2-df":
        return SKYREELS_DF
    if family == "sana-video":
        return SANA_VIDEO
    if family == "lucy-edit":
        return LUCY_EDIT
    if family == "helios":
        return HELIOS
    if family == "motif-video":
        guider = Path(path) / "guider" / "guider_config.json"
        scale = read_json(guider).get("guidance_scale") if guider.is_file() else None
        return replace(MOTIF_VIDEO, cfg_scale=float(MOTIF_VIDEO.cfg_scale if scale is None
                                                    else scale))
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
