"""Autotuning: time an op's candidate kernel configurations once per shape class, keep the winner.

An op that can run a shape in several equivalent ways (GEMM tile sizes, loop shapes) asks
`select(device, op, shape_class, candidates, default, trial)` which one to use. The answer is,
in order: the winner already chosen in this process; the winner cached on disk for this
device; a fresh timing of every candidate when tuning is allowed; else `default`.

Tuning is allowed when GPUCORE_AUTOTUNE=1 or inside `tuning()` (what `python -m gpucore tune`
does), and never while a capture is open (the trial dispatches would be recorded into it) or a
profile is active (they would be counted in it), nor from inside a trial.

The cache is one JSON file per (runtime, backend, adapter, driver, package version, kernel
sources' hash) in gpucore's cache directory (gpucore._cache: $AVX_GPU_CACHE_DIR, else
$XDG_CACHE_HOME or ~/.cache, /avx-gpu), autotune-<hash>.json, written atomically; a file that
cannot be read is ignored with a warning and replaced on the next write.

Contract with the ops, which is how tuning never makes a result differ: the candidates of one
(op, shape class) must compute bitwise-identical results (e.g. every GEMM tile accumulates each
output over K in the same order; a choice that changes the summation order, such as the number
of K splits, belongs in the shape class, not among the candidates). The tuner only chooses
speed. tests/test_autotune.py checks the GEMM candidates bitwise against the default.
"""

from __future__ import annotations

import hashlib
import json
import os
import statistics
import tempfile
import threading
import time
import warnings
import weakref
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from . import _cache, _runtime, _version
from ._phases import phase

if TYPE_CHECKING:
    from ._device import Device

__all__ = ["Problem", "Result", "cache_path", "clear", "problems", "register", "registered",
           "select", "tune", "tuning", "warm_clock"]

ENV = "GPUCORE_AUTOTUNE"
FORMAT = 1
# The default is kept unless a candidate beats it by more than this: timing noise must not
# flip a choice back and forth between runs.
MARGIN = 0.02
# Seconds of back-to-back work before the trials. A GPU that idled (while the candidates'
# pipelines compiled) runs at a fraction of its clock until it has been busy a while: an H100
# (Dawn, 2026-11-24) fell to 345-420 MHz after ~3 s of short bursts, which made an 8192 x
# 320 x 2560 GEMM 0.54 ms instead of 0.118; 50 ms of run-and-wait did not bring the clock
# back, 0.5 s of queued work did (1980 MHz, 0.114 ms).
WARM_S = 0.5

Trial = Callable[[str], Callable[[], None]]


@dataclass(frozen=True)
class Problem:
    """One shape class of one op, as `python -m gpucore tune` times it."""

    op: str
    shape_class: str
    candidates: tuple[str, ...]
    default: str
    trial: Trial


@dataclass(frozen=True)
class Result:
    """The outcome of timing one problem: winner and median milliseconds per candidate."""

    op: str
    shape_class: str
    winner: str
    default: str
    ms: dict[str, float]


_registry: dict[str, Callable[[Device], Iterable[Problem]]] = {}
_memory: weakref.WeakKeyDictionary[Device, dict[str, dict[str, Any]]] = (
    weakref.WeakKeyDictionary())
_state = threading.local()  # .forced: inside tuning(); .busy: a trial is running
_lock = threading.RLock()


def register(op: str, problems: Callable[[Device], Iterable[Problem]]) -> None:
    """Make `op` tunable by `python -m gpucore tune`: `problems(device)` lists the shape
    classes the project runs (gpucore knows no ops; the op's module registers itself)."""
    _registry[op] = problems


def registered() -> list[str]:
    return sorted(_registry)


def problems(device: Device, ops: Iterable[str] | None = None) -> list[Problem]:
    """The registered problems of `ops` (all when None) on `device`."""
    names = registered() if ops is None else list(ops)
    unknown = [name for name in names if name not in _registry]
    if unknown:
        raise ValueError(f"no tunable op named {', '.join(unknown)}; registered: "
                         f"{', '.join(registered()) or 'none (import the module that has them)'}")
    return [p for name in names for p in _registry[name](device)]


@contextmanager
def tuning() -> Iterator[None]:
    """Allow tuning on first use inside (as GPUCORE_AUTOTUNE=1 does everywhere)."""
    previous = getattr(_state, "forced", False)
    _state.forced = True
    try:
        yield
    finally:
        _state.forced = previous


def _may_tune(device: Device) -> bool:
    if getattr(_state, "busy", False) or device.capturing is not None:
        return False
    if device.profiling is not None:
        return False
    return getattr(_state, "forced", False) or os.environ.get(ENV) == "1"


def select(device: Device, op: str, shape_class: str, candidates: Sequence[str], default: str,
           trial: Trial) -> str:
    """The candidate to run for `shape_class` of `op` on `device` (see the module docstring).

    `candidates` are JSON-storable names, all computing the same result; `trial(name)`
    returns a function that records one run of that candidate on scratch buffers of the
    shape class (it is only called when tuning). A `default` that is no candidate (it does
    not fit this device, say) is kept: there is nothing to compare it with."""
    if default not in candidates:
        return default
    entries = _entries(device, op)
    found = entries.get(shape_class)
    if found is not None and found["winner"] in candidates:
        return str(found["winner"])
    if len(candidates) < 2 or not _may_tune(device):
        return default
    return tune(device, Problem(op, shape_class, tuple(candidates), default, trial)).winner


def tune(device: Device, problem: Problem, *, repeat: int = 7) -> Result:
    """Time every candidate of `problem` now (median of `repeat` runs each, after a warm-up)
    and remember the winner in memory and on disk."""
    if problem.default not in problem.candidates:
        raise ValueError(f"default {problem.default!r} of {problem.op} {problem.shape_class} "
                         f"is not one of its candidates {problem.candidates}")
    _state.busy = True
    try:
        with phase("autotune"):
            runs = {name: problem.trial(name) for name in problem.candidates}
            ms = _time_all(device, runs, runs[problem.default], repeat)
    finally:
        _state.busy = False
    best = min(ms, key=ms.__getitem__)
    winner = best if ms[best] < (1 - MARGIN) * ms[problem.default] else problem.default
    result = Result(problem.op, problem.shape_class, winner, problem.default, ms)
    _store(device, result)
    return result


def _time_all(device: Device, runs: dict[str, Callable[[], None]], default: Callable[[], None],
              repeat: int, rounds: int = 2) -> dict[str, float]:
    """Median milliseconds per candidate, fairly: every candidate runs once first (its
    pipelines compile while the GPU idles, which drops its clocks: an H100 sweep that timed
    each candidate right after its compile ranked them in compile order), the GPU is kept
    busy WARM_S with queued runs of the default, then candidates are timed in alternating
    order; best of `rounds` medians."""
    for run in runs.values():
        run()
    device.synchronize()
    warm_clock(device, default)
    ms: dict[str, float] = {}
    order = list(runs)
    for r in range(rounds):
        for name in order if r % 2 == 0 else reversed(order):
            t = _median_ms(device, runs[name], repeat)
            ms[name] = min(ms.get(name, t), t)
    return ms


def warm_clock(device: Device, run: Callable[[], None], seconds: float = WARM_S) -> None:
    """Keep the GPU busy `seconds` with queued `run()`s (recording dispatches), so that what is
    timed next runs at full clock (see WARM_S). A CPU adapter has no clock to raise: 0.05 s."""
    warm = seconds if device.info.type != "cpu" else min(seconds, 0.05)
    start = last_wait = time.perf_counter()
    while (now := time.perf_counter()) - start < warm:
        run()
        device.flush()  # queued, not waited for: the GPU never idles between runs
        if now - last_wait > 0.1:  # but the queue stays short
            device.synchronize()
            last_wait = time.perf_counter()
    device.synchronize()


def _median_ms(device: Device, run: Callable[[], None], repeat: int) -> float:
    """GPU milliseconds of one `run()` by timestamp queries, else wall time to a read-back.
    CPU adapters (lavapipe) time by wall clock: their "GPU" time is CPU time anyway, and
    setting up a profile there costs seconds. So does a run that dispatches nothing: it has
    no GPU time to measure."""
    run()
    device.synchronize()
    if device.has_timestamps and device.info.type != "cpu":
        with device.profile() as prof:
            for _ in range(repeat):
                run()
        per_run = len(prof.records) // repeat
        if per_run:
            times = [sum(ns for _, ns in prof.records[i * per_run:(i + 1) * per_run]) / 1e6
                     for i in range(repeat)]
            return statistics.median(times)
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        run()
        device.synchronize()
        times.append((time.perf_counter() - start) * 1e3)
    return statistics.median(times)


# -- the cache ------------------------------------------------------------------------
def cache_key(device: Device) -> dict[str, str]:
    """What a cached winner depends on besides the problem: runtime, adapter, driver, us,
    the kernels' sources, and on Dawn its toggles (robustness off changes which tile wins)."""
    info = device.info
    key = {"runtime": info.runtime, "backend": info.backend, "adapter": info.name,
           "driver": info.driver, "version": _version.__version__,
           "sources": _cache.source_hash()}
    if info.runtime == "dawn":
        key["toggles"] = ",".join(_runtime.dawn_toggles())
    return key


def cache_dir() -> Path:
    return _cache.cache_dir()


def cache_path(device: Device) -> Path:
    """This device's cache file (it may not exist yet)."""
    text = json.dumps(cache_key(device), sort_keys=True)
    return cache_dir() / f"autotune-{hashlib.sha256(text.encode()).hexdigest()[:16]}.json"


def clear() -> list[Path]:
    """Delete every autotune cache file (all devices) and forget what this process chose."""
    removed = sorted(cache_dir().glob("autotune-*.json"))
    for path in removed:
        path.unlink(missing_ok=True)
    with _lock:
        _memory.clear()
    return removed


def cached(device: Device) -> dict[str, dict[str, Any]]:
    """op -> shape class -> {"winner", "default", "ms"} for `device`, as on disk now."""
    return _read(cache_path(device), cache_key(device))


def _entries(device: Device, op: str) -> dict[str, Any]:
    ops = _memory.get(device)
    if ops is None:
        with _lock:
            ops = _memory.setdefault(device, _read(cache_path(device), cache_key(device)))
    return ops.setdefault(op, {})


def _read(path: Path, key: dict[str, str]) -> dict[str, dict[str, Any]]:
    try:
        data = json.loads(path.read_text())
        if data.get("format") != FORMAT or data.get("key") != key:
            raise ValueError("written for another format or device")
        ops = data["ops"]
        if not all(isinstance(e, dict) and isinstance(e.get("winner"), str)
                   for classes in ops.values() for e in classes.values()):
            raise ValueError("entries without a winner")
        return {op: dict(classes) for op, classes in ops.items()}
    except FileNotFoundError:
        return {}
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
        warnings.warn(f"ignoring the autotune cache {path} ({exc}); it is rewritten on the next "
                      "tuning, or delete it with `python -m gpucore tune --clear`", stacklevel=3)
        return {}


def _store(device: Device, result: Result) -> None:
    entry = {"winner": result.winner, "default": result.default, "ms": result.ms}
    with _lock:
        _entries(device, result.op)[result.shape_class] = entry
        path, key = cache_path(device), cache_key(device)
        with warnings.catch_warnings():  # already warned when first read
            warnings.simplefilter("ignore")
            ops = _read(path, key)  # another process may have added entries since
        ops.setdefault(result.op, {})[result.shape_class] = entry
        try:
            _write_atomic(path, {"format": FORMAT, "key": key, "ops": ops})
        except OSError as exc:
            warnings.warn(f"could not write the autotune cache {path} ({exc}); the winner is "
                          "kept for this process only", stacklevel=3)


def _write_atomic(path: Path, data: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=path.name, suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w") as f:
            json.dump(data, f, indent=1, sort_keys=True)
        os.replace(tmp, path)
    except BaseException:
        os.unlink(tmp)
        raise
    _cache.trim()
