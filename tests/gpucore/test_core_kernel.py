"""Kernel: compilation, signature checks before any GPU work, batching, grid folding."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import session_devices
from hypothesis import given, settings
from hypothesis import strategies as st
from support import random_array

import gpucore
from gpucore import Buffer, Kernel

ADD = Kernel.load("core/vector_add")


def _add(device: gpucore.Device, a: np.ndarray, b: np.ndarray, kernel: Kernel = ADD) -> np.ndarray:
    out = Buffer.empty(a.size, a.dtype, device=device)
    kernel.dispatch(kernel.groups_for(a.size), Buffer.from_numpy(a, device=device),
                    Buffer.from_numpy(b, device=device), out, n=a.size)
    return out.read()


@settings(max_examples=15, deadline=None)
@given(n=st.one_of(st.sampled_from([0, 1, 2, 3, 13, 255, 256, 257, 1021, 65537]),
                   st.integers(0, 20_000)), seed=st.integers(0, 2**32 - 1))
def test_vector_add(device: gpucore.Device, n: int, seed: int) -> None:
    rng = np.random.default_rng(seed)
    a, b = random_array(rng, n), random_array(rng, n)
    np.testing.assert_array_equal(_add(device, a, b), a + b)


def test_vector_add_f16(f16_device: gpucore.Device) -> None:
    rng = np.random.default_rng(3)
    a, b = random_array(rng, 1001, np.float16), random_array(rng, 1001, np.float16)
    kernel = Kernel.load("core/vector_add", types={"T": "f16"})
    np.testing.assert_array_equal(_add(f16_device, a, b, kernel), a + b)


def test_grid_folding_past_65535_workgroups(device: gpucore.Device) -> None:
    # A 1-invocation workgroup makes the fold cheap to reach: 70,001 workgroups -> (x, y).
    kernel = Kernel.load("core/vector_add", constants={"WG": 1})
    assert kernel.workgroup_size == (1, 1, 1)
    rng = np.random.default_rng(4)
    a, b = random_array(rng, 70_001), random_array(rng, 70_001)
    np.testing.assert_array_equal(_add(device, a, b, kernel), a + b)


def test_dispatches_in_one_batch_run_in_order(device: gpucore.Device) -> None:
    # 5000 dependent dispatches: more than one params arena, so the batch splits itself.
    one = Buffer.from_numpy(np.ones(7, np.float32), device=device)
    x, y = Buffer.zeros(7, device=device), Buffer.empty(7, device=device)
    for _ in range(5000):
        ADD.dispatch(1, x, one, y, n=7)
        x, y = y, x
    np.testing.assert_array_equal(x.read(), np.full(7, 5000, np.float32))


def test_periodic_submits_keep_order(device: gpucore.Device,
                                     monkeypatch: pytest.MonkeyPatch) -> None:
    # On a real GPU a batch is submitted every few hundred dispatches so the GPU starts
    # early; force that here (every 7) and check a dependent chain with copies in between.
    monkeypatch.setattr(device.default_stream, "submit_every", 7)
    one = Buffer.from_numpy(np.ones(5, np.float32), device=device)
    x, y = Buffer.zeros(5, device=device), Buffer.empty(5, device=device)
    for i in range(100):
        ADD.dispatch(1, x, one, y, n=5)
        if i % 10 == 0:
            x.copy_from(y)  # a copy ends the open compute pass
            ADD.dispatch(1, x, one, y, n=5)
        x, y = y, x
    np.testing.assert_array_equal(x.read(), np.full(5, 110, np.float32))


def _submit_sizes(device: gpucore.Device, monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """The dispatches each later submit of `device` takes, appended as they are submitted."""
    sizes: list[int] = []
    flush = device._flush_stream

    def counted(stream: gpucore.Stream) -> None:
        if stream.encoder is not None:
            sizes.append(stream.pending)
        flush(stream)

    monkeypatch.setattr(device, "_flush_stream", counted)
    return sizes


def test_batches_start_small_after_a_wait(device: gpucore.Device,
                                         monkeypatch: pytest.MonkeyPatch) -> None:
    """After a read-back the GPU is idle: the next submits take 2, 4, 8, ... dispatches (here;
    32 on a GPU) up to the usual batch, so that it starts while Python records the rest; a
    replay's submits follow the same ramp. The results do not change."""
    monkeypatch.setattr(device.default_stream, "submit_every", 16)
    monkeypatch.setattr(device.default_stream, "first_submit", 2)
    sizes = _submit_sizes(device, monkeypatch)
    one = Buffer.from_numpy(np.ones(5, np.float32), device=device)
    x, y = Buffer.zeros(5, device=device), Buffer.empty(5, device=device)

    def chain(count: int) -> Buffer:
        nonlocal x, y
        for _ in range(count):
            ADD.dispatch(1, x, one, y, n=5)
            x, y = y, x
        return x

    x.read()
    sizes.clear()
    np.testing.assert_array_equal(chain(40).read(), np.full(5, 40, np.float32))
    assert sizes == [2, 4, 8, 16, 10]  # the last part submitted by the read
    with device.capture() as graph:
        chain(30)
    x.read()
    sizes.clear()
    graph.replay()
    np.testing.assert_array_equal(x.read(), np.full(5, 100, np.float32))
    assert sizes == [2, 4, 8, 16]


def test_batches_also_submit_after_a_share_of_host_time(device: gpucore.Device,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    """Eager ops record slowly (~100 us of Python each): a batch is also submitted once it has
    been recorded for first_submit_s, doubling with each submit up to SUBMIT_AFTER_MAX_S, so
    that the GPU is not left waiting for a count of them. Here a clock that ticks 1 ms a
    reading, 1 ms first, 4 ms at most: 1, 2, 4, 4, ... dispatches a submit."""
    import time

    stream = device.default_stream
    monkeypatch.setattr(stream, "submit_every", 1 << 62)
    monkeypatch.setattr(stream, "first_submit", 1 << 62)
    monkeypatch.setattr(stream, "first_submit_s", 0.001)
    monkeypatch.setattr(stream, "submit_after_max_s", 0.004)
    one = Buffer.from_numpy(np.ones(5, np.float32), device=device)
    x, y = Buffer.zeros(5, device=device), Buffer.empty(5, device=device)
    x.read()
    ticks = iter(range(1, 1000))
    sizes = _submit_sizes(device, monkeypatch)
    monkeypatch.setattr(time, "perf_counter", lambda: next(ticks) * 0.001)
    for _ in range(15):
        ADD.dispatch(1, x, one, y, n=5)
        x, y = y, x
    monkeypatch.undo()
    assert sizes == [1, 2, 4, 4, 4]
    np.testing.assert_array_equal(x.read(), np.full(5, 15, np.float32))


def test_write_is_ordered_after_recorded_dispatches(device: gpucore.Device) -> None:
    a = Buffer.from_numpy(np.full(5, 2, np.float32), device=device)
    out = Buffer.empty(5, device=device)
    ADD.dispatch(1, a, a, out, n=5)
    a.write(np.full(5, 100, np.float32))
    np.testing.assert_array_equal(out.read(), np.full(5, 4, np.float32))


def test_wrong_element_type_names_the_binding(device: gpucore.Device) -> None:
    ints = Buffer.from_numpy(np.arange(4, dtype=np.int32), device=device)
    floats = Buffer.empty(4, device=device)
    with pytest.raises(TypeError, match=r"binding 1 'b'.*f32.*int32"):
        ADD.dispatch(1, floats, ints, floats.__class__.empty(4, device=device), n=4)


def test_argument_count_params_and_access_are_checked(device: gpucore.Device) -> None:
    a, out = Buffer.empty(4, device=device), Buffer.empty(4, device=device)
    with pytest.raises(gpucore.BindingError, match=r"takes 3 buffers \(a, b, out\), got 2"):
        ADD.dispatch(1, a, out, n=4)
    with pytest.raises(gpucore.BindingError, match=r"missing \['n'\]"):
        ADD.dispatch(1, a, a, out)
    with pytest.raises(gpucore.BindingError, match=r"unexpected \['m'\]"):
        ADD.dispatch(1, a, a, out, n=4, m=1)
    for bad in (-1, 2.5, None, "4", float("nan")):  # the last three raised bare errors
        with pytest.raises(gpucore.BindingError, match=r"param n: u32 = .* out of range"):
            ADD.dispatch(1, a, a, out, n=bad)
    scale = Kernel("struct Params { s: f32 }\n@group(0) @binding(0) var<storage, read_write> "
                   "o: array<f32>;\n@group(0) @binding(1) var<uniform> params: Params;\n"
                   "@compute @workgroup_size(1) fn main() { o[0] = params.s; }", name="scale")
    for bad in (None, "x", 1e300):  # struct.error / OverflowError before
        with pytest.raises(gpucore.BindingError, match=r"param s: f32 = .* not a float32"):
            scale.dispatch(1, out, s=bad)
    weights = Buffer.from_numpy(np.ones(4, np.float32), device=device, read_only=True)
    with pytest.raises(gpucore.BindingError, match="read_only"):
        ADD.dispatch(1, a, a, weights, n=4)
    with pytest.raises(gpucore.BindingError, match="may not also be bound"):
        ADD.dispatch(1, out, a, out, n=4)
    with pytest.raises(TypeError, match="needs a Buffer"):
        ADD.dispatch(1, np.ones(4, np.float32), a, out, n=4)


def test_device_argument_must_be_the_buffers_device() -> None:
    # else wgpu's validation error ("Device ... doesn't match Device ...") was all one got
    devices = session_devices()
    if len(devices) < 2:
        pytest.skip("needs two adapters")
    first, second = devices[:2]
    a = Buffer.empty(4, device=first)
    with pytest.raises(gpucore.BindingError, match=r"device= is .* but the buffers are on"):
        ADD.dispatch(1, a, a, Buffer.empty(4, device=first), n=4, device=second)


def test_buffer_smaller_than_one_element_of_the_binding(device: gpucore.Device) -> None:
    # wgpu refused it only when the batch was submitted, losing the batch's other work
    fill = Kernel("@group(0) @binding(0) var<storage, read_write> o: array<vec4<f32>>;\n"
                  "@compute @workgroup_size(1) fn main() { o[0] = vec4<f32>(1.0); }", name="fill")
    with pytest.raises(gpucore.BindingError, match="at least 16 bytes"):
        fill.dispatch(1, Buffer.empty(3, device=device))
    fill.dispatch(0, Buffer.empty(3, device=device))  # nothing recorded: nothing to refuse
    out = Buffer.zeros(4, device=device)
    fill.dispatch(1, out)
    np.testing.assert_array_equal(out.read(), np.ones(4, np.float32))


def test_binding_over_the_device_limit(device: gpucore.Device,
                                       monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(device.limits, "max-storage-buffer-binding-size", 64)
    big = Buffer.empty(17, device=device)  # 68 bytes
    with pytest.raises(gpucore.DeviceLimitError, match="max-storage-buffer-binding-size"):
        ADD.dispatch(1, big, big, Buffer.empty(17, device=device), n=17)


def test_syntax_error_reports_shader_line_and_column(device: gpucore.Device) -> None:
    source = gpucore.shader_source("core/vector_add").replace("a[i] + b[i];", "a[i] + b[i]")
    # naga points at the token after the missing `;`: the `}` on the next line.
    lines = source.splitlines()
    line = next(i for i, text in enumerate(lines, 1) if text.strip().startswith("out[i] =")) + 1
    with pytest.raises(gpucore.ShaderCompileError) as info:
        Kernel(source, name="core/vector_add.wgsl").compile(device)
    assert info.value.shader == "core/vector_add.wgsl" and info.value.line == line
    assert f"core/vector_add.wgsl:{line}:" in str(info.value) and "expected" in str(info.value)


def test_type_error_in_shader_is_a_compile_error(device: gpucore.Device) -> None:
    source = gpucore.shader_source("core/vector_add").replace("a[i] + b[i]", "a[i] + 1u")
    with pytest.raises(gpucore.ShaderCompileError, match=r"vector_add\.wgsl:"):
        Kernel(source, name="core/vector_add.wgsl").compile(device)


@pytest.mark.nodevice
def test_kernel_construction_errors() -> None:
    with pytest.raises(FileNotFoundError, match="no shader"):
        Kernel.load("core/no_such_kernel")
    with pytest.raises(gpucore.BindingError, match="no override constant"):
        Kernel.load("core/vector_add", constants={"TILE": 4})
    # storage bindings 0..n-1 and the params struct n: what compile() lays out
    source = gpucore.shader_source("core/vector_add")
    for old, new in (("@binding(3) var<uniform>", "@binding(5) var<uniform>"),
                     ("@binding(2) var<storage", "@binding(4) var<storage")):
        with pytest.raises(gpucore.BindingError, match=r"numbered 0\.\.n-1.*@binding"):
            Kernel(source.replace(old, new), name="core/vector_add.wgsl")
    with pytest.raises(ValueError, match="no `alias U"):
        Kernel.load("core/vector_add", types={"U": "f16"})


def test_missing_entry_point(device: gpucore.Device) -> None:
    with pytest.raises(gpucore.BindingError, match="no @compute entry point 'other'"):
        Kernel.load("core/vector_add", entry="other").compile(device)


def test_workgroup_size_from_an_override_is_held_to_the_limits(device: gpucore.Device) -> None:
    # wgpu checks only a literal @workgroup_size; lavapipe then ran 2048 invocations a group
    limit = device.limits["max-compute-invocations-per-workgroup"]
    kernel = Kernel.load("core/vector_add", constants={"WG": 2 * limit})
    with pytest.raises(gpucore.DeviceLimitError, match="workgroup size"):
        kernel.compile(device)


@pytest.mark.nodevice
def test_type_specialization_ignores_comments() -> None:
    from gpucore import _wgsl

    source = "// alias T = f32; (documentation)\nalias T = f32;\n"
    out = _wgsl.specialize_types(source, {"T": "f16"}, "x.wgsl")
    assert "// alias T = f32; (documentation)" in out and "\nalias T = f16;" in out


@pytest.mark.nodevice
def test_cached_takes_numpy_dtypes_and_generated_builds_once() -> None:
    """Kernel.cached: a numpy dtype is its WGSL scalar, one kernel for either spelling;
    Kernel.generated: the generator runs once per distinct arguments."""
    by_dtype = Kernel.cached("core/vector_add", types={"T": np.float16})
    assert by_dtype is Kernel.cached("core/vector_add", types={"T": "f16"})
    assert by_dtype is Kernel.cached("core/vector_add", types={"T": np.dtype("float16")})
    assert "alias T = f16;" in by_dtype.source
    calls = []

    def generate(width: int) -> str:
        calls.append(width)
        return Kernel.load("core/vector_add").source.replace("= 256u", f"= {width}u")

    first = Kernel.generated("test/generated", generate, 32)
    assert Kernel.generated("test/generated", generate, 32) is first
    assert Kernel.generated("test/generated", generate, 16) is not first
    assert calls == [32, 16] and first.name == "test/generated"
    assert first.workgroup_size == (32, 1, 1)
