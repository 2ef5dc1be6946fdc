"""Lab tool: the f16 matrix-unit GEMM's tiles with K split over the grid, at the UNets' linear
shapes (x @ w.T), beside cuBLAS. Products of one to two waves (SDXL's 2048-token layers: 160
tiles of 128 x 128 on 132 SMs) leave SMs idle unsplit; split, each split writes f32 partial
sums that gemm_splitk adds in order (matrix_units.record_gemm_matrix's split path). Needs Dawn
with subgroup matrices; cuBLAS when torch CUDA is there:

    GPUCORE_RUNTIME=dawn python -m tools.gemm_split_sweep --json out.json

The DiTs' deep products whose tiles leave the last wave part empty (FLUX's single-block
proj_out, 4608 x 15360 x 3072: 432 tiles of 256 x 128, 3.3 waves), with f16 accumulators too:

    GPUCORE_RUNTIME=dawn python -m tools.gemm_split_sweep --shapes 4608x15360x3072 \
        --tiles rule,rule16,256x256g8 --splits 1,2,3,4

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
def forced(tile: matrix_units.MatrixTile, splits: int, k: int) -> Iterator[None]:
    """record_gemm_matrix in `tile`, K cut in `splits` (on matrix_units' split granule)."""
    saved = matrix_tuning.gemm_tile, matrix_units.split_k
    granule = matrix_units._SPLIT_GRANULE
    per_split = math.ceil(math.ceil(k / granule) / splits) * granule if splits > 1 else k
    matrix_tuning.gemm_tile = lambda *a, **kw: tile  # type: ignore[assignment]
    matrix_units.split_k = lambda *a: per_split  # type: ignore[assignment]
    matrix_units._layout.cache_clear()  # it keeps each shape's split
    try:
        yield
    finally:
        matrix_tuning.gemm_tile, matrix_units.split_k = saved  # type: ignore[assignment]
        matrix_units._layout.cache_clear()


def resolve(name: str, m: int, n: int, k: int) -> matrix_units.MatrixTile:
    """A tile by name: "rule" / "rule16" (choose_tile's with f32 / f16 accumulators for x @
    w.T), a TILES name, or an ACC16_TILES name (f16 accumulators)."""
    if name in ("rule", "rule16"):
        return matrix_units.choose_tile(m, n, 1, k=k, accumulate="f16" if name == "rule16"
                                        else "f32")
    return matrix_units.TILES.get(name) or matrix_units.ACC16_TILES[name]


def shape_rows(device: gpucore.Device, torch: Any, rng: np.random.Generator,
               shape: tuple[int, int, int], tiles: tuple[str, ...] = TILES,
               all_splits: tuple[int, ...] = SPLITS) -> list[dict[str, Any]]:
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
    for name in tiles:
        tile = resolve(name, m, n, k)
        if not matrix_units.aligned(tile, m, n, k):
            continue
        for splits in all_splits:
            if splits > 1 and k // splits < 256:
                continue
            with forced(tile, splits, k):
                linalg.matmul(ga, gb, trans_b=True, out=out)
                err = (np.abs(out.numpy()[sample] - expected).max()
                       / np.abs(expected).max())
                t = _harness.ours_ms(lambda: linalg.matmul(ga, gb, trans_b=True, out=out),
                                     device)
            waves = math.ceil(m / tile.bm) * math.ceil(n / tile.bn) * splits / 132
            rows.append({"shape": f"{m}x{k}x{n}", "tile": name, "acc": tile.acc,
                         "splits": splits, "waves": round(waves, 2),
                         "rule": tile == rule and splits == 1,
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
    parser.add_argument("--shapes", help="comma-separated MxKxN (x [M, K] @ w[N, K].T); "
                                         "default: the UNets' shapes")
    parser.add_argument("--tiles", default=",".join(TILES),
                        help="comma-separated tile names (matrix_units.TILES or ACC16_TILES) "
                             "or rule / rule16 (choose_tile's, f32 / f16 accumulators)")
    parser.add_argument("--splits", default=",".join(map(str, SPLITS)),
                        help="comma-separated split counts")
    args = parser.parse_args()
    shapes = SHAPES if not args.shapes else [
        tuple(int(x) for x in s.split("x")) for s in args.shapes.split(",")]
    tiles = tuple(args.tiles.split(","))
    splits = tuple(int(x) for x in args.splits.split(","))
    device = gpucore.default_device()
    if not matrix_units.available(device):
        raise SystemExit("needs f16 subgroup matrices (GPUCORE_RUNTIME=dawn on a GPU)")
    torch = _harness.torch_cuda()
    rng = np.random.default_rng(0)
    rows = [row for shape in shapes
            for row in shape_rows(device, torch, rng, shape, tiles, splits)]  # type: ignore[arg-type]
    _harness.print_table(rows, ["shape", "tile", "acc", "splits", "waves", "rule", "gpu_ms",
                                "TFLOPs", "rel_err"])
    if args.json:
        _harness.write_json(args.json, {"environment": _harness.environment(device),
                                        "rows": rows})


if __name__ == "__main__":
    main()
