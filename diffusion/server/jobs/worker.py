"""GPU worker threads behind one bounded FIFO queue, and the progress state they publish.

One worker thread per device (the default: one device), each with its own copy of the
pipeline, all taking jobs from the same queue in the order they were queued: requests never
interleave on a device, and with several devices the queue drains several jobs at a time. A
model switch is exclusive: it starts once the jobs queued before it have finished, loads the
model on every device, and the jobs queued after it wait for it. Unloading (the WebUI's
unload-checkpoint, which frees the GPU for another program) is exclusive too; the next job on
a device loads the model there again, as Forge does, or reload-checkpoint loads it. A request
waits on its job's `concurrent.futures.Future`; a client that goes away cancels a job that
has not started (the workers drop it) and leaves a running one to finish, so nothing ever
waits on a client.
Interrupt and skip act on every running job, as the WebUI's act on the one it runs; progress
shows the oldest running job and names the others in its text. A job may carry a task id (the
WebUI's `id_task`, sent as `force_task_id`): `task_progress` answers for that job alone,
queued, running or finished, as the WebUI's /internal/progress does for its page, and
interrupt and skip given that id stop that job alone (so that a page stops its own). Threads
share the GIL: for several GPUs, diffusion.server.jobs.processes runs this queue over a worker
process per GPU.
"""

from __future__ import annotations

import collections
import itertools
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from datetime import datetime
from pathlib import Path
from typing import Any

from ...pipelines.observer import Observer
from ..catalog.models_dir import ModelEntry
from ..previews import Previews
from .pictures import GenerationJob, JobResult, finish_picture
from .slots import ModelFacts, Slot, SlotObserver, StepObserver, describe, fraction, idle_state

__all__ = ["GenerationJob", "JobResult", "QueueFull", "Worker", "WorkerLost"]

_FINISHED_KEPT = 64  # task ids remembered as completed (the WebUI keeps 16)


class QueueFull(Exception):
    """The queue holds --queue-size jobs already."""


class WorkerLost(RuntimeError):
    """The worker process running a job died (it is restarted; the job is not retried)."""


@dataclass
class _Job:
    run: Callable[[], Any]
    exclusive: bool = False
    task: str | None = None  # the client's task id (task_progress)
    future: Future = field(default_factory=Future)


class Worker:
    """The worker threads. `loader(path)` returns a StableDiffusion and runs on a worker
    thread; with `devices`, `loader(path, device=device)` is called once per device."""

    def __init__(self, loader: Callable[..., Any], *, queue_size: int = 16,
                 devices: Sequence[Any] | None = None, previews: Previews | None = None) -> None:
        self.loader = loader
        self.previews = previews  # live previews' options (None: Approx cheap every step)
        self.model: ModelEntry | None = None
        self._kept: ModelFacts | None = None  # the model's facts while it is unloaded
        self.planned: ModelEntry | None = None  # what the queued switches leave loaded
        self.queue_size = max(queue_size, 1)
        self.slots = [Slot(i, d) for i, d in enumerate(devices or [None])]
        self._jobs: collections.deque[_Job] = collections.deque()
        self._cond = threading.Condition()  # guards _jobs, _active, _exclusive, _stopping
        self._active = 0
        self._exclusive = False
        self._stopping = False
        self._stop_at_start: set[str] = set()  # queued tasks interrupted (guarded by _cond)
        self._lock = threading.Lock()  # guards the slots' progress state
        self._tickets = itertools.count(1)
        self._preview_ids = itertools.count(1)
        self._finished: collections.deque[str] = collections.deque(maxlen=_FINISHED_KEPT)
        self._local = threading.local()
        self._threads = [threading.Thread(target=self._loop, args=(slot,), daemon=True,
                                          name=f"diffusion-gpu-worker-{slot.index}")
                         for slot in self.slots]
        for thread in self._threads:
            thread.start()

    def _current(self) -> Slot:
        """The slot of the calling worker thread (the first one elsewhere)."""
        return getattr(self._local, "slot", self.slots[0])

    @property
    def pipe(self) -> Any:
        """The pipeline of the calling worker's device (elsewhere: the first device's)."""
        return self._current().pipe

    @property
    def facts(self) -> Any:
        """What routes read of the model outside jobs (native_size, defaults, family,
        capabilities): the first device's pipeline, else the ModelFacts kept as it unloaded."""
        return self._kept if self.slots[0].pipe is None else self.slots[0].pipe

    @property
    def device(self) -> Any:
        """The calling worker's gpucore Device (elsewhere: the first one's)."""
        return self._current().gpu()

    # -- queue -------------------------------------------------------------------------
    def submit(self, run: Callable[[], Any], *, exclusive: bool = False,
               task: str | None = None) -> Future:
        """Queue `run` (called on a worker thread); QueueFull when the queue is full.

        An `exclusive` job runs alone: after every job queued before it has finished and
        before any queued after it starts. `task`: the id `task_progress` knows it by."""
        job = _Job(run, exclusive, task)
        with self._cond:
            if self._stopping:
                raise RuntimeError("the worker has stopped; start a new server")
            if self.pending() >= self.queue_size:
                raise QueueFull
            self._jobs.append(job)
            self._cond.notify_all()
        return job.future

    def submit_load(self, entry: ModelEntry) -> Future:
        """Queue a switch to `entry` on every device (an exclusive job). `planned` is then
        `entry`, until the switch fails (or is cancelled) while it is still the last one."""
        future = self.submit(self._load_job(entry), exclusive=True)
        with self._cond:
            self.planned = entry

        def settled(done: Future) -> None:
            if done.cancelled() or done.exception() is not None:
                with self._cond:
                    if self.planned is entry:
                        self.planned = self.model
        future.add_done_callback(settled)
        return future

    def _load_job(self, entry: ModelEntry) -> Callable[[], Any]:
        return lambda: self.load(entry)

    def pending(self) -> int:
        """The jobs waiting, less those whose client has gone (cancelled: dropped unrun)."""
        with self._cond:
            return sum(not job.future.cancelled() for job in self._jobs)

    @property
    def running(self) -> bool:
        return any(slot.running for slot in self.slots)

    def stop(self, timeout: float | None = 30.0) -> None:
        """Interrupt the running jobs, drop the waiting ones, end the threads."""
        with self._cond:
            self._stopping = True
            waiting = list(self._jobs)
            self._jobs.clear()
            self._cond.notify_all()
        for job in waiting:
            job.future.cancel()
        self.interrupt()
        for thread in self._threads:
            if thread is not threading.current_thread():
                thread.join(timeout)

    def _take(self, slot: Slot) -> _Job | None:
        with self._cond:
            while not self._stopping:
                head = self._jobs[0] if self._jobs else None
                if head is not None and not self._exclusive and (
                        not head.exclusive or self._active == 0):
                    self._jobs.popleft()
                    stopped = head.task in self._stop_at_start
                    self._stop_at_start.discard(head.task)
                    if head.future.set_running_or_notify_cancel():
                        self._active += 1
                        self._exclusive = head.exclusive
                        with self._lock:  # from the queue to the slot at once
                            slot.task, slot.running = head.task, True
                            slot.interrupt_pending = stopped
                        return head
                    continue  # its client has gone
                self._cond.wait()
            return None

    def _loop(self, slot: Slot) -> None:
        self._local.slot = slot
        while (job := self._take(slot)) is not None:
            try:
                result = self._execute(slot, job)
            except BaseException as exc:  # handed to the waiting request, never lost
                job.future.set_exception(exc)
            else:
                job.future.set_result(result)
            finally:
                with self._lock:
                    slot.running = False
                    slot.state = idle_state()
                    slot.latents = None
                    slot.interrupt_pending = False
                    if slot.task is not None:
                        self._finished.append(slot.task)
                    slot.task = None
                with self._cond:
                    self._active -= 1
                    self._exclusive = False
                    self._cond.notify_all()

    def _execute(self, slot: Slot, job: _Job) -> Any:
        """Run `job` for `slot` (here: on its thread; diffusion.server.jobs.processes: in its
        process), the model loaded again first where it was unloaded."""
        if slot.unloaded and not job.exclusive:
            self._reload_slot(slot)
        return job.run()

    # -- jobs (run on a worker thread) ---------------------------------------------------
    def _load_one(self, slot: Slot, path: Path, modules: tuple[Path, ...] = (),
                  base: Path | None = None) -> Any:
        where: dict[str, Any] = {} if slot.device is None else {"device": slot.device}
        if modules:  # a loader that takes no modules is never asked for any
            where["modules"] = list(modules)
        if base is not None:  # a single-file transformer's diffusers folder (ModelEntry.base)
            where["base"] = base
        return self.loader(path, **where)

    def second_model(self, path: Path) -> Any:
        """A second model (an SDXL refiner) on the calling worker's device, loaded on first
        use; one is kept per device (another path replaces it, freeing the first)."""
        slot = self._current()
        if slot.second is None or slot.second[0] != path:
            slot.second = None
            slot.second = (path, self._load_one(slot, path))
        return slot.second[1]

    def load(self, entry: ModelEntry) -> ModelEntry:
        """Switch every device to `entry`, its model with its module files (all kept as they
        are when a load fails; the same path with other modules is another model). Queue it
        with `submit_load`, so no job runs while the pipelines change."""
        if self.model is not None and self.model.identity == entry.identity:
            self.reload()  # where it was unloaded
            return entry
        if len(self.slots) == 1:
            pipes = [self._load_one(self.slots[0], entry.path, entry.files, entry.base)]
        else:  # in parallel: reading weights and uploading them overlap across devices
            with ThreadPoolExecutor(len(self.slots)) as pool:
                pipes = list(pool.map(
                    lambda slot: self._load_one(slot, entry.path, entry.files, entry.base),
                    self.slots))
        for slot, pipe in zip(self.slots, pipes, strict=True):
            slot.pipe, slot.unloaded = pipe, False
        self.model = entry
        return entry

    def unload(self) -> None:
        """Free every device's pipelines (a refiner too) and give their memory back to the
        driver; `model` stays the one chosen. Queue it as an exclusive job (`submit`)."""
        import gc

        if self.slots[0].pipe is not None:
            self._kept = ModelFacts.of(self.slots[0].pipe)
        for slot in self.slots:
            slot.pipe, slot.second = None, None
            slot.unloaded = self.model is not None
        gc.collect()  # a pipeline's buffers return to their device's pool when collected
        for slot in self.slots:
            slot.gpu().synchronize()
            slot.gpu().empty_pool()

    def reload(self) -> None:
        """Load the chosen model again where it was unloaded (an exclusive job)."""
        for slot in self.slots:
            if slot.unloaded:
                self._reload_slot(slot)

    def _reload_slot(self, slot: Slot) -> None:
        if (entry := self.model) is not None:
            slot.pipe = self._load_one(slot, entry.path, entry.files, entry.base)
        slot.unloaded = False

    def generate(self, job: GenerationJob) -> JobResult:
        slot = self._current()
        stamp = datetime.now().strftime("%Y%m%d%H%M%S")
        self._begin(slot, job.kind, len(job.seeds), stamp)
        result = JobResult(images=[], settings=[], model=self.model, job_timestamp=stamp,
                           device=slot.label)
        observer = SlotObserver(self._lock, slot, self.previews)
        for number, seed in enumerate(job.seeds):
            if slot.state["interrupted"]:
                break
            with self._lock:
                slot.state.update(job_no=number, sampling_step=0, skipped=False)
            # "latent noise" is the first batch's image's, as the WebUI makes it once a job
            request = replace(job.request, seed=seed, batch_size=1,
                              latent_noise_seed=job.seeds[number % job.batch_size])
            if job.subseeds is not None:
                request = replace(request, subseed=job.subseeds[number])
            out = slot.pipe.generate(request, observer=observer)
            finish_picture(job, result, out.images[0], dict(out.settings), pipe=slot.pipe,
                           device=slot.device, observer=observer)
        result.interrupted = bool(slot.state["interrupted"])
        return result

    def begin_job(self, kind: str) -> tuple[Observer, Any]:
        """A job other than `generate`'s (a video) begins on the calling worker's slot: the
        observer its steps report to (interrupt and skip stop it) and the slot's device."""
        slot = self._current()
        self._begin(slot, kind, 1, datetime.now().strftime("%Y%m%d%H%M%S"))
        return StepObserver(self._lock, slot), slot.device

    # -- progress -----------------------------------------------------------------------
    def _begin(self, slot: Slot, kind: str, count: int, stamp: str) -> None:
        with self._lock:
            slot.state = {**idle_state(), "job": kind, "job_count": count,
                          "job_timestamp": stamp, "interrupted": slot.interrupt_pending}
            slot.latents = slot.picture = None
            slot.preview = None
            slot.started = time.monotonic()
            slot.ticket = next(self._tickets)

    def _slots_of(self, task: str | None) -> list[Slot]:
        """The slots running the job of `task` (None: every slot); the caller holds _lock."""
        return [slot for slot in self.slots if task is None or slot.task == task]

    def interrupt(self, task: str | None = None) -> None:
        """Stop the running job of `task` (None: every running job) after its current step;
        each returns what it has (one taken from the queue but not begun yet, or the job of
        a `task` still queued, stops before its first step)."""
        with self._cond, self._lock:
            for slot in self._slots_of(task):
                if slot.state["job"]:
                    slot.state["interrupted"] = True
                elif slot.running:
                    slot.interrupt_pending = True
            if task is not None and any(job.task == task for job in self._jobs):
                self._stop_at_start.add(task)

    def skip(self, task: str | None = None) -> None:
        """Stop the current image of the running job of `task` (None: of every running job)
        after its current step; the job goes on with its next one."""
        with self._lock:
            for slot in self._slots_of(task):
                if slot.state["job"]:
                    slot.state["skipped"] = True

    def memory(self) -> list[dict[str, Any]]:
        """Each device's memory (Slot.memory)."""
        return [slot.memory() for slot in self.slots]

    def progress(self, *, with_image: bool) -> dict[str, Any]:
        """The /sdapi/v1/progress body: the oldest running job's (with several devices the
        text lists every running one), its task id as `current_task`."""
        with self._lock:
            busy = sorted((s for s in self.slots if s.state["job"]), key=lambda s: s.ticket)
            lead = busy[0] if busy else self.slots[0]
            state, task = dict(lead.state), lead.task if busy else None
            latents, started = lead.latents, lead.started
            texts = [describe(s.state) + (f" on {s.label}" if len(self.slots) > 1 else "")
                     for s in busy]
        done, eta = fraction(state, started)
        preview = lead.preview_of(state, latents, self._preview_ids) if with_image else None
        text = "; ".join([*texts, f"{self.pending()} waiting"]) if texts else None
        return {"progress": done, "eta_relative": eta, "state": state,
                "current_image": preview and preview[1], "textinfo": text,
                "current_task": task}

    def task_progress(self, task: str | None, *, live_preview: bool = True,
                      id_live_preview: int = -1) -> dict[str, Any]:
        """The WebUI's /internal/progress body for the job of `task` alone: whether it runs,
        waits (its place in the queue in `textinfo`) or has finished; while it runs, its
        progress, ETA, `state` (/sdapi/v1/progress's, for its step numbers) and a preview
        (a data: URL) when there is one newer than `id_live_preview`."""
        with self._cond, self._lock:
            slot = next((s for s in self.slots if task is not None and s.task == task), None)
            waiting = [job.task for job in self._jobs if not job.future.cancelled()]
            completed = task is not None and task in self._finished
            if slot is not None:
                state, latents, started = dict(slot.state), slot.latents, slot.started
        answer: dict[str, Any] = {"active": slot is not None, "queued": False,
                                  "completed": completed, "progress": None, "eta": None,
                                  "live_preview": None, "id_live_preview": -1,
                                  "textinfo": None, "state": None}
        if slot is None:
            queued = task is not None and task in waiting
            answer.update(queued=queued, textinfo=(
                f"In queue: {waiting.index(task) + 1}/{len(waiting)}" if queued
                else "Waiting..."))
            return answer
        done, eta = fraction(state, started)
        answer.update(progress=done, eta=eta if done > 0 else None, state=state,
                      id_live_preview=id_live_preview,
                      textinfo=describe(state) if state["job"] else "Starting...")
        preview = slot.preview_of(state, latents, self._preview_ids) if live_preview else None
        if preview is not None and preview[0] != id_live_preview:
            answer.update(id_live_preview=preview[0],
                          live_preview=f"data:image/png;base64,{preview[1]}")
        return answer
