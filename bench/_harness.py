"""Timing helpers shared by every benchmark.

Each figure is a median over repeated runs after warm-up. Ours is measured two ways: GPU
time from timestamp queries (comparable to CUDA events) where the adapter has them, and
wall time of record + submit + wait. Baselines: torch on the same GPU when torch.cuda is
available (CUDA events), numpy on the CPU otherwise.
"""

from __future__ import annotations

import collections
import contextlib
import datetime
import functools
import json
import os
import platform
import statistics
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np

import gpucore

__all__ = [
    "counting",
    "dtypes",
    "eager_and_replay",
    "environment",
    "mode_rows",
    "numpy_ms",
    "ours_ms",
    "print_table",
    "torch_cuda",
    "torch_cuda_ms",
    "torch_wall_ms",
    "torch_warm_clock",
    "write_json",
]


def ours_ms(fn: Callable[[], None], device: gpucore.Device, *, warmup: int = 3,
            repeat: int = 20, inner: int = 1) -> dict[str, float]:
    """Median milliseconds of one `fn()` (which records dispatches) on `device`.

    Returns {"gpu_ms": timestamp-query time or nan, "wall_ms": host-observed time,
    "encode_ms": the host's share of it (the calls before the wait), "dispatches": how many
    one call records}. `inner` calls share one submit/wait, amortizing the fixed round trip
    for tiny kernels.
    """
    for _ in range(warmup):
        fn()
    device.synchronize()
    gpucore.autotune.warm_clock(device, fn)  # short kernels would be timed at an idle clock
    walls, encodes = [], []
    for _ in range(repeat):
        start = time.perf_counter()
        for _ in range(inner):
            fn()
        mid = time.perf_counter()
        device.synchronize()
        walls.append((time.perf_counter() - start) * 1e3 / inner)
        encodes.append((mid - start) * 1e3 / inner)
    with counting(device) as counts:
        fn()
    device.synchronize()
    gpu = float("nan")
    if device.has_timestamps:
        per_run = []
        for _ in range(max(3, repeat // 2)):
            with device.profile() as prof:
                fn()
            per_run.append(prof.total_ns() / 1e6)
        gpu = statistics.median(per_run)
    return {"gpu_ms": gpu, "wall_ms": statistics.median(walls),
            "encode_ms": statistics.median(encodes),
            "dispatches": sum(v for k, v in counts.items() if k != "copy")}


@contextlib.contextmanager
def counting(device: gpucore.Device, *, dry: bool = False) -> Iterator[collections.Counter]:
    """Count dispatches by kernel label (key "copy" for buffer copies) while inside.

    dry=True also skips recording them, so nothing runs on the device.
    """
    counts: collections.Counter = collections.Counter()
    dispatch, copy = device.record_dispatch, device.record_copy

    def record_dispatch(pipeline: Any, layout: Any, buffers: Any, params: Any,
                        workgroups: Any, label: str) -> None:
        counts[label] += 1
        if not dry:
            dispatch(pipeline, layout, buffers, params, workgroups, label)

    def record_copy(*args: Any) -> None:
        counts["copy"] += 1
        if not dry:
            copy(*args)

    device.record_dispatch, device.record_copy = record_dispatch, record_copy  # type: ignore
    try:
        yield counts
    finally:
        del device.record_dispatch, device.record_copy


def eager_and_replay(fn: Callable[..., Any], args: tuple[Any, ...], device: gpucore.Device,
                     repeat: int) -> tuple[np.ndarray, np.ndarray, dict[str, dict[str, float]],
                                           Any]:
    """A model call `fn(*args)` run as the Python ops ("eager") and replayed by gpustd.capture
    ("replay"): (eager output, replayed output) as float64, each mode's `ours_ms`, and the
    capture (reset it when done). A replay re-encodes the recorded dispatches without passing
    record_dispatch, so its dispatch count is the eager call's."""
    import gpustd

    got = fn(*args).numpy().astype(np.float64)
    step = gpustd.capture(fn)
    step(*args)  # recorded
    replayed = step(*args).numpy().astype(np.float64)
    timings = {mode: ours_ms(functools.partial(call, *args), device, warmup=2, repeat=repeat)
               for mode, call in (("eager", fn), ("replay", step))}
    timings["replay"]["dispatches"] = timings["eager"]["dispatches"]
    return got, replayed, timings, step


def mode_rows(got: np.ndarray, replayed: np.ndarray, expected: np.ndarray,
              timings: dict[str, dict[str, float]]) -> list[dict[str, Any]]:
    """The columns every eager/replay row shares: mode, dispatches, rel_err (max|ours -
    reference| / max|reference|), replay_bitwise_equal_eager and ours_* timings."""
    return [{"mode": mode, "dispatches": timings[mode]["dispatches"],
             "rel_err": float(np.abs(out - expected).max() / np.abs(expected).max()),
             "replay_bitwise_equal_eager": bool(np.array_equal(replayed, got)),
             **{f"ours_{k}": v for k, v in timings[mode].items() if k != "dispatches"}}
            for mode, out in (("eager", got), ("replay", replayed))]


def torch_wall_ms(fn: Callable[[], Any], torch: Any, repeat: int, *, cuda: bool = True
                  ) -> float:
    """Median wall milliseconds of `fn()` on torch, waiting for CUDA after each call."""
    for _ in range(2 if cuda else 1):
        fn()
    if cuda:
        torch_warm_clock(fn, torch)
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        if cuda:
            torch.cuda.synchronize()
        times.append((time.perf_counter() - start) * 1e3)
    return statistics.median(times)


def numpy_ms(fn: Callable[[], Any], *, warmup: int = 1, repeat: int = 5) -> float:
    """Median wall milliseconds of `fn()`, a host call that waits for itself (numpy, or a
    gpucore call that reads its results back)."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        times.append((time.perf_counter() - start) * 1e3)
    return statistics.median(times)


def dtypes(device: gpucore.Device) -> list[np.dtype]:
    """The dtypes a model benchmark runs: float32, and float16 where the device has it;
    BENCH_DTYPES=float32 (comma-separated names) keeps only those, to save device time."""
    found = [np.dtype(np.float32)] + ([np.dtype(np.float16)] if device.has_f16 else [])
    wanted = os.environ.get("BENCH_DTYPES")
    return [d for d in found if not wanted or d.name in wanted.split(",")]


def torch_cuda() -> Any:
    """The torch module if CUDA is usable, else None (baselines then use numpy)."""
    try:
        import torch
    except ImportError:
        return None
    return torch if torch.cuda.is_available() else None


def torch_best_eager(fn: Callable[[], Any], torch: Any, repeat: int) -> dict[str, Any]:
    """torch's best eager time for `fn`: cudnn.benchmark off and on (a user picks the faster;
    diffusers already attends through SDPA), each by CUDA events and by wall; the faster by
    wall gives torch_gpu_ms / torch_wall_ms, and both configurations are kept."""
    out: dict[str, Any] = {}
    saved = torch.backends.cudnn.benchmark
    try:
        for flag in ("off", "on"):
            torch.backends.cudnn.benchmark = flag == "on"
            out[f"torch_gpu_ms_cudnn_benchmark_{flag}"] = torch_cuda_ms(fn, repeat=repeat)
            out[f"torch_wall_ms_cudnn_benchmark_{flag}"] = torch_wall_ms(fn, torch, repeat)
    finally:
        torch.backends.cudnn.benchmark = saved
    best = min(("off", "on"), key=lambda flag: out[f"torch_wall_ms_cudnn_benchmark_{flag}"])
    out.update(torch_gpu_ms=out[f"torch_gpu_ms_cudnn_benchmark_{best}"],
               torch_wall_ms=out[f"torch_wall_ms_cudnn_benchmark_{best}"],
               torch_cudnn_benchmark=best)
    return out


def torch_compiled(model: Any, args: list[Any], torch: Any, repeat: int) -> dict[str, Any]:
    """torch.compile's time for model(*args) (default mode; the compile itself, in the first
    calls, is left out): torch_compile_gpu_ms / torch_compile_wall_ms, or torch_compile_error
    where it fails (a reported column, not a baseline a ratio is taken against)."""
    try:
        compiled = torch.compile(model)
        start = time.perf_counter()
        compiled(*args)
        torch.cuda.synchronize()
        return {"torch_compile_s": time.perf_counter() - start,
                "torch_compile_gpu_ms": torch_cuda_ms(lambda: compiled(*args), repeat=repeat),
                "torch_compile_wall_ms": torch_wall_ms(lambda: compiled(*args), torch, repeat)}
    except Exception as error:  # a missing compiler (triton) is a result, not a stop
        return {"torch_compile_error": f"{type(error).__name__}: {str(error)[:200]}"}


def torch_cuda_ms(fn: Callable[[], Any], *, warmup: int = 3, repeat: int = 20) -> float:
    """Median milliseconds of `fn()` on the current CUDA stream, by CUDA events."""
    import torch

    for _ in range(warmup):
        fn()
    torch_warm_clock(fn, torch)
    times = []
    for _ in range(repeat):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        fn()
        end.record()
        torch.cuda.synchronize()
        times.append(start.elapsed_time(end))
    return statistics.median(times)


def torch_warm_clock(fn: Callable[[], Any], torch: Any,
                     seconds: float = gpucore.autotune.WARM_S) -> None:
    """torch's side of gpucore.autotune.warm_clock: `fn()` queued for `seconds`, so that the
    baseline, like ours, is timed at full clock (the lent H100's torch rows moved 2x between
    calls while ours moved 5%)."""
    start = last_wait = time.perf_counter()
    while (now := time.perf_counter()) - start < seconds:
        fn()
        if now - last_wait > 0.1:  # the launch queue stays short
            torch.cuda.synchronize()
            last_wait = time.perf_counter()
    torch.cuda.synchronize()


def environment(device: gpucore.Device) -> dict[str, Any]:
    import wgpu

    env: dict[str, Any] = {
        "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "adapter": device.name,
        "runtime": device.info.runtime,  # wgpu (wgpu-native) or dawn
        "backend": device.backend,
        "adapter_type": device.info.type,
        "driver": device.info.driver,
        "features": sorted(device.features),
        "python": platform.python_version(),
        "numpy": np.__version__,
        "wgpu": wgpu.__version__,
        "host": platform.node(),
    }
    if device.info.runtime == "dawn":
        env["dawn_toggles"] = list(gpucore._runtime.dawn_toggles())
    from gpustd.nn import prologue

    env["conv_prologue_fused"] = prologue.FUSED
    torch = torch_cuda()
    if torch is not None:
        env["torch"] = torch.__version__
        env["torch_device"] = torch.cuda.get_device_name()
    return env


def write_json(path: str | os.PathLike[str], data: dict[str, Any]) -> None:
    """Write atomically: a reader never sees a partial file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name, suffix=".tmp")
    try:
        with os.fdopen(fd, "w") as f:
            json.dump(data, f, indent=2, default=float)
            f.write("\n")
        os.replace(tmp, path)
    except BaseException:
        os.unlink(tmp)
        raise


def print_table(rows: list[dict[str, Any]], columns: list[str]) -> None:
    def fmt(v: Any) -> str:
        if isinstance(v, float):
            return f"{v:.4g}"
        return str(v)

    cells = [[fmt(r.get(c, "")) for c in columns] for r in rows]
    widths = [max(len(c), *(len(row[i]) for row in cells)) if cells else len(c)
              for i, c in enumerate(columns)]
    print("  ".join(c.rjust(w) for c, w in zip(columns, widths)))
    for row in cells:
        print("  ".join(v.rjust(w) for v, w in zip(row, widths)))
