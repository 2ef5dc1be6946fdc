"""Device.memory_stats(): allocations, frees, pool reuse, captures and peaks move the counts
by exactly the size classes involved (one adapter: the counting is host logic)."""

from __future__ import annotations

import gc

import numpy as np
import pytest

import gpucore
import gpustd
from gpucore import Buffer, Kernel
from gpucore._pool import size_class

# Sizes no other test uses, so no idle buffer of another test is reused by accident.
SMALL, LARGE = 12_345, 1_234_567  # float32 elements: 256-byte steps, then 8 steps per octave


def _cls(device: gpucore.Device, n: int) -> int:
    return size_class(n * 4, device.limits["max-buffer-size"])


@pytest.fixture
def dev(first_device: gpucore.Device, young_heap: None) -> gpucore.Device:
    """The first Device with an empty pool; earlier tests' objects frozen (conftest.young_heap),
    their garbage's buffers held, not freed in the middle of the counting."""
    first_device.empty_pool()
    first_device.reset_peak_memory()
    return first_device


def test_allocate_free_and_reuse_move_the_counts_exactly(dev: gpucore.Device) -> None:
    s0 = dev.memory_stats()
    assert s0.pooled == 0 and s0.reserved == s0.allocated
    assert s0.peak_allocated == s0.allocated and s0.peak_reserved == s0.reserved
    small, large = _cls(dev, SMALL), _cls(dev, LARGE)
    assert large > LARGE * 4  # a size class, not the bytes asked for

    a = Buffer.empty(SMALL, device=dev)
    b = Buffer.empty(LARGE, device=dev)
    s1 = dev.memory_stats()
    assert s1.allocated == s0.allocated + small + large and s1.pooled == 0
    assert s1.peak_allocated == s1.allocated

    del b  # freed into the pool: still reserved, no longer allocated
    s2 = dev.memory_stats()
    assert s2.allocated == s0.allocated + small and s2.pooled == large
    assert s2.reserved == s1.reserved and s2.peak_allocated == s1.allocated

    created = dev.buffers_created
    c = Buffer.empty(LARGE - 3, device=dev)  # same size class: the pooled buffer again
    assert dev.buffers_created == created
    s3 = dev.memory_stats()
    assert s3.allocated == s1.allocated and s3.pooled == 0 and s3.reserved == s1.reserved

    del a, c
    dev.empty_pool()
    s4 = dev.memory_stats()
    assert (s4.allocated, s4.pooled) == (s0.allocated, 0)
    assert (s4.peak_allocated, s4.peak_reserved) == (s1.allocated, s1.reserved)
    dev.reset_peak_memory()
    assert dev.memory_stats().peak_allocated == s0.allocated
    assert set(s4.as_dict()) == {"allocated", "pooled", "reserved", "peak_allocated",
                                 "peak_reserved"}


def test_a_full_pool_frees_instead(dev: gpucore.Device) -> None:
    s0 = dev.memory_stats()
    limit, dev.pool.limit = dev.pool.limit, 0
    try:
        a = Buffer.empty(SMALL, device=dev)
        del a
    finally:
        dev.pool.limit = limit
    s1 = dev.memory_stats()
    assert (s1.allocated, s1.pooled) == (s0.allocated, 0)
    assert s1.peak_allocated == s0.allocated + _cls(dev, SMALL)


def test_a_full_pool_makes_room_from_stale_buffers_not_from_a_loops_own(
        dev: gpucore.Device, monkeypatch: pytest.MonkeyPatch) -> None:
    """A full pool keeps a newly freed buffer by dropping buffers pooled STALE_GIVES gives
    ago or more (what other work left), the longest idle first; where none is stale (a
    loop's own, back within a pass) it drops the new one, as before."""
    import gpucore._residency as residency

    monkeypatch.setattr(residency, "STALE_GIVES", 3)
    large, half = _cls(dev, LARGE), _cls(dev, LARGE // 2)
    assert half < large
    limit, dev.pool.limit = dev.pool.limit, 2 * large
    try:
        old = [Buffer.empty(LARGE, device=dev) for _ in range(2)]
        del old  # the pool is full of LARGE: what "other work" left (gives 1 and 2)
        assert dev.memory_stats().pooled == 2 * large
        for _ in range(2):  # gives 3 and 4: no room, nothing 3 gives old yet: dropped
            Buffer.empty(LARGE // 2, device=dev)
            assert dev.memory_stats().pooled == 2 * large
        Buffer.empty(LARGE // 2, device=dev)  # give 5: the first LARGE is stale, makes way
        assert dev.memory_stats().pooled == large + half
        found = dev.pool.take(half)  # pooled, for the loop's next pass
        assert found is not None
        dev.pool.give(found, half)
    finally:
        dev.pool.limit = limit
        dev.empty_pool()


def test_dropped_buffers_past_the_limit_make_the_next_allocation_wait(
        dev: gpucore.Device, monkeypatch: pytest.MonkeyPatch) -> None:
    """A buffer the pool drops is freed by the driver only once the GPU is done with it, so
    past DROPPED_LIMIT dropped bytes a new buffer first waits for the GPU (the count then
    starts again); below it nothing waits."""
    import gpucore._device as device_module

    monkeypatch.setattr(device_module, "DROPPED_LIMIT", 2 * _cls(dev, LARGE))
    dev.synchronize()
    waits: list[int] = []
    synchronize = dev.synchronize
    monkeypatch.setattr(dev, "synchronize", lambda: (waits.append(1), synchronize()))
    limit, dev.pool.limit = dev.pool.limit, 0
    try:
        for _ in range(2):
            Buffer.empty(LARGE, device=dev)  # made, then dropped at once
        assert waits == [] and dev.ledger.dropped == 2 * _cls(dev, LARGE)
        Buffer.empty(LARGE, device=dev)
        assert waits == [] and dev.ledger.dropped == 3 * _cls(dev, LARGE)
        kept = Buffer.empty(LARGE, device=dev)
        assert waits == [1] and dev.ledger.dropped == 0
    finally:
        dev.pool.limit = limit
    del kept


def test_a_capture_holds_its_temporaries_until_released(dev: gpucore.Device) -> None:
    add = Kernel.cached("core/vector_add")
    x = Buffer.from_numpy(np.random.default_rng(0).standard_normal(SMALL).astype(np.float32),
                          device=dev)
    s0 = dev.memory_stats()
    with dev.capture() as graph:
        tmp = Buffer.empty(SMALL, device=dev)
        add.dispatch(add.groups_for(SMALL), x, x, tmp, n=SMALL)
        out = Buffer.empty(SMALL, device=dev)
        add.dispatch(add.groups_for(SMALL), tmp, x, out, n=SMALL)
        del tmp
    # tmp's Buffer is gone but the replay writes into it: still allocated, not pooled.
    s1 = dev.memory_stats()
    assert s1.allocated == s0.allocated + 2 * _cls(dev, SMALL) and s1.pooled == 0
    graph.replay()
    np.testing.assert_allclose(out.read(), 3 * x.read(), rtol=1e-6)
    graph.release()
    s2 = dev.memory_stats()
    assert s2.allocated == s0.allocated + _cls(dev, SMALL) and s2.pooled == _cls(dev, SMALL)


def test_memory_limit_trims_the_pool_then_evicts_then_names_the_need(
        dev: gpucore.Device) -> None:
    """Device.memory_limit: a new buffer first drops idle ones (the pool's reserve counts),
    then asks `evict` to free live ones, and raises MemoryLimitError, naming the bytes needed,
    when nothing is left; the reserve never passes the cap."""
    small, large = _cls(dev, SMALL), _cls(dev, LARGE)
    base = dev.memory_stats().reserved
    idle = [Buffer.empty(SMALL, device=dev) for _ in range(3)]
    del idle  # three idle small buffers in the pool
    assert dev.memory_stats().pooled == 3 * small
    held = [Buffer.empty(LARGE, device=dev)]
    evicted: list[int] = []

    def evict() -> bool:
        if not held:
            return False
        evicted.append(1)
        held.pop()
        return True

    cap = base + large + small + large // 2  # one large and one small, not two large
    dev.memory_limit.set(cap, evict=evict)
    try:
        assert dev.memory_stats().pooled == 3 * small  # under the cap: kept
        dev.reset_peak_memory()
        other = Buffer.empty(LARGE + 1000, device=dev)  # no idle buffer of its size class
        assert evicted == [1] and not held  # dropping the idle small ones was not enough
        s = dev.memory_stats()  # the evicted buffer was reused: nothing idle, one large live
        assert s.peak_reserved <= cap and (s.allocated, s.pooled) == (base + large, 0)
        with pytest.raises(gpucore.MemoryLimitError, match=r"at least .*MiB") as error:
            Buffer.empty(LARGE, device=dev)
        assert error.value.needed == base + 2 * large and error.value.limit == cap
        spare = [Buffer.empty(SMALL, device=dev)]  # a second evictor (a refiner's) frees it
        dev.memory_limit.set(cap, evict=lambda: bool(spare) and spare.pop() is not None)
        del other
        third = Buffer.empty(LARGE, device=dev)
        with pytest.raises(gpucore.MemoryLimitError):
            Buffer.empty(LARGE, device=dev)
        assert not spare and dev.memory_stats().peak_reserved <= cap
        dev.memory_limit.release(evict)
        assert dev.memory_limit.bytes == cap  # the other evictor still holds it
        del third
    finally:
        dev.memory_limit.set(None)
    assert dev.memory_limit.evictors == []
    Buffer.empty(LARGE, device=dev)  # no cap any more
    with pytest.raises(ValueError, match="bytes > 0"):
        dev.memory_limit.set(0)


def test_the_cap_collects_garbage_before_it_refuses(dev: gpucore.Device) -> None:
    """A buffer held only by a reference cycle is freed when Python's cycle collector runs,
    which may be long after the cycle became garbage: the cap collects once before it refuses,
    and still refuses where nothing is garbage."""
    large = _cls(dev, LARGE)
    base = dev.memory_stats().reserved
    cap = base + large + large // 2  # one large buffer, not two
    gc.disable()  # the cycle stays garbage until someone collects
    try:
        cycle: list[object] = [Buffer.empty(LARGE, device=dev)]
        cycle.append(cycle)
        del cycle
        dev.memory_limit.set(cap)
        kept = Buffer.empty(LARGE, device=dev)  # the cycle's memory, collected for it
        assert dev.memory_stats().peak_reserved <= cap
        with pytest.raises(gpucore.MemoryLimitError):
            Buffer.empty(LARGE, device=dev)  # `kept` is live: no garbage holds the room
        del kept
    finally:
        gc.enable()
        dev.memory_limit.set(None)


def test_trace_memory_names_the_stage_and_the_origins_at_the_peak(dev: gpucore.Device) -> None:
    small, large = _cls(dev, SMALL), _cls(dev, LARGE)
    base = dev.memory_stats().allocated
    with gpucore.trace_memory(dev) as trace:
        with trace.stage("first"):
            a = Buffer.empty(SMALL, device=dev)
            b = Buffer.empty(LARGE, device=dev)
        del b
        with trace.stage("second"):
            c = Buffer.empty(SMALL, device=dev)
            with trace.stage("inner"):
                d = Buffer.empty(LARGE + 7, device=dev)  # b's pooled buffer: the peak again
                e = Buffer.empty(SMALL + 1, device=dev)  # the peak
        del a, c, d, e
    assert dev.pool.trace is None
    assert trace.peak == base + 3 * small + large
    assert trace.peak_stage == "second/inner"
    assert trace.stages["first"] == base + small + large
    assert trace.stages["second"] == base + 2 * small
    here = "test_trace_memory_names_the_stage_and_the_origins_at_the_peak > empty"
    mine = {origin: n for origin, n in trace.at_peak.items() if origin.endswith(here)}
    assert sorted(mine.values()) == [(1, small), (1, small), (1, small), (1, large)]
    assert set(trace.at_peak) - set(mine) == ({"before the trace"} if base else set())
    text = trace.report()
    assert "in stage second/inner" in text and "1 x test_core_memory.py:" in text
    with gpucore.trace_memory(dev), pytest.raises(RuntimeError, match="already open"):
        with gpucore.trace_memory(dev):
            pass


def test_read_only_buffers_take_their_own_size_and_come_back_to_it(dev: gpucore.Device) -> None:
    """Weights (read_only) are kept, not reused: allocated at their bytes in 256-byte steps,
    not a size class; one freed is pooled for a read-only buffer of the same size only."""
    s0 = dev.memory_stats()
    own = -(-LARGE * 4 // 256) * 256
    assert own < _cls(dev, LARGE)
    weight = Buffer.empty(LARGE, device=dev, read_only=True)
    assert dev.memory_stats().allocated == s0.allocated + own
    kept = weight.wgpu
    del weight
    assert dev.memory_stats().pooled == own
    again = Buffer.empty(LARGE, device=dev, read_only=True)  # an offloaded weight back
    assert again.wgpu is kept
    activation = Buffer.empty(LARGE, device=dev)
    assert activation.wgpu is not kept
    assert dev.memory_stats().allocated == s0.allocated + own + _cls(dev, LARGE)


def test_frugal_drops_idle_buffers_before_making_one(dev: gpucore.Device) -> None:
    """Activations that grow one level after another (a VAE decode): the pool alone keeps each
    size class's buffer at once; frugal() keeps about the largest, and a capture's lent
    scratch stays lent (its next replay takes it back, no recording)."""
    sizes = [LARGE // 8, LARGE // 4, LARGE // 2, LARGE]

    def climb() -> int:
        base = dev.memory_stats()
        dev.reset_peak_memory()
        for n in sizes:
            b = Buffer.empty(n, device=dev)
            b.fill_zero()
            del b
        return dev.memory_stats().peak_reserved - base.reserved

    assert climb() == sum(_cls(dev, n) for n in sizes)
    x = gpustd.asarray(np.arange(SMALL, dtype=np.float32), device=dev)
    step = gpustd.capture(lambda t: (t * 2.0 + 1.0) * 3.0, copy_outputs=False)
    first = step(x).numpy()
    dev.empty_pool()
    assert step.lend() > 0
    with dev.memory_limit.frugal():
        assert climb() == _cls(dev, LARGE)
    assert dev.ledger.lent and not any(e.graph.closed for e in step._entries.values())
    np.testing.assert_array_equal(step(x).numpy(), first)
    assert (step.recordings, step.replays) == (1, 1)


def test_a_buffer_collected_inside_the_pools_lock_comes_back(dev: gpucore.Device) -> None:
    """A garbage collection inside a locked pool method (here: discard's `choose`, where a
    capture plans its temporaries) may collect a Buffer, whose __del__ gives its buffer back
    on the same thread: counted and kept, not a thread waiting on itself (a hung CI run)."""
    import threading

    kept = Buffer.empty(SMALL, device=dev)
    wanted = kept.wgpu
    del kept  # idle in the pool now
    cycle: list[object] = [Buffer.empty(LARGE, device=dev)]
    cycle.append(cycle)  # freed only by a collection
    del cycle
    before = dev.memory_stats()
    done: list[dict[int, int]] = []

    def choose(idle: dict[int, int]) -> set[int]:
        gc.collect()  # as an allocation inside the lock may start one
        return set(idle)

    thread = threading.Thread(target=lambda: done.append(dev.pool.discard([wanted], choose)),
                              daemon=True)
    thread.start()
    thread.join(timeout=30)
    assert done, "discard never returned: the collected Buffer's release waited on the lock"
    assert done[0] == {id(wanted): _cls(dev, SMALL)}
    after = dev.memory_stats()  # the collected buffer idle, the taken one in use
    large = _cls(dev, LARGE)
    assert after.pooled == before.pooled + large - _cls(dev, SMALL)
    assert after.allocated == before.allocated - large + _cls(dev, SMALL)
    dev.pool.give(wanted, _cls(dev, SMALL))  # what a capture's release would do
