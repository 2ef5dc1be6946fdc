"""python -m bench host_ops: the host's cost of recording eager ops and eager model calls.

What a flow model's eager step pays the host per dispatch (argument checks, plans, buffers,
params, bind groups, the wgpu calls) measured as CPU time of the calling thread
(time.thread_time): the GPU's work and the waits are not in it, so a CPU adapter measures
it as well as a GPU host would (lavapipe runs the kernels on other threads, and a CPU
adapter's batches are only submitted at a sync or an upload; an upload's submit, which may
run work on this thread, is taken out).

- ops: one eager call of each op kind on tiny shapes (f16 where the device has shader-f16,
  else f32), microseconds of host CPU per call: the best of 7 rounds of BENCH_HOST_OPS_CALLS
  calls (200; --quick 50), after 20 warm-up calls; a sync between rounds (not timed).
- models: one call of bench.dit_families' tiny configs (qwenimage, flux2klein, kontext,
  qwen25vl; random weights), with the dispatches it records, milliseconds of host CPU per
  call (the best and the median of 15; --quick 5) and microseconds per dispatch.

On lavapipe set GPUCORE_EMULATE_MATRIX=1 so that f16 GEMMs and attention take the
matrix-unit paths an H100 runs under Dawn (gpucore._matrix_emulation).

    GPUCORE_EMULATE_MATRIX=1 python -m bench host_ops --json bench/results/host-ops-lavapipe.json
"""

from __future__ import annotations

import os
import statistics
import time
from collections.abc import Callable
from typing import Any

import numpy as np

import gpucore
import gpustd
from gpustd import nn

from . import _harness

__all__ = ["run"]

COLUMNS = ["kind", "name", "dtype", "dispatches", "host_us", "host_ms", "host_ms_median",
           "us_per_dispatch"]
MODELS = ("qwenimage", "flux2klein", "kontext", "qwen25vl")


class _SubmitClock:
    """`device.queue` with the thread time spent in its submits counted."""

    def __init__(self, queue: Any) -> None:
        self._queue = queue
        self.seconds = 0.0

    def submit(self, *args: Any, **kwargs: Any) -> Any:
        start = time.thread_time()
        try:
            return self._queue.submit(*args, **kwargs)
        finally:
            self.seconds += time.thread_time() - start

    def __getattr__(self, name: str) -> Any:
        return getattr(self._queue, name)


def _ops(device: gpucore.Device, dtype: np.dtype) -> dict[str, Callable[[], Any]]:
    rng = np.random.default_rng(0)

    def tensor(*shape: int) -> gpustd.Tensor:
        return gpustd.asarray(rng.standard_normal(shape).astype(dtype))

    x, w, b, acc = tensor(8, 32), tensor(48, 32), tensor(48), tensor(8, 48)
    q, k, v = tensor(1, 8, 64), tensor(1, 8, 64), tensor(1, 8, 64)
    gamma, beta = tensor(32), tensor(32)
    return {
        "linear + bias": lambda: nn.linear(x, w, b),
        "linear, add_to": lambda: nn.linear(x, w, b, add_to=acc),
        "attention": lambda: nn.attention(q, k, v, heads=4),
        "layer_norm": lambda: nn.layer_norm(x, gamma, beta),
        "add": lambda: gpustd.add(x, x),
        "silu": lambda: gpustd.silu(x),
    }


def _op_rows(device: gpucore.Device, dtype: np.dtype, calls: int) -> list[dict[str, Any]]:
    rows = []
    for name, fn in _ops(device, dtype).items():
        for _ in range(20):
            fn()
        device.synchronize()
        rounds = []
        for _ in range(7):
            start = time.thread_time()
            for _ in range(calls):
                fn()
            rounds.append((time.thread_time() - start) / calls * 1e6)
            device.synchronize()
        rows.append({"kind": "op", "name": name, "dtype": dtype.name, "dispatches": None,
                     "host_us": min(rounds)})
        print(f"{name}: {min(rounds):.1f} us", flush=True)
    return rows


def _model_row(name: str, device: gpucore.Device, dtype: np.dtype, repeat: int,
               clock: _SubmitClock) -> dict[str, Any]:
    import torch

    from . import dit_families

    model = dit_families._model(name)
    config = dit_families.TINY[name]
    ref = dit_families._reference(model, config, "cpu")
    x = dit_families._inputs(name, config, True)
    wdtype = torch.float16 if dtype == np.float16 else torch.float32
    weights = {k: t.detach().to(wdtype).numpy() for k, t in ref.state_dict().items()
               if not k.endswith("inv_freq")}
    ours = model.ours(dict(config), dtype, device)
    ours.load_state_dict(weights, dtype=dtype)
    for _ in range(3):
        model.ours_call(ours, x, dtype)
    device.synchronize()
    with _harness.counting(device) as counts:
        model.ours_call(ours, x, dtype)
    device.synchronize()
    dispatches = sum(v for k, v in counts.items() if k != "copy")
    host = []
    for _ in range(repeat):
        start, submits = time.thread_time(), clock.seconds
        out = model.ours_call(ours, x, dtype)
        host.append((time.thread_time() - start - (clock.seconds - submits)) * 1e3)
        del out
        device.synchronize()
    row = {"kind": "model", "name": name, "dtype": dtype.name, "dispatches": dispatches,
           "host_ms": min(host), "host_ms_median": statistics.median(host),
           "us_per_dispatch": min(host) * 1e3 / dispatches}
    print(f"{name}: {dispatches} dispatches, {min(host):.2f} ms", flush=True)
    return row


def run(quick: bool = False) -> dict[str, Any]:
    device = gpucore.default_device()
    dtype = np.dtype(np.float16 if device.has_f16 else np.float32)
    calls = int(os.environ.get("BENCH_HOST_OPS_CALLS", 50 if quick else 200))
    queue = device.queue
    clock = device.queue = _SubmitClock(queue)  # type: ignore[assignment]
    try:
        rows = _op_rows(device, dtype, calls)
        rows += [_model_row(name, device, dtype, 5 if quick else 15, clock) for name in MODELS]
    finally:
        device.queue = queue
    return {
        "benchmark": "host_ops",
        "environment": {**_harness.environment(device),
                        "emulated_matrix_units": os.environ.get("GPUCORE_EMULATE_MATRIX")},
        "notes": "Host CPU time (the calling thread's) of recording eager ops on tiny shapes "
                 "(us per call, best of 7 rounds) and eager calls of bench.dit_families' tiny "
                 "models (ms per call; upload submits taken out).",
        "columns": COLUMNS,
        "rows": rows,
    }
