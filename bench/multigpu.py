"""Several GPUs: work split over 1 and N devices of one process with gpucore.DeviceGroup.

Rows (wall time, median of repeats, after warm-up):
  transfer  host<->device bandwidth of one device alone and of all at once, through
            Tensor.from_numpy / Tensor.numpy (gpucore._staging's rings, 8 MiB chunks);
  gil       how fast a Python thread runs while another thread waits on the GPU (1.0: the wait
            releases the GIL entirely);
  gemm/fft  a batched GEMM and a batched FFT split along the batch axis: data already on the
            devices ("resident", compute scaling), from and back to host memory ("host"), and
            from one device back to it ("dev0": the extra copies of splitting a Tensor);
            the baseline is torch on the same GPUs, resident, launched the same way;
  dask      the same GEMM (blocked, 2x2 tiles per matrix) and FFT (batch chunks) as dask.array
            graphs of gpustd chunks on gpustd.dask.local_cluster (a worker process per device),
            inputs persisted on the workers, results persisted there ("resident"); tiles that
            change workers travel through the host. Skipped without the dask extra;
  server    the server's images per second: its worker pool (one worker and pipeline per
            device, one FIFO queue) on the bundled shapes-128 model, jobs submitted in process
            (no HTTP), one image per job; the images of N workers equal those of one.
            With one GPU the server's second worker is a second wgpu device on the same GPU.
  server processes SD 1.5 (BENCH_SD15=1): full-size SD 1.5 of random weights at 512 px, Euler a
            20 steps, a worker process per GPU; its per-GPU rate on one GPU and on all.
BENCH_DEVICES (default "all") picks the devices, as `gpucore.open_devices` reads it.
"""

from __future__ import annotations

import itertools
import os
import threading
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np

import gpucore
from gpucore import DeviceGroup, split_sizes
from gpustd import Tensor, concatenate, fft, linalg

from . import _harness

COLUMNS = ["workload", "mode", "devices", "ms", "speedup", "rate", "unit", "baseline_ms",
           "baseline_speedup", "ratio"]


def _scatter(x: np.ndarray | Tensor, sub: DeviceGroup) -> list[Tensor]:
    """`x` cut along axis 0 into one part per device, uploaded in parallel. From a Tensor: read
    once to the host, its own device's part sliced there."""
    bounds = list(itertools.pairwise(itertools.accumulate(split_sizes(len(x), len(sub)),
                                                          initial=0)))
    source = x if isinstance(x, Tensor) else None
    host = x.numpy() if isinstance(x, Tensor) else x

    def place(device: gpucore.Device, span: tuple[int, int]) -> Tensor:
        if source is not None and device is source.device:
            return source[span[0]:span[1]]
        return Tensor.from_numpy(host[span[0]:span[1]], device=device)
    return sub.map(place, bounds)


def _gather_numpy(parts: list[Tensor], sub: DeviceGroup) -> np.ndarray:
    return np.concatenate(sub.map(lambda _d, p: p.numpy(), parts))


def _gather(parts: list[Tensor], sub: DeviceGroup) -> Tensor:
    """The parts joined on the first device (the others' through the host)."""
    target = sub[0]
    moved = sub.map(lambda _d, p: p if p.device is target else p.to(target), parts)
    return moved[0] if len(moved) == 1 else concatenate(moved)


def _transfer(sub: DeviceGroup, host: np.ndarray, repeat: int) -> tuple[float, float]:
    """(H2D ms, D2H ms) of `host` to and from every device of `sub` at once."""
    def upload() -> list[Tensor]:
        return sub.map(lambda d, _: Tensor.from_numpy(host, device=d), range(len(sub)))
    held = upload()
    return (_harness.numpy_ms(upload, repeat=repeat),
            _harness.numpy_ms(lambda: sub.map(lambda _d, t: t.numpy(), held), repeat=repeat))


def _transfers(group: DeviceGroup, mib: int, repeat: int) -> list[dict[str, Any]]:
    host = np.random.default_rng(0).standard_normal(mib * 2**18, dtype=np.float32)
    rows = []
    for count in sorted({1, len(group)}):
        h2d, d2h = _transfer(DeviceGroup(group.devices[:count]), host, repeat)
        for mode, ms in (("H2D", h2d), ("D2H", d2h)):
            rows.append({"workload": f"transfer {mib} MiB/device", "mode": mode,
                         "devices": count, "ms": ms, "rate": count * mib / 1024 / (ms / 1e3),
                         "unit": "GiB/s total"})
    # Tensor.numpy() returns a fresh array, whose pages the OS maps on first touch during the
    # copy; into an array already touched, the ring's own rate shows
    device = group.devices[0]
    held = Tensor.from_numpy(host, device=device)
    out = np.empty_like(host)
    ms = _harness.numpy_ms(lambda: device.read_bytes(held.buffer.wgpu, 0, host.nbytes, out),
                           repeat=repeat)
    rows.append({"workload": f"transfer {mib} MiB/device", "mode": "D2H into a reused array",
                 "devices": 1, "ms": ms, "rate": mib / 1024 / (ms / 1e3), "unit": "GiB/s total"})
    return rows


def _gil(device: gpucore.Device, size: int, seconds: float) -> dict[str, Any]:
    a = Tensor.from_numpy(np.random.default_rng(1).standard_normal((size, size)),
                          device=device)
    out = Tensor.empty((size, size), device=device)
    linalg.matmul(a, a, out=out)
    device.synchronize()

    def count(stop: threading.Event) -> int:
        n = 0
        while not stop.is_set():
            n += 1
        return n

    def spin(busy: bool) -> float:
        stop, waits = threading.Event(), [0.0]

        def gpu() -> None:
            while not stop.is_set():
                for _ in range(8):
                    linalg.matmul(a, a, out=out)
                start = time.perf_counter()
                device.synchronize()
                waits[0] += time.perf_counter() - start
        worker = threading.Thread(target=gpu) if busy else None
        if worker:
            worker.start()
        timer = threading.Timer(seconds, stop.set)
        timer.start()
        start = time.perf_counter()
        n = count(stop)
        elapsed = time.perf_counter() - start
        if worker:
            worker.join()  # its last wait may outlast the count: share of the whole span
        return n / elapsed, waits[0] / (time.perf_counter() - start)
    idle, _ = spin(False)
    busy, waiting = spin(True)
    return {"workload": "gil", "mode": f"python loop while a thread waits ({waiting:.0%} of "
            "the time) on the GPU", "devices": 1, "rate": busy / idle, "unit": "x idle rate"}


def _split_times(sub: DeviceGroup, inputs: list[np.ndarray], op: Callable[..., Tensor],
                 check: Callable[[np.ndarray], float], torch_op: Callable[..., Any] | None,
                 repeat: int) -> dict[str, float]:
    """ms of `op(*parts)` over the devices of `sub` in each mode, and torch's resident."""
    def run_on(parts: list[list[Tensor]]) -> list[Tensor]:
        return sub.map(lambda _d, p: op(*p), list(zip(*parts, strict=True)))
    placed = [_scatter(x, sub) for x in inputs]
    times = {"resident": _harness.numpy_ms(lambda: run_on(placed), repeat=repeat)}

    def host() -> np.ndarray:
        return _gather_numpy(run_on([_scatter(x, sub) for x in inputs]), sub)
    err = check(host())
    if err > 1e-4:
        raise AssertionError(f"over {len(sub)} devices: relative error {err}")
    times["host"] = _harness.numpy_ms(host, repeat=repeat)
    sources = [Tensor.from_numpy(x, device=sub[0]) for x in inputs]

    def dev0() -> None:
        _gather(run_on([_scatter(s, sub) for s in sources]), sub)
        sub[0].synchronize()
    times["dev0"] = _harness.numpy_ms(dev0, repeat=repeat)
    torch = _harness.torch_cuda()
    if torch is not None and torch_op is not None and len(sub) <= torch.cuda.device_count():
        cuda = [[torch.from_numpy(np.ascontiguousarray(t.numpy())).to(f"cuda:{i}")
                 for t in parts] for i, parts in enumerate(zip(*placed, strict=True))]

        def launch() -> None:  # asynchronous launches: the GPUs work at the same time
            for i, parts in enumerate(cuda):
                with torch.cuda.device(i):
                    torch_op(*parts)
            for i in range(len(cuda)):
                torch.cuda.synchronize(i)
        times["torch"] = _harness.numpy_ms(launch, warmup=2, repeat=repeat)
    return times


def _split_rows(name: str, group: DeviceGroup, inputs: list[np.ndarray],
                op: Callable[..., Tensor], check: Callable[[np.ndarray], float],
                torch_op: Callable[..., Any] | None, repeat: int) -> list[dict[str, Any]]:
    """Rows for `op` split over 1 and over all devices, speed-ups against 1 device."""
    rows: list[dict[str, Any]] = []
    first: dict[str, float] = {}
    for count in sorted({1, len(group)}):
        times = _split_times(DeviceGroup(group.devices[:count]), inputs, op, check, torch_op,
                             repeat)
        first = first or times
        for mode in ("resident", "host", "dev0"):
            row = {"workload": name, "mode": mode, "devices": count, "ms": times[mode],
                   "speedup": first[mode] / times[mode]}
            if mode == "resident" and "torch" in times:
                row.update(baseline_ms=times["torch"],
                           baseline_speedup=first["torch"] / times["torch"],
                           ratio=times["torch"] / times[mode])
            rows.append(row)
    return rows


def _gemm(group: DeviceGroup, batch: int, size: int, repeat: int) -> list[dict[str, Any]]:
    rng = np.random.default_rng(2)
    a = rng.standard_normal((batch, size, size), dtype=np.float32)
    b = rng.standard_normal((batch, size, size), dtype=np.float32)
    picks = [0, batch - 1]

    def check(got: np.ndarray) -> float:
        want = a[picks, :4].astype(np.float64) @ b[picks].astype(np.float64)
        return float(np.max(np.abs(got[picks, :4] - want)) / np.max(np.abs(want)))
    torch = _harness.torch_cuda()
    if torch is not None:
        torch.backends.cuda.matmul.allow_tf32 = False
    return _split_rows(f"gemm {batch}x{size}^3 f32", group, [a, b],
                       lambda x, y: linalg.matmul(x, y), check,
                       (lambda x, y: torch.matmul(x, y)) if torch else None, repeat)


def _fft(group: DeviceGroup, batch: int, n: int, rounds: int,
         repeat: int) -> list[dict[str, Any]]:
    rng = np.random.default_rng(3)
    x = (rng.standard_normal((batch, n)) + 1j * rng.standard_normal((batch, n))).astype(
        np.complex64)

    def op(part: Tensor) -> Tensor:
        for _ in range(rounds - 1):  # enough work per call to time; the last one is returned
            fft.fft(part)
        return fft.fft(part)

    def check(got: np.ndarray) -> float:
        want = np.fft.fft(x[[0, -1]].astype(np.complex128))
        return float(np.max(np.abs(got[[0, -1]] - want)) / np.max(np.abs(want)))
    torch = _harness.torch_cuda()

    def torch_op(part: Any) -> Any:
        for _ in range(rounds):
            out = torch.fft.fft(part)
        return out
    return _split_rows(f"fft {rounds}x {batch}x{n} c64", group, [x], op, check,
                       torch_op if torch else None, repeat)


def _dask(group: DeviceGroup, size: int, batch: int, n: int,
          repeat: int) -> list[dict[str, Any]]:
    try:
        import dask.array as da
        import distributed

        from gpustd import dask as gd
    except ImportError as exc:
        return [{"workload": "dask", "mode": f"skipped ({exc}): pip install avx-gpu[dask]"}]
    rng = np.random.default_rng(4)
    a = rng.standard_normal((size, size), dtype=np.float32)
    x = (rng.standard_normal((batch, n)) + 1j * rng.standard_normal((batch, n))).astype(
        np.complex64)
    # each graph, and its first two rows as numpy computes them in float64
    graphs = {f"gemm {size}^2 f32, 2x2 tiles": (
                  lambda ga, _gx: ga @ ga.T, lambda: a[:2].astype(np.float64) @ a.T),
              f"fft {batch}x{n} c64, {batch // 8}-row chunks": (
                  lambda _ga, gx: da.fft.fft(gx, axis=-1),
                  lambda: np.fft.fft(x[:2].astype(np.complex128)))}
    rows: list[dict[str, Any]] = []
    first: dict[str, float] = {}
    for count in sorted({1, len(group)}):
        adapters = [d.info.index for d in group.devices[:count]]
        with gd.local_cluster(adapters) as cluster, distributed.Client(cluster) as client:
            ga = client.persist(gd.to_gpu(da.from_array(a, chunks=size // 2)))
            gx = client.persist(gd.to_gpu(da.from_array(x, chunks=(batch // 8, n))))
            distributed.wait([ga, gx])
            for name, (graph, want) in graphs.items():
                got = gd.to_numpy(graph(ga, gx)[:2]).compute()
                err = float(np.max(np.abs(got - want())) / np.max(np.abs(want())))
                if err > 1e-4:
                    raise AssertionError(f"dask {name} over {count} workers: error {err}")

                def run() -> None:
                    distributed.wait(client.persist(graph(ga, gx)))  # noqa: B023
                ms = _harness.numpy_ms(run, repeat=repeat)
                first.setdefault(name, ms)
                rows.append({"workload": f"dask {name}", "mode": "resident", "devices": count,
                             "ms": ms, "speedup": first[name] / ms})
    return rows


def _images_per_s(worker: Any, request: Any, images: int) -> tuple[float, list[Any]]:
    from diffusion.server.jobs.worker import GenerationJob

    def job(seed: int) -> Callable[[], Any]:
        return lambda: worker.generate(GenerationJob("txt2img", [seed], request))
    for future in [worker.submit(job(s)) for s in range(len(worker.slots))]:  # warm each
        future.result()
    start = time.perf_counter()
    futures = [worker.submit(job(100 + s)) for s in range(images)]
    results = [f.result() for f in futures]
    return images / (time.perf_counter() - start), results


def _server(group: DeviceGroup, images: int, requests: dict[str, Any], *, title: str,
            model: Any = None, dtype: str = "float32",
            processes: bool = False) -> list[dict[str, Any]]:
    """The server's worker on 1 and on every device of `group`, drawing `requests` (by row
    label) with `model` (a path; the bundled model when None) loaded in `dtype` (`serve
    --dtype`): threads in this process, or (`processes`) a worker process per device (`serve
    --devices`, GPUCORE_ADAPTER each)."""
    from diffusion import default_model_path, load_pipeline
    from diffusion.server.catalog.models_dir import ModelRegistry
    from diffusion.server.jobs.processes import ProcessWorker
    from diffusion.server.jobs.worker import Worker

    entry = ModelRegistry(extra=model or default_model_path()).entries[0]
    rows: list[dict[str, Any]] = []
    first: dict[str, float] = {}
    reference: dict[tuple[str, int], np.ndarray] = {}
    kind = "server processes" if processes else "server"
    for count in sorted({1, len(group)}):
        if processes:
            worker: Any = ProcessWorker(
                partial(load_pipeline, dtype=dtype), queue_size=images + count,
                adapters=[str(d.info.index) for d in group.devices[:count]])
        else:
            worker = Worker(lambda path, device: load_pipeline(path, device=device, dtype=dtype),
                            queue_size=images + count, devices=group.devices[:count])
        try:
            worker.submit_load(entry).result()
            for label, request in requests.items():
                rate, results = _images_per_s(worker, request, images)
                first.setdefault(label, rate)
                same = all(np.array_equal(reference.setdefault((label, i), r.images[0]),
                                          r.images[0]) for i, r in enumerate(results))
                used = len({r.device for r in results})
                rows.append({"workload": f"{kind} {title}, {images} jobs", "mode": label,
                             "devices": count, "ms": 1e3 / rate,
                             "speedup": rate / first[label], "rate": rate,
                             "unit": f"images/s ({used} workers used, same images: {same})"})
        finally:
            worker.stop()
    return rows


def _bundled_requests(sizes: list[int]) -> dict[str, Any]:
    from diffusion import GenerationRequest

    return {f"{size}px": GenerationRequest(
        prompt="a red circle on a blue background", steps=10, sampler="DDIM", cfg_scale=5.0,
        width=size, height=size) for size in sizes}


def _sd15_server(group: DeviceGroup, images: int, quick: bool) -> list[dict[str, Any]]:
    """The issue's real workload: full-size SD 1.5 (random weights), 512 px, Euler a 20
    steps, CFG 7, loaded as `serve --dtype auto` loads it (float16 where the adapter has
    matrix units), a worker process per GPU."""
    import tempfile

    from diffusion import GenerationRequest

    from .txt2img import write_sd15_folder

    side = 64 if quick else 512
    request = GenerationRequest(prompt="a lighthouse at dusk", steps=4 if quick else 20,
                                sampler="Euler a", cfg_scale=7.0, width=side, height=side)
    with tempfile.TemporaryDirectory(prefix="sd15-") as scratch:
        root = Path(scratch) / "sd15"
        write_sd15_folder(root, quick)
        return _server(group, images, {f"{side}px": request}, processes=True, model=root,
                       dtype="auto", title=f"SD 1.5 (random weights), Euler a {request.steps} "
                                           "steps, --dtype auto")


def run(quick: bool = False) -> dict[str, Any]:
    group = DeviceGroup.open(os.environ.get("BENCH_DEVICES", "all"))
    repeat = 2 if quick else 5
    # one GPU: the server also runs two workers on it (two wgpu devices on one adapter), to
    # see whether one worker's Python overlaps the other's GPU time
    server_group = group if len(group) > 1 else DeviceGroup(
        [group[0], gpucore.Device(group[0].info)])
    print("devices:", ", ".join(d.info.label for d in group), flush=True)
    bundled = _bundled_requests([64] if quick else [128, 512])
    title = "shapes-128, DDIM 10 steps"
    sections: list[Callable[[], list[dict[str, Any]]]] = [
        lambda: _transfers(group, 8 if quick else 256, repeat),
        lambda: [_gil(group[0], 256 if quick else 4096, 0.5 if quick else 2.0)],
        lambda: _gemm(group, 4 if quick else 8, 96 if quick else 4096, repeat),
        lambda: _fft(group, 8 if quick else 256, 4096 if quick else 65536, 2 if quick else 20,
                     repeat),
        lambda: _dask(group, 256 if quick else 8192, 16 if quick else 256,
                      1024 if quick else 65536, repeat),
        lambda: _server(server_group, 4 if quick else 16, bundled, title=title),
        lambda: _server(server_group, 4 if quick else 16, bundled, title=title,
                        processes=True),
    ]
    if os.environ.get("BENCH_SD15") == "1":  # minutes of loading: asked for by name
        sections.append(lambda: _sd15_server(server_group, 4 if quick else 16, quick))
    rows: list[dict[str, Any]] = []
    for section in sections:
        start = time.perf_counter()
        found = section()
        rows += found
        for row in found:  # as it goes: a run cut short still shows what it measured
            print({k: round(v, 4) if isinstance(v, float) else v for k, v in row.items()})
        print(f"({time.perf_counter() - start:.1f} s)", flush=True)
    env = _harness.environment(group[0])
    env["devices"] = [d.info.label for d in group]
    env["server_devices"] = [d.info.label for d in server_group]
    return {"benchmark": "multigpu", "environment": env, "columns": COLUMNS, "rows": rows,
            "notes": "wall times, medians; speedup: vs the same mode on 1 device; ratio: "
                     "torch ms / ours (resident); host = scatter from numpy + compute + "
                     "gather to numpy; dev0 = scatter from a Tensor on device 0 + compute + "
                     "gather back to it (1 device: the compute alone)"}
