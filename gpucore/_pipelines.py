"""The compiled pipelines of one device, each built once, by whichever thread asks first.

Builds run outside the device's lock, so that threads may compile pipelines while another
records (gpucore._warmup builds a workload's kernels ahead); a second caller of a key being
built waits for that build and gets its result, or its error. OpenGL builds under the lock:
its contexts are not shared between threads.
"""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import Future
from contextlib import AbstractContextManager
from typing import Generic, TypeVar

__all__ = ["KernelSpec", "PipelineCache"]

P = TypeVar("P")
# What rebuilds a kernel in another process: WGSL source, name, entry point, constants.
KernelSpec = tuple[str, str, str, dict[str, float]]


class PipelineCache(Generic[P]):
    """key -> pipeline, built once (`get(key, build)`); `created` counts the builds."""

    def __init__(self, lock: AbstractContextManager[object], *, concurrent: bool) -> None:
        self._lock = lock  # the device's
        self._concurrent = concurrent
        self._done: dict[tuple, P] = {}
        self._building: dict[tuple, Future[P]] = {}
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

    def _built(self, key: tuple, build: Callable[[], P]) -> P:
        found = build()
        with self._lock:
            self._done[key] = found
            self.created += 1
        return found
