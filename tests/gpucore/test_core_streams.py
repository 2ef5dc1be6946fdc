"""Streams (independent submit batches), events, read_async and synchronize_async."""

from __future__ import annotations

import asyncio
import threading
import time

import numpy as np
import pytest
from conftest import session_devices

import gpucore
from gpucore import Buffer, Kernel

ADD = Kernel.cached("core/vector_add")
N = 999


def _add(a: Buffer, b: Buffer) -> Buffer:
    out = Buffer.empty(N, device=a.device)
    ADD.dispatch(ADD.groups_for(N), a, b, out, n=N)
    return out


def _data(device: gpucore.Device, seed: int) -> tuple[Buffer, np.ndarray]:
    host = np.random.default_rng(seed).standard_normal(N).astype(np.float32)
    return Buffer.from_numpy(host, device=device), host


def test_a_stream_submits_on_its_own(device: gpucore.Device) -> None:
    (a, ha), (b, hb) = _data(device, 1), _data(device, 2)
    side = device.stream("side")
    assert device.stream("side") is side and device.current_stream is device.default_stream
    with side:
        assert device.current_stream is side
        x = _add(a, b)
    y = _add(a, a)  # default stream again
    assert side.pending == 1 and device.default_stream.pending == 1
    device.default_stream.flush()
    assert side.pending == 1  # flushing one stream leaves the other's batch alone
    side.flush()
    assert side.pending == 0
    np.testing.assert_array_equal(x.read(), ha + hb)
    np.testing.assert_array_equal(y.read(), ha + ha)


def test_events_order_streams_and_complete(device: gpucore.Device) -> None:
    (a, ha), (b, hb) = _data(device, 3), _data(device, 4)
    producer, consumer = device.stream("producer"), device.stream("consumer")
    with producer:
        x = _add(a, b)
        for _ in range(20):
            x = _add(x, b)
    event = producer.record_event()
    assert producer.pending == 0  # recording the event submitted the producer's work
    consumer.wait_event(event)
    with consumer:
        y = _add(x, x)
    deadline = time.monotonic() + 30
    while not event.is_complete():  # polling never blocks; the GPU finishes on its own
        assert time.monotonic() < deadline, "event never completed"
        time.sleep(0.001)
    event.wait()
    expected = ha + hb
    for _ in range(20):
        expected = expected + hb
    np.testing.assert_array_equal(y.read(), expected + expected)
    with pytest.raises(gpucore.GpuError, match="never recorded"):
        gpucore.Event(device).wait()


def test_an_event_is_recorded_on_its_own_devices_streams() -> None:
    # the marker would go into one device's queue after another device's work: never done
    devices = session_devices()
    if len(devices) < 2:
        pytest.skip("needs two adapters")
    first, second = devices[:2]
    event = gpucore.Event(first)
    with pytest.raises(gpucore.GpuError, match="cannot be recorded on a stream of"):
        event.record(second.default_stream)
    with pytest.raises(gpucore.GpuError, match="never recorded"):
        event.wait()  # nothing was recorded


def test_timed_events(device: gpucore.Device) -> None:
    if not device.has_timestamps:
        with pytest.raises(gpucore.GpuError, match="timestamp-query"):
            gpucore.Event(device, timing=True)
        return
    a, _ = _data(device, 5)
    start = device.default_stream.record_event(timing=True)
    x = a
    for _ in range(50):
        x = _add(x, a)
    end = device.default_stream.record_event(timing=True)
    elapsed = start.elapsed_ms(end)
    assert 0 <= elapsed < 10_000
    with pytest.raises(gpucore.GpuError, match="timing=True"):
        gpucore.Event(device).record().elapsed_ms(end)


def test_async_reads_and_synchronize(device: gpucore.Device) -> None:
    (a, ha), (b, hb) = _data(device, 6), _data(device, 7)

    async def main() -> tuple[np.ndarray, np.ndarray, int]:
        ticks = 0

        async def ticker() -> None:
            nonlocal ticks
            while True:
                ticks += 1
                await asyncio.sleep(0)

        task = asyncio.create_task(ticker())
        side = device.stream("async")
        with side:
            x = _add(a, b)
        device.default_stream.wait_event(side.record_event())  # y reads x: order them
        y = _add(x, a)
        await device.synchronize_async()
        got_x, got_y = await asyncio.gather(x.read_async(), y.read_async())
        await device.default_stream.record_event()
        task.cancel()
        return got_x, got_y, ticks

    got_x, got_y, ticks = asyncio.run(main())
    np.testing.assert_array_equal(got_x, ha + hb)
    np.testing.assert_array_equal(got_y, ha + hb + ha)
    assert ticks > 0  # the loop ran other tasks while waiting


def test_threads_record_on_their_own_streams(device: gpucore.Device) -> None:
    (a, ha), (b, hb) = _data(device, 8), _data(device, 9)
    results: dict[int, np.ndarray] = {}

    def work(i: int) -> None:
        with device.stream(f"worker{i}"):
            x = a
            for _ in range(i + 5):
                x = _add(x, b)
            results[i] = x.read()

    threads = [threading.Thread(target=work, args=(i,)) for i in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    for i in range(3):
        expected = ha
        for _ in range(i + 5):
            expected = expected + hb
        np.testing.assert_array_equal(results[i], expected)
