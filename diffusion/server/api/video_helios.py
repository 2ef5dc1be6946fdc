"""Helios on the server's /avx/txt2vid and /avx/img2vid (the picture, resized Lanczos to the
video's size, ahead of every chunk; /avx/txt2vid's `init_video` a video to continue, from its
last whole chunks), as `txt2vid` / `img2vid --model FOLDER` run it (cli.txt2vid_helios): the
folder's HeliosScheduler alone, whole 33-frame chunks, the server's memory mode as Wan's. What
it does not take (Wan's fields, another sampler, a step cache, a strength for the init video)
is refused in one line before the queue, and its answer is /avx/txt2vid's."""

from __future__ import annotations

from typing import Any

from ...pipelines.video.models import VideoDefaults
from .video_answer import video_answer

__all__ = ["CHUNK", "helios_answer", "refuse_helios", "video_to_continue"]

CHUNK = 33  # the frames of one of HeliosPipeline's chunks (9 latent frames)


def refuse_helios(body: Any, cache_kind: str | None, control: str | None) -> None:
    """ValueError in one line for what Helios does not take."""
    given = [name for name, asked in (
        ("cfg_scale_2", body.cfg_scale_2 is not None), (str(control), control is not None),
        (f"sampler {body.sampler!r}", body.sampler != "diffusers"),
        (f"cache {body.cache!r}", cache_kind is not None)) if asked]
    if given:
        raise ValueError(f"{given[0]} is not taken by Helios on the server yet: it runs its "
                         "folder's HeliosScheduler (sampler \"diffusers\") alone")


def video_to_continue(body: Any, frames: list[Any]) -> list[Any]:
    """The init video's frames (PIL images) Helios continues. ValueError in one line for
    denoising_strength (Wan's redraw) or a video shorter than a chunk."""
    if body.denoising_strength is not None:
        raise ValueError("denoising_strength: Helios does not redraw init_video, it continues "
                         "it; leave denoising_strength out")
    if len(frames) < CHUNK:
        raise ValueError(f"init_video has {len(frames)} frames; Helios continues a video from "
                         f"whole chunks of {CHUNK} (for one picture: /avx/img2vid's image)")
    return frames


def helios_answer(pipe: Any, body: Any, s: VideoDefaults, seed: int, observer: Any,
                  image: Any = None, video: list[Any] | None = None) -> dict[str, Any]:
    """Run the HeliosPipeline `pipe` as the request says (its family's defaults in `s`; the
    video has whole 33-frame chunks, cut to 1 + 4k frames; `image`: /avx/img2vid's picture;
    `video`: the init video it continues) and answer as /avx/txt2vid does."""
    videos = pipe(body.prompt, negative_prompt=body.negative_prompt or "", height=s.height,
                  width=s.width, num_frames=s.frames, num_inference_steps=s.steps,
                  guidance_scale=s.cfg_scale, seed=seed, image=image, video=video,
                  callback=observer.step)
    return video_answer(videos, body, s, seed, observer, pipe)
