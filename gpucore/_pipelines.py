"""The compiled pipelines of one device, each built once, by whichever thread asks first.

Builds run outside the device's lock, so that threads may compile pipelines while another
records (gpucore._warmup builds a workload's kernels ahead); a second caller of a key being
built waits for that build and gets its result, or its error. OpenGL builds under the lock:
its contexts are not shared between threads.

A build may also be begun and left running (`begin`): on a thread of ours (wgpu-native) or on
the runtime's own (Dawn's create_compute_pipeline_async). The caller gets a `Pending` in the
pipeline's place, which a dispatch records as it is (gpucore._stream holds a pass's dispatches
until their pipelines are there), so a cold first picture finds its next kernels while the
earlier ones build, instead of building them one after another.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable
from concurrent.futures import Future
from contextlib import AbstractContextManager
from typing import Any, Generic, TypeVar

from ._phases import phase

__all__ = ["ENV", "KernelSpec", "Pending", "PipelineCache", "builds_later", "resolved"]

ENV = "GPUCORE_WARMUP"  # 0: every kernel built in place, when first used (gpucore._warmup too)

P = TypeVar("P")
# What rebuilds a kernel in another process: WGSL source, name, entry point, constants.
KernelSpec = tuple[str, str, str, dict[str, float]]


class Pending:
    """A compute pipeline being built elsewhere; `result()` waits for it once (raising the
    build's error, as a build in place would have)."""

    __slots__ = ("_done", "_error", "_finish", "_lock", "_value")

    def __init__(self, finish: Callable[[], Any]) -> None:
        self._finish: Callable[[], Any] | None = finish
        self._lock = threading.Lock()
        self._done = False
        self._value: Any = None
        self._error: BaseException | None = None

    def result(self) -> Any:
        if not self._done:
            with self._lock:
                if not self._done:
                    finish, self._finish = self._finish, None
                    assert finish is not None
                    try:
                        with phase("compile wait"):
                            self._value = finish()
                    except Exception as exc:
                        self._error = exc
                    self._done = True
        if self._error is not None:
            raise self._error
        return self._value


def builds_later(backend: str, adapter_type: str) -> bool:
    """Whether a device begins its pipelines in the background (module docstring): a GPU's,
    not OpenGL's (one thread per context), nor a CPU adapter's, whose builds would take the
    cores the recording runs on; not with GPUCORE_WARMUP=0."""
    return (os.environ.get(ENV, "1").strip() != "0" and backend != "gl"
            and adapter_type != "cpu")


def resolved(pipeline: Any) -> Any:
    """`pipeline` itself, or what the Pending in its place becomes (waited for)."""
    return pipeline.result() if type(pipeline) is Pending else pipeline


class PipelineCache(Generic[P]):
    """key -> pipeline, built once (`get(key, build)`); `created` counts the builds."""

    def __init__(self, lock: AbstractContextManager[object], *, concurrent: bool) -> None:
        self._lock = lock  # the device's
        self._concurrent = concurrent
        self._done: dict[tuple, P] = {}
        self._building: dict[tuple, Future[P]] = {}
        self._begun: dict[tuple, Any] = {}  # key -> (Pending, ...): begun, not yet waited for
        self.created = 0
        # while noting (gpucore._warmup): the keys used, in order, and the builds' specs
        self.log: dict[tuple, None] | None = None
        self._specs: dict[tuple, KernelSpec] = {}

    def __contains__(self, key: tuple) -> bool:
        return key in self._done

    def start_log(self) -> None:
        """Note the keys used from now on (`get` with use=True) and what builds them."""
        self.log, self._specs = {}, {}

    def note(self, key: tuple, spec: KernelSpec) -> None:
        """What builds `key` (Kernel's build says), kept while noting."""
        if self.log is not None:
            self._specs[key] = spec

    def stop_log(self) -> list[KernelSpec]:
        """Stop noting: the specs of the keys used since start_log, in the order first used
        (those built before it began are not known)."""
        used, specs = self.log or {}, self._specs
        self.log, self._specs = None, {}
        return [specs[key] for key in used if key in specs]

    def get(self, key: tuple, build: Callable[[], P], *, use: bool = True) -> P:
        """The pipeline of `key`, built by `build()` once; `use=False`: built ahead, not
        noted as used."""
        if use and (log := self.log) is not None and key not in log:
            log[key] = None
        found = self._done.get(key)
        if found is not None:
            return found
        begun = self._begun.get(key)
        if begun is not None:
            begun[0].result()  # raises the build's error
            return self._done[key]
        if not self._concurrent:
            with self._lock:
                found = self._done.get(key)
                return found if found is not None else self._built(key, build)
        with self._lock:
            found = self._done.get(key)
            if found is not None:
                return found
            pending = self._building.get(key)
            mine = pending is None
            if pending is None:
                self._building[key] = pending = Future()
        if not mine:
            return pending.result()
        try:
            found = self._built(key, build)
        except BaseException as exc:
            pending.set_exception(exc)
            raise
        finally:
            with self._lock:
                del self._building[key]
        pending.set_result(found)
        return found

    def begin(self, key: tuple, start: Callable[[], tuple[Callable[[], Any], Any]],
              build: Callable[[], P], *, use: bool = True) -> Any:
        """The entry of `key` where it is built (as `get` gives it); else its build begun:
        `start()` does the build's first part at once (which may raise, as `build()` would)
        and returns (what waits for the pipeline, the entry's other part), and `begin` gives
        `(Pending, other part)` until the Pending has been waited for. A key another thread
        is building is waited for, as `get(key, build)` would. `use` as in `get`."""
        if use and (log := self.log) is not None and key not in log:
            log[key] = None
        found = self._done.get(key)
        if found is not None:
            return found
        with self._lock:
            found = self._done.get(key) or self._begun.get(key)
            building = key in self._building
        if found is not None:
            return found
        if building:
            return self.get(key, build, use=use)
        finish, rest = start()
        entry = (Pending(lambda: self._finished(key, finish, rest)), rest)
        with self._lock:
            self._begun[key] = entry
        return entry

    def settle(self) -> None:
        """Wait for every begun build (a failed one is left for its op to build again)."""
        with self._lock:
            begun = list(self._begun.values())
        for pending, _ in begun:
            try:
                pending.result()
            except Exception:
                continue

    def _finished(self, key: tuple, finish: Callable[[], Any], rest: Any) -> Any:
        try:
            pipeline = finish()
        finally:
            with self._lock:
                self._begun.pop(key, None)
        with self._lock:
            self._done[key] = (pipeline, rest)  # type: ignore[assignment]
            self.created += 1
        return pipeline

    def _built(self, key: tuple, build: Callable[[], P]) -> P:
        found = build()
        with self._lock:
            self._done[key] = found
            self.created += 1
        return found
