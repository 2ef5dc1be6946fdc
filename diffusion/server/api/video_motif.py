"""Motif-Video on the server's /avx/txt2vid and /avx/img2vid (the picture, resized Lanczos to
the video's size, its first frame; an image-to-video folder's), as `txt2vid` / `img2vid
--model FOLDER` run it (cli.txt2vid_motif_video): the folder's FlowMatchEuler scheduler and
classifier-free guider alone, in the server's memory mode where it has one (video_pipelines
loads it with offload). What it does not take (Wan's fields, a picture without the folder's
SigLIP tower, an init video, other samplers, a step cache, sides its patches do not divide) is
refused in one line before the queue, and its answer is /avx/txt2vid's."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ...loaders.formats.diffusers_folder import component_config, pipeline_class
from ...pipelines.video.models import VideoDefaults
from .video_answer import video_answer

__all__ = ["motif_video_answer", "refuse_motif_video"]

_FAMILY = "Motif-Video"


def refuse_motif_video(folder: Path, body: Any, s: VideoDefaults, image: Any,
                       cache_kind: str | None, control: str | None) -> None:
    """ValueError in one line for what the Motif-Video folder `folder` does not take, or a
    size (`s`) its VAE and patches do not divide."""
    given = [name for name, asked in (
        ("a picture (a MotifVideoPipeline folder: text to video alone)",
         image is not None and pipeline_class(folder) != "MotifVideoImage2VideoPipeline"),
        ("init_video", getattr(body, "init_video", None) is not None),
        ("cfg_scale_2", body.cfg_scale_2 is not None), (str(control), control is not None),
        (f"sampler {body.sampler!r}", body.sampler != "diffusers"),
        (f"cache {body.cache!r}", cache_kind is not None)) if asked]
    if given:
        raise ValueError(f"{given[0]} is not taken by {_FAMILY} on the server yet: it runs "
                         "its folder's FlowMatchEuler scheduler (sampler \"diffusers\") alone")
    transformer = component_config(folder, "transformer") or {}
    vae = component_config(folder, "vae") or {}
    # MotifVideoPipeline.size_multiple from the configs: the VAE's factor times the patch
    spatial = 2 ** (len(vae.get("dim_mult") or (1, 2, 4, 4)) - 1) * (vae.get("patch_size") or 1)
    multiple = spatial * int(transformer.get("patch_size") or 2)
    if s.width % multiple or s.height % multiple:
        raise ValueError(f"width and height must be multiples of {multiple} for {_FAMILY}, "
                         f"got {s.width}x{s.height}")


def motif_video_answer(pipe: Any, body: Any, s: VideoDefaults, seed: int, observer: Any,
                       image: Any = None) -> dict[str, Any]:
    """Run the MotifVideoPipeline `pipe` as the request says (its family's defaults in `s`;
    `image`: /avx/img2vid's first frame) and answer as /avx/txt2vid does."""
    videos = pipe(body.prompt, negative_prompt=body.negative_prompt or None, height=s.height,
                  width=s.width, num_frames=s.frames, num_inference_steps=s.steps,
                  guidance_scale=s.cfg_scale, seed=seed, image=image, callback=observer.step)
    return video_answer(videos, body, s, seed, observer, pipe)
