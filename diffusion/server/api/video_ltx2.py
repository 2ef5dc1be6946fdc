"""LTX-2 on the server's /avx/txt2vid and /avx/img2vid (the picture, resized to the video's
size, its first frame): what an LTX-2 folder does not take refused in one line before the
queue (Wan's fields, other samplers, a step cache other than First Block Cache, frames that
are not 1 + 8k, sides that are not multiples of its VAE's), and its answer: the video with its
audio (an MP4's AAC track; beside a WebP, a 16-bit WAV as `audio`), the cache's summary."""

from __future__ import annotations

import base64
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from ...loaders.formats.diffusers_folder import component_config
from ...pipelines.video.files import write_video
from ...pipelines.video.models import VideoDefaults

__all__ = ["ltx2_answer", "refuse_ltx2"]


def refuse_ltx2(folder: Path, body: Any, s: VideoDefaults, image: Any,
                cache_kind: str | None, control: str | None) -> None:
    """ValueError in one line for what the LTX-2 folder `folder` does not take (`image`:
    the request's first frame, which it takes)."""
    from ...pipelines.video.wan_refuse import check_frame_count

    wan_only = [name for name, given in (
        ("cfg_scale_2", body.cfg_scale_2 is not None), (str(control), control is not None),
        (f"sampler {body.sampler!r}", body.sampler != "diffusers"),
        (f"cache {body.cache!r}", cache_kind not in (None, "fbc"))) if given]
    if wan_only:
        raise ValueError(f"{wan_only[0]} is not taken by LTX-2: it runs its folder's scheduler "
                         "(sampler \"diffusers\") and First Block Cache (\"fbc:0.12\")")
    vae = component_config(folder, "vae") or {}
    check_frame_count(s.frames, int(vae.get("temporal_compression_ratio") or 8))
    multiple = int(vae.get("spatial_compression_ratio") or 32)
    if s.width % multiple or s.height % multiple:
        raise ValueError(f"width and height must be multiples of {multiple} for LTX-2, got "
                         f"{s.width}x{s.height}")


def _encoded(path: Path) -> str:
    return base64.b64encode(path.read_bytes()).decode("ascii")


def ltx2_answer(pipe: Any, body: Any, s: VideoDefaults, seed: int, observer: Any,
                image: Any = None) -> dict[str, Any]:
    """Run the LTX2Pipeline `pipe` as the request says (its family's defaults in `s`;
    `image`: /avx/img2vid's first frame) and answer as /avx/txt2vid does, with the audio: in
    the MP4, or as a base64 WAV `audio` beside a WebP (and beside `also_webp`'s); the
    request's `cache` (First Block Cache, each run its own)."""
    from ...pipelines.video import video_cache
    from ...pipelines.video.ltx2_guidance import LTX2Guidance

    cache = video_cache(body.cache, "cache", s.steps)  # each run's own
    out = pipe(body.prompt, negative_prompt=body.negative_prompt or None, image=image,
               height=s.height, width=s.width, num_frames=s.frames, frame_rate=s.fps,
               num_inference_steps=s.steps, guidance=LTX2Guidance(guidance_scale=s.cfg_scale),
               seed=seed, callback=observer.step, cache=cache)
    frames = np.round(out.frames[0] * 255).astype(np.uint8)
    answer: dict[str, Any] = {"format": body.format, "seed": seed, "frames": len(frames),
                              "fps": s.fps, "width": frames.shape[2],
                              "height": frames.shape[1], "interrupted": observer.interrupted(),
                              "cache": None if cache is None else cache.summary(),
                              "sample_rate": out.sample_rate,
                              "memory": None if pipe.memory_mode is None
                              else pipe.memory_mode.label}
    with tempfile.TemporaryDirectory() as folder:
        video = write_video(frames, Path(folder) / f"video.{body.format}", s.fps,
                            out.audio[0], out.sample_rate)
        answer["video"] = _encoded(video)
        if body.format == "webp":
            answer["audio"] = _encoded(video.with_suffix(".wav"))
        elif body.also_webp:
            answer["webp"] = _encoded(write_video(frames, Path(folder) / "video.webp", s.fps))
    return answer
