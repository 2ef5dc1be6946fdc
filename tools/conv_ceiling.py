"""Lab tool: where the f16 implicit-GEMM conv's time goes (gpustd/nn/_conv_subgroup_matrix.py),
beside cuDNN and our GEMM of the same size, and every conv tile on SDXL's 3x3 convs. Needs Dawn
with subgroup matrices and torch CUDA:

    GPUCORE_RUNTIME=dawn python -m tools.conv_ceiling --json out.json [--tiles]

Without --tiles, per conv: the shipped kernel (checked against torch fp32 first), the same
kernel with its WGSL cut as bench/gemm_ceiling.py cuts the GEMM's (`cached`: every K step
gathers step 0's addresses, the same loads from the caches; `no_global`: no loads;
`no_staging`: neither loads nor staging stores), the lab halo-tile kernel (tools/conv_halo.py)
where it fits, our GEMM of the conv's size ([C_out, K] x [K, pixels]) and cuDNN
(cudnn.benchmark on). With --tiles: the shipped kernel in each tile of
TILES that divides C_out, each result compared bit for bit with the first tile's.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from functools import partial
from typing import Any

import numpy as np

import gpucore
from bench import _harness
from bench.gemm_ceiling import _empty_function, _fetch_at_k0
from gpucore import Kernel
from gpustd import Tensor, linalg, nn
from gpustd.gemm.matrix_codegen import MatrixTile
from gpustd.nn import _conv_subgroup_matrix as csm
from tools import conv_halo

# (x shape, C_out): 3x3, stride 1, padding 1; SDXL's at 1024 px and one of SD 1.5's at 512
SHAPES = [((2, 320, 128, 128), 320), ((2, 640, 128, 128), 320), ((2, 960, 128, 128), 320),
          ((2, 640, 64, 64), 640), ((2, 1920, 64, 64), 640), ((2, 1280, 32, 32), 1280),
          ((2, 320, 64, 64), 320)]
CUTS = ("shipped", "cached", "no_global", "no_staging")
# "np": no prefetch (load, stage, multiply each K step in turn)
TILES = {"64x64": MatrixTile(2, 2, 2, 2), "64x128": MatrixTile(2, 4, 2, 2),
         "64x128np": MatrixTile(2, 4, 2, 2, prefetch=False),
         "64x128k16": MatrixTile(2, 4, 2, 2, bk=16),
         "64x256": MatrixTile(2, 4, 2, 4), "64x256np": MatrixTile(2, 4, 2, 4, prefetch=False),
         "128x128": MatrixTile(4, 2, 2, 4), "128x128np": MatrixTile(4, 2, 2, 4, prefetch=False),
         "128x128/4x4": MatrixTile(4, 4, 2, 2), "128x256/4x4": MatrixTile(4, 4, 2, 4),
         "160x128": MatrixTile(5, 2, 2, 4), "160x128np": MatrixTile(5, 2, 2, 4, prefetch=False),
         "160x64": MatrixTile(5, 2, 2, 2), "160x64np": MatrixTile(5, 2, 2, 2, prefetch=False),
         "128x256/4x4np": MatrixTile(4, 4, 2, 4, prefetch=False),
         "128x256/16np": MatrixTile(4, 2, 2, 8, prefetch=False),
         "256x128/16np": MatrixTile(4, 2, 4, 4, prefetch=False),
         "128x128/2x4np": MatrixTile(2, 4, 4, 2, prefetch=False),
         "320x64/8np": MatrixTile(5, 2, 4, 2, prefetch=False),
         "32x32": MatrixTile(1, 1, 2, 2), "32x64": MatrixTile(2, 2, 1, 2),
         **{name: csm.CONV_TILES[name] for name in
            ("16x128", "32x128", "32x128np", "32x256", "64x128np", "64x256")},
         "32x256np": MatrixTile(2, 2, 1, 8, prefetch=False),
         "32x128/2x4": MatrixTile(2, 4, 1, 2), "64x128/4x2": MatrixTile(4, 2, 1, 4)}


def _cut(text: str, cut: str) -> str:
    if cut == "cached":
        return _fetch_at_k0(text)
    text = _empty_function(text, "fetch")
    return text if cut == "no_global" else _empty_function(text, "stage")


def _cut_kernel(cut: str) -> Callable[..., Kernel]:
    """csm._kernel with its WGSL cut."""
    def kernel(*args: Any) -> Kernel:
        return Kernel.generated(f"tools/conv_ceiling/{cut}",
                                lambda *a: _cut(csm.source(*a), cut), *args)
    return kernel


def _operands(device: gpucore.Device, rng: np.random.Generator, x_shape: tuple[int, ...],
              c_out: int) -> tuple[np.ndarray, np.ndarray, Tensor, Tensor]:
    x = rng.standard_normal(x_shape, dtype=np.float32).astype(np.float16)
    w = (rng.standard_normal((c_out, x_shape[1], 3, 3), dtype=np.float32) * 0.05).astype(
        np.float16)
    return x, w, Tensor.from_numpy(x, device=device), Tensor.from_numpy(w, device=device)


def ablations(device: gpucore.Device, torch: Any, rng: np.random.Generator,
              shapes: list[tuple[tuple[int, int, int, int], int]]) -> list[dict]:
    return [_ablation_row(device, torch, rng, x_shape, c_out) for x_shape, c_out in shapes]


def _ablation_row(device: gpucore.Device, torch: Any, rng: np.random.Generator,
                  x_shape: tuple[int, int, int, int], c_out: int) -> dict[str, Any]:
    n, c_in, h, w = x_shape
    x, wt, gx, gw = _operands(device, rng, x_shape, c_out)
    tx, tw = torch.from_numpy(x).cuda(), torch.from_numpy(wt).cuda()
    expected = torch.nn.functional.conv2d(tx.float(), tw.float(), padding=1).cpu().numpy()
    got = nn.conv2d(gx, gw, None, padding=1).numpy().astype(np.float32)
    row: dict[str, Any] = {"shape": f"{x_shape}->{c_out}",
                           "rel_err": float(np.abs(got - expected).max()
                                            / np.abs(expected).max())}
    def forward() -> None:
        nn.conv2d(gx, gw, None, padding=1)

    saved = csm._kernel
    for cut in CUTS:
        csm._kernel = saved if cut == "shipped" else _cut_kernel(cut)  # type: ignore[assignment]
        try:
            row[cut] = _harness.ours_ms(forward, device)["gpu_ms"]
        finally:
            csm._kernel = saved  # type: ignore[assignment]
    if conv_halo.fits(x_shape, (c_out, c_in, 3, 3), stride=(1, 1), padding=(1, 1),
                      dilation=(1, 1), groups=1):
        got = conv_halo.conv2d_halo(gx, gw, None).numpy().astype(np.float32)
        row["halo_rel_err"] = float(np.abs(got - expected).max() / np.abs(expected).max())
        row["halo"] = _harness.ours_ms(lambda: conv_halo.conv2d_halo(gx, gw, None),
                                       device)["gpu_ms"]
    k, pixels = c_in * 9, n * h * w
    a = Tensor.from_numpy(rng.standard_normal((c_out, k), dtype=np.float32).astype(
        np.float16), device=device)
    b = Tensor.from_numpy(rng.standard_normal((k, pixels), dtype=np.float32).astype(
        np.float16), device=device)
    out = Tensor.empty((c_out, pixels), np.float16, device=device)
    def product() -> None:
        linalg.matmul(a, b, out=out)

    row["gemm"] = _harness.ours_ms(product, device)["gpu_ms"]
    torch.backends.cudnn.benchmark = True
    row["cudnn"] = _harness.torch_cuda_ms(lambda: torch.nn.functional.conv2d(tx, tw, padding=1))
    flop = 2.0 * pixels * c_out * k
    row["TFLOPs"] = {key: flop / (row[key] * 1e9) for key in (*CUTS, "halo", "gemm", "cudnn")
                     if key in row}
    print(row, flush=True)
    return row


def tiles(device: gpucore.Device, rng: np.random.Generator,
          shapes: list[tuple[tuple[int, int, int, int], int]],
          names: list[str] | None = None) -> list[dict]:
    return [row for x_shape, c_out in shapes
            for row in _tile_rows(device, rng, x_shape, c_out, names or list(TILES))]


def _tile_rows(device: gpucore.Device, rng: np.random.Generator,
               x_shape: tuple[int, int, int, int], c_out: int,
               names: list[str]) -> list[dict[str, Any]]:
    _, _, h, w = x_shape
    _, _, gx, gw = _operands(device, rng, x_shape, c_out)

    def conv(tile: MatrixTile) -> Tensor:
        return csm.conv2d_matrix(gx, gw, None, stride=(1, 1), padding=(1, 1), dilation=(1, 1),
                                 out_hw=(h, w), tile=tile)

    def timed(tile: MatrixTile) -> None:
        conv(tile)

    rows, first = [], None
    for name in names:
        tile = TILES[name]
        if c_out % tile.bm:
            continue
        got = conv(tile).numpy().view(np.uint16)
        first = got if first is None else first
        row = {"shape": f"{x_shape}->{c_out}", "tile": name,
               "gpu_ms": _harness.ours_ms(partial(timed, tile), device)["gpu_ms"],
               "same_bits": bool(np.array_equal(got, first))}
        print(row, flush=True)
        rows.append(row)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--json", help="write the rows here")
    parser.add_argument("--tiles", action="store_true", help="sweep the tiles instead")
    parser.add_argument("--c-out", type=int, default=0,
                        help="only the convs with this many output channels")
    parser.add_argument("--shapes", help="the convs instead of SHAPES: N x C_in x H x W - "
                        "C_out, comma-separated (2x640x64x64-640,2x1280x32x32-1280)")
    parser.add_argument("--tile-names", help="with --tiles, only these TILES (comma-separated)")
    args = parser.parse_args()
    device = gpucore.default_device()
    torch = _harness.torch_cuda()
    if not csm.available(device) or torch is None:
        raise SystemExit("needs f16 subgroup matrices (GPUCORE_RUNTIME=dawn) and torch CUDA")
    rng = np.random.default_rng(0)
    given = [(tuple(int(v) for v in x.split("x")), int(c)) for x, c in
             (spec.split("-") for spec in args.shapes.split(","))] if args.shapes else SHAPES
    shapes = [shape for shape in given if args.c_out in (0, shape[1])]
    names = args.tile_names.split(",") if args.tile_names else None
    rows = (tiles(device, rng, shapes, names) if args.tiles  # type: ignore[arg-type]
            else ablations(device, torch, rng, shapes))  # type: ignore[arg-type]
    if args.json:
        _harness.write_json(args.json, {"environment": _harness.environment(device),
                                        "rows": rows})


if __name__ == "__main__":
    main()
