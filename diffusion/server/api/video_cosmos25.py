"""Cosmos Predict2.5 on the server's /avx/txt2vid (text2world) and /avx/img2vid (image2world:
the picture, resized bilinear to the video's size, its first frame): what a Cosmos Predict2.5
folder does not take refused in one line before the queue (Wan's fields, other samplers, a
step cache, a server memory mode), and its answer as /avx/txt2vid's."""

from __future__ import annotations

import base64
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from ...pipelines.video.files import write_video
from ...pipelines.video.models import VideoDefaults

__all__ = ["cosmos25_answer", "refuse_cosmos25"]


def refuse_cosmos25(body: Any, cache_kind: str | None, control: str | None,
                    memory: Any) -> None:
    """ValueError in one line for what Cosmos Predict2.5 does not take."""
    given = [name for name, asked in (
        ("cfg_scale_2", body.cfg_scale_2 is not None), (str(control), control is not None),
        (f"sampler {body.sampler!r}", body.sampler != "diffusers"),
        (f"cache {body.cache!r}", cache_kind is not None),
        ("the server's memory mode", bool(memory))) if asked]
    if given:
        raise ValueError(f"{given[0]} is not taken by Cosmos Predict2.5 yet: it runs its "
                         "folder's UniPC (sampler \"diffusers\") alone")


def cosmos25_answer(pipe: Any, body: Any, s: VideoDefaults, seed: int, observer: Any,
                    image: Any = None) -> dict[str, Any]:
    """Run the Cosmos25PredictPipeline `pipe` as the request says (its family's defaults in
    `s`; `image`: /avx/img2vid's first frame) and answer as /avx/txt2vid does."""
    from PIL import Image

    frames = None
    if image is not None:
        resized = image.resize((s.width, s.height), Image.Resampling.BILINEAR)
        frames = np.asarray(resized, np.float32)[None, None] / 255
    videos = pipe(body.prompt, negative_prompt=body.negative_prompt or None, frames=frames,
                  height=s.height, width=s.width, num_frames=s.frames,
                  num_inference_steps=s.steps, guidance_scale=s.cfg_scale, seed=seed,
                  callback=observer.step)
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
