"""A picture job and its result, and what happens to each picture after sampling: the face
restoration the job asks for, its passes (`PictureHook`: ADetailer's inpainting), then saving
with its infotext. The worker (diffusion.server.jobs.worker) runs `finish_picture` for every
picture of every job, so saving, progress, interrupt and the infotext go one way for all."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from ...faces import FaceRestoration
from ...pipelines.observer import Observer
from ...pipelines.request import GenerationRequest
from ..catalog.models_dir import ModelEntry
from ..images import save_output

__all__ = ["GenerationJob", "JobResult", "PictureHook", "finish_picture"]


class PictureHook(Protocol):
    """A pass over each finished picture, after its faces are restored and before it is saved
    (the WebUI's `postprocess_image` scripts: ADetailer). It runs on the worker with the
    job's pipeline, its sampling steps reported to `observer` (interrupt and skip stop them),
    and returns the picture and its settings (the infotext's fields). Interrupted, it returns
    what it had before the pass it cut short, never a half-done one. Picklable: it travels
    to worker processes with its job."""

    def __call__(self, picture: np.ndarray, settings: dict[str, Any],
                 request: GenerationRequest, pipe: Any,
                 observer: Observer) -> tuple[np.ndarray, dict[str, Any]]: ...


@dataclass
class GenerationJob:
    """One txt2img/img2img request, validated: each seed is one image, made alone."""

    kind: str  # "txt2img" | "img2img"
    seeds: list[int]
    request: GenerationRequest  # each image: this with its seed (and subseed), batch size 1
    subseeds: list[int] | None = None  # one per image (the WebUI's variation seeds)
    batch_size: int = 1
    save_to: Path | None = None
    # ControlNet units (pipelines.control_spec.ControlSpec), loaded on the worker
    control: tuple[Any, ...] = ()
    faces: FaceRestoration | None = None  # restore_faces: each image's, before it is saved
    passes: tuple[PictureHook, ...] = ()  # each image's, after its faces, before it is saved


@dataclass
class JobResult:
    images: list[np.ndarray]
    settings: list[dict[str, Any]]  # one per image (GenerationResult.settings)
    model: ModelEntry | None
    job_timestamp: str
    interrupted: bool = False
    saved: list[Path] = field(default_factory=list)
    device: str = ""  # the adapter that made it (several workers: which one)


def finish_picture(job: GenerationJob, result: JobResult, picture: np.ndarray,
                   settings: dict[str, Any], *, pipe: Any, device: Any,
                   observer: Observer) -> None:
    """`picture` (made with `settings`) after the job's face restoration and passes, added to
    `result` and saved when the job saves. The passes do not run on a picture whose sampling
    was interrupted or skipped (as the WebUI's ADetailer skips it)."""
    if job.faces is not None:
        picture = job.faces.apply(picture, device)
        settings["face_restoration"] = job.faces.model
    for hook in job.passes:
        if observer.interrupted():
            break
        picture, settings = hook(picture, settings, job.request, pipe, observer)
    result.images.append(picture)
    result.settings.append(settings)
    if job.save_to is not None:
        result.saved.append(save_output(picture, settings, job.save_to, job.kind))
