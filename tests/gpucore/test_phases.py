"""gpucore.Phases: time belongs to the innermost phase of its thread, nothing is counted while
no Phases collects, and a kernel build counts as "compile" once per pipeline made."""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest

import gpucore
from gpucore import Phases, phase


@pytest.mark.nodevice
def test_nested_phase_is_taken_out_of_its_outer_one() -> None:
    with Phases() as phases:
        with phase("load"):
            time.sleep(0.02)
            with phase("read"):
                time.sleep(0.05)
            time.sleep(0.02)
        with phase("read"):
            time.sleep(0.01)
    split = phases.split()
    assert split["phases"]["read"]["count"] == 2
    assert split["phases"]["load"]["count"] == 1
    assert 0.06 <= split["phases"]["read"]["s"] < 0.06 + 0.05
    assert 0.04 <= split["phases"]["load"]["s"] < 0.04 + 0.05  # not the 0.09 s it was open
    claimed = sum(p["s"] for p in split["phases"].values())
    assert claimed <= split["total_s"] + 1e-3
    assert split["other_s"] == pytest.approx(split["total_s"] - claimed, abs=2e-3)
    assert "read 0.0" in phases.table() and "total" in phases.table()


@pytest.mark.nodevice
def test_nothing_is_counted_outside_and_one_collects_at_a_time() -> None:
    with phase("compile"):  # no Phases: a no-op
        pass
    phases = Phases()
    with phases:
        with pytest.raises(RuntimeError, match="already collecting"), Phases():
            pass
    with phase("compile"):
        pass
    assert phases.seconds == {}
    with Phases() as again:  # the refused one left nothing behind
        pass
    assert again.split()["phases"] == {}


@pytest.mark.nodevice
def test_threads_keep_their_own_nesting() -> None:
    def work() -> None:
        with phase("compile"):
            time.sleep(0.03)

    with Phases() as phases:
        with phase("load"):
            worker = threading.Thread(target=work)
            worker.start()
            time.sleep(0.01)
            worker.join()
    assert phases.counts == {"load": 1, "compile": 1}
    assert phases.seconds["compile"] >= 0.03
    assert phases.seconds["load"] >= 0.03  # the worker did not pause the main thread's phase


@pytest.mark.nodevice
def test_process_started_is_in_the_past() -> None:
    started = gpucore.process_started()
    if started is None:
        pytest.skip("this platform has no /proc to read the process's start from")
    assert 0 < time.perf_counter() - started < 3600


def test_kernel_builds_count_as_compile(device: gpucore.Device) -> None:
    source = ("@group(0) @binding(0) var<storage, read_write> x: array<f32>;\n"
              f"const SALT: f32 = {np.random.default_rng().random():.9f};\n"  # never built before
              "@compute @workgroup_size(64) fn main(@builtin(global_invocation_id) i: vec3u) {\n"
              "  if (i.x < arrayLength(&x)) { x[i.x] = x[i.x] * 2.0 + SALT * 0.0; }\n}\n")
    kernel = gpucore.Kernel(source, name="phases_probe")
    buffer = gpucore.Buffer.from_numpy(np.arange(5, dtype=np.float32), device=device)
    with Phases() as phases:
        kernel.dispatch(1, buffer)
        kernel.dispatch(1, buffer)  # built once per device
    assert phases.counts["compile"] == 1
    assert phases.seconds["compile"] > 0
    np.testing.assert_array_equal(buffer.read(), np.arange(5) * 4)


def test_default_device_opened_ahead_is_waited_for_and_counted(monkeypatch) -> None:
    """gpucore.open_default_device_ahead opens Device.auto() on a thread; the first
    default_device() waits for it and counts its seconds as "device"; a failure there is raised
    by that default_device(), which opens again."""
    from gpucore import _default

    calls: list[str] = []

    def slow_auto() -> object:
        calls.append(threading.current_thread().name)
        time.sleep(0.1)
        return "device"

    monkeypatch.setattr(_default, "_default", None)
    monkeypatch.setattr(_default, "_ahead", None)
    monkeypatch.setattr(_default, "_ahead_seconds", [])
    monkeypatch.setattr(_default.Device, "auto", staticmethod(slow_auto))
    assert gpucore.open_default_device_ahead()
    assert not gpucore.open_default_device_ahead()  # one at a time
    with Phases() as phases:
        assert gpucore.default_device() == "device"
        assert gpucore.default_device() == "device"
    assert calls == ["gpucore-open-device"]
    split = phases.split()["phases"]
    assert 0.09 <= split["device"]["s"] < 0.5 and split["device"]["count"] == 1
    assert "device wait" in split

    def failing_auto() -> object:
        calls.append(threading.current_thread().name)
        raise gpucore.NoAdapterError("none here")

    monkeypatch.setattr(_default, "_default", None)
    monkeypatch.setattr(_default, "_ahead", None)
    monkeypatch.setattr(_default.Device, "auto", staticmethod(failing_auto))
    calls.clear()
    assert gpucore.open_default_device_ahead()
    with pytest.raises(gpucore.NoAdapterError, match="none here"):
        gpucore.default_device()
    assert calls == ["gpucore-open-device", "MainThread"]
