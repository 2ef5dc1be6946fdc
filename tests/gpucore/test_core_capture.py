"""Capture and replay (gpucore Device.capture, gpustd.capture) and the bind-group cache."""

from __future__ import annotations

import asyncio
import gc
import weakref

import numpy as np
import pytest
from support import staircase

import gpucore
import gpustd
from gpucore import Buffer, Kernel


@pytest.mark.usefixtures("young_heap")  # conftest: a collection of its own objects
def test_dropped_buffers_are_not_kept_alive_by_bind_groups(device) -> None:
    kernel = Kernel.cached("core/vector_add")
    rng = np.random.default_rng(0)
    refs = []
    for n in (1000, 3000, 70_000):
        a, b = (Buffer.from_numpy(rng.standard_normal(n).astype(np.float32), device=device)
                for _ in range(2))
        out = Buffer.empty(n, device=device)
        kernel.dispatch(kernel.groups_for(n), a, b, out, n=n)
        np.testing.assert_array_equal(out.read(), a.read() + b.read())
        refs += [weakref.ref(x.wgpu) for x in (a, b, out)]
        del a, b, out
    gc.collect()
    device.empty_pool()
    gc.collect()
    alive = sum(r() is not None for r in refs)
    assert alive == 0, f"{alive} of {len(refs)} freed wgpu buffers are still alive"


# -- device-level capture --------------------------------------------------------------
ADD = Kernel.cached("core/vector_add")
N = 1237  # not a multiple of the workgroup size


def _chain(a: Buffer, b: Buffer, scale: Buffer) -> Buffer:
    """Dispatches, a copy, a clear and a host-written constant, with temporaries freed
    midway (so the pool reuses them inside the capture)."""
    dev = a.device
    t1 = Buffer.empty(N, device=dev)
    ADD.dispatch(ADD.groups_for(N), a, b, t1, n=N)
    const = Buffer.from_numpy(np.linspace(-1, 1, N, dtype=np.float32), device=dev)
    t2 = Buffer.empty(N, device=dev)
    ADD.dispatch(ADD.groups_for(N), t1, const, t2, n=N)
    del t1
    t3 = Buffer.zeros(N, device=dev)
    t3.copy_from(t2)
    out = Buffer.empty(N, device=dev)
    ADD.dispatch(ADD.groups_for(N), t3, scale, out, n=N)
    return out


def _random(rng: np.random.Generator) -> np.ndarray:
    return rng.standard_normal(N).astype(np.float32)


def test_replay_matches_eager_bitwise_and_creates_nothing(device) -> None:
    rng = np.random.default_rng(1)
    a, b, s = (Buffer.from_numpy(_random(rng), device=device) for _ in range(3))
    with device.capture() as graph:
        out = _chain(a, b, s)
    assert graph.dispatches == 3
    first = out.read()
    np.testing.assert_array_equal(first, _chain(a, b, s).read())
    for _ in range(3):
        new = [_random(rng) for _ in range(3)]
        for buf, data in zip((a, b, s), new):
            buf.write(data)
        eager = _chain(a, b, s).read()  # the un-captured call on the same inputs
        counts = (device.buffers_created, device.pipelines_created, device.bind_groups_created)
        graph.replay()
        got = out.read()
        assert (device.buffers_created, device.pipelines_created,
                device.bind_groups_created) == counts
        np.testing.assert_array_equal(got, eager)
        assert not np.array_equal(got, first)  # the inputs did change the result


def test_captured_buffers_are_not_handed_out_again(device) -> None:
    rng = np.random.default_rng(2)
    a, b, s = (Buffer.from_numpy(_random(rng), device=device) for _ in range(3))
    with device.capture() as graph:
        out = _chain(a, b, s)
    expected = out.read()
    # Temporaries of the capture went back to the pool; none may be reused while the
    # capture lives, or a replay would overwrite someone else's data.
    others = [Buffer.from_numpy(np.full(N, 7, np.float32), device=device) for _ in range(6)]
    assert not {id(o.wgpu) for o in others} & set(graph._buffers)
    graph.replay()
    np.testing.assert_array_equal(out.read(), expected)
    for o in others:
        np.testing.assert_array_equal(o.read(), np.full(N, 7, np.float32))
    captured = set(graph._buffers)
    graph.release()
    with pytest.raises(gpucore.CaptureError, match="released"):
        graph.replay()
    # Released, the capture's temporaries (owned by no Buffer) are pooled again, not leaked.
    idle = {id(b) for bufs in device.pool._free.values() for b in bufs}
    assert idle & captured


def test_read_back_inside_a_capture_raises(device) -> None:
    a = Buffer.from_numpy(np.arange(N, dtype=np.float32), device=device)
    with pytest.raises(gpucore.CaptureError, match="read-back inside a capture"):
        with device.capture():
            a.read()
    with pytest.raises(gpucore.CaptureError, match="read-back inside a capture"):
        with device.capture():
            asyncio.run(a.read_async())
    with pytest.raises(gpucore.CaptureError, match="do not nest") as nested:
        with device.capture(), device.capture():
            pass
    assert "replay the inner" not in str(nested.value)  # what replay_ops refuses in a capture
    np.testing.assert_array_equal(a.read(), np.arange(N, dtype=np.float32))  # usable again


# -- gpustd.capture ----------------------------------------------------------------------
def _block(x: gpustd.Tensor, w: gpustd.Tensor, *, scale: float) -> dict:
    h = gpustd.matmul(x, w) * scale
    return {"probs": gpustd.softmax(h, axis=-1), "pair": (gpustd.silu(h), gpustd.sum(h))}


def _leaves(out: dict) -> list[np.ndarray]:
    return [out["probs"].numpy(), out["pair"][0].numpy(), out["pair"][1].numpy()]


def test_gpustd_capture_replays_bitwise_and_recaptures_on_new_signatures(device) -> None:
    rng = np.random.default_rng(3)
    step = gpustd.capture(_block)

    def args(m: int, k: int = 19, dtype: type = np.float32) -> tuple:
        return (gpustd.asarray(rng.standard_normal((m, k)), dtype=dtype, device=device),
                gpustd.asarray(rng.standard_normal((k, 13)), dtype=dtype, device=device))

    for m, scale in [(37, 0.5), (37, 0.5), (37, 0.5), (21, 0.5), (37, 2.0), (21, 0.5)]:
        x, w = args(m)
        got = _leaves(step(x, w, scale=scale))
        for g, e in zip(got, _leaves(_block(x, w, scale=scale))):
            np.testing.assert_array_equal(g, e)
    # shapes (37, 21) x static scale (0.5, 2.0): three signatures, recorded once each
    assert (step.recordings, step.replays) == (3, 3)

    x, w = args(21)
    del got
    before = (device.buffers_created, device.pipelines_created, device.bind_groups_created)
    for _ in range(2):  # new data in the same input tensors; fresh outputs come from the pool
        x.buffer.write(rng.standard_normal(x.shape).astype(np.float32))
        got = step(x, w, scale=0.5)["probs"].numpy()
    assert (device.buffers_created, device.pipelines_created,
            device.bind_groups_created) == before
    np.testing.assert_array_equal(got, _block(x, w, scale=0.5)["probs"].numpy())
    with pytest.raises(TypeError, match="neither a Tensor nor hashable"):
        step(x, w, scale=np.ones(2))


def test_gpustd_capture_dtype_change_records_again(device) -> None:
    rng = np.random.default_rng(4)
    double = gpustd.capture(lambda a, b: a + b + b, copy_outputs=False)
    for dtype in (np.float32, np.int32, np.float32):
        a, b = (gpustd.asarray(rng.integers(-50, 50, 300), dtype=dtype, device=device)
                for _ in range(2))
        got = double(a, b)
        assert got.dtype == dtype
        np.testing.assert_array_equal(got.numpy(), a.numpy() + 2 * b.numpy())
    assert (double.recordings, double.replays) == (2, 1)
    with pytest.raises(TypeError, match="no Tensor argument"):
        double(1, 2)


def test_captured_unet_step_equals_eager(first_device) -> None:
    """A whole (tiny) UNet step replayed. On the first adapter only: what a replay does is
    host logic, which the small captures above check on every adapter."""
    # sd_tiny, not tests.sd_tiny: ultralytics (a test reference) installs a top-level `tests`
    from sd_tiny import state_dict, tiny_unet

    from diffusion.models import UNet2DConditionModel

    device = first_device
    reference = tiny_unet(layers_per_block=1)
    unet = UNet2DConditionModel(dict(reference.config), device=device)
    unet.load_state_dict(state_dict(reference))
    rng = np.random.default_rng(5)

    def inputs() -> tuple:
        return (gpustd.asarray(rng.standard_normal((2, 4, 8, 10)), device=device),
                gpustd.asarray(rng.uniform(0, 999, 2), device=device),
                gpustd.asarray(rng.standard_normal((2, 77, 32)), device=device))

    step = gpustd.capture(unet.forward)
    recorded = step(*inputs()).numpy()
    sample, timesteps, context = inputs()
    counts = (device.buffers_created, device.pipelines_created, device.bind_groups_created)
    replayed = step(sample, timesteps, context).numpy()
    assert (device.buffers_created, device.pipelines_created,
            device.bind_groups_created) == counts
    assert (step.recordings, step.replays) == (1, 1)
    np.testing.assert_array_equal(replayed, unet(sample, timesteps, context).numpy())
    assert not np.array_equal(replayed, recorded)  # the new inputs (timestep too) did count


@pytest.mark.parametrize("native", [True, False], ids=["c-calls", "wgpu-py-calls"])
def test_replay_submits_in_parts_like_eager(device, monkeypatch: pytest.MonkeyPatch,
                                            native: bool) -> None:
    # On a real GPU a long replay is submitted every few hundred dispatches; force every 2.
    # Both encoding paths: wgpu-native's C functions, and wgpu-py's methods (other runtimes).
    rng = np.random.default_rng(6)
    a, b, s = (Buffer.from_numpy(_random(rng), device=device) for _ in range(3))
    with device.capture() as graph:
        out = _chain(a, b, s)
    monkeypatch.setattr(device.default_stream, "submit_every", 2)
    monkeypatch.setattr(gpucore._capture, "NATIVE_REPLAY", native)
    a.write(_random(rng))
    graph.replay()
    got = out.read()
    monkeypatch.undo()
    np.testing.assert_array_equal(got, _chain(a, b, s).read())


def test_temporaries_share_buffers_by_lifetime(device) -> None:
    """gpucore._capture_share: the capture keeps one buffer for temporaries whose uses do not
    overlap (the largest hosts the smaller ones), and its replay is bitwise the eager call."""
    rng = np.random.default_rng(7)
    n = 20_011
    x = Buffer.from_numpy(rng.standard_normal(n).astype(np.float32), device=device)
    with device.capture() as graph:
        out = staircase(x)
    # Each temporary is read while the next is written: two buffers (the two largest) take
    # the four, where the pool alone kept one per size class.
    classes = [gpucore._pool.size_class(n * k * 4, device.limits["max-buffer-size"])
               for k in (8, 4)]
    temporaries = set(graph._buffers) - {id(x.wgpu), id(out.wgpu)}
    assert sorted(graph._buffers[k].size for k in temporaries) == sorted(classes)
    x.write(rng.standard_normal(n).astype(np.float32))
    graph.replay()
    np.testing.assert_array_equal(out.read(), staircase(x).read())


def test_temporaries_past_the_pool_limit_are_shared_and_counted(
        device, monkeypatch: pytest.MonkeyPatch) -> None:
    """A full pool keeps the open capture's temporaries all the same: dropped, they would
    live on in the recording, neither counted (memory_stats) nor shared by lifetime."""
    monkeypatch.setattr(device.pool, "limit", 0)
    rng = np.random.default_rng(9)
    n = 20_011
    x = Buffer.from_numpy(rng.standard_normal(n).astype(np.float32), device=device)
    with device.capture() as graph:
        out = staircase(x)
    temporaries = set(graph._buffers) - {id(x.wgpu), id(out.wgpu)}
    assert len(temporaries) == 2  # the four shared by two, as with room in the pool
    assert temporaries <= device.ledger._orphans.keys()  # the capture's, counted in use
    x.write(rng.standard_normal(n).astype(np.float32))
    graph.replay()
    np.testing.assert_array_equal(out.read(), staircase(x).read())
    graph.release()


def test_a_buffer_held_before_the_capture_is_not_shared(device) -> None:
    """A Buffer made before the capture and dropped inside it holds what every replay reads
    again: no later temporary may be placed in it, large as it is."""
    rng = np.random.default_rng(8)
    n = 4099
    x = Buffer.from_numpy(rng.standard_normal(n).astype(np.float32), device=device)
    held_data = rng.standard_normal(n * 8).astype(np.float32)
    box = [Buffer.from_numpy(held_data, device=device)]

    def call() -> Buffer:
        t = Buffer.empty(n * 4, device=device)
        ADD.dispatch(ADD.groups_for(n), box.pop(), x, t, n=n)  # the held Buffer dies here
        for size in (n * 2, n):  # smaller temporaries, made after: the held one would fit them
            u = Buffer.empty(size, device=device)
            ADD.dispatch(ADD.groups_for(n), t, x, u, n=n)
            t = u
        return t

    with device.capture() as graph:
        out = call()
    first = out.read()
    graph.replay()
    graph.replay()
    np.testing.assert_array_equal(out.read(), first)
    box.append(Buffer.from_numpy(held_data, device=device))
    np.testing.assert_array_equal(first, call().read())
