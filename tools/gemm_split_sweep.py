"""Lab tool: the f16 matrix-unit GEMM's tiles with K split over the grid, at the UNets' linear
shapes (x @ w.T), beside cuBLAS. Products of one to two waves (SDXL's 2048-token layers: 160
tiles of 128 x 128 on 132 SMs) leave SMs idle unsplit; split, each split writes f32 partial
sums that gemm_splitk adds in order (matrix_units.record_gemm_matrix's split path). Needs Dawn
with subgroup matrices; cuBLAS when torch CUDA is there:

    GPUCORE_RUNTIME=dawn python -m tools.gemm_split_sweep --json out.json

Every run is checked against float64 on sampled rows; GPU ms by timestamps (GEMM and finish).
"""

from __future__ import annotations

import argparse
import contextlib
import math
from collections.abc import Iterator
from typing import Any

import numpy as np

import gpucore
from bench import _harness
from gpustd import Tensor, linalg
from gpustd.gemm import matrix_tuning, matrix_units

# m x k x n: SDXL at 1024 px (2048 and 8192 tokens, batch 2), SD 1.5 at 512 px
SHAPES = [(2048, 1280, 1280), (2048, 5120, 1280), (2048, 1280, 2560), (8192, 640, 640),
          (8192, 2560, 640), (8192, 320, 320), (8192, 1280, 320), (2048, 640, 640),
          (2048, 2560, 640), (512, 1280, 1280), (512, 5120, 1280)]
TILES = ("64x64", "64x128", "128x128", "128x128k16")
SPLITS = (1, 2, 3, 4, 6)


@contextlib.contextmanager
def forced(tile: str, splits: int, k: int) -> Iterator[None]:
    """record_gemm_matrix in `tile`, K cut in `splits` (on matrix_units' split granule)."""
    saved = matrix_tuning.gemm_tile, matrix_units.split_k
    granule = matrix_units._SPLIT_GRANULE
    per_split = math.ceil(math.ceil(k / granule) / splits) * granule if splits > 1 else k
    matrix_tuning.gemm_tile = lambda *a, **kw: matrix_units.TILES[tile]  # type: ignore[assignment]
    matrix_units.split_k = lambda *a: per_split  # type: ignore[assignment]
    try:
        yield
    finally:
        matrix_tuning.gemm_tile, matrix_units.split_k = saved  # type: ignore[assignment]


def shape_rows(device: gpucore.Device, torch: Any, rng: np.random.Generator,
               shape: tuple[int, int, int]) -> list[dict[str, Any]]:
    m, k, n = shape
    a = rng.standard_normal((m, k), dtype=np.float32).astype(np.float16)
    b = (rng.standard_normal((n, k), dtype=np.float32) * 0.05).astype(np.float16)
    ga, gb = Tensor.from_numpy(a, device=device), Tensor.from_numpy(b, device=device)
    out = Tensor.empty((m, n), np.float16, device=device)
    sample = np.linspace(0, m - 1, num=6, dtype=int)
    expected = a[sample].astype(np.float64) @ b.T.astype(np.float64)
    flop = 2.0 * m * k * n
    rule = matrix_units.choose_tile(m, n, 1, k=k)
    rows = []
    for tile in TILES:
        if not matrix_units.aligned(matrix_units.TILES[tile], m, n, k):
            continue
        for splits in SPLITS:
            if splits > 1 and k // splits < 256:
                continue
            with forced(tile, splits, k):
                linalg.matmul(ga, gb, trans_b=True, out=out)
                err = (np.abs(out.numpy()[sample] - expected).max()
                       / np.abs(expected).max())
                t = _harness.ours_ms(lambda: linalg.matmul(ga, gb, trans_b=True, out=out),
                                     device)
            rows.append({"shape": f"{m}x{k}x{n}", "tile": tile, "splits": splits,
                         "rule": matrix_units.TILES[tile] == rule and splits == 1,
                         "gpu_ms": t["gpu_ms"],
                         "TFLOPs": flop / (t["gpu_ms"] * 1e9), "rel_err": float(err),
                         "dispatches": t["dispatches"]})
    if torch is not None:
        ta, tb = torch.from_numpy(a).cuda(), torch.from_numpy(b).cuda()
        ms = _harness.torch_cuda_ms(lambda: torch.matmul(ta, tb.T))
        rows.append({"shape": f"{m}x{k}x{n}", "tile": "cublas", "splits": 0, "rule": False,
                     "gpu_ms": ms, "TFLOPs": flop / (ms * 1e9)})
    for row in rows:
        print(row, flush=True)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--json", help="write the rows here")
    args = parser.parse_args()
    device = gpucore.default_device()
    if not matrix_units.available(device):
        raise SystemExit("needs f16 subgroup matrices (GPUCORE_RUNTIME=dawn on a GPU)")
    torch = _harness.torch_cuda()
    rng = np.random.default_rng(0)
    rows = [row for shape in SHAPES for row in shape_rows(device, torch, rng, shape)]
    _harness.print_table(rows, ["shape", "tile", "splits", "rule", "gpu_ms", "TFLOPs",
                                "rel_err"])
    if args.json:
        _harness.write_json(args.json, {"environment": _harness.environment(device),
                                        "rows": rows})


if __name__ == "__main__":
    main()
