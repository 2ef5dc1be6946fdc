"""Adapters, device selection, limits, errors that need no kernel, profiling, the pool."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

import gpucore
from gpucore import _adapters

# -- needs no device -------------------------------------------------------------------


@pytest.mark.nodevice
def test_no_adapter_error_says_how_to_fix(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(_adapters.wgpu.gpu, "enumerate_adapters_sync", lambda: [])
    monkeypatch.setenv("GPUCORE_RUNTIME", "wgpu")  # the runtime whose adapters are faked away
    with pytest.raises(gpucore.NoAdapterError, match="mesa-vulkan-drivers"):
        gpucore.Device.auto()


@pytest.mark.nodevice
def test_fold_grid_respects_the_limit() -> None:
    assert gpucore.fold_grid(10, 65535) == (10, 1, 1)
    x, y, z = gpucore.fold_grid(70_000, 65535)
    assert x <= 65535 and y <= 65535 and z == 1 and x * y >= 70_000
    assert gpucore.fold_grid((4, 5), 65535) == (4, 5, 1)
    with pytest.raises(gpucore.DeviceLimitError, match="max-compute-workgroups-per-dimension"):
        gpucore.fold_grid((70_000, 2), 65535)
    with pytest.raises(ValueError):
        gpucore.fold_grid((-1,), 65535)
    assert gpucore.fold_grid(np.int64(10), 65535) == (10, 1, 1)  # was "not iterable"
    with pytest.raises(TypeError, match="workgroups must be an int"):
        gpucore.fold_grid(2.5, 65535)


def test_info_lists_every_adapter() -> None:
    out = subprocess.run([sys.executable, "-m", "gpucore", "info"], capture_output=True,
                         text=True, check=False)
    present = gpucore.devices()
    if not present:
        assert out.returncode == 1 and "mesa-vulkan-drivers" in out.stderr
        return
    assert out.returncode == 0, out.stderr
    for info in present:
        assert info.backend in out.stdout and info.name in out.stdout


# -- per adapter ------------------------------------------------------------------------


def test_device_exposes_real_limits_and_features(device: gpucore.Device) -> None:
    adapter_limit = device.info.limits["max-storage-buffer-binding-size"]
    assert device.limits["max-storage-buffer-binding-size"] == adapter_limit
    assert device.features <= {"shader-f16", "subgroup", "timestamp-query"}
    assert device.features == {f for f in _adapters.OPTIONAL_FEATURES if f in device.info.features}


def test_select_by_backend_index_and_name(device: gpucore.Device,
                                          monkeypatch: pytest.MonkeyPatch) -> None:
    info = device.info
    assert _adapters.choose_adapter(backend=info.backend).backend == info.backend
    assert _adapters.choose_adapter(adapter=info.index).index == info.index
    assert _adapters.choose_adapter(backend=info.backend, adapter=info.name[:6]).index == info.index
    monkeypatch.setenv("GPUCORE_BACKEND", info.backend)
    monkeypatch.setenv("GPUCORE_ADAPTER", str(info.index))
    assert _adapters.choose_adapter().index == info.index


def test_select_missing_backend_lists_what_exists() -> None:
    with pytest.raises(gpucore.NoAdapterError, match="present:"):
        _adapters.choose_adapter(backend="dx12" if sys.platform != "win32" else "metal")
    with pytest.raises(gpucore.NoAdapterError, match="no adapter matches"):
        _adapters.choose_adapter(adapter="no-such-gpu-name")


def test_buffer_over_max_buffer_size_is_refused(device: gpucore.Device) -> None:
    limit = device.limits["max-buffer-size"]
    with pytest.raises(gpucore.DeviceLimitError, match="max-buffer-size") as info:
        gpucore.Buffer(limit // 4 + 1, np.float32, device=device)
    assert info.value.value == limit


def test_f16_buffer_needs_the_feature(device: gpucore.Device) -> None:
    if device.has_f16:
        assert gpucore.Buffer(3, np.float16, device=device).nbytes == 6
    else:
        with pytest.raises(gpucore.FeatureError, match="shader-f16"):
            gpucore.Buffer(3, np.float16, device=device)


def test_unsupported_dtype_is_a_type_error(device: gpucore.Device) -> None:
    with pytest.raises(TypeError, match="not supported"):
        gpucore.Buffer(4, np.float64, device=device)


class _LostQueue:
    """The device's wgpu queue, except that submitting reports the device lost, as wgpu-native
    does after a driver reset (its message names the lost device)."""

    def __init__(self, queue: object, message: str) -> None:
        self._queue, self._message = queue, message

    def submit(self, command_buffers: object) -> None:
        import wgpu

        raise wgpu.GPUError(self._message)

    def __getattr__(self, name: str) -> object:
        return getattr(self._queue, name)


def test_a_lost_device_raises_device_lost_error(device: gpucore.Device,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    """A device loss met at a submit or a read-back is DeviceLostError (a GpuError) saying what
    happened and what to do; any other wgpu error stays a plain GpuError."""
    import wgpu

    data = np.arange(5, dtype=np.float32)
    buffer = gpucore.Buffer.from_numpy(data, device=device)
    device.synchronize()
    lost = "Parent device is lost\ndetails that follow"
    monkeypatch.setattr(device, "queue", _LostQueue(device.queue, lost))
    kernel = gpucore.Kernel.load("core/vector_add")
    out = gpucore.Buffer.empty(5, np.float32, device=device)
    kernel.dispatch(kernel.groups_for(5), buffer, buffer, out, n=5)
    with pytest.raises(gpucore.DeviceLostError) as info:
        out.read()
    assert isinstance(info.value, gpucore.GpuError)
    assert str(info.value) == ("the GPU device was lost (Parent device is lost); create a new "
                               "Device (check the driver and GPU memory)")
    monkeypatch.undo()

    def read(*args: object, **kwargs: object) -> None:
        raise wgpu.GPUError("Device lost: DEVICE_LOST")
    monkeypatch.setattr(device.staging, "read", read)
    with pytest.raises(gpucore.DeviceLostError, match=r"was lost \(Device lost: DEVICE_LOST\)"):
        buffer.read()

    def other(*args: object, **kwargs: object) -> None:
        raise wgpu.GPUError("Validation Error: buffer is destroyed")
    monkeypatch.setattr(device.staging, "read", other)
    with pytest.raises(gpucore.GpuError) as info:
        buffer.read()
    assert not isinstance(info.value, gpucore.DeviceLostError)
    assert str(info.value) == "Validation Error: buffer is destroyed"
    monkeypatch.undo()
    np.testing.assert_array_equal(buffer.read(), data)  # the real device goes on


def test_pool_reuses_freed_buffers(device: gpucore.Device) -> None:
    def step() -> None:
        a = gpucore.Buffer.empty(1000, np.float32, device=device)
        b = gpucore.Buffer.empty(70_000, np.float32, device=device)
        del a, b

    step()
    before = device.buffers_created
    for _ in range(5):
        step()
    assert device.buffers_created == before


def test_profile_times_each_dispatch(device: gpucore.Device) -> None:
    if not device.has_timestamps:
        with pytest.raises(gpucore.GpuError, match="timestamp-query"):
            device.profile().__enter__()
        return
    n = 4099
    a = gpucore.Buffer.from_numpy(np.ones(n, np.float32), device=device)
    out = gpucore.Buffer.empty(n, np.float32, device=device)
    kernel = gpucore.Kernel.load("core/vector_add")
    with device.profile() as prof:
        for _ in range(3):
            kernel.dispatch(kernel.groups_for(n), a, a, out, n=n)
    assert [label for label, _ in prof.records] == ["core/vector_add:main"] * 3
    assert all(ns >= 0 for _, ns in prof.records)
    assert "core/vector_add:main" in prof.table()
    np.testing.assert_array_equal(out.read(), np.full(n, 2, np.float32))


@pytest.mark.nodevice
def test_size_classes_round_up_but_never_past_the_device_limit() -> None:
    from gpucore._pool import size_class

    assert size_class(1, 1 << 31) == 256 and size_class(257, 1 << 31) == 512
    big = 100_000_001
    assert big <= size_class(big, 1 << 31) <= big * 1.125
    # a request just under the limit must not be rounded over it
    assert size_class((1 << 31) - 100, (1 << 31) - 1) == (1 << 31) - 100
