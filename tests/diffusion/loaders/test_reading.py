"""diffusion.loaders.reading: a safetensors tensor read and cast in pieces on threads, and the
next tensors of a load read ahead, give numpy's values bit for bit, in order; a file cut short
or a failed read is one WeightsError at that tensor's turn."""

from __future__ import annotations

import json
import struct
import threading
import time

import numpy as np
import pytest

import gpucore
from diffusion.loaders import SafetensorsFile, WeightsError, device_cast, reading
from diffusion.loaders.weights import ComponentWeights, TensorRef
from gpustd import nn


def _values(rng: np.random.Generator, shape: tuple[int, ...]) -> np.ndarray:
    """Normal values over many scales, with NaN, infinities, a float16 subnormal and values
    past float16's range among them."""
    array = rng.standard_normal(shape) * rng.choice([1e-6, 1, 300, 1e5], size=shape)
    flat = array.reshape(-1)
    special = [np.nan, np.inf, -np.inf, 6.1e-8, 7e4, -0.0]
    flat[:len(special)] = special[:flat.size]
    return array


def _save(path, tensors: dict[str, np.ndarray]) -> SafetensorsFile:
    safetensors_numpy = pytest.importorskip("safetensors.numpy")
    safetensors_numpy.save_file(tensors, str(path))
    return SafetensorsFile(path)


@pytest.mark.nodevice
def test_read_as_is_astype_bit_for_bit(tmp_path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(reading, "PIECE", 4096)  # many pieces, the last one short
    rng = np.random.default_rng(5)
    stored = {"f32": _values(rng, (37, 291)).astype(np.float32),
              "f16": _values(rng, (1001, 3)).astype(np.float16),
              "f64": _values(rng, (2, 7, 613)),
              "one": np.array([1.5], np.float32)}
    # bfloat16: the top halves of float32 values, written as safetensors lays them out
    bf16 = (_values(rng, (5, 1999)).astype(np.float32).view(np.uint32) >> 16).astype("<u2")
    header = json.dumps({"bf16": {"dtype": "BF16", "shape": list(bf16.shape),
                                  "data_offsets": [0, bf16.nbytes]}}).encode()
    (tmp_path / "bf16.safetensors").write_bytes(
        struct.pack("<Q", len(header)) + header + bf16.tobytes())
    files = [_save(tmp_path / "m.safetensors", stored),
             SafetensorsFile(tmp_path / "bf16.safetensors")]
    for file in files:
        for key in file.keys():
            for target in (np.float16, np.float32):
                want = file.read(key).astype(target)
                got = file.read_as(key, np.dtype(target))
                assert got is not None and got.dtype == want.dtype and got.shape == want.shape
                np.testing.assert_array_equal(got.view(np.uint8), want.view(np.uint8))
    # a row range: the same bytes as the rows read alone, cast
    file = files[0]
    np.testing.assert_array_equal(file.read_as("f32", np.dtype(np.float16), rows=(3, 30)),
                                  file.read("f32", rows=(3, 30)).astype(np.float16))


@pytest.mark.nodevice
def test_read_as_leaves_integers_to_read(tmp_path) -> None:
    file = _save(tmp_path / "m.safetensors", {"ids": np.arange(77, dtype=np.int64)})
    assert file.read_as("ids", np.dtype(np.float16)) is None
    weights = ComponentWeights("c", {}, {"ids": TensorRef(file, "ids", (1, 77))},
                               dtype=np.dtype(np.float16))
    got = weights["ids"]  # read as stored, as before
    assert got.dtype == np.int64 and got.shape == (1, 77)


@pytest.mark.nodevice
def test_a_file_cut_short_is_one_weights_error(tmp_path,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(reading, "PIECE", 4096)
    path = tmp_path / "m.safetensors"
    file = _save(path, {"w": np.ones((64, 1000), np.float32)})
    with open(path, "r+b") as handle:  # truncated after its header was read
        handle.truncate(path.stat().st_size - 10_000)
    with pytest.raises(WeightsError, match=r"file ended inside tensor 'w'.*re-download"):
        file.read_as("w", np.dtype(np.float16))
    located = file.locate("w")  # what a Bf16Tensor reads into the staging memory
    assert located is not None
    _, _, offset, size = located
    with pytest.raises(WeightsError, match=r"file ended inside tensor 'w'.*re-download"):
        reading.read_into(path, offset, np.empty(size, np.uint8), what="'w'")


@pytest.mark.nodevice
def test_read_ahead_keeps_the_order_and_raises_in_turn(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(reading, "AHEAD_BYTES", 10)
    running, most = [0], [0]
    lock = threading.Lock()

    def read(key: str) -> np.ndarray:
        with lock:
            running[0] += 1
            most[0] = max(most[0], running[0])
        time.sleep(0.002 * (int(key) % 3))  # later keys may finish first
        with lock:
            running[0] -= 1
        if key == "7":
            raise WeightsError("cannot read tensor 7")
        return np.full(2, int(key))

    keys = [str(i) for i in range(12)]
    got = []
    with pytest.raises(WeightsError, match="tensor 7"):
        for value in reading.read_ahead(read, keys, lambda key: 4):
            got.append(int(value[0]))
    assert got == list(range(7))  # in order, up to the failed one
    assert 1 < most[0] <= reading.AHEAD_THREADS  # read side by side, within the window
    # stopping early drops what was read ahead without an error
    values = reading.read_ahead(read, keys[:5], lambda key: 4)
    assert int(next(values)[0]) == 0
    values.close()


def test_loaded_weights_are_the_cast_values(first_device: gpucore.Device, tmp_path,
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    """A model loaded through ComponentWeights (read ahead, cast in pieces) holds the values
    of numpy's cast of each stored tensor, bit for bit."""
    monkeypatch.setattr(reading, "PIECE", 4096)
    monkeypatch.setattr(reading, "AHEAD_BYTES", 3000)
    rng = np.random.default_rng(11)
    widths = [5, 33, 130, 7]
    stored = {f"layers.{i}.weight": _values(rng, (widths[i + 1], widths[i])).astype(np.float32)
              for i in range(3)}
    stored |= {f"layers.{i}.bias": _values(rng, (widths[i + 1],)).astype(np.float32)
               for i in range(3)}
    file = _save(tmp_path / "m.safetensors", stored)
    refs = {key: TensorRef(file, key, file.shape(key)) for key in file.keys()}
    dtype = np.float16 if first_device.has_f16 else np.float32
    weights = ComponentWeights("stack", {}, refs, dtype=np.dtype(dtype))
    model = nn.Module()
    model.layers = nn.ModuleList([nn.Linear(widths[i], widths[i + 1], device=first_device,
                                            dtype=dtype) for i in range(3)])
    with gpucore.Phases() as phases:
        model.load_state_dict(weights)
    assert phases.counts["read wait"] == len(stored)
    for key, tensor in model.named_parameters():
        want = stored[key].astype(dtype)
        np.testing.assert_array_equal(tensor.numpy().view(np.uint8), want.view(np.uint8))


@pytest.mark.nodevice
def test_bf16_to_f16_is_numpys_cast_for_every_pattern() -> None:
    from diffusion.loaders.formats.safetensors import bf16_to_f16, bf16_to_f32

    bits = np.arange(1 << 16, dtype=np.uint16)
    with np.errstate(over="ignore"):
        want = bf16_to_f32(bits).astype(np.float16)
    np.testing.assert_array_equal(bf16_to_f16(bits).view(np.uint16), want.view(np.uint16))


def test_a_component_without_dtype_reads_each_tensor_as_its_parameter(
        first_device: gpucore.Device, tmp_path, monkeypatch: pytest.MonkeyPatch) -> None:
    """load_component given weights read as stored (a bfloat16 folder): every float tensor is
    read and cast by read_as (on the read-ahead threads), as its parameter's dtype, and the
    model holds numpy's cast of the stored values."""
    from diffusion.loaders.component import load_component
    from diffusion.loaders.formats.safetensors import bf16_to_f32

    rng = np.random.default_rng(12)
    widths = [6, 35, 9]
    tensors = {f"layers.{i}.weight": (widths[i + 1], widths[i]) for i in range(2)}
    tensors |= {f"layers.{i}.bias": (widths[i + 1],) for i in range(2)}
    header, blobs, offset = {}, {}, 0
    for key, shape in tensors.items():
        bits = (_values(rng, shape).astype(np.float32).view(np.uint32) >> 16).astype("<u2")
        header[key] = {"dtype": "BF16", "shape": list(shape),
                       "data_offsets": [offset, offset + bits.nbytes]}
        blobs[key] = bits
        offset += bits.nbytes
    encoded = json.dumps(header).encode()
    (tmp_path / "m.safetensors").write_bytes(struct.pack("<Q", len(encoded)) + encoded
                                             + b"".join(b.tobytes() for b in blobs.values()))
    file = SafetensorsFile(tmp_path / "m.safetensors")
    refs = {key: TensorRef(file, key, file.shape(key)) for key in file.keys()}
    dtype = np.float16 if first_device.has_f16 else np.float32
    model = nn.Module()
    model.layers = nn.ModuleList([nn.Linear(widths[i], widths[i + 1], device=first_device,
                                            dtype=dtype) for i in range(2)])
    monkeypatch.setattr(device_cast, "ENABLED", False)  # the host's way (test_device_cast)
    casts: list[tuple[str, np.dtype]] = []
    read_as = SafetensorsFile.read_as
    monkeypatch.setattr(SafetensorsFile, "read_as", lambda self, key, target, **kw: (
        casts.append((key, target)) or read_as(self, key, target, **kw)))
    load_component(model, ComponentWeights("stack", {}, refs))
    assert sorted(casts) == sorted((key, np.dtype(dtype)) for key in tensors)
    for key, tensor in model.named_parameters():
        with np.errstate(over="ignore"):
            want = bf16_to_f32(blobs[key]).astype(dtype)
        np.testing.assert_array_equal(tensor.numpy().view(np.uint8), want.view(np.uint8))


@pytest.mark.nodevice
def test_a_header_is_parsed_once_until_its_file_changes(tmp_path, monkeypatch):
    """The same unchanged file opened again reuses its parsed header (a load's family
    detectors open it many times); a file written again is parsed again; each SafetensorsFile
    has dicts of its own."""
    from diffusion.loaders.formats import safetensors as module

    save = pytest.importorskip("safetensors.numpy").save_file
    path = tmp_path / "w.safetensors"
    save({"a": np.ones(3, np.float32)}, str(path))
    parses: list[str] = []
    parse = module._parse
    monkeypatch.setattr(module, "_parse", lambda p: (parses.append(str(p)), parse(p))[1])
    first, second = SafetensorsFile(path), SafetensorsFile(path)
    assert len(parses) == 1 and first.keys() == second.keys() == ["a"]
    assert first._entries is not second._entries
    save({"a": np.ones(3, np.float32), "b": np.zeros((2, 2), np.float16)}, str(path))
    third = SafetensorsFile(path)
    assert len(parses) == 2 and third.keys() == ["a", "b"] and third.shape("b") == (2, 2)
    np.testing.assert_array_equal(third.read("b"), np.zeros((2, 2), np.float16))
    path.unlink()
    with pytest.raises(WeightsError, match="file not found"):
        SafetensorsFile(path)
