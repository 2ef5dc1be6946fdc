"""The server's worker as one PROCESS per GPU: `ProcessWorker` (`serve --devices 0,1`).

A Worker's threads share one interpreter: recording a step's dispatches holds the GIL, so two
GPUs in one process made 1.00x the pictures of one at 128 px (bench/results/multigpu-*.json).
Here every device is a process of its own (multiprocessing's spawn, `GPUCORE_ADAPTER` set per
process, diffusion.server.jobs.child), each loading its own pipeline, and the parent keeps what the
thread Worker keeps: the one FIFO queue, exclusive model switches (sent to every process), and
each slot's progress (mirrored from its process's reports). Interrupt and skip are sent to the
processes that run a job (or to the one that runs the job of the task named). A process that
dies (a driver crash, `kill -9`, out of memory) fails only the job it ran, with `WorkerLost`
(the server answers 503 + Retry-After); it is started again with the current model while the
other processes go on.
"""

from __future__ import annotations

import itertools
import logging
import multiprocessing
import pickle
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Future
from multiprocessing.connection import wait
from typing import Any

from ..catalog.models_dir import ModelEntry
from ..previews import Previews
from . import child
from .slots import Slot
from .worker import Worker, WorkerLost, _Job

__all__ = ["ProcessWorker", "worker_adapters"]

_LOG = logging.getLogger(__name__)


def worker_adapters(spec: str) -> list[str]:
    """`--devices` as one GPUCORE_ADAPTER value (an adapter index) per worker process: 'all'
    (every GPU once), indices or names as `python -m gpucore info` lists them, `dawn:0,wgpu:1`
    (GPUs of different runtimes or vendors in one queue); one may repeat (two processes on one
    GPU). NoAdapterError / ValueError say what is not there."""
    from gpucore import select_adapters

    return [str(info.index) for info in select_adapters(spec, repeats=True)]


class _Process:
    """One worker process and the pipe to it."""

    def __init__(self, index: int, adapter: str, loader_blob: bytes) -> None:
        self.index, self.adapter, self.loader_blob = index, adapter, loader_blob
        self._send_lock = threading.Lock()
        self._query_lock = threading.Lock()
        self._questions = itertools.count()
        self.start()

    def start(self) -> None:
        context = multiprocessing.get_context("spawn")  # a fresh interpreter: no GPU state
        self.conn, theirs = context.Pipe()
        self.queries, their_queries = context.Pipe()
        self.process = context.Process(
            target=child.main, args=(theirs, {"GPUCORE_ADAPTER": self.adapter},
                                     self.loader_blob, their_queries),
            name=f"diffusion-worker-{self.index}", daemon=True)
        self.process.start()
        theirs.close()
        their_queries.close()

    def ask(self, question: str, timeout: float = 10.0) -> Any:
        """The process's answer to `question` (child._answer), None when it does not answer
        within `timeout` seconds (gone, or starting)."""
        with self._query_lock:
            number = next(self._questions)
            try:
                self.queries.send((number, question))
                deadline = time.monotonic() + timeout
                while self.queries.poll(max(deadline - time.monotonic(), 0)):
                    answered, answer = self.queries.recv()
                    if answered == number:  # an earlier question's late answer is dropped
                        return answer
            except (EOFError, OSError, ValueError):
                pass
            return None

    def send(self, message: tuple[Any, ...]) -> bool:
        """False when the process has gone."""
        try:
            with self._send_lock:
                self.conn.send(message)
            return True
        except (OSError, ValueError):
            return False

    def receive(self) -> tuple[Any, ...] | None:
        """The next message; None once the process has died (what it sent before is read
        first)."""
        wait([self.conn, self.process.sentinel])
        try:
            if self.conn.poll():
                return self.conn.recv()
        except (EOFError, OSError):
            pass
        self.process.join(5)
        return None

    def stop(self, timeout: float | None) -> None:
        self.send(("stop",))
        self.process.join(timeout)
        if self.process.is_alive():
            self.process.kill()
            self.process.join(5)
        self.conn.close()
        self.queries.close()


class ProcessWorker(Worker):
    """The Worker's queue over worker processes, one per entry of `adapters` (GPUCORE_ADAPTER
    values, see `worker_adapters`). `loader(path)` runs in each process (it is pickled with
    cloudpickle, as the jobs are; create_app's, a jobs.loader.PipelineLoader, carries the
    ServerSettings there). `pipe` is a `child.ModelFacts` of the loaded model."""

    def __init__(self, loader: Callable[..., Any], *, adapters: Sequence[str],
                 queue_size: int = 16, previews: Previews | None = None) -> None:
        import cloudpickle

        if not adapters:
            raise ValueError("ProcessWorker needs at least one adapter")
        self._cloudpickle = cloudpickle
        self._ids = itertools.count(1)
        self.loaded: child.ModelFacts | None = None  # its processes' model
        self._job_ids: dict[int, int] = {}  # slot -> id of the job its process runs
        self.processes = [_Process(i, adapter, cloudpickle.dumps(loader))
                          for i, adapter in enumerate(adapters)]
        super().__init__(loader, queue_size=queue_size, devices=[None] * len(adapters),
                         previews=previews)
        for slot, process in zip(self.slots, self.processes, strict=True):
            slot.label = f"worker {slot.index} (GPUCORE_ADAPTER={process.adapter})"

    def __reduce__(self) -> tuple[Any, ...]:
        # a job's reference to this worker is, in the process that runs it, that process's
        return child.this_worker, ()

    @property
    def pipe(self) -> Any:
        return self.loaded

    @property
    def facts(self) -> Any:
        return self.loaded

    def submit(self, run: Callable[[], Any], *, exclusive: bool = False,
               task: str | None = None) -> Future:
        """Queue `run` (pickled now: what cannot be sent to a process is a TypeError here)."""
        try:
            blob = self._cloudpickle.dumps(run)
        except Exception as exc:
            raise TypeError(f"this job cannot be sent to a worker process ({exc}); what a job "
                            "refers to must pickle") from exc
        return super().submit(lambda: blob, exclusive=exclusive, task=task)

    def _load_job(self, entry: ModelEntry) -> Callable[[], Any]:
        return child.LoadModel(entry)  # its module files travel with it (ModelEntry.files)

    def stop(self, timeout: float | None = 30.0) -> None:
        super().stop(timeout)
        for process in self.processes:
            process.stop(timeout)

    def interrupt(self, task: str | None = None) -> None:
        super().interrupt(task)
        self._tell("interrupt", task)

    def skip(self, task: str | None = None) -> None:
        super().skip(task)
        self._tell("skip", task)

    def memory(self) -> list[dict[str, Any]]:
        """Each process's device figures (Worker.memory), asked now; a process that does not
        answer (restarting) is listed with an "error"."""
        figures = []
        for slot, process in zip(self.slots, self.processes, strict=True):
            answer = process.ask("memory")
            figures.append({**(answer or {"error": "the worker process did not answer"}),
                            "device": slot.label})
        return figures

    def _tell(self, what: str, task: str | None) -> None:
        """Send `what` to the process running the job of `task` (None: to every one that
        runs a job)."""
        with self._lock:  # the job ids _execute sets under it: each running job is told once
            running = [(process, self._job_ids.get(slot.index))
                       for slot, process in zip(self.slots, self.processes, strict=True)
                       if slot.running and slot in self._slots_of(task)]
        for process, job_id in running:
            if job_id is not None:  # else _execute sends it with the job (interrupt_pending)
                process.send((what, job_id))

    # -- running a job in a process (on the slot's thread) --------------------------------
    def _execute(self, slot: Slot, job: _Job) -> Any:
        blob = job.run()
        if job.exclusive:
            return self._everywhere(blob)
        process = self.processes[slot.index]
        if not process.process.is_alive():  # died while idle
            self._restart(slot, process.process.exitcode)
        job_id = next(self._ids)
        with self._lock:
            slot.started, slot.ticket = time.monotonic(), next(self._tickets)
            self._job_ids[slot.index] = job_id
            stopped = slot.interrupt_pending  # told before it had an id (Worker.interrupt)
        if self.previews is not None:  # the options as they are now, for this job
            process.send(("previews", *self.previews.settings()))
        process.send(("run", job_id, blob, False))
        if stopped:
            process.send(("interrupt", job_id))
        try:
            return self._follow(slot, process, job_id)
        finally:
            with self._lock:
                self._job_ids.pop(slot.index, None)

    def _follow(self, slot: Slot, process: _Process, job_id: int) -> Any:
        """The job's progress and result, read from its process."""
        while (message := process.receive()) is not None:
            if message[1] != job_id:
                self._note_other(slot, message)
            elif message[0] == "progress":
                with self._lock:
                    slot.state, slot.latents, slot.picture = message[2:5]
            elif message[0] == "done":
                result = pickle.loads(message[3])
                if not message[2]:
                    raise result
                if hasattr(result, "device"):  # a JobResult: which worker made it
                    result.device = slot.label
                return result
        code = process.process.exitcode
        self._restart(slot, code)
        raise WorkerLost(f"{slot.label} stopped while running this job (exit code {code}); it "
                         "has been restarted and the other workers went on: send the request "
                         "again")

    def _note_other(self, slot: Slot, message: tuple[Any, ...]) -> None:
        """A message for another job: a restart's model load (its failure is logged)."""
        if message[0] == "done" and not message[2]:
            _LOG.error("%s could not load the model after a restart: %s", slot.label,
                       pickle.loads(message[3]))

    def _restart(self, slot: Slot, exitcode: int | None) -> None:
        """Start the slot's process again and queue the current model's load on it (its
        jobs wait for it in order)."""
        if self._stopping:
            return
        process = self.processes[slot.index]
        _LOG.warning("%s exited (code %s); starting it again", slot.label, exitcode)
        process.conn.close()
        process.start()
        if self.model is not None:
            process.send(("run", next(self._ids),
                          self._cloudpickle.dumps(child.LoadModel(self.model)), True))

    def _everywhere(self, blob: bytes) -> Any:
        """An exclusive job (a model switch) on every process at once; the first error is
        raised after the processes that switched have been switched back."""
        ids = {}
        for slot, process in zip(self.slots, self.processes, strict=True):
            if not process.process.is_alive():
                process.conn.close()
                process.start()
            ids[slot.index] = next(self._ids)
            process.send(("run", ids[slot.index], blob, True))
        results: dict[int, tuple[bool, Any]] = {}
        for slot, process in zip(self.slots, self.processes, strict=True):
            while (message := process.receive()) is not None:
                if message[0] == "done" and message[1] == ids[slot.index]:
                    results[slot.index] = (message[2], pickle.loads(message[3]))
                    break
            else:
                results[slot.index] = (False, WorkerLost(f"{slot.label} stopped while "
                                                         "loading the model"))
        failures = [value for ok, value in results.values() if not ok]
        if failures:
            if self.model is not None and len(failures) < len(results):
                self._everywhere(self._cloudpickle.dumps(child.LoadModel(self.model)))
            raise failures[0]
        facts = results[0][1]
        if isinstance(facts, child.ModelFacts):
            self.loaded = facts
            self.model = pickle.loads(blob).entry
        return self.model if isinstance(facts, child.ModelFacts) else facts
