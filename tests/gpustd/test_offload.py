"""gpustd.nn.offload / residency: weights to host memory and back bit for bit, writes while
offloaded kept, units evicted least recently used first to keep a budget, no upload inside a
capture."""

from __future__ import annotations

import gc

import numpy as np
import pytest

import gpucore
import gpustd
from gpustd import nn
from gpustd.nn.offload import HostBuffer, OffloadedError, device_bytes, offload, restore
from gpustd.nn.residency import Residency
from gpustd.quant import QuantizedTensor

gguf = pytest.importorskip("gguf", reason="the quantized weight's blocks come from gguf")


def _layer(device: gpucore.Device, seed: int) -> nn.Linear:
    layer = nn.Linear(64, 32, device=device)
    rng = np.random.default_rng(seed)
    layer.load_state_dict({"weight": rng.standard_normal((32, 64)).astype(np.float32),
                           "bias": rng.standard_normal(32).astype(np.float32)})
    return layer


def test_offload_restore_round_trip(first_device: gpucore.Device) -> None:
    layer = _layer(first_device, 0)
    x = gpustd.asarray(np.random.default_rng(1).standard_normal((3, 64)).astype(np.float32),
                       device=first_device)
    before = layer(x).numpy()
    blocks = gguf.quants.quantize(np.ones((4, 32), np.float32), gguf.GGMLQuantizationType.Q8_0)
    layer.extra = nn.Linear(32, 4, device=first_device)  # a quantized weight among them
    layer.extra.weight = QuantizedTensor.from_bytes(blocks, (4, 32), "q8_0", device=first_device)
    moved = offload(layer)
    assert moved == 32 * 64 * 4 + 32 * 4 + 4 * 4 + 4 * 34 and device_bytes(layer) == 0
    assert isinstance(layer.weight.buffer, HostBuffer) and not layer.extra.weight.on_device
    with pytest.raises(OffloadedError, match="restore"):  # a kernel refuses it, saying so
        layer(x)
    bias = layer.bias.numpy()
    layer.bias.buffer.write(np.zeros(32, np.float32))  # lands in the host copy
    assert restore(layer) == moved
    np.testing.assert_allclose(layer(x).numpy(), before - bias, rtol=1e-6, atol=1e-5)
    np.testing.assert_array_equal(layer.extra.weight.dequantize().numpy(), gguf.quants.dequantize(
        blocks, gguf.GGMLQuantizationType.Q8_0))
    # a quantized weight's new blocks of the same size (a LoRA merged into them): kept too
    halves = gguf.quants.quantize(np.full((4, 32), 0.5, np.float32),
                                  gguf.GGMLQuantizationType.Q8_0)
    layer.extra.weight.replace(halves, "q8_0")
    copy = layer.extra.weight.blocks.host_copy
    assert copy is not None and np.array_equal(copy, layer.extra.weight.blocks.read())
    assert layer.weight.buffer.host_copy is not None  # a second offload reads nothing back
    twos = np.full((32, 64), 2, np.float32)
    layer.weight.buffer.write(twos, keep_host_copy=True)  # a LoRA's patch: kept as the copy
    np.testing.assert_array_equal(layer.weight.buffer.host_copy, layer.weight.buffer.read())
    layer.weight.buffer.write(np.ones(8, np.float32), offset=8, keep_host_copy=True)
    assert layer.weight.buffer.host_copy is None  # a part written: the copy is not known
    layer.weight.buffer.host_copy = layer.weight.buffer.read()
    layer.weight.buffer.write(np.ones((32, 64), np.float32))
    assert layer.weight.buffer.host_copy is None  # written: the next offload reads back
    offload(layer)
    np.testing.assert_array_equal(layer.weight.buffer.read(), 1)


def test_budget_evicts_least_recently_used(first_device: gpucore.Device) -> None:
    layers = [_layer(first_device, i) for i in range(3)]
    x = gpustd.asarray(np.ones((2, 64), np.float32), device=first_device)
    expected = [layer(x).numpy() for layer in layers]
    first_device.empty_pool()
    size = layers[0].weight.nbytes + layers[0].bias.nbytes
    budget = first_device.memory_stats().reserved - size // 2  # room for two of the three
    residency = Residency(first_device, budget=budget)
    for layer in layers:
        residency.add(layer)
    got = [layer(x).numpy() for layer in layers]  # layer 2 comes in: layer 0 leaves
    for a, b in zip(got, expected):
        np.testing.assert_array_equal(a, b)
    assert [device_bytes(layer) > 0 for layer in layers] == [False, True, True]
    layers[1](x)
    layers[0](x)  # back in: 2, the least recently used, leaves
    assert [device_bytes(layer) > 0 for layer in layers] == [True, True, False]
    with first_device.capture() as graph, pytest.raises(OffloadedError, match="capture"):
        layers[2](x)
    graph.release()
    residency.evict(layers[1])
    residency.remove(layers[1])  # no unit now: a call runs where its weights are
    assert layers[1] not in residency and "forward" not in vars(layers[1])
    with pytest.raises(OffloadedError, match="restore"):
        layers[1](x)
    restore(layers[1])
    residency.close()
    assert all(device_bytes(layer) for layer in layers)
    assert "forward" not in vars(layers[0])


@pytest.mark.parametrize("budget", ["lowvram", "max_vram"])
def test_a_released_unit_leaves_the_pool_to_the_blocks(first_device: gpucore.Device,
                                                       budget: str) -> None:
    """A unit added with release=True (a text encoder) empties the pool as it is evicted for
    the blocks: its buffers, more than the pool keeps idle, would fill it, and every block
    weight and activation freed after them would be dropped and made anew at its next use
    (pool hacked to hold three of its eight weights, as FLUX's 4 GiB holds half its T5)."""
    device = first_device
    rng = np.random.default_rng(3)
    text = nn.ModuleList([nn.Linear(64, 48, bias=False, device=device) for _ in range(8)])
    for layer in text:
        layer.load_state_dict({"weight": rng.standard_normal((48, 64)).astype(np.float32)})
    blocks = [_layer(device, i) for i in range(3)]
    x = gpustd.asarray(rng.standard_normal((2, 64)).astype(np.float32), device=device)
    expected = [block(x).numpy() for block in blocks]
    for module in (text, *blocks):
        offload(module)
    device.empty_pool()
    limit, device.pool.limit = device.pool.limit, 3 * 48 * 64 * 4
    cap = 0 if budget == "lowvram" else device.memory_stats().reserved + (112 << 10)
    residency = Residency(device, budget=cap, release=budget != "lowvram")
    try:
        residency.add(text, stream=False, release=True)
        for block in blocks:
            residency.add(block, release=False)
        residency.use(text)
        encoded = [layer(x) for layer in text]
        device.empty_pool()  # the encoding's temporaries: the eviction alone fills the pool
        for _ in range(2):  # the first round makes the blocks' buffers, the second none
            created = device.buffers_created
            got = [block(x).numpy() for block in blocks]
        assert device.buffers_created == created
        assert device.memory_stats().pooled < 48 * 64 * 4  # no text weight idle
        assert all(device_bytes(layer) == 0 for layer in text) and len(encoded) == 8
        for a, b in zip(got, expected):
            np.testing.assert_array_equal(a, b)
    finally:
        device.pool.limit = limit
        residency.close()


@pytest.mark.usefixtures("young_heap")  # conftest: a collection of its own objects
def test_a_loop_under_a_budget_keeps_blocks_and_makes_no_buffers(
        first_device: gpucore.Device) -> None:
    """Blocks run in a loop (a transformer's, at every step) under a budget that holds half of
    them: the blocks that fit stay from round to round and the rest stream through, so fewer
    bytes move than under budget 0 (--lowvram) and no more buffers are made a round (least
    recently used first moved every block every round; trimming the pool's largest idle
    buffers dropped the evicted blocks' and the activations', each made anew). Two layouts,
    as FLUX's double and single blocks; the picture bitwise the plain run's."""
    device = first_device
    rng = np.random.default_rng(5)
    blocks: list[nn.Linear] = []
    for i in range(8):
        block = nn.Linear(96, 96, bias=i < 4, device=device)
        block.load_state_dict({"weight": rng.standard_normal((96, 96)).astype(np.float32) / 10,
                               **({"bias": rng.standard_normal(96).astype(np.float32)}
                                  if i < 4 else {})})
        blocks.append(block)
    x = gpustd.asarray(rng.standard_normal((5, 96)).astype(np.float32), device=device)

    def run() -> np.ndarray:
        h = x
        for block in blocks:
            h = block(h)
        return h.numpy()

    expected = run()
    assert np.abs(expected).max() > 1e-3
    size = sum(b.weight.nbytes for b in blocks) + sum(b.bias.nbytes for b in blocks[:4])
    rounds: dict[str, tuple[int, int]] = {}
    for mode in ("lowvram", "max_vram"):
        for block in blocks:
            offload(block)
        gc.collect()  # an earlier test's garbage freed mid-run would make room the budget lacks
        device.empty_pool()
        budget = 0 if mode == "lowvram" else device.memory_stats().reserved + size // 2 + (
            32 << 10)  # half the blocks and the activations
        device.reset_peak_memory()
        residency = Residency(device, budget=budget, release=mode != "lowvram")
        try:
            for block in blocks:
                residency.add(block, loop=True)
            np.testing.assert_array_equal(run(), expected)  # the first round makes buffers
            created, uploaded = device.buffers_created, residency.uploaded
            for _ in range(2):
                np.testing.assert_array_equal(run(), expected)
            rounds[mode] = (device.buffers_created - created, residency.uploaded - uploaded)
            if budget:
                assert device.memory_stats().peak_reserved <= budget
                assert 0 < sum(device_bytes(b) > 0 for b in blocks) < len(blocks)
        finally:
            residency.close()
    assert rounds["max_vram"][0] <= rounds["lowvram"][0], rounds
    assert 0 < rounds["max_vram"][1] < rounds["lowvram"][1] / 2, rounds


def _filler(device: gpucore.Device, nbytes: int) -> gpucore.Buffer:
    """A buffer of exactly `nbytes` (256-byte steps: read-only buffers take no size class)."""
    return gpucore.Buffer(nbytes // 4, np.float32, device=device, read_only=True)


@pytest.mark.usefixtures("young_heap")  # conftest: a collection of its own objects
def test_units_on_the_gpu_leave_inside_a_capture(first_device: gpucore.Device) -> None:
    """Units that never left the GPU (a model loaded there) under a budget: an allocation inside
    a capture evicts them with no read-back (Residency.add took their host copies), and they
    come back bit for bit. A unit written since (a weight patched in place, no host copy) is
    passed over there; when only it could go, OffloadedError says what to do; outside a
    capture it leaves as ever (read back)."""
    device = first_device
    layers = [_layer(device, i) for i in range(3)]
    x = gpustd.asarray(np.random.default_rng(2).standard_normal((2, 64)).astype(np.float32),
                       device=device)
    expected = [layer(x).numpy() for layer in layers]
    assert all(layer.weight.buffer.host_copy is None for layer in layers)  # loaded, not moved
    gc.collect()  # as above: the budget counts what the device holds now
    device.empty_pool()
    size = layers[0].weight.buffer.size + 256  # a layer's weight and bias, as allocated
    residency = Residency(device, budget=device.memory_stats().reserved + size // 2)
    try:
        for layer in layers:
            residency.add(layer)
        assert all(layer.weight.buffer.host_copy is not None for layer in layers)
        layers[0].weight.buffer.write(layers[0].weight.numpy())  # the same values, written
        assert layers[0].weight.buffer.host_copy is None
        held = []
        with device.capture() as graph:
            y = layers[2](x)  # the current unit: never evicted for room
            held.append(_filler(device, size))  # layer 0 is the least recently used: 1 goes
            assert [device_bytes(layer) > 0 for layer in layers] == [True, False, True]
            with pytest.raises(OffloadedError, match="Set the memory mode again"):
                held.append(_filler(device, size))
        graph.release()
        np.testing.assert_array_equal(y.numpy(), expected[2])
        held.append(_filler(device, size))  # outside a capture layer 0 leaves, read back
        assert device_bytes(layers[0]) == 0 and residency.evictions == 2
        held.clear()
        for layer, values in zip(layers, expected):
            np.testing.assert_array_equal(layer(x).numpy(), values)
    finally:
        residency.close()
