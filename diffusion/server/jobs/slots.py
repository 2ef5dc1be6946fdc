"""A worker's device slot: its pipeline and what its running job publishes (the WebUI's
`shared.state` for one device: step numbers, latents for the preview, the task id), and how
that reads as progress. The Worker (diffusion.server.jobs.worker) owns the slots and the lock."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ...models.latent_rgb import cheap_picture
from ...pipelines.observer import Decode, Observer
from ..images import encode_png
from ..previews import Previews

__all__ = ["ModelFacts", "Slot", "SlotObserver", "StepObserver", "describe", "fraction",
           "idle_state"]


def idle_state() -> dict[str, Any]:
    """A slot's `state` while it runs nothing (the WebUI's state.dict() between jobs)."""
    return {"skipped": False, "interrupted": False, "stopping_generation": False,
            "job": "", "job_count": 0, "job_timestamp": "0", "job_no": 0,
            "sampling_step": 0, "sampling_steps": 0}


def describe(state: dict[str, Any]) -> str:
    """A running job's state in words: "txt2img: image 1/2, step 3/20"."""
    return (f"{state['job']}: image {state['job_no'] + 1}/{state['job_count']}, step "
            f"{state['sampling_step']}/{state['sampling_steps']}")


def fraction(state: dict[str, Any], started: float) -> tuple[float, float]:
    """(a job's progress from 0 to 1, the seconds it has left: 0 while unknown), its images
    counted alike, as the WebUI counts them; `started`: time.monotonic() when it began."""
    count, steps = state["job_count"], state["sampling_steps"]
    done = 0.0
    if count and steps:
        done = min((state["job_no"] + state["sampling_step"] / steps) / count, 1.0)
    elapsed = time.monotonic() - started
    return done, elapsed / done - elapsed if done > 0 else 0.0


@dataclass(frozen=True)
class ModelFacts:
    """What the routes read of the loaded pipeline outside its jobs: the Pipeline contract's
    plain facts (they outlive an unloaded pipeline, and travel from a worker process)."""

    native_size: int
    defaults: Any
    family: str
    capabilities: Any  # a diffusion.pipelines.contract.Capabilities

    @classmethod
    def of(cls, pipe: Any) -> ModelFacts:
        return cls(native_size=pipe.native_size, defaults=pipe.defaults, family=pipe.family,
                   capabilities=pipe.capabilities)


class Slot:
    """One device: its pipeline and the progress of the job it runs."""

    def __init__(self, index: int, device: Any) -> None:
        self.index, self.device = index, device
        # the worker's number too: two devices may be opened on one adapter
        self.label = f"worker {index} ({device.info.label})" if device is not None else ""
        self.pipe: Any = None
        self.second: tuple[Path, Any] | None = None  # (path, pipeline) of a refiner
        self.unloaded = False  # its pipeline freed (unload-checkpoint): the next job loads it
        self.state = idle_state()
        self.latents: np.ndarray | None = None
        self.picture: np.ndarray | None = None  # the preview of `latents`, drawn at its step
        self.preview: tuple[int, int, str] | None = None  # (step it shows, its id, PNG)
        self.task: str | None = None  # the task id of the job it runs
        self.started = 0.0
        self.ticket = 0  # when its job began, in jobs begun: progress shows the oldest
        self.running = False
        self.interrupt_pending = False  # told to stop before its job began: applied at begin

    def gpu(self) -> Any:
        """Its gpucore Device (gpucore's default where it was given none)."""
        import gpucore

        return self.device or gpucore.default_device()

    def memory(self) -> dict[str, Any]:
        """Its device's memory: its label, gpucore `MemoryStats` figures and the --max-vram
        budget of its pipeline (None: no budget)."""
        device = self.gpu()
        mode = None if self.pipe is None else self.pipe.memory_mode
        return {"device": self.label or device.info.label, **device.memory_stats().as_dict(),
                "max_vram": None if mode is None else mode.max_vram}

    def preview_of(self, state: dict[str, Any], latents: np.ndarray | None,
                   ids: Iterator[int]) -> tuple[int, str] | None:
        """(id, base64 PNG) of the preview of `latents` (this slot's, read with `state`; its
        picture drawn at the step), encoded once a step; a new step's preview takes the next
        of `ids`."""
        picture = self.picture
        if latents is None or picture is None:
            return None
        step = state["job_no"] * 100000 + state["sampling_step"]
        cached = self.preview
        if cached is None or cached[0] != step:
            cached = self.preview = (step, next(ids), encode_png(picture))
        return cached[1], cached[2]


class SlotObserver(Observer):
    """A running job's steps into its slot's progress (and, on the steps `previews` shows, the
    latents to preview: the sampler's last prediction of the clean latents where it reports
    one, else the current latents; a preview network or the model's own decode draws them
    here, on the worker's thread, the device's, and Approx cheap, the type or what the others
    fall back to, by the latent space's matrix on the CPU); the slot's interrupt / skip flags
    stop it. `lock` guards the slot's progress."""

    def __init__(self, lock: threading.Lock, slot: Slot, previews: Previews | None = None) -> None:
        self.lock, self.slot, self.previews = lock, slot, previews
        self.decode: Decode | None = None
        self.latent_space = ""  # the model's (on_begin); "": SD 1.x's Approx cheap matrix
        self.x0: np.ndarray | None = None  # the last model call's prediction (its first image)

    def on_begin(self, decode: Decode, latent_space: str = "") -> None:
        self.decode, self.latent_space, self.x0 = decode, latent_space, None

    def on_denoised(self, x0: np.ndarray) -> None:
        self.x0 = np.array(x0[:1], copy=True)

    def on_step(self, done: int, total: int, latents: np.ndarray) -> None:
        with self.lock:
            self.slot.state.update(sampling_step=done, sampling_steps=total)
        previews = self.previews
        if previews is not None and not previews.due(done):
            return
        shown = np.array(latents[:1] if self.x0 is None else self.x0, copy=True)
        picture = None
        if previews is not None and previews.decodes:
            pipe = self.slot.pipe
            mode = pipe.memory_mode
            picture = previews.picture(shown, device=self.slot.device, decode=self.decode,
                                       latent_space=pipe.capabilities.latent_space,
                                       lowvram=mode is not None and mode.lowvram)
        if picture is None:
            picture = cheap_picture(shown, self.latent_space)
        with self.lock:
            self.slot.latents = shown
            self.slot.picture = picture

    def interrupted(self) -> bool:
        with self.lock:
            return bool(self.slot.state["interrupted"] or self.slot.state["skipped"])


class StepObserver(Observer):
    """A job's step numbers into its slot's progress, without previews (a video's latents
    have no picture preview); the slot's interrupt / skip flags stop it."""

    def __init__(self, lock: threading.Lock, slot: Slot) -> None:
        self.lock, self.slot = lock, slot

    def on_step(self, done: int, total: int, latents: np.ndarray) -> None:
        with self.lock:
            self.slot.state.update(sampling_step=done, sampling_steps=total)

    def interrupted(self) -> bool:
        with self.lock:
            return bool(self.slot.state["interrupted"] or self.slot.state["skipped"])
