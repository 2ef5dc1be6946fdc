"""One worker process of the multi-process server (diffusion.server.jobs.processes): its GPU (the
`GPUCORE_ADAPTER` its parent gives it), its own pipeline, and the jobs its parent sends.

The process runs an ordinary one-device `Worker`; the jobs arrive pickled (cloudpickle, so the
routers' closures travel as they are), and a job's reference to the parent's ProcessWorker
unpickles as this process's Worker (`this_worker`), so `worker.pipe`, `worker.generate(...)`
mean this process's. Messages to the parent: ("progress", job id, state, latents, drawn
preview or None) while a job runs (polled, at most every 50 ms) and ("done", job id, ok,
pickled result or exception); from it, ("previews", ...) before a job: the preview options.
Interrupt and skip name their job: one that arrives before the job has begun here is kept
and applied when it begins. A second pipe answers questions while jobs run ("memory": this
process's device figures, `Worker.memory`).
"""

from __future__ import annotations

import os
import pickle
import signal
import threading
from dataclasses import dataclass
from functools import partial
from typing import Any

from ..catalog.models_dir import ModelEntry
from ..previews import PREVIEW_OPTIONS, Previews
from .slots import ModelFacts
from .worker import Worker

__all__ = ["LoadModel", "ModelFacts", "main", "this_worker"]

_WORKER: list[Worker] = []
_REPORT_S = 0.05


def this_worker() -> Worker:
    """The Worker of this worker process: what a job's worker becomes here."""
    if not _WORKER:
        raise RuntimeError("this_worker() is for jobs running in a worker process")
    return _WORKER[0]


@dataclass(frozen=True)
class LoadModel:
    """The job that switches a worker process to `entry` (sent to every process at once)."""

    entry: ModelEntry

    def __call__(self) -> ModelFacts:
        worker = this_worker()
        worker.load(self.entry)
        return ModelFacts.of(worker.pipe)


def _outcome(future: Any) -> tuple[bool, bytes]:
    """(ok, pickled result or exception); what cannot be pickled is said in a RuntimeError."""
    error = future.exception()
    value = future.result() if error is None else error
    try:
        return error is None, pickle.dumps(value, protocol=pickle.HIGHEST_PROTOCOL)
    except Exception as exc:  # an exception or result that does not pickle: say what it was
        what = f"{type(value).__name__}: {value}" if error is not None else type(value).__name__
        return False, pickle.dumps(RuntimeError(f"the worker process could not send back "
                                                f"{what} ({exc})"))


def _answer(queries: Any, worker: Worker) -> None:
    """Answer the parent's (number, question) on the query pipe until it closes."""
    while True:
        try:
            number, question = queries.recv()
        except (EOFError, OSError):
            return
        try:
            answer: Any = worker.memory()[0] if question == "memory" else None
        except Exception as exc:  # a question must not end the process: say what failed
            answer = {"error": f"{type(exc).__name__}: {exc}"}
        queries.send((number, answer))


def main(conn: Any, env: dict[str, str], loader_blob: bytes, queries: Any = None) -> None:
    """The process: GPUCORE_ADAPTER from `env` before any device opens, then jobs until the
    parent says stop or goes away."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C reaches the group: the parent stops us
    os.environ.update(env)
    import cloudpickle

    worker = Worker(cloudpickle.loads(loader_blob), queue_size=2**16)
    _WORKER.append(worker)
    send_lock = threading.Lock()
    current: dict[str, int | None] = {"id": None}
    # job ids interrupted before they began (a skip then is dropped, as Worker.skip drops one
    # for a job not running); an id leaves when its job begins or ends
    told: set[int] = set()
    done = threading.Event()

    def send(message: tuple[Any, ...]) -> None:
        with send_lock:
            conn.send(message)

    def finished(job_id: int, future: Any) -> None:
        told.discard(job_id)
        send(("done", job_id, *_outcome(future)))

    def execute(job_id: int, blob: bytes) -> Any:
        run = cloudpickle.loads(blob)
        current["id"] = job_id
        if job_id in told:  # arrived while the job was queued here
            told.discard(job_id)
            worker.interrupt()
        try:
            return run()
        finally:
            current["id"] = None

    def report() -> None:  # the running job's progress, when it changed
        slot, last = worker.slots[0], None
        while not done.wait(_REPORT_S):
            with worker._lock:
                job_id, state, latents = current["id"], dict(slot.state), slot.latents
                picture = slot.picture
            # the latents' identity too: a step's preview lands after its step number
            key = (job_id, id(latents), *(state[k] for k in (
                "job", "job_no", "sampling_step", "interrupted", "skipped")))
            if job_id is not None and key != last:
                send(("progress", job_id, state, latents, picture))
                last = key

    threading.Thread(target=report, daemon=True, name="diffusion-progress").start()
    if queries is not None:
        threading.Thread(target=_answer, args=(queries, worker), daemon=True,
                         name="diffusion-queries").start()
    while True:
        try:
            message = conn.recv()
        except (EOFError, OSError):  # the parent has gone
            break
        kind = message[0]
        if kind == "run":
            _, job_id, blob, exclusive = message
            future = worker.submit(partial(execute, job_id, blob), exclusive=exclusive)
            future.add_done_callback(partial(finished, job_id))
        elif kind == "previews":  # the parent's preview options, before a job
            if worker.previews is None or worker.previews.approx_dir != message[1]:
                worker.previews = Previews(message[1])
            worker.previews.configure(dict(zip(PREVIEW_OPTIONS, message[2:], strict=True)))
        elif kind in ("interrupt", "skip"):
            job_id = message[1]
            if kind == "interrupt":
                told.add(job_id)  # first, then the check: execute() does the reverse
            if current["id"] == job_id:
                told.discard(job_id)
                worker.interrupt() if kind == "interrupt" else worker.skip()
        elif kind == "stop":
            break
    done.set()
    worker.stop()
