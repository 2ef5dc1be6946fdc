"""gpucore._staging: uploads and read-backs through the reused staging rings.

One device of its own on the first adapter (transfers cannot differ between adapters in a way
these sizes would show), with 4 KiB chunks and 2 slots so that a few KiB cross every path:
several chunks, more chunks than slots, a partial last chunk, partial words.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest
from support import random_array

import gpucore
from gpucore import _staging
from gpucore._staging import Staging

CHUNK = 4096  # bytes: 1024 float32
SIZES = [1, 3, 1023, 1024, 1025, 2 * 1024 + 7, 5 * 1024 + 3]  # elements


@pytest.fixture(scope="module")
def dev(first_device: gpucore.Device) -> Iterator[gpucore.Device]:
    device = gpucore.Device(first_device.info)
    device.staging = Staging(device, chunk=CHUNK, depth=2, small_write=0)  # every write rings
    yield device


@pytest.mark.parametrize("n", SIZES)
def test_round_trip_across_chunks(dev: gpucore.Device, n: int) -> None:
    data = random_array(np.random.default_rng(n), n, np.float32)
    buf = gpucore.Buffer.from_numpy(data, device=dev)
    got = buf.read()  # a fresh array, its pages zeroed ahead of the chunks' copies
    np.testing.assert_array_equal(got, data)
    assert got.flags.writeable and got.flags.owndata is False and got.dtype == np.float32
    again = random_array(np.random.default_rng(n + 1), n, np.int32, -1000, 1000)
    ints = gpucore.Buffer.from_numpy(again, device=dev)
    np.testing.assert_array_equal(ints.read(), again)


def test_one_byte_and_offsets(dev: gpucore.Device) -> None:
    data = random_array(np.random.default_rng(1), 3 * 1024 + 5, np.int32, -1000, 1000)
    buf = gpucore.Buffer.from_numpy(data, device=dev)
    raw = data.view(np.uint8)
    assert bytes(dev.read_bytes(buf.wgpu, 0, 1)) == raw[:1].tobytes()
    for offset, size in [(4, 1), (8, 5), (CHUNK - 4, 9), (CHUNK + 4, 2 * CHUNK + 3)]:
        got = dev.read_bytes(buf.wgpu, offset, size)
        assert bytes(got) == raw[offset:offset + size].tobytes(), (offset, size)
    expected = data.copy()
    for offset, count in [(1, 1), (1000, 50), (1023, 1030), (3 * 1024 + 4, 1)]:
        part = random_array(np.random.default_rng(offset), count, np.int32, -1000, 1000)
        buf.write(part, offset=offset)
        expected[offset:offset + count] = part
    np.testing.assert_array_equal(buf.read(), expected)


def test_read_sees_recorded_work_and_writes_land_after_it(dev: gpucore.Device) -> None:
    n = 2 * 1024 + 11
    rng = np.random.default_rng(2)
    a, b = (random_array(rng, n, np.float32) for _ in range(2))
    ga, gb = gpucore.Buffer.from_numpy(a, device=dev), gpucore.Buffer.from_numpy(b, device=dev)
    out = gpucore.Buffer.empty(n, np.float32, device=dev)
    kernel = gpucore.Kernel.load("core/vector_add")
    kernel.dispatch(kernel.groups_for(n), ga, gb, out, n=n)  # recorded, not submitted
    np.testing.assert_allclose(out.read(), a + b, rtol=1e-6)
    gb.copy_from(ga)  # recorded; the upload below must land after it
    fresh = random_array(rng, n, np.float32)
    gb.write(fresh)
    np.testing.assert_array_equal(gb.read(), fresh)


def test_concurrent_reads(dev: gpucore.Device) -> None:
    rng = np.random.default_rng(3)
    datas = [random_array(rng, n, np.float32) for n in (1, 1025, 3 * 1024 + 1, 4096)]
    bufs = [gpucore.Buffer.from_numpy(d, device=dev) for d in datas]
    wrong: list[Any] = []

    def reader(k: int) -> None:
        for i in range(6):
            j = (k + i) % len(bufs)
            if not np.array_equal(bufs[j].read(), datas[j]):
                wrong.append((k, j))
    threads = [threading.Thread(target=reader, args=(k,)) for k in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not wrong


def test_warm_transfers_create_no_buffer(dev: gpucore.Device,
                                         monkeypatch: pytest.MonkeyPatch) -> None:
    rng = np.random.default_rng(4)
    big = random_array(rng, 5 * 1024 + 3, np.float32)
    buf = gpucore.Buffer.from_numpy(big, device=dev)
    buf.read()
    dev.synchronize()  # warm: both rings full, the fence made
    made: list[int] = []
    create = dev.wgpu._create_buffer  # wgpu-py's create_buffer and read_buffer both call it
    monkeypatch.setattr(dev.wgpu, "_create_buffer", lambda *a: made.append(1) or create(*a))
    staged = dev.staging.buffers_created
    for n in (1, 1024, 5 * 1024 + 3, 777):
        part = random_array(rng, n, np.float32)
        buf.write(part)
        np.testing.assert_array_equal(buf.read()[:n], part)
        dev.synchronize()
    assert not made and dev.staging.buffers_created == staged <= 4


def test_bad_ranges_and_settings_are_refused(dev: gpucore.Device) -> None:
    buf = gpucore.Buffer.from_numpy(np.arange(1, 10, dtype=np.float32), device=dev)
    with pytest.raises(ValueError, match="offsets are multiples of 4"):
        dev.read_bytes(buf.wgpu, 2, 4)
    with pytest.raises(ValueError, match="within the buffer"):
        dev.read_bytes(buf.wgpu, 0, buf.wgpu.size + 1)
    with pytest.raises(ValueError, match="C-contiguous"):
        dev.read_bytes(buf.wgpu, 0, 8, out=np.empty(4, np.float32)[::2])
    with pytest.raises(ValueError, match="whole 4-byte words"):
        dev.staging.write(buf.wgpu, 0, b"abc")
    with pytest.raises(ValueError, match="multiple of 8"):
        Staging(dev, chunk=100)
    np.testing.assert_array_equal(buf.read(), np.arange(1, 10, dtype=np.float32))


@pytest.mark.nodevice
def test_host_copy_in_pieces_on_threads(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(_staging, "COPY_THREADS", 3)
    rng = np.random.default_rng(5)
    for size in (5, _staging._PIECE * 3 + 13, _staging._PIECE * 7 + 1):
        src = rng.integers(0, 256, size, dtype=np.uint8)
        dst = np.zeros(size, np.uint8)
        _staging._host_copy(dst, src)
        np.testing.assert_array_equal(dst, src)


def test_chunks_copied_on_threads(dev: gpucore.Device) -> None:
    """Chunks of several MiB: the host copies each in pieces on threads, both ways."""
    ring = Staging(dev, chunk=4 << 20, depth=2, small_write=0)
    data = random_array(np.random.default_rng(6), (9 << 20) // 4 + 3, np.float32)
    buf = gpucore.Buffer(data.size, np.float32, device=dev)
    dev.flush()
    ring.write(buf.wgpu, 0, data)
    np.testing.assert_array_equal(np.asarray(ring.read(buf.wgpu, 0, data.nbytes)).view(
        np.float32), data)


@pytest.mark.parametrize("n", [4, CHUNK, 2 * CHUNK + 12, 5 * CHUNK + 4])  # bytes
def test_a_fill_writes_its_bytes_where_they_land(dev: gpucore.Device, first_device,
                                                   n: int) -> None:
    """A gpucore.Fill uploads the bytes its callback puts into each chunk's mapped slot,
    chunk by chunk (start, length), as an array's would; below SMALL_WRITE (first_device's
    own staging) through one host array."""
    data = random_array(np.random.default_rng(n), n, np.uint8, 0, 255)
    calls: list[tuple[int, int]] = []

    def fill(into: np.ndarray, start: int) -> None:
        calls.append((start, into.size))
        into[:] = data[start:start + into.size]

    for device in (dev, first_device):
        calls.clear()

        buf = gpucore.Buffer(n // 4, np.uint32, device=device)
        device.write_bytes(buf.wgpu, 0, gpucore.Fill(n, fill))
        np.testing.assert_array_equal(buf.read().view(np.uint8), data)
        if device is dev:
            assert calls == [(s, min(CHUNK, n - s)) for s in range(0, n, CHUNK)]
        else:
            assert calls == [(0, n)]
