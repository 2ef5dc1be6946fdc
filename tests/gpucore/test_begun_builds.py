"""Pipelines begun in the background (gpucore._pipelines' Pending, gpucore._stream's held
dispatches): a device that begins its builds computes what one building in place computes,
bit for bit, builds each kernel once, and a build's error is the same one clear error."""

from __future__ import annotations

import numpy as np
import pytest

import gpucore
import gpustd
from gpucore import ShaderCompileError, _stream
from gpucore._pipelines import Pending

pytestmark = pytest.mark.usefixtures("cache_home")  # conftest: a private cache directory

# A NaN for `scale` passes the module and fails the pipeline (a constant must be finite)
_NAN_SCALE = """
override scale: f32 = 1.0;
@group(0) @binding(0) var<storage, read_write> out: array<f32>;
@compute @workgroup_size(64)
fn main(@builtin(global_invocation_id) gid: vec3<u32>) {
    if (gid.x < arrayLength(&out)) { out[gid.x] = scale * f32(gid.x); }
}
"""


def _fresh(device: gpucore.Device, *, later: bool) -> gpucore.Device:
    if device.info.backend == "gl":
        pytest.skip("OpenGL builds in place (its contexts stay on one thread)")
    fresh = gpucore.Device(device.info)  # a pipeline cache of its own: every build cold
    fresh.builds_later = later
    return fresh


def _work(device: gpucore.Device) -> np.ndarray:
    rng = np.random.default_rng(5)
    a = gpustd.asarray(rng.standard_normal((37, 29)).astype(np.float32), device=device)
    b = gpustd.asarray(rng.standard_normal((29, 13)).astype(np.float32), device=device)
    x = gpustd.matmul(a, b)
    y = gpustd.exp(x * 0.25) + gpustd.sqrt(gpustd.abs(x))
    return gpustd.softmax(y, axis=-1).numpy()


def test_begun_builds_compute_the_same_with_the_same_kernels(device: gpucore.Device) -> None:
    in_place = _fresh(device, later=False)
    expected = _work(in_place)
    later = _fresh(device, later=True)
    x = gpustd.asarray(np.linspace(0, 1, 1001, dtype=np.float32), device=later)
    (x * 3.0 + 1.0)  # recorded, not read: its dispatch waits for its pipeline
    held = later.default_stream.held
    assert held and all(type(h[0]) is Pending for h in held), "the build was not begun"
    assert later.pipelines_created == 0
    np.testing.assert_array_equal(_work(later), expected)
    assert not later.default_stream.held
    assert later.pipelines_created == in_place.pipelines_created + 1  # once each, plus x*3+1
    again = later.pipelines_created
    np.testing.assert_array_equal(_work(later), expected)
    assert later.pipelines_created == again  # all built: nothing begun a second time


def _captured(device: gpucore.Device, values: list[np.ndarray]) -> list[np.ndarray]:
    x = gpustd.asarray(values[0], device=device)
    with device.capture() as graph:
        y = gpustd.tanh(x) * 2.0 + x
    got = [y.numpy()]
    for value in values[1:]:
        x.buffer.write(value)
        graph.replay()
        got.append(y.numpy())
    return got


def _interleaved(device: gpucore.Device) -> np.ndarray:
    """Dispatches with a host write, a copy, a clear and a large write among them, in an order
    where each matters: x = a * 2; x[:3] = write; y = copy of x; x zeroed; y + x + b * 3."""
    rng = np.random.default_rng(11)
    a = gpustd.asarray(rng.standard_normal(263).astype(np.float32), device=device)
    big = rng.standard_normal((1 << 18) + 5).astype(np.float32)  # past HELD_WRITE_MAX
    x = a * 2.0
    x.buffer.write(np.array([7.0, 8.0, 9.0], np.float32))
    y = gpustd.zeros(263, device=device)
    y.buffer.copy_from(x.buffer)
    x.buffer.fill_zero()
    b = gpustd.asarray(big, device=device)
    out = (y + x) + b[:263] * 3.0
    return out.numpy()


def test_writes_copies_and_clears_wait_behind_begun_builds(
        device: gpucore.Device, monkeypatch: pytest.MonkeyPatch) -> None:
    expected = _interleaved(_fresh(device, later=False))
    later = _fresh(device, later=True)
    held: list[str] = []
    hold = _stream.Stream.hold
    monkeypatch.setattr(_stream.Stream, "hold", lambda self, command: (
        held.append(command[0] if isinstance(command[0], str) else "dispatch"),
        hold(self, command))[1])
    np.testing.assert_array_equal(_interleaved(later), expected)
    assert {"dispatch", "copy", "clear"} <= set(held)  # the write is a held copy too
    assert held.count("copy") >= 2
    rng = np.random.default_rng(11)
    a = rng.standard_normal(263).astype(np.float32)
    big = rng.standard_normal((1 << 18) + 5).astype(np.float32)
    reference = a * 2
    reference[:3] = [7, 8, 9]
    np.testing.assert_allclose(expected, reference + big[:263] * 3, rtol=1e-6, atol=1e-6)


def test_a_capture_of_begun_builds_replays_the_same(device: gpucore.Device) -> None:
    rng = np.random.default_rng(7)
    values = [rng.standard_normal(515).astype(np.float32) for _ in range(3)]
    expected = _captured(_fresh(device, later=False), values)
    got = _captured(_fresh(device, later=True), values)
    for e, g in zip(expected, got):
        np.testing.assert_array_equal(g, e)
    np.testing.assert_allclose(got[2], np.tanh(values[2]) * 2 + values[2], rtol=1e-5, atol=1e-5)


def _failure(device: gpucore.Device) -> str:
    kernel = gpucore.Kernel(_NAN_SCALE, name="nan_scale.wgsl", constants={"scale": np.nan})
    out = gpucore.Buffer.zeros(64, device=device)
    with pytest.raises(ShaderCompileError) as caught:
        kernel.dispatch(1, out)
        out.read()
    return str(caught.value)


def test_a_failed_build_is_the_one_clear_error_it_is_in_place(device: gpucore.Device) -> None:
    in_place = _failure(_fresh(device, later=False))
    later = _fresh(device, later=True)
    # the reason, the first line, is the same (Dawn's asynchronous build gives fewer lines of
    # context below it: no "While calling CreateComputePipeline")
    reason = in_place.splitlines()[0]
    assert _failure(later).splitlines()[0] == reason and "nan_scale.wgsl" in reason
    assert _failure(later).splitlines()[0] == reason  # asked again: built again, the same
    # a broken module is refused at the dispatch itself, as in place
    broken = gpucore.Kernel("@compute @workgroup_size(1) fn main() { let x: f32 = ; }",
                            name="broken.wgsl")
    out = gpucore.Buffer.zeros(4, device=later)
    with pytest.raises(ShaderCompileError, match=r"broken\.wgsl"):
        broken.dispatch(1, device=later)
    assert out.read().tolist() == [0.0] * 4  # the device goes on working


def test_kernels_begun_ahead_are_taken_not_built_again(device: gpucore.Device) -> None:
    """What gpucore.Warmup does on Dawn: begin each listed kernel, the ops take them."""
    first = _fresh(device, later=True)
    first.pipelines.start_log()
    expected = _work(first)
    listed = first.pipelines.stop_log()
    assert len(listed) == first.pipelines_created >= 3
    second = _fresh(device, later=True)
    second.pipelines.start_log()
    for source, name, entry, constants in listed:
        gpucore.Kernel(source, name=name, entry=entry, constants=constants).build_ahead(
            second, begin=True)
    assert second.pipelines_created == 0 and second.pipelines.log == {}  # begun, not used
    second.pipelines.settle()
    assert second.pipelines_created == len(listed)
    np.testing.assert_array_equal(_work(second), expected)
    assert second.pipelines_created == len(listed)  # the work built none of its own
    assert len(second.pipelines.stop_log()) == len(listed)


_FILL = """
override scale: f32 = 1.0;
@group(0) @binding(0) var<storage, read_write> out: array<f32>;
@compute @workgroup_size(64)
fn main(@builtin(global_invocation_id) gid: vec3<u32>) {
    if (gid.x < arrayLength(&out)) { out[gid.x] = scale * f32(gid.x); }
}
"""


def test_begin_only_begins_the_kernels_and_computes_nothing(device: gpucore.Device) -> None:
    """A workload run under gpucore.begin_only begins its kernels' builds and records no
    dispatch; run for real afterwards it builds none and computes what it computes."""
    fresh = _fresh(device, later=True)
    expected = _work(device)
    out = gpustd.asarray(np.full(100, 7.0, np.float32), device=fresh)
    fill = gpucore.Kernel(_FILL, name="fill", constants={"scale": 2.0})
    pooled = fresh.pool.stats().pooled
    with gpucore.begin_only(fresh):
        fill.dispatch(fill.groups_for(100), out.buffer)
        _work(fresh)
        np.testing.assert_array_equal(out.numpy(), 7.0)
        with gpucore.begin_only(device):  # another device's: not this one's
            fill.dispatch(fill.groups_for(100), out.buffer)
        assert out.numpy()[3] == 6.0
        assert fresh.pool.stats().pooled > pooled
    assert fresh.pool.stats().pooled == pooled, "its activations were left in the pool"
    made = set(fresh.pipelines._done) | set(fresh.pipelines._begun)
    assert len(made) >= 5
    np.testing.assert_array_equal(_work(fresh), expected)
    assert set(fresh.pipelines._done) == made, "the real run built a kernel of its own"
