"""Cosmos Predict2.5 on the server's /avx/txt2vid (text2world; video2world with `init_video`:
its last 5 frames, resized bilinear to the video's size, begin it) and /avx/img2vid
(image2world: the picture, resized bilinear to the video's size, its first frame): what a
Cosmos Predict2.5 folder does not take refused in one line before the queue (Wan's fields,
other samplers, a step cache, a server memory mode), and its answer as /avx/txt2vid's."""

from __future__ import annotations

import base64
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from ...pipelines.video.cosmos25 import VIDEO2WORLD_FRAMES, continued_frames
from ...pipelines.video.files import write_video
from ...pipelines.video.models import VideoDefaults

__all__ = ["VIDEO2WORLD_FRAMES", "check_video2world", "cosmos25_answer", "refuse_cosmos25"]


def check_video2world(body: Any, count: int) -> None:
    """ValueError in one line where video2world cannot run as the request says: an init video
    of `count` < VIDEO2WORLD_FRAMES frames, `frames` leaving none to draw after them, a
    `denoising_strength` (Wan's video-to-video)."""
    if body.denoising_strength is not None:
        raise ValueError("denoising_strength: Cosmos Predict2.5 does not redraw init_video, it "
                         "continues it; leave denoising_strength out")
    if body.frames is not None and body.frames <= VIDEO2WORLD_FRAMES:
        raise ValueError(f"frames={body.frames}: Cosmos Predict2.5 begins the video with "
                         f"init_video's last {VIDEO2WORLD_FRAMES} frames; ask for 9 or more")
    if count < VIDEO2WORLD_FRAMES:
        raise ValueError(f"init_video has {count} frames; Cosmos Predict2.5 continues a video "
                         f"from its last {VIDEO2WORLD_FRAMES} (one picture: /avx/img2vid)")


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
                    image: Any = None, video: Any = None) -> dict[str, Any]:
    """Run the Cosmos25PredictPipeline `pipe` as the request says (its family's defaults in
    `s`; `image`: /avx/img2vid's first frame; `video`: the init video's last frames, which
    video2world continues) and answer as /avx/txt2vid does."""
    from PIL import Image

    frames = None
    if image is not None:
        resized = image.resize((s.width, s.height), Image.Resampling.BILINEAR)
        frames = np.asarray(resized, np.float32)[None, None] / 255
    elif video is not None:
        frames = continued_frames(video, s.width, s.height)
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
