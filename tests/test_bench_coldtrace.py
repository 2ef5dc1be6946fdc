"""bench.coldtrace's kernels tool on a two-kernel list in gpucore.Warmup's file format: each
kernel built in place with its time, or begun as a picture begins it, and the process's
samples (threads, CPU time) beside them."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

import gpucore

if not gpucore.devices():
    pytest.skip("no GPU adapter present: install mesa-vulkan-drivers (see README)",
                allow_module_level=True)

pytestmark = pytest.mark.usefixtures("cache_home")  # conftest: a private cache directory

_SCALE = """
override scale: f32 = 1.0;
@group(0) @binding(0) var<storage, read_write> out: array<f32>;
@compute @workgroup_size(64)
fn main(@builtin(global_invocation_id) gid: vec3<u32>) {
    if (gid.x < arrayLength(&out)) { out[gid.x] = scale * f32(gid.x); }
}
"""


@pytest.mark.parametrize("mode", ["serial", "gpucore"])
def test_a_lists_kernels_are_built_and_timed(tmp_path: Path, mode: str) -> None:
    from bench import coldtrace

    kernels = [{"source": _SCALE, "name": "scale.wgsl", "entry": "main",
                "constants": {"scale": value}} for value in (2.0, 3.0)]
    listed = tmp_path / "kernels-0.json"
    listed.write_text(json.dumps({"key": {}, "payload": {"kernels": kernels}}))
    out = tmp_path / "out.json"
    coldtrace.kernels(str(listed), str(out), mode=mode, order=None)
    found = json.loads(out.read_text())
    assert found["mode"] == mode and found["wall_s"] > 0
    if mode == "serial":
        assert [k["index"] for k in found["kernels"]] == [0, 1]
        assert all(k["build_s"] >= 0 and k["source_chars"] == len(_SCALE)
                   for k in found["kernels"])
    assert all(len(s) == 3 for s in found["samples"])
    if mode == "gpucore":  # begun and waited for on the default device, as a picture does
        device = gpucore.default_device()
        for value in (2.0, 3.0):
            kernel = gpucore.Kernel(_SCALE, name="scale.wgsl", constants={"scale": value})
            assert kernel._key in device.pipelines
