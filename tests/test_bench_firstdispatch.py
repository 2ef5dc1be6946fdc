"""bench.firstdispatch's tracer: one record per kernel and device, at its first dispatch only,
and the work's results unchanged by the waits around it."""

from __future__ import annotations

import numpy as np
import pytest

import gpucore

if not gpucore.devices():
    pytest.skip("no GPU adapter present: install mesa-vulkan-drivers (see README)",
                allow_module_level=True)

_FILL = """
override scale: f32 = 1.0;
@group(0) @binding(0) var<storage, read_write> out: array<f32>;
@compute @workgroup_size(64)
fn main(@builtin(global_invocation_id) gid: vec3<u32>) {
    if (gid.x < arrayLength(&out)) { out[gid.x] += scale * f32(gid.x); }
}
"""


def test_each_kernels_first_dispatch_is_timed_once(first_device: gpucore.Device) -> None:
    from bench import firstdispatch

    kernels = [gpucore.Kernel(_FILL, name="fill.wgsl", constants={"scale": s}) for s in (2, 3)]
    out = gpucore.Buffer.from_numpy(np.zeros(100, np.float32), device=first_device)

    def run() -> np.ndarray:
        for kernel in (*kernels, kernels[0]):
            kernel.dispatch(2, out)
        return out.read()

    original = gpucore.Kernel.dispatch
    result, records = firstdispatch.traced(run)
    assert gpucore.Kernel.dispatch is original
    assert np.array_equal(result, 7 * np.arange(100, dtype=np.float32))
    assert [(r["label"], r["constants"]) for r in records] == [
        ("fill:main", {"scale": 2}), ("fill:main", {"scale": 3})]
    assert all(r["cpu_s"] >= 0 and r["wall_s"] >= 0 and r["grid"] == 2 for r in records)
