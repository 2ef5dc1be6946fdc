"""gpustd.quant: GGML blocks written by the `gguf` package dequantize on the GPU bitwise to
gguf.quants.dequantize (the kernels' arithmetic is host-independent: first adapter only)."""

from __future__ import annotations

import numpy as np
import pytest

import gpucore
from gpustd.quant import FORMATS, QuantizedTensor, dequantize, materialize

gguf = pytest.importorskip("gguf", reason="the reference is the gguf package (diffusion extra)")
from gguf.quants import dequantize as gguf_dequantize  # noqa: E402
from gguf.quants import quantize as gguf_quantize  # noqa: E402

# gguf-py quantizes these itself; the K formats it only reads (no quantizer): for those the
# test writes random blocks with finite f16 scales, which exercises every bit of the layout.
QUANTIZED_BY_GGUF = ["q8_0", "q4_0", "q4_1", "q5_0", "q5_1", "f16", "bf16"]
K_SCALES = {"q4_k": (0, 2), "q5_k": (0, 2), "q6_k": (208,)}  # byte offsets of f16 scales


def _qtype(name: str) -> gguf.GGMLQuantizationType:
    return gguf.GGMLQuantizationType[name.upper()]


def _random_blocks(rng: np.random.Generator, name: str, size: int) -> np.ndarray:
    spec = FORMATS[name]
    count = size // spec.values
    raw = rng.integers(0, 256, (count, spec.nbytes), dtype=np.uint8)
    for at in K_SCALES[name]:
        scales = (rng.standard_normal(count) * 0.01).astype(np.float16)
        raw[:, at:at + 2] = scales.view(np.uint8).reshape(count, 2)
    return raw


def _raw(rng: np.random.Generator, name: str, shape: tuple[int, ...]) -> np.ndarray:
    if name in K_SCALES:
        return _random_blocks(rng, name, int(np.prod(shape)))
    values = (rng.standard_normal(shape) * 3).astype(np.float32)
    return gguf_quantize(values, _qtype(name))


@pytest.mark.parametrize("name", list(FORMATS))
def test_dequantize_is_bitwise_gguf(first_device: gpucore.Device, name: str) -> None:
    rng = np.random.default_rng(len(name))
    # 7 rows of 3 blocks (K: 1 block): counts that fill no workgroup of 256 evenly
    shape = (7, 3 * FORMATS[name].values) if FORMATS[name].values > 1 else (7, 97)
    raw = _raw(rng, name, shape)
    want = gguf_dequantize(raw, _qtype(name)).reshape(shape).astype(np.float32)
    weight = QuantizedTensor.from_bytes(raw, shape, name, device=first_device)
    got = weight.dequantize().numpy()
    assert got.shape == shape and got.dtype == np.float32
    np.testing.assert_array_equal(got.view(np.uint32), want.view(np.uint32))
    if first_device.has_f16:
        half = dequantize(weight, np.float16).numpy()
        np.testing.assert_array_equal(half, want.astype(np.float16))


def test_sizes_and_errors(first_device: gpucore.Device) -> None:
    raw = gguf_quantize(np.ones((4, 64), np.float32), _qtype("q8_0"))
    weight = QuantizedTensor.from_bytes(raw, (4, 64), "Q8_0", device=first_device)
    assert weight.nbytes == raw.size == 4 * 2 * 34 and weight.size == 256
    assert materialize(weight).shape == (4, 64) and materialize(None) is None
    with pytest.raises(ValueError, match="must be 272 bytes"):
        QuantizedTensor.from_bytes(raw.reshape(-1)[:-1], (4, 64), "q8_0", device=first_device)
    with pytest.raises(ValueError, match="whole blocks of 32"):
        QuantizedTensor.from_bytes(raw, (4, 60), "q8_0", device=first_device)
    with pytest.raises(ValueError, match="unknown quantization format 'q3_x'"):
        QuantizedTensor.from_bytes(raw, (4, 64), "q3_x", device=first_device)


def test_offloaded_blocks_live_on_the_host(first_device: gpucore.Device) -> None:
    shape = (64, 256)
    raw = gguf_quantize(np.random.default_rng(5).standard_normal(shape).astype(np.float32),
                        _qtype("q4_1"))
    weight = QuantizedTensor.from_bytes(raw, shape, "q4_1", device=first_device)
    want = weight.dequantize().numpy()
    held = first_device.memory_stats().allocated
    weight.offload()
    assert not weight.on_device and first_device.memory_stats().allocated < held
    np.testing.assert_array_equal(materialize(weight).numpy(), want)  # uploaded for the use
    assert not weight.on_device and weight.nbytes == raw.size
    weight.restore()
    assert weight.on_device
    np.testing.assert_array_equal(weight.dequantize().numpy(), want)
