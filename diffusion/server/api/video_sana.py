"""SANA-Video on the server's /avx/txt2vid and /avx/img2vid (the picture, resized Lanczos to
the size drawn, its held first frame), as `txt2vid` / `img2vid --model FOLDER` run it
(cli.txt2vid_sana_video): the folder's DPM-Solver++ alone, the video drawn at the model's
nearest resolution bin and resized back. What it does not take (Wan's fields, other samplers,
a step cache, a server memory mode, sides its model cannot draw) is refused in one line before
the queue, and its answer is /avx/txt2vid's."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ...loaders.formats.diffusers_folder import component_config
from ...pipelines.video.models import VideoDefaults
from .video_answer import video_answer

__all__ = ["refuse_sana_video", "sana_video_answer"]

_FAMILY = "SANA-Video"


def refuse_sana_video(folder: Path, body: Any, s: VideoDefaults, cache_kind: str | None,
                      control: str | None, memory: Any) -> None:
    """ValueError in one line for what the SANA-Video folder `folder` does not take, or a
    size (`s`) that neither its resolution bins take nor its patches divide."""
    from ...pipelines.video.sana_video import video_bin

    given = [name for name, asked in (
        ("cfg_scale_2", body.cfg_scale_2 is not None), (str(control), control is not None),
        (f"sampler {body.sampler!r}", body.sampler != "diffusers"),
        (f"cache {body.cache!r}", cache_kind is not None),
        ("the server's memory mode", bool(memory))) if asked]
    if given:
        raise ValueError(f"{given[0]} is not taken by {_FAMILY} yet: it runs its folder's "
                         "DPM-Solver++ (sampler \"diffusers\") alone")
    transformer = component_config(folder, "transformer") or {}
    vae = component_config(folder, "vae") or {}
    # SanaVideoPipeline.size_multiple from the configs (AutoencoderKLWan.spatial_factor
    # times the patch): the pipeline's 32, or a patch's pixels where more
    spatial = 2 ** (len(vae.get("dim_mult") or (1, 2, 4, 4)) - 1) * (vae.get("patch_size") or 1)
    multiple = max(32, spatial * int((transformer.get("patch_size") or (1, 2, 2))[1]))
    binned = video_bin(int(transformer.get("sample_size") or 0), s.height, s.width)
    if binned is None and (s.width % multiple or s.height % multiple):
        raise ValueError(f"width and height must be multiples of {multiple} for {_FAMILY}, "
                         f"got {s.width}x{s.height}")


def sana_video_answer(pipe: Any, body: Any, s: VideoDefaults, seed: int, observer: Any,
                      image: Any = None) -> dict[str, Any]:
    """Run the SanaVideoPipeline `pipe` as the request says (its family's defaults in `s`;
    `image`: /avx/img2vid's first frame) and answer as /avx/txt2vid does."""
    videos = pipe(body.prompt, negative_prompt=body.negative_prompt, height=s.height,
                  width=s.width, num_frames=s.frames, num_inference_steps=s.steps,
                  guidance_scale=s.cfg_scale, seed=seed, image=image, callback=observer.step)
    return video_answer(videos, body, s, seed, observer, pipe)
