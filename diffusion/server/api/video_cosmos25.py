"""Cosmos Predict2.5 on the server's /avx/txt2vid (text2world; video2world with `init_video`:
its last 5 frames, resized bilinear to the video's size, begin it) and /avx/img2vid
(image2world: the picture, resized bilinear to the video's size, its first frame), and Cosmos
Predict2 Video2World (T5), which continues a picture (/avx/img2vid) or a video (/avx/txt2vid's
`init_video`: its last `frames` ones, all held), each resized Lanczos, as `txt2vid` /
`img2vid --model FOLDER` do (cli.txt2vid_cosmos25): what a Cosmos folder does not take refused
in one line before the queue (Wan's fields, other samplers, a step cache, a server memory
mode), and its answer as /avx/txt2vid's."""

from __future__ import annotations

from typing import Any

import numpy as np

from ...pipelines.video.cosmos25 import VIDEO2WORLD_FRAMES, continued_frames
from ...pipelines.video.models import VideoDefaults
from .video_answer import video_answer

__all__ = ["PREDICT2", "VIDEO2WORLD_FRAMES", "check_predict2_video", "check_video2world",
           "cosmos2_answer", "cosmos25_answer", "refuse_cosmos2", "refuse_cosmos25"]

PREDICT2 = "Cosmos Predict2 Video2World"


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


def check_predict2_video(body: Any, frames: list[Any], made: int) -> None:
    """ValueError in one line where Predict2 Video2World cannot continue `frames` (the init
    video's last `made` ones) into `made` frames: none, or so many that their latent frames
    fill the video (nothing left to draw), or a `denoising_strength` (Wan's)."""
    if body.denoising_strength is not None:
        raise ValueError(f"denoising_strength: {PREDICT2} does not redraw init_video, it "
                         "continues it; leave denoising_strength out")
    if not frames:
        raise ValueError("init_video holds no frames")
    if (len(frames) - 1) // 4 >= (made - 1) // 4:
        raise ValueError(f"init_video: its last {len(frames)} frames fill the {made} made; "
                         f"{PREDICT2} draws after them: ask for more frames or send a "
                         "shorter video")


def refuse_cosmos2(body: Any, image: Any, init: Any, cache_kind: str | None,
                   control: str | None, memory: Any) -> None:
    """ValueError in one line for what Cosmos Predict2 Video2World does not take, or a
    request with neither a picture (`image`) nor an init video (`init`) to continue."""
    refuse_cosmos25(body, cache_kind, control, memory, PREDICT2, "flow-match Euler")
    if image is None and init is None:
        raise ValueError(f"{PREDICT2} continues a picture or a video: send the picture to "
                         "/avx/img2vid as image, or the video to /avx/txt2vid as init_video")


def refuse_cosmos25(body: Any, cache_kind: str | None, control: str | None,
                    memory: Any, family: str = "Cosmos Predict2.5",
                    sampler: str = "UniPC") -> None:
    """ValueError in one line for what Cosmos Predict2.5 (or `family`, which runs its
    folder's `sampler` alone) does not take."""
    given = [name for name, asked in (
        ("cfg_scale_2", body.cfg_scale_2 is not None), (str(control), control is not None),
        (f"sampler {body.sampler!r}", body.sampler != "diffusers"),
        (f"cache {body.cache!r}", cache_kind is not None),
        ("the server's memory mode", bool(memory))) if asked]
    if given:
        raise ValueError(f"{given[0]} is not taken by {family} yet: it runs its folder's "
                         f"{sampler} (sampler \"diffusers\") alone")


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
    return video_answer(videos, body, s, seed, observer, pipe)


def cosmos2_answer(pipe: Any, body: Any, s: VideoDefaults, seed: int, observer: Any,
                   pictures: list[Any]) -> dict[str, Any]:
    """Run the Cosmos2VideoToWorldPipeline `pipe` as the request says (its family's defaults
    in `s`, whose fps is also the frame-rate conditioning) on `pictures` (the picture, or the
    init video's frames: all held) and answer as /avx/txt2vid does."""
    from ...pipelines.video.cosmos2_video2world import held_frames

    videos = pipe(body.prompt, held_frames(pictures, s.width, s.height),
                  negative_prompt=body.negative_prompt or None, height=s.height, width=s.width,
                  num_frames=s.frames, num_inference_steps=s.steps, guidance_scale=s.cfg_scale,
                  fps=s.fps, seed=seed, callback=observer.step)
    return video_answer(videos, body, s, seed, observer, pipe)
