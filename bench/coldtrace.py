"""python -m bench.coldtrace: where a cold process's kernel builds go, kernel by kernel (issue 51).

Two tools, each meant for a fresh process whose caches (ours and the driver's: XDG_CACHE_HOME,
AVX_GPU_CACHE_DIR) are empty folders of its own:

    python -m bench.coldtrace first MODEL DTYPE OUT.json [--steps 20] [--size 512] [--pictures 1]

one cold process's pictures as `bench overhead`'s cold children make them (gpucore.Phases,
gpucore.Warmup), and per kernel built in the background (Dawn's create_compute_pipeline_async):
when it was begun, when it was seen ready (Dawn's events are looked at whenever a build is
begun or waited for, and every millisecond while one is waited for: a ready time is at most
the next look late), and how long the picture waited for it; beside them the stages' spans
(load, text, denoise, decode) and a sample every 20 ms of the process's threads and CPU time
(how many cores the builds keep busy).

    python -m bench.coldtrace kernels LIST.json OUT.json --mode serial|async [--order COSTS.json]

the kernels of a gpucore.Warmup list (the cache's kernels-*.json a first process wrote) on a
fresh device: `serial` builds each in place, one after another (each kernel's own time);
`async` begins them all at once on Dawn's threads, in the list's order or, with --order, the
costliest first (a serial run's output), and notes when each is ready; `gpucore` begins them
as a picture does (Kernel.build_ahead: gpucore._build_devices' extra devices included) and
notes the builds in place and the extra devices' opening too. `--part I/N` keeps
every Nth of them from the Ith (N processes side by side share a list).

Times are seconds from the process's start (`first`) or from the first build (`kernels`).
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
import threading
import time
from pathlib import Path
from typing import Any

__all__ = ["main"]

SAMPLE_S = 0.02


class _Sampler:
    """The process's thread count and CPU seconds every SAMPLE_S (read from /proc: no GPU
    runtime is called from the sampling thread)."""

    def __init__(self, t0: float) -> None:
        self.t0 = t0
        self.samples: list[tuple[float, int, float]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        tick = os.sysconf("SC_CLK_TCK")
        while not self._stop.wait(SAMPLE_S):
            try:
                threads = len(os.listdir("/proc/self/task"))
                fields = Path("/proc/self/stat").read_text().rsplit(")", 1)[1].split()
                cpu = (int(fields[11]) + int(fields[12])) / tick
            except OSError:
                return
            self.samples.append((round(time.perf_counter() - self.t0, 3), threads, cpu))

    def stop(self) -> list[tuple[float, int, float]]:
        self._stop.set()
        self._thread.join()
        return self.samples


class _Tracer:
    """Dawn's pipeline builds begun in the background, each one's record; looks at Dawn's
    events (on the calling thread, as every Dawn call) to see which are ready."""

    def __init__(self, t0: float) -> None:
        self.t0 = t0
        self.records: list[dict[str, Any]] = []
        self.builds: list[dict[str, Any]] = []
        self._open: list[tuple[dict[str, Any], Any]] = []
        self._process_events: Any = None

    def now(self) -> float:
        return round(time.perf_counter() - self.t0, 4)

    def scan(self) -> None:
        if self._process_events is not None:
            self._process_events()
        still = []
        for record, promise in self._open:
            if promise._state == "pending":
                still.append((record, promise))
            else:
                record["ready"] = self.now()
        self._open = still

    def install(self, device: Any) -> None:
        """Patch the class of `device.wgpu` (wgpudawn's backend GPUDevice): its
        create_compute_pipeline_async, and its promises' sync wait (for this process)."""
        if device.info.runtime != "dawn":  # nothing is built in the background to trace
            return
        device_type = type(device.wgpu)
        module = sys.modules[device_type.__module__]
        self._process_events = module.process_events
        original_begin = device_type.create_compute_pipeline_async
        promise_type = module.GPUPromise
        original_wait = promise_type._sync_wait
        tracer = self

        def begin(device: Any, **descriptor: Any) -> Any:
            start = tracer.now()
            promise = original_begin(device, **descriptor)
            record = {"label": descriptor.get("label", ""), "begun": start,
                      "call_s": round(tracer.now() - start, 4)}
            promise._coldtrace = record
            tracer.records.append(record)
            tracer._open.append((record, promise))
            tracer.scan()
            return promise

        def sync_wait(promise: Any) -> Any:
            record = getattr(promise, "_coldtrace", None)
            if record is None:
                return original_wait(promise)
            start = tracer.now()
            while promise._state == "pending":
                tracer.scan()
                if promise._state == "pending":
                    time.sleep(0.001)
            tracer.scan()
            record.setdefault("waited_at", start)
            record["wait_s"] = round(record.get("wait_s", 0.0) + tracer.now() - start, 4)
            return None

        original_build = device_type.create_compute_pipeline

        def build(device: Any, **descriptor: Any) -> Any:  # in place: its span
            start = tracer.now()
            try:
                return original_build(device, **descriptor)
            finally:
                tracer.builds.append({"label": descriptor.get("label", ""), "at": start,
                                      "s": round(tracer.now() - start, 4)})

        device_type.create_compute_pipeline_async = begin
        device_type.create_compute_pipeline = build
        promise_type._sync_wait = sync_wait


def _spans(t0: float) -> tuple[list[dict[str, Any]], list[Any]]:
    """Wrap the pipeline's stages so each call's span is noted: (spans, undo list)."""
    from diffusion.pipelines.sd import guided_unet, stable_diffusion

    spans: list[dict[str, Any]] = []
    undo = []
    for owner, name, stage in ((stable_diffusion.StableDiffusion, "_contexts", "text"),
                               (guided_unet.GuidedUNet, "__call__", "denoise"),
                               (stable_diffusion.StableDiffusion, "_decode", "decode")):
        original = getattr(owner, name)

        def timed(*args: Any, _original: Any = original, _stage: str = stage,
                  **kwargs: Any) -> Any:
            start = time.perf_counter() - t0
            try:
                return _original(*args, **kwargs)
            finally:
                spans.append({"stage": _stage, "from": round(start, 4),
                              "to": round(time.perf_counter() - t0, 4)})

        setattr(owner, name, timed)
        undo.append((owner, name, original))
    return spans, undo


def first(model: str, dtype: str, out: str, *, steps: int, size: int, pictures: int) -> None:
    """One cold process's pictures, traced (module docstring)."""
    import gpucore

    started = gpucore.process_started()
    t0 = started if started is not None else time.perf_counter()
    sampler = _Sampler(t0)
    tracer = _Tracer(t0)
    settings = dict(prompt="a red circle on a blue background", negative_prompt="blurry",
                    steps=steps, cfg_scale=7.0, seed=1, width=size, height=size,
                    sampler="Euler a")
    marks: dict[str, float] = {}
    shas = []
    with gpucore.Phases(started=started) as phases:
        if started is not None:
            phases.add("import", time.perf_counter() - started)
        with gpucore.phase("import"):
            import numpy as np

            from diffusion import load_pipeline
            from diffusion.infotext import save_images
        spans, _ = _spans(t0)
        marks["load_from"] = time.perf_counter() - t0
        with gpucore.phase("load"):
            tracer.install(gpucore.default_device())
            opened = _time_opens(tracer)
            warmup = gpucore.Warmup(gpucore.default_device(), f"txt2img {model} {dtype}")
            pipe: Any = load_pipeline(None if model == "bundled" else model,
                                      dtype=np.dtype(dtype))
        marks["load_to"] = time.perf_counter() - t0
        for index in range(pictures):
            result = pipe.txt2img(**settings)
            marks[f"picture{index + 1}"] = time.perf_counter() - t0
            with gpucore.phase("png"):
                path = os.path.join(out + f".{index + 1}.png")
                save_images(result.images, result.settings, path)
            shas.append(hashlib.sha256(Path(path).read_bytes()).hexdigest())
        warmup.save()
    samples = sampler.stop()
    device = gpucore.default_device().info
    payload = {"device": device.label, "runtime": device.runtime, **phases.split(),
               "png_sha256": shas, "marks": {k: round(v, 3) for k, v in marks.items()},
               "spans": spans, "kernels": tracer.records, "builds": tracer.builds,
               "opened": opened, "samples": samples}
    Path(out).write_text(json.dumps(payload))
    print(json.dumps({k: v for k, v in payload.items()
                      if k not in ("kernels", "builds", "opened", "samples")}))


def _time_opens(tracer: _Tracer) -> list[dict[str, Any]]:
    """Note each extra build device's opening (gpucore._build_devices, where there is one)."""
    try:
        from gpucore import _build_devices
    except ImportError:
        return []
    opened: list[dict[str, Any]] = []
    original = _build_devices._Pools._open

    def timed(pools: Any, device: Any) -> bool:
        start = tracer.now()
        try:
            return original(pools, device)
        finally:
            opened.append({"at": start, "s": round(tracer.now() - start, 4)})

    _build_devices._Pools._open = timed  # type: ignore[method-assign, assignment]
    return opened


def _threaded(device: Any, built: list[tuple[int, Any]], threads: int) -> list[dict]:
    """Build each kernel in place, from `threads` threads at once, on a second Dawn device on
    the same adapter opened with Dawn's implicit device synchronization (its calls may come
    from any thread): whether Dawn holds its device lock while the driver compiles."""
    from concurrent.futures import ThreadPoolExecutor

    from gpucore import _device, _runtime

    runtime = _runtime.load("dawn", required=True)
    assert runtime is not None
    info = device.info
    raw = runtime.enumerate_adapters()[info.adapter._position]
    names = [runtime.native_feature(f) for f in sorted(device.features)]
    matrices = runtime.native_feature("subgroup-matrix")
    if matrices in raw.features:
        names.append(matrices)
    names.append("implicit-device-synchronization")
    required = {k: info.limits[k] for k in _device._RAISED_LIMITS if k in info.limits}
    dev = raw.request_device_sync(required_features=names, required_limits=required)
    t0 = time.perf_counter()

    def build(item: tuple[int, Any]) -> dict:
        index, kernel = item
        start = time.perf_counter() - t0
        layout = dev.create_bind_group_layout(entries=kernel._entries())
        module = dev.create_shader_module(label=kernel.label,
                                          code=_runtime.adapt_source("dawn", kernel.source))
        dev.create_compute_pipeline(
            label=kernel.label, layout=dev.create_pipeline_layout(bind_group_layouts=[layout]),
            compute={"module": module, "entry_point": kernel.entry,
                     "constants": kernel.constants})
        return {"index": index, "label": kernel.label, "from": round(start, 4),
                "to": round(time.perf_counter() - t0, 4)}

    with ThreadPoolExecutor(threads) as pool:
        return list(pool.map(build, built))


def _listed(path: str) -> list[tuple[str, str, str, dict[str, float]]]:
    kernels = json.loads(Path(path).read_text())["payload"]["kernels"]
    return [(k["source"], k["name"], k["entry"], dict(k["constants"])) for k in kernels]


def kernels(list_path: str, out: str, *, mode: str, order: str | None,
            part: str = "0/1") -> None:
    """A Warmup list's kernels built on a fresh device (module docstring)."""
    import gpucore
    from gpucore import Kernel

    device = gpucore.default_device()
    specs = _listed(list_path)
    built = [(i, Kernel(source, name=name, entry=entry, constants=constants))
             for i, (source, name, entry, constants) in enumerate(specs)]
    if order:
        cost = {r["index"]: r["build_s"] for r in json.loads(Path(order).read_text())["kernels"]}
        built.sort(key=lambda item: -cost.get(item[0], 0.0))
    which, parts = (int(x) for x in part.split("/"))
    built = built[which::parts]
    t0 = time.perf_counter()
    sampler = _Sampler(t0)
    records = []
    if mode == "serial":
        for index, kernel in built:
            start = time.perf_counter()
            descriptor, _ = kernel._describe(device)
            described = time.perf_counter()
            device.wgpu.create_compute_pipeline(**descriptor)
            end = time.perf_counter()
            records.append({"index": index, "label": kernel.label,
                            "source_chars": len(kernel.source),
                            "describe_s": round(described - start, 4),
                            "build_s": round(end - described, 4)})
    elif mode == "threads":  # sync builds from 8 threads on an implicitly synchronized device
        records = _threaded(device, built, 8)
    elif mode == "gpucore":  # as a picture begins them: gpucore._build_devices included
        tracer = _Tracer(t0)
        tracer.install(device)
        opened = _time_opens(tracer)
        for _, kernel in built:
            kernel.build_ahead(device, begin=True)
        device.pipelines.settle()
        records = [*tracer.records, *({"in_place": True, **b} for b in tracer.builds),
                   *({"opened": True, **o} for o in opened)]
    else:
        tracer = _Tracer(t0)
        tracer.install(device)
        promises = []
        for index, kernel in built:
            descriptor, _ = kernel._describe(device)
            promises.append(device.wgpu.create_compute_pipeline_async(**descriptor))
            record = promises[-1]._coldtrace  # type: ignore[attr-defined]
            record.update(index=index, source_chars=len(kernel.source))
        for promise in promises:
            promise.sync_wait()
        records = tracer.records
    wall = time.perf_counter() - t0
    samples = sampler.stop()
    payload = {"device": device.info.label, "mode": mode, "ordered": bool(order),
               "wall_s": round(wall, 3), "kernels": records, "samples": samples}
    Path(out).write_text(json.dumps(payload))
    cpu = samples[-1][2] - samples[0][2] if len(samples) > 1 else 0.0
    print(f"{mode}{' ordered' if order else ''}: {len(records)} kernels in {wall:.2f} s, "
          f"CPU {cpu:.1f} s, threads up to {max((s[1] for s in samples), default=0)}")


def main(argv: list[str]) -> None:
    import argparse

    parser = argparse.ArgumentParser(prog="python -m bench.coldtrace", description=__doc__)
    sub = parser.add_subparsers(dest="tool", required=True)
    one = sub.add_parser("first")
    one.add_argument("model")
    one.add_argument("dtype")
    one.add_argument("out")
    one.add_argument("--steps", type=int, default=20)
    one.add_argument("--size", type=int, default=512)
    one.add_argument("--pictures", type=int, default=1)
    two = sub.add_parser("kernels")
    two.add_argument("list")
    two.add_argument("out")
    two.add_argument("--mode", choices=("serial", "async", "gpucore", "threads"), default="async")
    two.add_argument("--order")
    two.add_argument("--part", default="0/1", help="I/N: every Nth kernel from the Ith")
    args = parser.parse_args(argv)
    if args.tool == "first":
        first(args.model, args.dtype, args.out, steps=args.steps, size=args.size,
              pictures=args.pictures)
    else:
        kernels(args.list, args.out, mode=args.mode, order=args.order, part=args.part)


if __name__ == "__main__":
    main(sys.argv[1:])
