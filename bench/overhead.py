"""python -m bench overhead: a picture's fixed costs, apart from the model's own work.

One fresh process, one model (the bundled one unless BENCH_OVERHEAD_MODEL names a folder or
file), pictures of BENCH_OVERHEAD_SIZE pixels (64) in BENCH_OVERHEAD_STEPS steps (1; Euler a,
CFG 7), in three phases:

- "first in process": the first load and picture, which compile every kernel they use (the
  device's pipeline cache) and record the text encoder's and the UNet's captures;
- "new pipeline": the same model loaded again on the same device and its first picture: no
  compile (the cache is per device), the captures recorded again;
- "warm": the median of BENCH_OVERHEAD_PICTURES (5; --quick 2) more pictures;

and then, under "cold", whole processes: for float32 and float16 (where the device has
shader-f16), a first process with an empty cache directory (ours and Mesa's: XDG_CACHE_HOME
points into a fresh folder) and a second one after it, each loading the model and writing one
PNG (the kernels the first one used built ahead in the second, as the CLI does:
gpucore.Warmup; the bytecode the first one compiles kept for the second, as an installed
package's is, even where PYTHONDONTWRITEBYTECODE is set), split by gpucore.Phases into import
(the interpreter's start included), device, read (on the reading threads, where the loader
reads ahead), read wait (the upload waiting for them), convert, upload, compile (with the
number of kernels built), compile wait (waiting for kernels built in the background),
autotune, capture, denoise, decode, png and what no phase claimed.

Each row splits the wall time: `blocked_ms`, inside queue submits and read-back waits (where
the host waits for the device; on a CPU adapter the device's work runs there), `host_ms`, the
rest (Python, wgpu recording, tokenizer, sampler; no PNG is written), `compile_ms`
(inside Kernel builds, or beginning and waiting for those built in the background), the
stages (text conditioning, denoising, decode, each wall) and `recorded`, the dispatches and
copies recorded (a replayed capture records none).
`cpu_ms` is the process's CPU time, lavapipe's threads included: on a loaded machine it moves
less than the wall time. On a GPU `host_ms` is the latency every picture pays beyond the GPU's
work; on lavapipe nearly all of a picture is `blocked_ms` (bench/NOTES.md, "Fixed costs").

    python -m bench overhead --json bench/results/overhead-lavapipe.json
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

__all__ = ["run"]

COLUMNS = ["phase", "size", "steps", "wall_ms", "cpu_ms", "blocked_ms", "host_ms", "compiled",
           "compile_ms", "load_ms", "text_ms", "denoise_ms", "decode_ms", "recorded"]


class _Clock:
    """Wall seconds spent inside wrapped functions, by name (outermost calls only: a read-back
    submits too, and is counted once)."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}
        self._depth = 0

    def wrap(self, owner: Any, name: str, key: str) -> Callable[[], None]:
        original = getattr(owner, name)

        def timed(*args: Any, **kwargs: Any) -> Any:
            if self._depth:
                return original(*args, **kwargs)
            self._depth += 1
            start = time.perf_counter()
            try:
                return original(*args, **kwargs)
            finally:
                self._depth -= 1
                self.seconds[key] = self.seconds.get(key, 0.0) + time.perf_counter() - start

        setattr(owner, name, timed)
        return lambda: setattr(owner, name, original)


@contextmanager
def _clocked(device: Any) -> Iterator[tuple[_Clock, _Clock]]:
    """(submits and read-backs as "blocked", kernel builds as "compile"; the pipeline's stages,
    which nest submits, on a clock of their own) while inside."""
    from diffusion.pipelines.sd import guided_unet, stable_diffusion
    from gpucore import _kernel, _pipelines, _staging

    clock, stages = _Clock(), _Clock()
    undo = [clock.wrap(type(device.queue), "submit", "blocked"),  # wgpu-native's or Dawn's
            clock.wrap(_staging.Staging, "read", "blocked"),
            clock.wrap(_kernel.Kernel, "_build", "compile"),
            clock.wrap(_kernel.Kernel, "_begin", "compile"),  # a build begun in the background
            clock.wrap(_pipelines.Pending, "result", "compile"),  # and waited for
            stages.wrap(stable_diffusion.StableDiffusion, "_contexts", "text"),
            stages.wrap(guided_unet.GuidedUNet, "__call__", "denoise"),
            stages.wrap(stable_diffusion.StableDiffusion, "_decode", "decode")]
    try:
        yield clock, stages
    finally:
        for restore in reversed(undo):
            restore()


def _picture(phase: str, pipe: Any, device: Any, settings: dict[str, Any],
             load_ms: float | None = None) -> dict[str, Any]:
    """One picture of `pipe` (on `device`), timed: a row of COLUMNS."""
    from . import _harness

    compiled = device.pipelines_created
    with _clocked(device) as (clock, stages), _harness.counting(device) as counts:
        wall, cpu = time.perf_counter(), time.process_time()
        pipe.txt2img(**settings)
        wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    blocked = clock.seconds.get("blocked", 0.0)
    return {"phase": phase, "size": settings["width"], "steps": settings["steps"],
            "wall_ms": wall * 1e3, "cpu_ms": cpu * 1e3, "blocked_ms": blocked * 1e3,
            "host_ms": (wall - blocked) * 1e3, "compiled": device.pipelines_created - compiled,
            "compile_ms": clock.seconds.get("compile", 0.0) * 1e3, "load_ms": load_ms,
            **{f"{stage}_ms": stages.seconds.get(stage, 0.0) * 1e3
               for stage in ("text", "denoise", "decode")},
            "recorded": sum(counts.values())}


def _median_row(rows: list[dict[str, Any]]) -> dict[str, Any]:
    merged = dict(rows[0], phase=f"warm (median of {len(rows)})")
    for key, value in rows[0].items():
        if isinstance(value, float):
            merged[key] = statistics.median(r[key] for r in rows)
    return merged


def cold_child(model: str | None, dtype: str, settings: dict[str, Any], out: str) -> None:
    """One cold process's picture (run in a child by cold_rows): prints Phases' split."""
    import gpucore

    started = gpucore.process_started()
    with gpucore.Phases(started=started) as phases:
        if started is not None:
            phases.add("import", time.perf_counter() - started)
        with gpucore.phase("import"):
            import numpy as np

            from diffusion import load_pipeline
            from diffusion.infotext import save_images
        with gpucore.phase("load"):  # as the CLI's txt2img: last time's kernels begun first
            warmup = gpucore.Warmup(gpucore.default_device(), f"txt2img {model} {dtype}")
            pipe = load_pipeline(model, dtype=np.dtype(dtype))
        result = pipe.txt2img(**settings)
        with gpucore.phase("png"):
            save_images(result.images, result.settings, out)
        warmup.save()
    device = gpucore.default_device().info
    print(json.dumps({"device": device.label, "runtime": device.runtime, **phases.split()}))


def cold_rows(model: str | None, dtypes: list[str], settings: dict[str, Any]) -> list[dict]:
    """A first and a second whole process per dtype, on a cache directory of their own."""
    from gpucore import _cache

    # where this process (or the user) put the caches: the children find their own
    placed = {_cache.DIR_ENV, *(variable for variable, _, _ in _cache.DRIVER_CACHES)}
    rows = []
    for dtype in dtypes:
        with tempfile.TemporaryDirectory(prefix="avx-gpu-cold-") as cache:
            env = {k: v for k, v in os.environ.items()
                   if k not in placed and k != "PYTHONDONTWRITEBYTECODE"}
            env["XDG_CACHE_HOME"] = cache
            # as an installed package's: the first process writes the bytecode, the second
            # reads it (kept in the run's folder, not the checkout), however this one started
            env["PYTHONPYCACHEPREFIX"] = os.path.join(cache, "bytecode")
            code = ("import sys, json; from bench.overhead import cold_child; "
                    "cold_child(*json.loads(sys.argv[1]))")
            for process in ("first process", "second process"):
                args = json.dumps([model, dtype, settings, cache])
                done = subprocess.run([sys.executable, "-c", code, args], env=env,
                                      capture_output=True, text=True)
                if done.returncode:
                    raise RuntimeError(f"the {process} ({dtype}) failed: {done.stderr[-3000:]}")
                split = json.loads(done.stdout.strip().splitlines()[-1])
                rows.append({"process": process, "dtype": dtype, **split})
    return rows


def run(*, quick: bool = False) -> dict[str, Any]:
    import gpucore
    from diffusion import load_pipeline

    from . import _harness

    model = os.environ.get("BENCH_OVERHEAD_MODEL") or None
    size = int(os.environ.get("BENCH_OVERHEAD_SIZE") or 64)
    steps = int(os.environ.get("BENCH_OVERHEAD_STEPS") or 1)
    pictures = int(os.environ.get("BENCH_OVERHEAD_PICTURES") or (2 if quick else 5))
    settings = dict(prompt="a red circle on a blue background", negative_prompt="blurry",
                    steps=steps, cfg_scale=7.0, seed=1, width=size, height=size,
                    sampler="Euler a")
    device = gpucore.default_device()
    rows = []
    for phase in ("first in process", "new pipeline"):
        start = time.perf_counter()
        pipe = load_pipeline(model, device=device)
        rows.append(_picture(phase, pipe, device, settings, (time.perf_counter() - start) * 1e3))
    rows.append(_median_row([_picture("warm", pipe, device, settings) for _ in range(pictures)]))
    for row in rows:
        row.update({k: round(v, 1) for k, v in row.items() if isinstance(v, float)})
    dtypes = ["float32", "float16"] if device.has_f16 else ["float32"]
    cold = cold_rows(model, dtypes, settings)
    for row in cold:
        print(f"cold {row['process']} {row['dtype']}: {row['total_s']:.2f} s: " + ", ".join(
            f"{name} {p['s']:.2f} ({p['count']})" for name, p in row["phases"].items()))
    return {"benchmark": "overhead", "model": model or "bundled", "rows": rows,
            "columns": COLUMNS, "cold": cold, "environment": _harness.environment(device)}
