"""Several devices at once: `open_devices` and `DeviceGroup.map`.

Each Device has its own wgpu device, queue and command stream, so work on two devices is
independent; `DeviceGroup.map` drives each device from a thread of its own. wgpu-py waits
outside the interpreter (`wgpuDevicePoll(wait=True)`, `threading.Event.wait`): on an H100 a
Python thread ran at 65% of its idle speed while another spent 84% of its time waiting on the
GPU (bench/results/multigpu-h100.json). Recording dispatches is Python and holds the GIL, so
work made of many small dispatches gains little from more threads (the server's small model
took 0.65-0.77 s per image at 128 and at 512 px alike, host-bound; two workers on one H100:
1.14x and 0.96x). GPU-bound work (large GEMMs, FFTs on resident data) is what more devices
can speed up; the 2-GPU measurement is in bench/results/multigpu-*.json when one was made.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Any, TypeVar

from ._adapters import _BACKEND_RANK, _BACKENDS, AdapterInfo, choose_adapter, devices
from ._device import Device
from ._errors import NoAdapterError
from ._runtime import RUNTIMES
from ._teardown import release_dead

__all__ = ["DeviceGroup", "open_devices", "select_adapters", "split_sizes"]

T = TypeVar("T")
R = TypeVar("R")


def _all_adapters(present: list[AdapterInfo]) -> list[AdapterInfo]:
    """What "all" means: every real GPU, each once. A GPU shows up once per backend (Vulkan
    and OpenGL both list an NVIDIA card), so when real GPUs exist only those of the best
    backend count; with software adapters only (CI: lavapipe and llvmpipe), every one does."""
    wanted = os.environ.get("GPUCORE_BACKEND")
    if wanted:
        keep = {_BACKENDS.get(w.strip().lower(), w.strip().lower()) for w in wanted.split(",")}
        present = [a for a in present if a.backend in keep]
    gpus = [a for a in present if a.type != "cpu"]
    if not gpus:
        return present
    best = min(_BACKEND_RANK.get(a.backend, 3) for a in gpus)
    return [a for a in gpus if _BACKEND_RANK.get(a.backend, 3) == best]


def select_adapters(spec: str | int | Sequence[str | int] = "all", *,
                    repeats: bool = False) -> list[AdapterInfo]:
    """The adapters `spec` names, opening none (what `open_devices` opens).

    `spec`: "all" (every GPU once, on its best backend, of the runtime in effect; every
    adapter when all are software ones); indices as `python -m gpucore info` lists them
    ("0,1", [0, 1]; an index names an adapter of any runtime); `RUNTIME:N`, the Nth adapter of
    that runtime (`dawn:0,wgpu:1`: one GPU through Dawn, another through wgpu-native);
    backend names ("vulkan,gl") or adapter-name substrings ("H200"). `repeats`: one adapter
    may be named twice (two worker processes on one GPU). NoAdapterError names what is
    present when one is not."""
    if isinstance(spec, str) and spec.strip().lower() == "all":
        every_gpu = _all_adapters(devices())
        if not every_gpu:
            raise NoAdapterError("no adapter for 'all' (GPUCORE_BACKEND may exclude every one)")
        return every_gpu
    tokens: list[str | int]
    if isinstance(spec, str):
        tokens = [t.strip() for t in spec.split(",") if t.strip()]
    elif isinstance(spec, int):
        tokens = [spec]
    else:
        tokens = list(spec)
    if not tokens:
        raise ValueError(f"no devices named in {spec!r}; give 'all', indices such as '0,1' "
                         "(see `python -m gpucore info`), dawn:0 / wgpu:1 or adapter names")
    every = devices()
    if any(not _listed(str(token).strip(), every) for token in tokens):
        every = devices("all")  # another runtime's adapter: list every runtime's (Dawn loads)
    labels = ", ".join(a.label for a in every)
    chosen: list[AdapterInfo] = []
    for token in tokens:
        info = _one(str(token).strip(), every, labels)
        if info in chosen and not repeats:
            raise ValueError(f"adapter {info.label} is named twice in {spec!r}; one Device "
                             "per adapter (its queue is already used in parallel)")
        chosen.append(info)
    return chosen


def _runtime_index(text: str) -> tuple[str, int] | None:
    """(runtime, N) of a `RUNTIME:N` token, None for any other."""
    runtime, _, rest = text.rpartition(":")
    return (runtime.lower(), int(rest)) if runtime.lower() in RUNTIMES and rest.isdigit() else None


def _listed(text: str, present: list[AdapterInfo]) -> bool:
    """Whether an index or `runtime:N` token can name an adapter of `present` (names and
    backends are looked up in the runtime in effect)."""
    if (named := _runtime_index(text)) is not None:
        return any(a.runtime == named[0] for a in present)
    return not text.isdigit() or any(a.index == int(text) for a in present)


def _one(text: str, every: list[AdapterInfo], labels: str) -> AdapterInfo:
    """The adapter one token of a device list names."""
    if (named := _runtime_index(text)) is not None:
        runtime, n = named
        listed = [a for a in every if a.runtime == runtime]
        if n >= len(listed):
            raise NoAdapterError(f"{text}: {runtime} lists {len(listed)} adapter(s); present: "
                                 f"{labels}", present=True)
        return listed[n]
    if text.isdigit():
        found = [a for a in every if a.index == int(text)]
        if not found:
            raise NoAdapterError(f"no adapter with index {text}; present: {labels}",
                                 present=True)
        return found[0]
    if text.lower() in _BACKENDS:
        return choose_adapter(backend=text)
    return choose_adapter(adapter=text)


def open_devices(spec: str | int | Sequence[str | int] = "all") -> list[Device]:
    """One Device per adapter named by `spec` (see `select_adapters`: "all", indices,
    `dawn:0,wgpu:1`, backend or adapter names). Raises NoAdapterError when one is not present.
    torch equivalent: `[torch.device("cuda", i) for i in range(n)]`."""
    return [Device(info) for info in select_adapters(spec)]


def split_sizes(total: int, parts: int, weights: Sequence[float] | None = None) -> list[int]:
    """`total` items cut into `parts` counts that differ by at most one (or follow `weights`,
    for devices of different speeds). numpy: the section sizes of `np.array_split`."""
    if parts < 1:
        raise ValueError(f"cannot split into {parts} parts")
    if total < 0:
        raise ValueError(f"cannot split {total} items")
    if weights is None:
        base, extra = divmod(total, parts)
        return [base + (i < extra) for i in range(parts)]
    if len(weights) != parts or any(w < 0 for w in weights) or not sum(weights):
        raise ValueError(f"weights must be {parts} non-negative numbers, not all 0, "
                         f"got {list(weights)}")
    scale = total / sum(weights)
    sizes = [int(w * scale) for w in weights]
    # the remainder goes to the parts that lost the largest fractions
    order = sorted(range(parts), key=lambda i: sizes[i] - weights[i] * scale)
    for i in order[:total - sum(sizes)]:
        sizes[i] += 1
    return sizes


class DeviceGroup:
    """Several Devices used together: `map` runs independent work on each in parallel.

    >>> group = DeviceGroup.open("all")
    >>> sums = group.map(lambda dev, x: gpustd.sum(Tensor.from_numpy(x, device=dev)).numpy(),
    ...                  np.array_split(data, len(group)))
    """

    def __init__(self, devices: Sequence[Device]) -> None:
        self.devices = list(devices)
        if not self.devices:
            raise ValueError("a DeviceGroup needs at least one Device")
        if len({id(d) for d in self.devices}) != len(self.devices):
            raise ValueError("a Device appears twice in the group; give each device once")

    @classmethod
    def open(cls, spec: str | int | Sequence[str | int] = "all") -> DeviceGroup:
        """A group of new Devices, one per adapter named by `spec` (see `open_devices`)."""
        return cls(open_devices(spec))

    def __len__(self) -> int:
        return len(self.devices)

    def __iter__(self) -> Iterator[Device]:
        return iter(self.devices)

    def __getitem__(self, index: int) -> Device:
        return self.devices[index]

    def __repr__(self) -> str:
        return f"<DeviceGroup {', '.join(d.info.label for d in self.devices)}>"

    def synchronize(self) -> None:
        """Wait until every device has finished its work."""
        self.map(lambda device, _: device.synchronize(), range(len(self.devices)))

    def map(self, fn: Callable[[Device, T], R], chunks: Iterable[T], *,
            balance: bool = False, wait: bool = True) -> list[R]:
        """`[fn(device, chunk) for chunk in chunks]`, the devices working in parallel.

        Chunk i runs on device i % len(group), each device's chunks in order on a thread of
        its own (the same chunk always lands on the same device: reproducible). With
        `balance=True` a device that finishes takes the next chunk (faster devices do more).
        With `wait` each thread synchronizes its device at the end, so the results' GPU work
        is done when this returns. The first exception (by chunk order) is raised after every
        thread has stopped. Results are in chunk order.
        """
        items = list(chunks)
        results: list[Any] = [None] * len(items)
        errors: dict[int, BaseException] = {}
        lock = threading.Lock()
        upcoming = iter(range(len(items)))

        def next_index(slot: int, done: int) -> int | None:
            if balance:
                with lock:
                    return next(upcoming, None)
            index = slot + done * len(self.devices)
            return index if index < len(items) else None

        def drive(slot: int) -> None:
            device, done = self.devices[slot], 0
            try:
                while (index := next_index(slot, done)) is not None:
                    done += 1
                    try:
                        results[index] = fn(device, items[index])
                    except BaseException as exc:  # kept for the caller, others carry on
                        errors[index] = exc
                        return
                if wait and done:
                    device.synchronize()
            except BaseException as exc:  # a lost device while waiting
                errors[len(items) + slot] = exc

        threads = [threading.Thread(target=drive, args=(slot,), daemon=True,
                                    name=f"gpucore-group-{slot}")
                   for slot in range(min(len(self.devices), len(items)))]
        if len(threads) == 1:
            drive(0)  # one device: no thread to start
        else:
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join()
        release_dead(timeout=0.1)  # what the threads' collections found (gpucore._teardown)
        if errors:
            raise errors[min(errors)]
        return results
