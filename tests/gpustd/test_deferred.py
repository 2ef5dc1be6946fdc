"""gpustd.nn.deferred: parameters built under it take no GPU memory until load_state_dict writes
them (the Tensor objects kept), a quantized weight replaces one without ever allocating the
float copy, and one a strict=False load left out fails clearly when used; offload / restore
and the byte counts see it sensibly."""

from __future__ import annotations

import gc

import numpy as np
import pytest

import gpucore
import gpustd
from gpustd import nn
from gpustd.nn.deferred import HostBuffer, UnloadedBuffer, UnloadedError
from gpustd.nn.offload import device_bytes, offload, parameter_bytes, restore
from gpustd.nn.quantized import set_quantized_weight
from gpustd.quant import QuantizedTensor

pytestmark = pytest.mark.usefixtures("young_heap")  # _allocated's collections: this test's objects


class _Net(nn.Module):
    def __init__(self, device: gpucore.Device) -> None:
        self.fc = nn.Linear(96, 40, device=device)
        self.norm = nn.LayerNorm(40, device=device)


def _allocated(device: gpucore.Device) -> int:
    gc.collect()
    device.empty_pool()
    return device.memory_stats().allocated


def _weights(seed: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {"fc.weight": rng.standard_normal((40, 96)).astype(np.float32),
            "fc.bias": rng.standard_normal(40).astype(np.float32),
            "norm.weight": rng.standard_normal(40).astype(np.float32),
            "norm.bias": rng.standard_normal(40).astype(np.float32)}


def _reference(x: np.ndarray, w: dict[str, np.ndarray]) -> np.ndarray:
    y = x @ w["fc.weight"].T + w["fc.bias"]
    y = (y - y.mean(-1, keepdims=True)) / np.sqrt(y.var(-1, keepdims=True) + 1e-5)
    return y * w["norm.weight"] + w["norm.bias"]


def test_allocated_when_loaded(first_device: gpucore.Device) -> None:
    before = _allocated(first_device)
    eager = _Net(first_device)
    assert _allocated(first_device) - before >= 40 * 96 * 4  # outside deferred(): at once
    del eager
    before = _allocated(first_device)
    with nn.deferred():
        net = _Net(first_device)
        with nn.deferred(False):
            assert isinstance(nn.parameter((3,), device=first_device).buffer, gpucore.Buffer)
    assert not isinstance(nn.parameter((3,), device=first_device).buffer, UnloadedBuffer)
    assert _allocated(first_device) == before  # nothing yet
    assert nn.unloaded(net) == ["fc.weight", "fc.bias", "norm.weight", "norm.bias"]
    assert parameter_bytes(net) == (40 * 96 + 3 * 40) * 4 and device_bytes(net) == 0
    weight = net.fc.weight
    w = _weights(0)
    net.load_state_dict(w)
    assert net.fc.weight is weight and isinstance(weight.buffer, gpucore.Buffer)  # same Tensor
    assert not nn.unloaded(net) and device_bytes(net) == parameter_bytes(net)
    assert _allocated(first_device) - before >= parameter_bytes(net)
    x = np.random.default_rng(1).standard_normal((5, 96)).astype(np.float32)
    got = net.norm(net.fc(gpustd.asarray(x, device=first_device))).numpy()
    want = _reference(x, w)
    assert np.abs(got - want).max() <= 1e-4 * np.abs(want).max()


def test_loaded_to_host_never_takes_gpu_memory(first_device: gpucore.Device) -> None:
    """load_state_dict(to_host=True): a model loaded for a memory mode gets HostBuffers, not
    GPU buffers it would give back after (a model larger than the GPU could not load)."""
    before = _allocated(first_device)
    with nn.deferred():
        net = _Net(first_device)
    w = _weights(2)
    file_like = np.frombuffer(w["fc.weight"].tobytes(), np.float32).reshape(40, 96)  # not owned
    net.load_state_dict({**w, "fc.weight": file_like}, to_host=True)
    assert _allocated(first_device) == before and device_bytes(net) == 0
    assert all(isinstance(t.buffer, HostBuffer) for _, t in net.named_parameters())
    assert not np.shares_memory(net.fc.weight.buffer.array, file_like)  # a view is copied
    x = np.random.default_rng(3).standard_normal((5, 96)).astype(np.float32)
    restore(net)
    got = net.norm(net.fc(gpustd.asarray(x, device=first_device))).numpy()
    want = _reference(x, w)
    assert np.abs(got - want).max() <= 1e-4 * np.abs(want).max()


def test_a_weight_left_out_fails_clearly(first_device: gpucore.Device) -> None:
    with nn.deferred():
        net = _Net(first_device)
    w = _weights(2)
    net.load_state_dict({k: v for k, v in w.items() if k != "fc.bias"}, strict=False)
    assert nn.unloaded(net) == ["fc.bias"]
    x = gpustd.asarray(np.ones((2, 96), np.float32), device=first_device)
    with pytest.raises(UnloadedError, match=r"never loaded: load its values with "
                                            r"module\.load_state_dict"):
        net.fc(x)
    with pytest.raises(UnloadedError, match="cannot read"):
        net.state_dict()
    with pytest.raises(UnloadedError, match="cannot read"):  # what a LoRA patch reads first
        net.fc.bias.numpy()
    with pytest.raises(UnloadedError, match="cannot write part of"):
        net.fc.bias.buffer.write(np.zeros(3, np.float32))
    # offload moves what is on the device; the unloaded bias stays as it is, both ways
    assert offload(net) == (40 * 96 + 2 * 40) * 4 and device_bytes(net) == 0
    assert isinstance(net.fc.bias.buffer, UnloadedBuffer)
    assert restore(net) == (40 * 96 + 2 * 40) * 4
    assert isinstance(net.fc.bias.buffer, UnloadedBuffer)
    assert device_bytes(net) == parameter_bytes(net) - 40 * 4
    net.load_state_dict({"fc.bias": w["fc.bias"]}, strict=False)  # loaded later: usable
    got = net.norm(net.fc(gpustd.asarray(np.ones((2, 96), np.float32) * 0.5,
                                         device=first_device))).numpy()
    want = _reference(np.full((2, 96), 0.5, np.float32), w)
    assert np.abs(got - want).max() <= 1e-4 * np.abs(want).max()


def test_quantized_weight_replaces_an_unloaded_one(first_device: gpucore.Device) -> None:
    gguf = pytest.importorskip("gguf", reason="the quantized weight's blocks come from gguf")
    q8_0 = gguf.GGMLQuantizationType.Q8_0
    values = np.random.default_rng(3).standard_normal((40, 96)).astype(np.float32)
    blocks = gguf.quants.quantize(values, q8_0)
    before = _allocated(first_device)
    first_device.reset_peak_memory()
    with nn.deferred():
        layer = nn.Linear(96, 40, bias=False, device=first_device)
    set_quantized_weight(layer, "weight", QuantizedTensor.from_bytes(
        blocks, (40, 96), "q8_0", device=first_device))
    assert not nn.unloaded(layer) and parameter_bytes(layer) == blocks.nbytes
    # the float32 weight (15 KiB) was never allocated: the peak is the blocks' buffer
    assert first_device.memory_stats().peak_allocated - before < 40 * 96 * 4 // 2
    x = np.random.default_rng(4).standard_normal((3, 96)).astype(np.float32)
    got = layer(gpustd.asarray(x, device=first_device)).numpy()
    want = x @ gguf.quants.dequantize(blocks, q8_0).T
    assert np.abs(got - want).max() <= 1e-4 * np.abs(want).max()
