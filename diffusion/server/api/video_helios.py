"""Helios on the server's /avx/txt2vid: what a Helios folder does not take refused in one line
before the queue (Wan's fields, a picture or init video, other samplers, a step cache, a
server memory mode), and its answer as /avx/txt2vid's. The router calls `refuse_helios` where
it checks a request and `helios_answer` in the job (as Cosmos Predict2.5's module)."""

from __future__ import annotations

import base64
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from ...pipelines.video.files import write_video
from ...pipelines.video.models import VideoDefaults

__all__ = ["helios_answer", "refuse_helios"]


def refuse_helios(body: Any, cache_kind: str | None, control: str | None, memory: Any,
                  image: Any = None) -> None:
    """ValueError in one line for what Helios does not take."""
    given = [name for name, asked in (
        ("image (/avx/img2vid)", image is not None),
        ("init_video", getattr(body, "init_video", None) is not None),
        ("cfg_scale_2", body.cfg_scale_2 is not None), (str(control), control is not None),
        (f"sampler {body.sampler!r}", body.sampler != "diffusers"),
        (f"cache {body.cache!r}", cache_kind is not None),
        ("the server's memory mode", bool(memory))) if asked]
    if given:
        raise ValueError(f"{given[0]} is not taken by Helios yet: it makes videos from text "
                         "with its folder's HeliosScheduler (sampler \"diffusers\") alone")


def helios_answer(pipe: Any, body: Any, s: VideoDefaults, seed: int,
                  observer: Any) -> dict[str, Any]:
    """Run the HeliosPipeline `pipe` as the request says (its family's defaults in `s`; the
    video has whole 33-frame chunks, cut to 1 + 4k frames) and answer as /avx/txt2vid does."""
    videos = pipe(body.prompt, negative_prompt=body.negative_prompt or "", height=s.height,
                  width=s.width, num_frames=s.frames, num_inference_steps=s.steps,
                  guidance_scale=s.cfg_scale, seed=seed, callback=observer.step)
    video = np.round(videos[0] * 255).astype(np.uint8)
    answer: dict[str, Any] = {"format": body.format, "seed": seed, "frames": len(video),
                              "fps": s.fps, "width": video.shape[2], "height": video.shape[1],
                              "interrupted": observer.interrupted(), "cache": None,
                              "memory": None}
    with tempfile.TemporaryDirectory() as folder:
        written = write_video(video, Path(folder) / f"video.{body.format}", s.fps)
        answer["video"] = base64.b64encode(written.read_bytes()).decode("ascii")
        if body.also_webp and body.format != "webp":
            webp = write_video(video, Path(folder) / "video.webp", s.fps)
            answer["webp"] = base64.b64encode(webp.read_bytes()).decode("ascii")
    return answer
