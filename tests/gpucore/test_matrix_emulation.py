"""Subgroup matrices emulated in plain WGSL (gpucore/_matrix_emulation.py): the lowering on a
tiny kernel against float64, its matrices held and read in place, and what it refuses. The
matrix-unit ops' own tests run under it on CI (conftest.matrix_device)."""

from __future__ import annotations

import re

import numpy as np
import pytest

import gpucore
from gpucore import _matrix_emulation, _runtime
from gpucore._wgsl import strip_comments

# Two 16 x 16 x 16 products into one result loaded from memory: A (32 x 16, row-major) times
# B (16 x 32, stored transposed: loaded column-major) slice by slice, plus C; stored
# column-major with a stride, so every address form and lane share is exercised.
KERNEL = """enable f16;
enable subgroups;
enable chromium_experimental_subgroup_matrix;
@group(0) @binding(0) var<storage, read> a: array<f16>;
@group(0) @binding(1) var<storage, read> b: array<f16>;
@group(0) @binding(2) var<storage, read> c: array<f32>;
@group(0) @binding(3) var<storage, read_write> out: array<f32>;
alias Left = subgroup_matrix_left<f16, 16, 16>;

@compute @workgroup_size(64)
fn main(@builtin(subgroup_id) sg: u32, @builtin(subgroup_invocation_id) lane: u32) {
  // subgroup sg: rows 16 sg.. of A and C, columns 0-15 (K 0-15) then 16-31 (K 16-31)
  var acc = subgroupMatrixLoad<subgroup_matrix_result<f32, 16, 16>>(&c, sg * 256u, false, 16u);
  let a0 = subgroupMatrixLoad<subgroup_matrix_left<f16, 16, 16>>(&a, sg * 512u, false, 32u);
  let b0 = subgroupMatrixLoad<subgroup_matrix_right<f16, 16, 16>>(&b, 0u, true, 32u);
  acc = subgroupMatrixMultiplyAccumulate(a0, b0, acc);
  let a1 = subgroupMatrixLoad<subgroup_matrix_left<f16, 16, 16>>(&a, sg * 512u + 16u, false,
                                                                   32u);
  let b1 = subgroupMatrixLoad<subgroup_matrix_right<f16, 16, 16>>(&b, 16u, true, 32u);
  acc = subgroupMatrixMultiplyAccumulate(a1, b1, acc);
  subgroupMatrixStore(&out, sg * 16u, acc, true, 40u);
}
"""
# The same with a barrier between the first loads and their product: those two are held,
# the second pair still read in place.
BARRIER = KERNEL.replace("  acc = subgroupMatrixMultiplyAccumulate(a0",
                         "  workgroupBarrier();\n  acc = subgroupMatrixMultiplyAccumulate(a0")


@pytest.mark.nodevice
def test_lowering_is_plain_wgsl_with_the_line_numbers_kept() -> None:
    assert _matrix_emulation.uses_matrices(KERNEL)
    assert not _matrix_emulation.uses_matrices("// enable chromium_experimental_subgroup_matrix;")
    lowered = _matrix_emulation.lower(KERNEL)
    assert not re.search(r"subgroup_?[Mm]atrix|subgroups|@builtin\(subgroup", lowered)
    assert lowered.splitlines()[:3] == ["enable f16;", "", ""]
    code = lowered.split("// Subgroup matrices emulated")[0]
    assert code.count("\n") == KERNEL.count("\n")
    main = code.splitlines()[10]
    assert "@builtin(local_invocation_index) sgm_index: u32" in main
    assert "let sg = sgm_index / 32u;" in code and "let lane = sgm_index % 32u;" in code
    # one load or view function per (buffer, type), pointer-free
    assert len(re.findall(r"fn sgm_view_a_", lowered)) == 1
    assert "fn sgm_load_a_" not in lowered
    assert "fn sgm_store_out_SgMatrixResult_f32_16x16(" in lowered
    assert _runtime.adapt_source("wgpu", KERNEL) == lowered
    assert _runtime.adapt_source("dawn", KERNEL) == KERNEL


@pytest.mark.nodevice
@pytest.mark.parametrize(("edit", "viewed"), [
    ({}, {"a0", "b0", "a1", "b1"}),
    ({"  acc = subgroupMatrixMultiplyAccumulate(a0": "  workgroupBarrier();\n"
                                                   "  acc = subgroupMatrixMultiplyAccumulate(a0"},
     {"a1", "b1"}),
    # a call of the shader's own function could change the memory (before a1's product: a1
    # held, and b1 with it, as a product reads both operands in place or neither); another
    # array's matrix store cannot, an access of the array itself can; a `var` is held; so is
    # a matrix used but as an operand
    ({"  let b1": "  f();\n  let b1", "@compute": "fn f() {}\n@compute"}, {"a0", "b0"}),
    ({"  let b1": "  subgroupMatrixStore(&out, 0u, acc, false, 16u);\n  let b1"},
     {"a0", "b0", "a1", "b1"}),
    ({"  acc = subgroupMatrixMultiplyAccumulate(a0": "  let z = a[0];\n"
                                                   "  acc = subgroupMatrixMultiplyAccumulate(a0"},
     {"a1", "b1"}),
    ({"let a1 = ": "var a1 = "}, {"a0", "b0"}),
    # a loop's later iterations run past the last use: a store to the array after it counts
    ({"  acc = subgroupMatrixMultiplyAccumulate(a1, b1, acc);":
      "  for (var i = 0u; i < 2u; i++) {\n    acc = subgroupMatrixMultiplyAccumulate(a1, b1, "
      "acc);\n    b[0] = 0.0h;\n  }",
      "var<storage, read> b: array<f16>": "var<storage, read_write> b: array<f16>"},
     {"a0", "b0"}),
    ({"  subgroupMatrixStore(&out": "  let q = a0;\n  subgroupMatrixStore(&out"}, {"a1", "b1"}),
])
def test_products_read_in_place_only_what_nothing_changes(edit: dict[str, str],
                                                          viewed: set[str]) -> None:
    source = KERNEL
    for old, new in edit.items():
        source = source.replace(old, new, 1)
    assert set(_matrix_emulation._viewed(strip_comments(source))) == viewed
    lowered = _matrix_emulation.lower(source)
    assert ("fn sgm_mma_a_" in lowered) == bool(viewed)
    assert ("fn sgm_mma_SgMatrixLeft" in lowered) == (viewed != {"a0", "b0", "a1", "b1"})


@pytest.mark.nodevice
@pytest.mark.parametrize(("line", "match"), [
    ("let x = subgroupMatrixScalarMultiply(a0, 2.0h);", "ScalarMultiply is not emulated"),
    ("let y = subgroupMatrixLoad<Left>(&a, 0u, false, 16u);", "subgroupMatrixLoad<Left>"),
    ("let z = subgroupMatrixLoad<subgroup_matrix_left<f16, 16, 16>>(&a[4], 0u, false, 16u);",
     "pointers to a whole"),
    ("subgroupMatrixStore(&out, 0u, a0, false, 16u);", "stores of result matrices only"),
    ("var q: subgroup_matrix_result<u32, 16, 16>;", "components u32"),
    ("var r: subgroup_matrix_result<f32, 8, 16>;", "is not emulated"),
])
def test_what_it_does_not_emulate_is_refused_by_name(line: str, match: str) -> None:
    source = KERNEL.replace("  subgroupMatrixStore(&out", f"  {line}\n  subgroupMatrixStore(&out")
    with pytest.raises(gpucore.GpuError, match=match):
        _matrix_emulation.lower(source)


@pytest.mark.nodevice
def test_configs_need_f16_and_subgroups(monkeypatch: pytest.MonkeyPatch) -> None:
    configs = _runtime.emulated_configs({"shader-f16", "subgroup", "timestamp-query"})
    assert [str(c) for c in configs] == ["f16->f32 16x16x16 (emulated)",
                                         "f16->f16 16x16x16 (emulated)",
                                         "i8->i32 16x16x32 (emulated)"]
    assert all(c.min_subgroup_size == c.max_subgroup_size == 32 for c in configs)
    assert _runtime.emulated_configs({"shader-f16"}) == ()
    monkeypatch.setenv(_matrix_emulation.ENV, "maybe")
    with pytest.raises(gpucore.GpuError, match="GPUCORE_EMULATE_MATRIX"):
        _matrix_emulation.requested()
    monkeypatch.setenv(_matrix_emulation.ENV, "1")
    assert _matrix_emulation.requested()


@pytest.mark.parametrize("source", [KERNEL, BARRIER], ids=["in-place", "held-and-in-place"])
def test_emulated_kernel_matches_float64(device: gpucore.Device, source: str) -> None:
    """The lowered kernel on the adapter (wgpu-native lowers it whatever the adapter's
    configs say): two subgroups, each 16 rows of A (32 x 32) @ B (32 x 16) + C; its products
    read in place, or one held."""
    if device.info.runtime != "wgpu" or not {"shader-f16", "subgroup"} <= device.features:
        pytest.skip(f"{device.info.label}: the emulation needs wgpu-native, f16 and subgroups")
    rng = np.random.default_rng(5)
    a = rng.standard_normal((32, 32)).astype(np.float16)
    b_t = rng.standard_normal((16, 32)).astype(np.float16)  # B (32 x 16), stored transposed
    c = rng.standard_normal((32, 16)).astype(np.float32)
    out = gpucore.Buffer.from_numpy(np.full(40 * 16, -7.0, np.float32), device=device)
    kernel = gpucore.Kernel(source, name="test/matrix_emulation")
    kernel.dispatch(1, *(gpucore.Buffer.from_numpy(x, device=device) for x in (a, b_t, c)), out)
    expected = a.astype(np.float64) @ b_t.astype(np.float64).T + c
    got = out.read().reshape(16, 40)  # column-major, stride 40: column j at 40 j
    assert np.abs(got[:, :32].T - expected).max() < 1e-5 * np.abs(expected).max()
    assert (got[:, 32:] == -7.0).all()  # nothing past each column's 32 rows
