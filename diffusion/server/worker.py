"""One GPU worker thread behind a bounded FIFO queue, and the progress state it publishes.

Every GPU call (loading a model, generating) runs on the worker thread, in the order the jobs
were queued, so requests never interleave on the device and a model switch waits for the jobs
queued before it. A request waits on its job's `concurrent.futures.Future`; a client that
goes away cancels a job that has not started (the worker drops it) and leaves a running one to
finish, so nothing ever waits on a client.
"""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np

from .images import preview_png, save_output
from .models_dir import ModelEntry

__all__ = ["GenerationJob", "QueueFull", "Worker"]


class QueueFull(Exception):
    """The queue holds --queue-size jobs already."""


@dataclass
class GenerationJob:
    """One txt2img/img2img request, validated: each seed is one image, made alone."""

    kind: str  # "txt2img" | "img2img"
    seeds: list[int]
    options: dict[str, Any]  # keywords for StableDiffusion.generate (no seed/batch_size)
    subseeds: list[int] | None = None  # one per image (the WebUI's variation seeds)
    batch_size: int = 1
    save_to: Path | None = None


@dataclass
class JobResult:
    images: list[np.ndarray]
    settings: list[dict[str, Any]]  # one per image (GenerationResult.settings)
    model: ModelEntry | None
    job_timestamp: str
    interrupted: bool = False
    saved: list[Path] = field(default_factory=list)


@dataclass
class _Job:
    run: Callable[[], Any]
    future: Future = field(default_factory=Future)


class Worker:
    """The worker thread. `loader(path)` returns a StableDiffusion; it runs on the thread."""

    def __init__(self, loader: Callable[[Path], Any], *, queue_size: int = 16) -> None:
        self.loader = loader
        self.pipe: Any = None
        self.model: ModelEntry | None = None
        self._queue: queue.Queue[_Job | None] = queue.Queue(maxsize=max(queue_size, 1))
        self._lock = threading.Lock()
        self._state = self._idle_state()
        self._latents: np.ndarray | None = None
        self._preview: tuple[int, str] | None = None  # (step it shows, base64 PNG)
        self._started = 0.0
        self._running = False
        self._thread = threading.Thread(target=self._loop, name="diffusion-gpu-worker",
                                        daemon=True)
        self._thread.start()

    # -- queue -------------------------------------------------------------------------
    def submit(self, run: Callable[[], Any]) -> Future:
        """Queue `run` (called on the worker thread); QueueFull when the queue is full."""
        job = _Job(run)
        try:
            self._queue.put_nowait(job)
        except queue.Full:
            raise QueueFull from None
        return job.future

    def pending(self) -> int:
        return self._queue.qsize()

    @property
    def running(self) -> bool:
        return self._running

    def stop(self, timeout: float | None = 30.0) -> None:
        """Interrupt the current job, drop the waiting ones, end the thread (once)."""
        if not self._thread.is_alive():
            return
        self.interrupt()
        while True:
            try:
                job = self._queue.get_nowait()
            except queue.Empty:
                break
            if job is not None:
                job.future.cancel()
        try:
            self._queue.put_nowait(None)
        except queue.Full:  # a job queued meanwhile: it runs, then the thread ends
            self._queue.put(None, timeout=timeout)
        self._thread.join(timeout)

    def _loop(self) -> None:
        while (job := self._queue.get()) is not None:
            if not job.future.set_running_or_notify_cancel():
                continue  # its client has gone
            self._running = True
            try:
                result = job.run()
            except BaseException as exc:  # handed to the waiting request, never lost
                job.future.set_exception(exc)
            else:
                job.future.set_result(result)
            finally:
                self._running = False
                with self._lock:
                    self._state = self._idle_state()
                    self._latents = None

    # -- jobs (run on the worker thread) ----------------------------------------------
    def load(self, entry: ModelEntry) -> ModelEntry:
        """Switch to `entry` (kept as is when the load fails)."""
        if self.model is not None and self.model.path == entry.path:
            return entry
        pipe = self.loader(entry.path)
        self.pipe, self.model = pipe, entry
        return entry

    def generate(self, job: GenerationJob) -> JobResult:
        stamp = datetime.now().strftime("%Y%m%d%H%M%S")
        self._begin(job.kind, len(job.seeds), stamp)
        result = JobResult(images=[], settings=[], model=self.model, job_timestamp=stamp)
        for number, seed in enumerate(job.seeds):
            if self._state["interrupted"]:
                break
            with self._lock:
                self._state.update(job_no=number, sampling_step=0, skipped=False)
            if job.subseeds is not None:
                options = {**job.options, "subseed": job.subseeds[number]}
            else:
                options = job.options
            out = self.pipe.generate(seed=seed, batch_size=1, on_step=self._on_step, **options)
            settings = dict(out.settings)
            result.images.append(out.images[0])
            result.settings.append(settings)
            if job.save_to is not None:
                result.saved.append(save_output(out.images[0], settings, job.save_to,
                                                job.kind))
        result.interrupted = bool(self._state["interrupted"])
        return result

    # -- progress -----------------------------------------------------------------------
    @staticmethod
    def _idle_state() -> dict[str, Any]:
        return {"skipped": False, "interrupted": False, "stopping_generation": False,
                "job": "", "job_count": 0, "job_timestamp": "0", "job_no": 0,
                "sampling_step": 0, "sampling_steps": 0}

    def _begin(self, kind: str, count: int, stamp: str) -> None:
        with self._lock:
            self._state = {**self._idle_state(), "job": kind, "job_count": count,
                           "job_timestamp": stamp}
            self._latents = None
            self._preview = None
            self._started = time.monotonic()

    def _on_step(self, done: int, total: int, latents: np.ndarray) -> bool:
        with self._lock:
            self._state.update(sampling_step=done, sampling_steps=total)
            self._latents = np.array(latents[:1], copy=True)
            return not (self._state["interrupted"] or self._state["skipped"])

    def interrupt(self) -> None:
        """Stop the running job after its current step; it returns what it has."""
        with self._lock:
            if self._state["job"]:
                self._state["interrupted"] = True

    def skip(self) -> None:
        """Stop the current image after its current step and go on with the next one."""
        with self._lock:
            if self._state["job"]:
                self._state["skipped"] = True

    def progress(self, *, with_image: bool) -> dict[str, Any]:
        """The /sdapi/v1/progress body."""
        with self._lock:
            state = dict(self._state)
            latents, started = self._latents, self._started
        count, steps = state["job_count"], state["sampling_steps"]
        fraction = 0.0
        if count and steps:
            fraction = min((state["job_no"] + state["sampling_step"] / steps) / count, 1.0)
        elapsed = time.monotonic() - started
        eta = elapsed / fraction - elapsed if fraction > 0 else 0.0
        image = None
        if with_image and latents is not None:
            step = state["job_no"] * 100000 + state["sampling_step"]
            cached = self._preview
            if cached is None or cached[0] != step:
                cached = self._preview = (step, preview_png(latents))
            image = cached[1]
        text = None
        if state["job"]:
            text = (f"{state['job']}: image {state['job_no'] + 1}/{count}, step "
                    f"{state['sampling_step']}/{steps}; {self.pending()} waiting")
        return {"progress": fraction, "eta_relative": eta, "state": state,
                "current_image": image, "textinfo": text}
