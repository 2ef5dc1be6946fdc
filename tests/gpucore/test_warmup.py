"""gpucore.Warmup and the pipeline cache under it: a key built by two threads at once is built
once, a build's error reaches the thread that waited for it, and a workload's kernels noted by
one device are built ahead on the next, which then builds none of them itself."""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest

import gpucore
import gpustd
from gpucore import _cache, _warmup
from gpucore._pipelines import PipelineCache

pytestmark = pytest.mark.usefixtures("cache_home")  # conftest: a private cache directory


@pytest.mark.nodevice
def test_one_build_per_key_however_many_threads_ask() -> None:
    cache: PipelineCache[str] = PipelineCache(threading.RLock(), concurrent=True)
    builds: list[int] = []

    def slow() -> str:
        builds.append(1)
        time.sleep(0.05)
        return "pipeline"

    got: list[str] = []
    threads = [threading.Thread(target=lambda: got.append(cache.get(("k",), slow)))
               for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert got == ["pipeline"] * 4 and builds == [1] and cache.created == 1


@pytest.mark.nodevice
def test_a_failed_build_reaches_its_waiters_and_is_tried_again() -> None:
    cache: PipelineCache[str] = PipelineCache(threading.RLock(), concurrent=True)
    started = threading.Event()

    def failing() -> str:
        started.set()
        time.sleep(0.05)
        raise ValueError("shader says no")

    errors: list[BaseException] = []

    def ask() -> None:
        try:
            cache.get(("k",), failing)
        except ValueError as exc:
            errors.append(exc)

    first = threading.Thread(target=ask)
    first.start()
    started.wait()
    ask()  # waits for the first thread's build, and gets its error
    first.join()
    assert [str(e) for e in errors] == ["shader says no"] * 2
    assert cache.get(("k",), lambda: "built") == "built" and cache.created == 1


@pytest.mark.nodevice
def test_noting_keeps_the_used_keys_in_first_use_order() -> None:
    cache: PipelineCache[str] = PipelineCache(threading.RLock(), concurrent=True)
    cache.get(("before",), lambda: "p0")
    cache.start_log()
    for key in ("b", "a", "b"):
        cache.get((key,), lambda key=key: (cache.note((key,), (key, "n", "main", {})), key)[1])
    cache.get(("ahead",), lambda: (cache.note(("ahead",), ("x", "n", "main", {})), "p")[1],
              use=False)
    cache.get(("before",), lambda: "never")  # used, but built before noting: unknown
    assert [spec[0] for spec in cache.stop_log()] == ["b", "a"]
    assert cache.log is None


def _work(device: gpucore.Device) -> np.ndarray:
    x = gpustd.asarray(np.linspace(0, 1, 777, dtype=np.float32), device=device)
    return (gpustd.exp(x * 0.5) + gpustd.sqrt(x)).numpy()


def test_the_next_device_builds_ahead_what_the_last_one_used(
        device: gpucore.Device) -> None:
    """Two Devices on one adapter stand for two processes (each has its own pipelines)."""
    first = gpucore.Device(device.info)
    warm = gpucore.Warmup(first, "test workload")
    assert warm.ahead == 0  # nothing noted yet
    expected = _work(first)
    used = first.pipelines_created
    assert used >= 2
    saved = warm.save()
    if not _warmup.enabled(device):  # OpenGL: nothing is built ahead or noted
        assert not saved and warm.path is None
        return
    assert saved and warm.path is not None and warm.path.exists()
    second = gpucore.Device(device.info)
    ahead = gpucore.Warmup(second, "test workload")
    assert ahead.ahead == used
    assert ahead.wait() == used
    assert second.pipelines_created == used  # built by the warmup's threads
    np.testing.assert_array_equal(_work(second), expected)
    assert second.pipelines_created == used  # and the work built none of its own
    ahead.save()
    other = gpucore.Warmup(gpucore.Device(device.info), "another workload")
    assert other.ahead == 0  # a list per workload
    other.save()


def test_a_damaged_or_stale_list_builds_nothing_ahead(device: gpucore.Device,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    if not _warmup.enabled(device):
        pytest.skip("OpenGL builds nothing ahead (its contexts stay on one thread)")
    first = gpucore.Device(device.info)
    warm = gpucore.Warmup(first, "damaged")
    _work(first)
    assert warm.save()
    path = warm.path
    assert path is not None
    whole = path.read_bytes()
    path.write_bytes(whole[:len(whole) // 3])
    with pytest.warns(UserWarning, match="ignoring the kernel list cache"):
        assert gpucore.Warmup(gpucore.Device(device.info), "damaged").ahead == 0
    path.write_bytes(whole)
    monkeypatch.setattr(_cache, "source_hash", lambda: "edited" * 3)  # a shader was edited
    stale = gpucore.Warmup(gpucore.Device(device.info), "damaged")
    assert stale.ahead == 0 and stale.path != path
    monkeypatch.setenv(_warmup.ENV, "0")
    assert gpucore.Warmup(gpucore.Device(device.info), "damaged").ahead == 0


@pytest.mark.nodevice
def test_dawn_begins_a_listed_workload_costliest_first(monkeypatch: pytest.MonkeyPatch) -> None:
    """Dawn begins the listed builds one at a time where the Warmup's thread would wait
    (gpucore.work_while_waiting: on that thread only), on the pools of gpucore._build_devices:
    the costliest first (gpucore._build_devices.cost), so none waits at the end of a queue."""
    from types import SimpleNamespace

    from gpucore import _autotune, _build_devices, _kernel

    plain, matrix = "fn main() {}", "enable chromium_experimental_subgroup_matrix;"
    listed = [(plain.ljust(500), "small", "main", {}), (matrix.ljust(9000), "gemm", "main", {}),
              (plain.ljust(20000), "attention", "main", {}),
              (matrix.ljust(23000), "big gemm", "main", {})]
    begun: list[str] = []
    monkeypatch.setattr(_warmup, "enabled", lambda device: True)
    monkeypatch.setattr(_autotune, "cache_key", lambda device: {"adapter": "fake"})
    monkeypatch.setattr(_warmup.Warmup, "_listed", lambda self: list(listed))
    monkeypatch.setattr(_build_devices, "expect_cached", lambda device: None)
    monkeypatch.setattr(_kernel.Kernel, "__init__", lambda self, source, *, name, entry,
                        constants: setattr(self, "name", name))
    monkeypatch.setattr(_kernel.Kernel, "build_ahead",
                        lambda self, device, *, begin: begun.append(self.name))
    device = SimpleNamespace(info=SimpleNamespace(runtime="dawn"),
                             pipelines=SimpleNamespace(start_log=lambda: None))
    warmup = _warmup.Warmup(device, "workload")  # type: ignore[arg-type]
    assert warmup.ahead == 4 and begun == []  # none begun yet
    elsewhere: list[bool] = []
    thread = threading.Thread(target=lambda: elsewhere.append(gpucore.work_while_waiting()))
    thread.start()
    thread.join()
    assert elsewhere == [False] and begun == []  # Dawn is called from the Warmup's thread only
    assert gpucore.work_while_waiting() and begun == ["big gemm"]
    while gpucore.work_while_waiting():
        pass
    assert begun == ["big gemm", "gemm", "attention", "small"]
    assert not gpucore.work_while_waiting()
