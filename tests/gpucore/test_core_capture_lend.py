"""A capture lends its scratch to the pool between replays (gpucore._residency): other
work borrows the same memory, the replay after takes it back and is still the eager call
bitwise, and a capture whose scratch was kept or dropped meanwhile records again."""

from __future__ import annotations

import gc
import weakref

import numpy as np
import pytest
from support import staircase

import gpucore
import gpustd
from gpucore import Buffer, Kernel

ADD = Kernel.cached("core/vector_add")
N = 20_011  # not a multiple of the workgroup size


def _captured(device: gpucore.Device, rng: np.random.Generator
              ) -> tuple[gpucore.Capture, Buffer, Buffer]:
    x = Buffer.from_numpy(rng.standard_normal(N).astype(np.float32), device=device)
    with device.capture() as graph:
        out = staircase(x)
    return graph, x, out


def _scratch(graph: gpucore.Capture) -> list[object]:
    return [graph._buffers[key] for key in graph._scratch]


def test_lent_scratch_is_borrowed_then_taken_back(device) -> None:
    rng = np.random.default_rng(11)
    graph, x, out = _captured(device, rng)
    scratch = _scratch(graph)
    assert scratch and graph.scratch_bytes == sum(b.size for b in scratch)
    device.empty_pool()  # idle buffers of other tests' would serve the borrowers first
    before = device.memory_stats()
    assert graph.lend() == graph.scratch_bytes
    lent = device.memory_stats()
    assert lent.allocated == before.allocated - graph.scratch_bytes
    assert lent.reserved == before.reserved  # idle in the pool now, not freed
    # Other work of the same size class gets the very buffers, and writes into them.
    made = device.buffers_created
    borrowers = [Buffer.from_numpy(np.full(b.size // 4, 9, np.float32), device=device)
                 for b in scratch]
    assert {id(b.wgpu) for b in borrowers} == {id(b) for b in scratch}
    assert device.buffers_created == made
    del borrowers
    assert graph.reclaim()
    assert device.memory_stats().allocated == before.allocated
    # Pinned again: the pool does not hand them out while the capture replays into them.
    others = [Buffer.empty(b.size // 4, device=device) for b in scratch]
    assert not {id(o.wgpu) for o in others} & {id(b) for b in scratch}
    x.write(rng.standard_normal(N).astype(np.float32))
    graph.replay()
    np.testing.assert_array_equal(out.read(), staircase(x).read())


def test_replay_takes_lent_scratch_back_itself(device) -> None:
    rng = np.random.default_rng(12)
    graph, x, out = _captured(device, rng)
    graph.lend()
    assert graph.lent
    x.write(rng.standard_normal(N).astype(np.float32))
    graph.replay()
    assert not graph.lent and not graph.closed
    np.testing.assert_array_equal(out.read(), staircase(x).read())


def test_scratch_kept_by_a_borrower_releases_the_capture(device) -> None:
    """A borrower that outlives the lending keeps its buffer and its values: the capture
    gives up (a replay would overwrite them) and gpustd.capture records the call again."""
    rng = np.random.default_rng(13)
    x = gpustd.asarray(rng.standard_normal(N).astype(np.float32), device=device)
    step = gpustd.capture(lambda t: ((t * 2.0 + 1.0) * 3.0 - 0.5) * 0.25, copy_outputs=False)
    first = step(x).numpy()
    graph = next(iter(step._entries.values())).graph
    assert graph.scratch_bytes
    assert step.lend() == graph.scratch_bytes
    kept = [Buffer.from_numpy(np.full(b.size // 4, 5, np.float32), device=device)
            for b in _scratch(graph)]
    step.reclaim()
    assert graph.closed and not step._entries
    np.testing.assert_array_equal(step(x).numpy(), first)
    assert step.recordings == 2
    for k in kept:  # the new recording did not write into what the borrower holds
        np.testing.assert_array_equal(k.read(), np.full(len(k), 5, np.float32))


@pytest.mark.usefixtures("young_heap")  # conftest: a collection of its own objects
def test_a_lent_buffer_the_pool_drops_is_freed(device) -> None:
    """Emptying the pool while the scratch is lent frees it for real (the capture lets go of
    its references), and the next call records again with the same result."""
    rng = np.random.default_rng(14)
    x = gpustd.asarray(rng.standard_normal(N).astype(np.float32), device=device)
    step = gpustd.capture(lambda t: ((t * 2.0 + 1.0) * 3.0 - 0.5) * 0.25, copy_outputs=False)
    first = step(x).numpy()
    graph = next(iter(step._entries.values())).graph
    refs = [weakref.ref(b) for b in _scratch(graph)]
    step.lend()
    device.empty_pool()
    assert graph.closed and not device.ledger.lent
    gc.collect()
    assert all(r() is None for r in refs), "a dropped lent buffer is still alive"
    np.testing.assert_array_equal(step(x).numpy(), first)
    assert step.recordings == 2


def test_lending_twice_or_after_release_lends_nothing(device) -> None:
    rng = np.random.default_rng(15)
    graph, _, _ = _captured(device, rng)
    assert graph.lend() > 0
    assert graph.lend() == 0
    lent = set(graph._scratch)
    graph.release()
    assert lent and not device.ledger.lent & lent
    assert graph.lend() == 0 and not graph.reclaim()
    with pytest.raises(gpucore.CaptureError, match="released"):
        graph.replay()


@pytest.mark.usefixtures("young_heap")  # conftest: a collection of its own objects
def test_buffers_only_the_recording_needed_are_freed(device) -> None:
    """The capture keeps two buffers for _staircase's four temporaries; the other two served
    only the recording (the pool gives a buffer to its own size class alone): freed at once,
    not left idle in the pool."""
    rng = np.random.default_rng(16)
    x = Buffer.from_numpy(rng.standard_normal(N).astype(np.float32), device=device)
    gc.collect()
    device.empty_pool()
    with device.capture() as graph:
        out = staircase(x)
    assert len(graph._scratch) == 2
    assert device.memory_stats().pooled == 0
    graph.replay()
    np.testing.assert_array_equal(out.read(), staircase(x).read())


@pytest.mark.usefixtures("young_heap")  # conftest: a collection of its own objects
def test_a_lent_capture_dropped_unpins_and_forgets(device) -> None:
    """The device holds a lent capture weakly: dropping it gives its other buffers back and
    leaves no lent entry behind."""
    rng = np.random.default_rng(17)
    graph, _x, _out = _captured(device, rng)
    lent = set(graph._scratch)
    pinned = set(graph._buffers) - lent
    assert graph.lend() > 0 and lent <= device.ledger.lent
    del graph
    gc.collect()
    assert not lent & device.ledger.lent
    assert not pinned & device.ledger.pinned


def test_a_kept_value_takes_no_lent_buffer(device) -> None:
    """A device constant made while the scratch is lent (a decode's first use of a kept table,
    Device.keep) gets a buffer of its own, and keeps it; the capture takes its scratch back.
    Other work still borrows the lent buffers."""
    rng = np.random.default_rng(15)
    graph, x, out = _captured(device, rng)
    scratch = _scratch(graph)
    device.empty_pool()  # idle buffers of other tests' would serve the kept value first
    assert graph.lend() == graph.scratch_bytes
    kept = device.keep(("test", "kept while lent"), lambda: Buffer.from_numpy(
        np.full(scratch[0].size // 4, 7, np.float32), device=device))
    assert id(kept.wgpu) not in {id(b) for b in scratch}
    borrower = Buffer.from_numpy(np.full(scratch[0].size // 4, 9, np.float32), device=device)
    assert id(borrower.wgpu) in {id(b) for b in scratch}
    del borrower
    assert graph.reclaim()
    x.write(rng.standard_normal(N).astype(np.float32))
    graph.replay()
    np.testing.assert_array_equal(out.read(), staircase(x).read())
    np.testing.assert_array_equal(kept.read(), 7)
