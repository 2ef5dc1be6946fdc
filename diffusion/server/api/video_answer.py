"""The answer of POST /avx/txt2vid and /avx/img2vid: the video a pipeline made, written as the
request's `format` (MP4 or animated WebP, `write_video` as `txt2vid -o` writes it) and sent as
base64, with the settings it was made with."""

from __future__ import annotations

import base64
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from ...pipelines.video.files import write_video
from ...pipelines.video.models import VideoDefaults

__all__ = ["encoded_video", "video_answer"]


def encoded_video(frames: np.ndarray, kind: str, fps: float) -> str:
    """The uint8 frames (T, H, W, 3) written as a `kind` ("mp4", "webp") video, base64."""
    with tempfile.TemporaryDirectory() as folder:
        target = write_video(frames, Path(folder) / f"video.{kind}", fps)
        return base64.b64encode(target.read_bytes()).decode("ascii")


def video_answer(videos: np.ndarray, body: Any, s: VideoDefaults, seed: int, observer: Any,
                 pipe: Any, cache: Any = None) -> dict[str, Any]:
    """The answer for the first of `videos` (B, T, H, W, 3) in [0, 1] (rounded to 8 bits as
    the CLI's files), made by `pipe` at the request's settings `s` and `seed`: the video in
    `body.format` (and the animated WebP with `also_webp`), its size, whether the job was
    interrupted, the step cache's summary and the memory mode it ran in."""
    frames = np.round(videos[0] * 255).astype(np.uint8)
    answer = {"video": encoded_video(frames, body.format, s.fps), "format": body.format,
              "seed": seed, "frames": len(frames), "fps": s.fps, "width": frames.shape[2],
              "height": frames.shape[1], "interrupted": observer.interrupted(),
              "cache": None if cache is None else cache.summary(),
              "memory": None if pipe.memory_mode is None else pipe.memory_mode.label}
    if body.also_webp and body.format != "webp":
        answer["webp"] = encoded_video(frames, "webp", s.fps)
    return answer
