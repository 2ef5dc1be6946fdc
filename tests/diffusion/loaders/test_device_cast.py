"""diffusion.loaders.device_cast: bfloat16 weights converted to float16 on the GPU hold the
host cast's bits (`read_as(key, float16)`: bf16 -> f32 -> f16 with numpy) for every one of the
65,536 patterns (subnormals, overflow to infinity, infinities, NaNs), across staging chunks
and reading pieces, for odd counts and row ranges; a model loaded that way holds the same bits
as one loaded through the host."""

from __future__ import annotations

import json
import struct

import numpy as np
import pytest

import gpucore
from diffusion.loaders import SafetensorsFile, device_cast, reading
from diffusion.loaders.component import load_component
from diffusion.loaders.formats.safetensors import bf16_to_f16
from diffusion.loaders.weights import ComponentWeights, TensorRef
from gpucore._staging import Staging
from gpustd import nn


def _write_bf16(path, tensors: dict[str, np.ndarray]) -> SafetensorsFile:
    """A safetensors file of bfloat16 tensors given as their uint16 bits."""
    header, offset = {}, 0
    for key, bits in tensors.items():
        header[key] = {"dtype": "BF16", "shape": list(bits.shape),
                       "data_offsets": [offset, offset + bits.nbytes]}
        offset += bits.nbytes
    encoded = json.dumps(header).encode()
    path.write_bytes(struct.pack("<Q", len(encoded)) + encoded
                     + b"".join(bits.astype("<u2").tobytes() for bits in tensors.values()))
    return SafetensorsFile(path)


def _every_pattern(rng: np.random.Generator, times: int, extra: int) -> np.ndarray:
    bits = np.concatenate([np.arange(1 << 16, dtype=np.uint16)] * times
                          + [rng.integers(0, 1 << 16, extra, dtype=np.uint16)])
    rng.shuffle(bits)
    return bits


@pytest.mark.nodevice
def test_the_table_is_the_host_cast_of_every_pattern() -> None:
    bits = np.arange(1 << 16, dtype=np.uint16)
    table = device_cast.bf16_to_f16_table()
    assert table.dtype == np.dtype("<u4") and table.size == 1 << 15
    np.testing.assert_array_equal(table.view("<u2"), bf16_to_f16(bits).view(np.uint16))


@pytest.fixture
def gpu_everywhere(first_device: gpucore.Device, monkeypatch: pytest.MonkeyPatch):
    """The GPU conversion on this adapter whatever it is (a CPU adapter too), with small
    staging chunks and reading pieces, so that a tensor of a few hundred KiB crosses several
    of each."""
    if not first_device.has_f16:
        pytest.skip(f"{first_device.info.label} has no shader-f16 (no float16 weights)")
    monkeypatch.setattr(device_cast, "ENABLED", True)
    monkeypatch.setattr(reading, "PIECE", 12 << 10)
    monkeypatch.setattr(first_device, "staging",
                        Staging(first_device, chunk=64 << 10, depth=2, small_write=4096))
    return first_device


def test_every_pattern_converts_as_the_host_does(gpu_everywhere: gpucore.Device,
                                                 tmp_path) -> None:
    device = gpu_everywhere
    rng = np.random.default_rng(21)
    tensors = {"all": _every_pattern(rng, 3, 1).reshape(-1, 7),  # an odd count
               "rows": _every_pattern(rng, 1, 214).reshape(263, 250),
               "tiny": np.array([0x7F80, 0x0001, 0xFF81], np.uint16)}  # small write, odd
    file = _write_bf16(tmp_path / "m.safetensors", tensors)
    refs = {key: TensorRef(file, key, file.shape(key)) for key in file.keys()}
    refs["part"] = TensorRef(file, "rows", (100, 250), rows=(11, 111))
    weights = ComponentWeights("c", {}, refs, dtype=np.dtype(np.float16))
    for key, ref in refs.items():
        value = weights.on_device(key, device)
        assert value is not None and value.writes(np.dtype(np.float16), device)
        assert not value.writes(np.dtype(np.float32), device)
        buffer = gpucore.Buffer(int(np.prod(ref.shape)), np.float16, device=device,
                                read_only=True)
        value.write_to(buffer)
        want = file.read_as(ref.key, np.dtype(np.float16), rows=ref.rows)
        assert want is not None
        np.testing.assert_array_equal(buffer.read().view(np.uint16),
                                      want.reshape(-1).view(np.uint16), err_msg=key)
        np.testing.assert_array_equal(np.asarray(value).view(np.uint16),
                                      want.view(np.uint16))


def test_a_model_loads_the_same_bits_either_way(gpu_everywhere: gpucore.Device, tmp_path,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    """load_component of a bfloat16 file into a float16 model: the GPU way reads none of
    its tensors on the host (no read_as), and the model holds what the host way gives."""
    device = gpu_everywhere
    rng = np.random.default_rng(22)
    widths = [7, 301, 33]
    shapes = {f"layers.{i}.weight": (widths[i + 1], widths[i]) for i in range(2)}
    shapes |= {f"layers.{i}.bias": (widths[i + 1],) for i in range(2)}
    file = _write_bf16(tmp_path / "m.safetensors",
                       {key: rng.integers(0, 1 << 16, shape, dtype=np.uint16)
                        for key, shape in shapes.items()})
    refs = {key: TensorRef(file, key, file.shape(key)) for key in file.keys()}

    def load() -> dict[str, np.ndarray]:
        with nn.deferred():
            model = nn.Module()
            model.layers = nn.ModuleList([nn.Linear(widths[i], widths[i + 1], device=device,
                                                    dtype=np.float16) for i in range(2)])
        load_component(model, ComponentWeights("stack", {}, refs))
        return {key: tensor.numpy().view(np.uint16) for key, tensor in model.named_parameters()}

    casts: list[str] = []
    read_as = SafetensorsFile.read_as
    monkeypatch.setattr(SafetensorsFile, "read_as", lambda self, key, target, **kw: (
        casts.append(key) or read_as(self, key, target, **kw)))
    on_gpu = load()
    assert casts == []
    monkeypatch.setattr(device_cast, "ENABLED", False)
    on_host = load()
    assert sorted(casts) == sorted(shapes)
    # the host's way reads ahead as before: arrays, not Bf16Tensors read when their turn comes
    values = ComponentWeights("stack", {}, refs, dtype=np.dtype(np.float16)).read_ahead(
        list(shapes), device=device)
    assert all(isinstance(value, np.ndarray) for value in values)
    for key in shapes:
        np.testing.assert_array_equal(on_gpu[key], on_host[key], err_msg=key)


def test_swapped_halves_stay_with_the_host(gpu_everywhere: gpucore.Device, tmp_path) -> None:
    """A tensor whose halves a loader swaps (diffusers' swap_scale_shift) is never read as
    its stored bytes: read ahead, it is the swapped array; its neighbours go to the GPU."""
    from diffusion.loaders.keymaps.dit_keys import SwappedHalvesWeights

    rng = np.random.default_rng(23)
    stored = {key: rng.integers(0, 1 << 16, (6, 5), dtype=np.uint16) for key in ("a", "b")}
    file = _write_bf16(tmp_path / "m.safetensors", stored)
    refs = {key: TensorRef(file, key, file.shape(key)) for key in file.keys()}
    weights = SwappedHalvesWeights("c", {}, refs, swapped={"a"}, dtype=np.dtype(np.float16))
    swapped, plain = weights.read_ahead(["a", "b"], device=gpu_everywhere)
    assert isinstance(swapped, np.ndarray) and isinstance(plain, device_cast.Bf16Tensor)
    want = bf16_to_f16(np.concatenate([stored["a"][3:], stored["a"][:3]]))
    np.testing.assert_array_equal(swapped.view(np.uint16), want.view(np.uint16))
