"""bench.wan's decode extras: the decode as it ran before its temporal taps read their frames
in place (`tap_copies`), our VAE read from a file in ComfyUI's layout (`vae_from_file`), and
where the memory goes while a call runs (`MemorySeries`).

`MemorySeries` samples, every 10 ms, the device memory in use as the driver counts it
(cudaMemGetInfo: every allocation of the process, wgpu's and Dawn's own included) beside what
the device's pool counts (Device.memory_stats: buffers in use, idle buffers it keeps), so a
driver peak far above the pool's shows when it happens and whether the pool's idle buffers
account for it.
"""

from __future__ import annotations

import contextlib
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from unittest import mock

import gpucore
import gpustd

from ._wan_files import vae_original_names

__all__ = ["MemorySeries", "settled", "tap_copies", "vae_from_file"]

GIB = float(1 << 30)


@contextlib.contextmanager
def tap_copies() -> Iterator[None]:
    """conv2d's `images` taken as a copy of those images first: what the Wan VAE's causal
    convolutions did before they read their frames in place (take_slice per tap), the same
    sums in the same order."""
    conv2d = gpustd.nn.conv2d

    def copying(x: Any, *args: Any, images: tuple[int, int] | None = None, **kw: Any) -> Any:
        if images is not None:
            x = gpustd.take_slice(x, images[0], images[0] + images[1], axis=0)
        return conv2d(x, *args, **kw)

    with mock.patch.object(gpustd.nn, "conv2d", copying):
        yield


def vae_from_file(reference: Any, config: dict[str, Any], dtype: Any) -> Any:
    """The reference VAE's weights (bf16, as stored) written as ComfyUI's
    `wan_2.1_vae.safetensors` / `wan2.2_vae.safetensors` (Wan's original names) and read
    back lazily through the loader the CLI uses for `--vae` (diffusion.loaders.wan)."""
    from safetensors.torch import save_file

    from diffusion.loaders.wan.vae_file import load_wan_vae_file

    wan22 = bool(config.get("is_residual"))
    state = {k: v.detach().contiguous() for k, v in reference.state_dict().items()}
    folder = Path(tempfile.mkdtemp(prefix="bench-wan-vae-"))
    path = folder / ("wan2.2_vae.safetensors" if wan22 else "wan_2.1_vae.safetensors")
    save_file(vae_original_names(state, config["num_res_blocks"], wan22=wan22), str(path))
    return load_wan_vae_file(path, config, dtype)


def settled(device: gpucore.Device, used: Any) -> float:
    """`used()` (GiB) once the device has finished its work and the figure stops falling
    (what Dawn frees only as the device polls), the pool left as it is."""
    device.synchronize()
    now = used()
    for _ in range(30):
        time.sleep(0.1)
        device.synchronize()
        now, before = used(), now
        if now == before:
            break
    return float(now)


class MemorySeries:
    """(ms since start, driver GiB above `baseline`, pool in use GiB, pool idle GiB) every
    10 ms while the block runs; `points(n)` thins them to about n."""

    def __init__(self, device: gpucore.Device, used: Any, baseline: float) -> None:
        self.device, self.used, self.baseline = device, used, baseline
        self.samples: list[tuple[float, float, float, float]] = []
        self._stop = threading.Event()

    def _sample(self, begin: float) -> None:
        stats = self.device.memory_stats()
        self.samples.append(((time.perf_counter() - begin) * 1e3,
                             self.used() - self.baseline, stats.allocated / GIB,
                             stats.pooled / GIB))

    def _poll(self) -> None:
        begin = time.perf_counter()
        while not self._stop.wait(0.01):
            self._sample(begin)

    def __enter__(self) -> MemorySeries:
        self._thread = threading.Thread(target=self._poll, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self._stop.set()
        self._thread.join()

    def points(self, n: int = 120) -> list[list[float]]:
        step = max(1, len(self.samples) // n)
        kept = self.samples[::step] + self.samples[-1:]
        return [[round(v, 3) for v in sample] for sample in kept]
