"""Helios on the server's /avx/txt2vid and /avx/img2vid (the picture, resized Lanczos to the
video's size, ahead of every chunk), as `txt2vid` / `img2vid --model FOLDER` run it
(cli.txt2vid_helios): the folder's HeliosScheduler alone, whole 33-frame chunks. What it does
not take (Wan's fields, an init video, other samplers, a step cache, a server memory mode) is
refused in one line before the queue, and its answer is /avx/txt2vid's."""

from __future__ import annotations

from typing import Any

from ...pipelines.video.models import VideoDefaults
from .video_answer import video_answer

__all__ = ["helios_answer", "refuse_helios"]


def refuse_helios(body: Any, cache_kind: str | None, control: str | None,
                  memory: Any) -> None:
    """ValueError in one line for what Helios does not take."""
    given = [name for name, asked in (
        ("init_video", getattr(body, "init_video", None) is not None),
        ("cfg_scale_2", body.cfg_scale_2 is not None), (str(control), control is not None),
        (f"sampler {body.sampler!r}", body.sampler != "diffusers"),
        (f"cache {body.cache!r}", cache_kind is not None),
        ("the server's memory mode", bool(memory))) if asked]
    if given:
        raise ValueError(f"{given[0]} is not taken by Helios on the server yet: it runs its "
                         "folder's HeliosScheduler (sampler \"diffusers\") alone")


def helios_answer(pipe: Any, body: Any, s: VideoDefaults, seed: int, observer: Any,
                  image: Any = None) -> dict[str, Any]:
    """Run the HeliosPipeline `pipe` as the request says (its family's defaults in `s`; the
    video has whole 33-frame chunks, cut to 1 + 4k frames; `image`: /avx/img2vid's picture)
    and answer as /avx/txt2vid does."""
    videos = pipe(body.prompt, negative_prompt=body.negative_prompt or "", height=s.height,
                  width=s.width, num_frames=s.frames, num_inference_steps=s.steps,
                  guidance_scale=s.cfg_scale, seed=seed, image=image, callback=observer.step)
    return video_answer(videos, body, s, seed, observer, pipe)
