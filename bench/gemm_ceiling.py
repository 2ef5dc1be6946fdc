"""Where the f16 GEMM's time goes on the matrix units: the shipped kernel against itself with
parts of its data path taken out, beside cuBLAS, at 4096^3 (issue 25's "evidence of the bound").

Each row is the kernel gpustd.gemm.matrix_units generates for one tile, with its WGSL cut:

- shipped:      the kernel as it runs (checked against float64 first);
- cached:       every K step loads K step 0's addresses: the same load instructions, served
                from the caches (L1/L2) instead of streaming the operands through L2;
- no_epilogue:  the shipped kernel whose epilogue writes nothing to C (the accumulators still
                go through workgroup memory a fragment at a time): what writing C costs;
- no_global:    `fetch()` emptied: no global loads; staging still stores (constant) registers;
- no_staging:   `fetch()` and `stage()` emptied: per K step only the barriers, the fragments'
                loads from workgroup memory and the multiply-accumulates;
- no_barrier:   as no_staging without the barriers;
- mma_only:     as no_barrier with every fragment loaded once before the K loop: the
                multiply-accumulates of the same tile, fragments and K steps, nothing else
                (the ceiling a bare loop of the same multiply-accumulates reaches).

The cut kernels compute garbage; only their time means something. The differences say what
each stage costs where it is not hidden: shipped - no_global is global memory not hidden by
the prefetch and occupancy; no_global - no_staging the scalar f16 stores into workgroup memory
(WGSL cannot store a vector into `array<f16>`, which subgroupMatrixLoad requires);
no_staging - mma_only the fragments' loads from workgroup memory and the barriers.
GPU time by timestamp queries (gpucore profile), medians, after gpucore.autotune.warm_clock.
Needs subgroup matrices (GPUCORE_RUNTIME=dawn on a GPU that has them); elsewhere it says so.
BENCH_CEILING_TILES (default: the shipped tiles that 4096^3 can take) picks tiles by name
(matrix_units.TILES, and ACC16_TILES' "256x256"; "rule": the tile the GEMM's dispatch picks),
with field overrides ("128x128k16+wm=4", "128x256+acc=f16": gpustd.gemm.matrix_codegen.MatrixTile's
fields);
BENCH_CEILING_VARIANTS the cuts (default: all), BENCH_CEILING_SHAPES the products (m x k x n,
default 4096x4096x4096), BENCH_CEILING_LAYOUTS "nn,nt" (x @ w, x @ w.T), BENCH_CEILING_SPLIT=0
the products unsplit (matrix_units.SPLIT_K off). same_bits: the
shipped result equals, bit for bit, that of the first spec of its tile name (a tile's
variants keep its accumulation order). kernel: the tile's MatrixTile.name. rel_error: the
shipped result's largest error against float64 on 8 of its rows, over their largest magnitude
(inputs standard normal, at the row's K): what f16 accumulators (`acc=f16`) cost in accuracy.
A tile whose result is wrong (rel_error over 2e-2) is reported on one line and not timed.
"""

from __future__ import annotations

import contextlib
import os
import re
from collections.abc import Iterator
from dataclasses import replace
from typing import Any

import numpy as np

import gpucore
from gpucore import Kernel
from gpustd import Tensor, linalg
from gpustd.gemm import matrix_tuning, matrix_units

from . import _harness

COLUMNS = ["shape", "tile", "kernel", "layout", "variant", "gpu_ms", "TFLOPs", "vs_shipped",
           "cublas_TFLOPs", "vs_cublas", "same_bits", "rel_error"]
ABLATIONS = ("shipped", "cached", "no_epilogue", "no_global", "no_staging", "no_barrier",
             "mma_only")


def _empty_function(text: str, name: str) -> str:
    """Every `fn name(...)` (and its register sets' `name_S`) left with an empty body."""
    return re.sub(rf"fn ({name}(_\d+)?)\(([^)]*)\) \{{\n.*?\n\}}\n", r"fn \1(\3) {\n}\n", text,
                  flags=re.S)


def _fetch_at_k0(text: str) -> str:
    """Every K step's global loads read K step 0's addresses (cache hits after the first)."""
    def fixed(hit: re.Match[str]) -> str:
        return hit.group(0).replace("k0", "0u")
    return re.sub(r"fn fetch(_\d+)?\(\) \{\n.*?\n\}\n", fixed, text, flags=re.S)


def _loads_hoisted(text: str) -> str:
    """Every `let aI/bJ = subgroupMatrixLoad(...)` of the K loop replaced by the value of its
    first occurrence, loaded once before the loop."""
    loads = re.findall(r"let ([ab]\d+) = (subgroupMatrixLoad<[^;]*);", text)
    first: dict[str, str] = {}
    for name, expr in loads:
        first.setdefault(name, re.sub(r"cur_[ab] \+ ", "", expr))
    text = re.sub(r"let ([ab]\d+) = subgroupMatrixLoad<[^;]*;", r"let \1 = h_\1;", text)
    hoisted = "".join(f"  let h_{name} = {expr};\n" for name, expr in first.items())
    return text.replace("  for (var t = 0u;", hoisted + "  for (var t = 0u;", 1)


def ablated_source(ablation: str, *args: Any) -> str:
    """matrix_units.source(*args) with the `ablation` (see the module's docstring) applied."""
    text = matrix_units.source(*args)
    if ablation == "shipped":
        return text
    if ablation == "cached":
        return _fetch_at_k0(text)
    if ablation == "no_epilogue":
        return _empty_function(text, "put_fragment")
    text = _empty_function(text, "fetch")
    if ablation == "no_global":
        return text
    text = _empty_function(text, "stage")
    if ablation == "no_staging":
        return text
    text = text.replace("workgroupBarrier();", "")
    if ablation == "no_barrier":
        return text
    return _loads_hoisted(text)


@contextlib.contextmanager
def _kernel_as(tile: Any, ablation: str) -> Iterator[None]:
    """record_gemm_matrix runs `tile` (None: the one gpustd.gemm.dispatch picks) with its WGSL
    cut by `ablation`."""
    saved = matrix_units._kernel, matrix_tuning.gemm_tile

    def kernel(*args: Any, split: bool = False, parts: int = 1) -> Kernel:
        return Kernel.generated(f"bench/gemm_ceiling/{ablation}", ablated_source, ablation,
                                *args, split, parts)

    matrix_units._kernel = kernel  # type: ignore[assignment]
    if tile is not None:
        matrix_tuning.gemm_tile = lambda *a, **k: tile  # type: ignore[assignment]
    try:
        yield
    finally:
        matrix_units._kernel, matrix_tuning.gemm_tile = saved  # type: ignore[assignment]


def _tile(spec: str) -> Any:
    """A shipped tile by name, with optional field overrides: "128x128k16+bk=32+acc=f16";
    "rule": None, the tile gpustd.gemm.dispatch picks (GPUSTD_GEMM_ACCUMULATE applies)."""
    if spec == "rule":
        return None
    name, *changes = spec.split("+")
    fields = {key: int(value) if value.isdigit() else value
              for key, value in (c.split("=") for c in changes)}
    tiles = {**matrix_units.ACC16_TILES, **matrix_units.TILES}  # "128x128": f32 accumulators
    return replace(tiles[name], **fields)


def run(quick: bool = False) -> dict[str, Any]:
    device = gpucore.default_device()
    result: dict[str, Any] = {"benchmark": "gemm_ceiling",
                              "environment": _harness.environment(device),
                              "columns": COLUMNS, "rows": []}
    if not matrix_units.available(device):
        result["notes"] = "no f16 subgroup matrices on this adapter (run with GPUCORE_RUNTIME=dawn)"
        return result
    repeat = 3 if quick else 20
    matrix_units.SPLIT_K = os.environ.get("BENCH_CEILING_SPLIT", "1") != "0"
    specs = os.environ.get("BENCH_CEILING_TILES", "128x256,128x128k16,128x128,64x128").split(",")
    ablations = os.environ.get("BENCH_CEILING_VARIANTS", ",".join(ABLATIONS)).split(",")
    shapes = os.environ.get("BENCH_CEILING_SHAPES", "256x256x256" if quick else "4096x4096x4096")
    torch = _harness.torch_cuda()
    rng = np.random.default_rng(0)
    for shape in shapes.split(","):
        m, k, n = (int(x) for x in shape.split("x"))
        for layout in os.environ.get("BENCH_CEILING_LAYOUTS", "nn,nt").split(","):
            result["rows"] += _shape_rows(device, torch, rng, (m, k, n), layout, specs, ablations,
                                          repeat)
    return result


def _shape_rows(device: gpucore.Device, torch: Any, rng: np.random.Generator,
                shape: tuple[int, int, int], layout: str, specs: list[str], ablations: list[str],
                repeat: int) -> list[dict[str, Any]]:
    m, k, n = shape
    trans_b = layout == "nt"
    a = rng.standard_normal((m, k), dtype=np.float32).astype(np.float16)
    b = rng.standard_normal((n, k) if trans_b else (k, n), dtype=np.float32).astype(np.float16)
    ga, gb = Tensor.from_numpy(a, device=device), Tensor.from_numpy(b, device=device)
    out = Tensor.empty((m, n), np.float16, device=device)
    flop = 2.0 * m * k * n
    cublas = None
    if torch is not None:
        ta, tb = torch.from_numpy(a).cuda(), torch.from_numpy(b).cuda()
        rhs, tout = (tb.T if trans_b else tb), torch.empty((m, n), dtype=ta.dtype, device="cuda")
        cublas = flop / (_harness.torch_cuda_ms(lambda: torch.matmul(ta, rhs, out=tout),
                                                repeat=repeat) * 1e9)
    rows: list[dict[str, Any]] = []
    first: dict[str, np.ndarray] = {}  # per base tile: the first spec's result
    for spec in specs:
        try:
            tile = _tile(spec)
            tile_rows = _tile_rows(device, ga, gb, out, a, b, trans_b, tile, spec, ablations,
                                   repeat, first)
        except AssertionError as exc:  # a wrong kernel produces no timing
            print(f"{spec}: {exc}", flush=True)
            continue
        except Exception as exc:  # a tile the device refuses (e.g. too many invocations)
            print(f"{spec}: {exc}".splitlines()[0], flush=True)
            continue
        for row in tile_rows:
            row.update(shape=f"{m}x{k}x{n}", layout=layout, cublas_TFLOPs=cublas,
                       vs_cublas=flop / (row["gpu_ms"] * 1e9) / cublas if cublas else None)
            print(row, flush=True)
        rows += tile_rows
    return rows


def _tile_rows(device: gpucore.Device, ga: Tensor, gb: Tensor, out: Tensor, a: np.ndarray,
               b: np.ndarray, trans_b: bool, tile: Any, spec: str, ablations: list[str],
               repeat: int, first: dict[str, np.ndarray]) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    m, k, n = a.shape[0], a.shape[1], out.shape[1]
    flop = 2.0 * m * k * n
    ran = tile or matrix_tuning.gemm_tile(device, m, n, k, 1, False, trans_b)
    shipped_ms = None
    for ablation in ablations:
        with _kernel_as(tile, ablation):
            def ours() -> None:
                linalg.matmul(ga, gb, trans_b=trans_b, out=out)
            ms = _harness.ours_ms(ours, device, repeat=repeat)["gpu_ms"]
        same = error = None
        if ablation == "shipped":
            got = out.numpy()
            error = _check(got, a, b, trans_b)
            base = first.setdefault(spec.split("+")[0], got)
            same = bool(np.array_equal(got, base))
            shipped_ms = ms
        rows.append({"tile": spec, "kernel": ran.name, "variant": ablation, "gpu_ms": ms,
                     "TFLOPs": flop / (ms * 1e9),
                     "vs_shipped": shipped_ms / ms if shipped_ms else None,
                     "same_bits": same, "rel_error": error})
    return rows


def _check(got: np.ndarray, a: np.ndarray, b: np.ndarray, trans_b: bool) -> float:
    """The relative error against float64 on 8 rows; AssertionError past 2e-2."""
    rows = np.linspace(0, a.shape[0] - 1, num=8, dtype=int)
    expected = a[rows].astype(np.float64) @ (b.T if trans_b else b).astype(np.float64)
    err = np.max(np.abs(got[rows].astype(np.float64) - expected)) / np.max(np.abs(expected))
    if err > 2e-2:
        raise AssertionError(f"the shipped kernel is wrong: relative error {err}")
    return float(err)
