"""What a Wan model does not take, in one line each, from what it is (a second expert,
timesteps per token, a transformer that reads the first frame, VACE's control branch):
`WanPipeline.__call__` refuses with these (Lucy Edit's call `refuse_lucy`), and the command
line and the server before the
weights load (`wan_refusals_of`: the folder's model_index.json and the transformer's config, a
file's from its header). Also the frame counts Wan's VAE takes (`check_frame_count`) and the
picture commands' refusal of a video model (`refuse_pictures`)."""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from ...loaders import WeightsError
from ...loaders.formats.diffusers_folder import component_config
from ...loaders.hunyuan_video15.folder import hunyuan_video15_image_to_video
from ...loaders.kandinsky5 import kandinsky5_image_to_video
from ...loaders.wan.file import load_wan_file
from ...loaders.wan.files import WanFiles
from ...loaders.wan.folder import wan_family, wan_layout

__all__ = ["check_frame_count", "image_conditioned", "refuse_lucy", "refuse_pictures",
           "refuse_wan", "wan_refusals_of"]


def check_frame_count(frames: int, temporal: int = 4) -> None:
    """ValueError in one line unless `frames` is 1 + temporal k (the VAE's causal frames)."""
    if isinstance(frames, bool) or not isinstance(frames, (int, np.integer)) or frames < 1 \
            or (frames - 1) % temporal:
        lower = max(1, (int(frames) - 1) // temporal * temporal + 1) if frames >= 1 else 1
        raise ValueError(f"frames must be 1 + {temporal}k (1, 5, ..., 81), got {frames!r}; "
                         f"use {lower} or {lower + temporal}")


def refuse_pictures(path: str | os.PathLike[str], family: str, options: Any) -> Any:
    """The picture registry's loader for a video model (`pipelines.families`: a Wan folder or
    transformer file, a Kandinsky 5 Video folder, `family` "kandinsky-5-video", its
    image-to-video one too; a HunyuanVideo 1.5 folder, "hunyuan-video-1.5"; an LTX-2 folder,
    "ltx-2"; a HunyuanVideo folder, "hunyuan-video"; a FramePack one, "framepack"; a Cosmos
    Predict2.5 one, "cosmos25"; a Predict2 Video2World one, "cosmos2-v2w"; a SANA-Video one,
    "sana-video"; a Lucy Edit one, "lucy-edit"; a Helios one, "helios"; a Motif-Video one,
    "motif-video"): a video
    model makes no pictures, so ValueError in one line saying which command makes its
    videos."""
    if family == "lucy-edit":
        raise ValueError(f"{path} is Lucy Edit, which edits a video: `python -m diffusion "
                         f"txt2vid --model {path} --init-video IN.mp4 --prompt 'the edit'`")
    base = " --base WAN_FOLDER" if Path(path).is_file() else ""
    what = {"kandinsky-5-video": "Kandinsky 5 Video", "hunyuan-video-1.5": "HunyuanVideo 1.5",
            "ltx-2": "LTX-2 (video with audio)", "hunyuan-video": "HunyuanVideo",
            "framepack": "FramePack", "cosmos25": "Cosmos Predict2.5",
            "cosmos2-v2w": "Cosmos Predict2 Video2World",
            "sana-video": "SANA-Video", "helios": "Helios",
            "motif-video": "Motif-Video"}.get(family, "Wan")
    if family in ("framepack", "cosmos2-v2w") or (family == "kandinsky-5-video"
                                 and kandinsky5_image_to_video(path)) or (
            family == "hunyuan-video-1.5" and hunyuan_video15_image_to_video(path)):
        raise ValueError(f"{path} is a {what} image-to-video model: make videos with "
                         f"`python -m diffusion img2vid --model {path} --image IN.png "
                         "--prompt ...`")
    article = "an" if family == "ltx-2" else "a"
    raise ValueError(f"{path} is {article} {what} text-to-video model: make videos with "
                     f"`python -m diffusion txt2vid --model {path}{base} --prompt ...`")


def image_conditioned(config: Mapping[str, Any]) -> bool:
    """Whether a Wan transformer of `config` reads more channels than it writes: an
    image-to-video model's mask and first frame's latents (Wan 2.1 I2V, Wan 2.2 A14B I2V)."""
    return config["in_channels"] != (config.get("out_channels") or config["in_channels"])


def refuse_wan(*, second_expert: bool, expand_timesteps: bool, conditioned: bool, image: bool,
               cache_kind: str | None, guidance_scale_2: float | None, vace: bool = False,
               control: str | None = None) -> None:
    """ValueError in one line for an image-to-video model (`conditioned`) without its first
    frame (`image`), a first frame for a model of text only (neither conditioned nor timesteps
    per token: Wan 2.2 TI2V 5B's) or for Wan VACE (`vace`: its first frame is the control
    video's), TeaCache on Wan 2.2 (its tables are Wan 2.1's), a second guidance scale without
    Wan 2.2 A14B's second expert, or a VACE input (`control`: its name as the caller's user
    gives it, e.g. "--control-video") for a model without VACE; nothing otherwise."""
    if control is not None and not vace:
        raise ValueError(f"{control} needs a Wan VACE model (a diffusers folder whose "
                         "model_index.json names WanVACEPipeline, or a VACE transformer file)")
    if image and vace:
        raise ValueError("Wan VACE takes no first frame to animate: give the picture as the "
                         "control video's first frame and a mask that keeps it (black)")
    if conditioned and not image:
        raise ValueError("this Wan model is image-to-video: give the first frame "
                         "(`img2vid --image PIC`)")
    if image and not (expand_timesteps or conditioned):
        raise ValueError("this Wan model makes videos from text only; animating a picture "
                         "needs Wan 2.2 TI2V 5B (its folder sets expand_timesteps) or a "
                         "Wan 2.1 I2V folder")
    if cache_kind in ("teacache", "teacache-ret") and (expand_timesteps or second_expert):
        raise ValueError("TeaCache's Wan tables are Wan 2.1's; for Wan 2.2 use First Block "
                         "Cache (fbc:0.12)")
    if guidance_scale_2 is not None and not second_expert:
        raise ValueError("a second guidance scale is for Wan 2.2 A14B's low-noise expert; "
                         "this Wan model has one transformer")


def refuse_lucy(*, image: bool, cache_kind: str | None, guidance_scale_2: float | None,
                control: str | None, strength: str | None) -> None:
    """ValueError in one line for what Lucy Edit does not take: a first frame (`image`),
    TeaCache (its tables are Wan 2.1's), a second guidance scale (one transformer), Wan VACE's
    control (`control`: its name as the caller's user gives it) or a denoising strength
    (`strength`: likewise; the edit always runs the whole schedule)."""
    if image:
        raise ValueError("Lucy Edit edits a video and takes no first frame: give the video "
                         "to edit (txt2vid --init-video, the server's init_video)")
    if control is not None:
        raise ValueError(f"{control} needs a Wan VACE model; Lucy Edit reads the video to "
                         "edit and the prompt only")
    if strength is not None:
        raise ValueError(f"{strength}: Lucy Edit runs the whole schedule from noise, the "
                         "video a condition beside it; leave it out")
    if cache_kind in ("teacache", "teacache-ret"):
        raise ValueError("TeaCache's Wan tables are Wan 2.1's; for Lucy Edit use First Block "
                         "Cache (fbc:0.12)")
    if guidance_scale_2 is not None:
        raise ValueError("a second guidance scale is for Wan 2.2 A14B's low-noise expert; "
                         "Lucy Edit has one transformer")


def wan_refusals_of(folder: str | os.PathLike[str], files: WanFiles, *, image: bool,
                    cache_kind: str | None, guidance_scale_2: float | None,
                    control: str | None = None) -> None:
    """`refuse_wan` for the Wan folder `folder` with `files` in place of its parts, before it
    loads: its second expert listed or given as a file, and its transformer's config as the
    load reads it (a file's from its header, `load_wan_file`, over the folder's config.json;
    a file the load would refuse is left for the load to name); `control`: refuse_wan's. A
    Lucy Edit folder: `refuse_lucy`'s (its denoising strength the caller's to refuse)."""
    if wan_family(folder) == "lucy-edit":  # its transformer reads the video's latents too
        refuse_lucy(image=image, cache_kind=cache_kind, guidance_scale_2=guidance_scale_2,
                    control=control, strength=None)
        return
    listed, expand_timesteps = wan_layout(folder)
    given = files.given()
    config = component_config(folder, "transformer")
    vace = wan_family(folder) == "wan-vace"
    if "transformer" in given:  # the file (and a VACE module) says whether it is VACE
        try:
            config = load_wan_file(given["transformer"], config=config,
                                   vace_module=given.get("vace_module")).config
            vace = config.get("_class_name") == "WanVACETransformer3DModel"
        except WeightsError:
            config = None
    refuse_wan(second_expert=listed or "transformer_2" in given,
               expand_timesteps=expand_timesteps, image=image,
               conditioned=config is not None and image_conditioned(config),
               cache_kind=cache_kind, guidance_scale_2=guidance_scale_2,
               vace=vace, control=control)
