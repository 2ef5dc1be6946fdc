"""Attention's q, k and v of one input, with biases, as three GEMM dispatches or one
(gpustd.nn.linears: the parts kernel, workgroup z picking the weight), beside cuBLAS.

Per shape (m tokens x k features -> n each, the DiTs' projections: FLUX.1 dev's double
blocks' image and text streams and its single blocks, SD 3.5 Large's streams at batch 2 and
its joint length): ours as three nn.linear calls (one dispatch each, gemm_tile's tile for one
product, K split where the rule splits it), as nn.linears (one dispatch in gemm_tile's tile for
a batch of three, after three copies that set the biases side by side) and without biases,
and with BENCH_QKV_TILES=64x128,128x128,... the parts kernel in those tiles too (which tile a
batch of three should take; each a compile of seconds under Dawn); torch fp16
as three F.linear calls and as one on the weights stacked [3n, k] (a fused-qkv checkpoint's
cuBLAS call). gpu_ms: ours by timestamp queries (dispatches only: the bias copies are not
in it), torch by CUDA events; wall_ms: ours with 10 calls a submit (the copies included).
bitwise_equal: nn.linears' results against the three nn.linear calls'. rel_err: against
torch's float32 product. Each shape's rows are printed as JSON as they come (a cut-off run
keeps them). `--quick`: small shapes (on lavapipe GPUCORE_EMULATE_MATRIX=1 takes the parts
path through emulated matrix units).
"""

from __future__ import annotations

import json
import os
from typing import Any

import numpy as np

import gpucore
from gpustd import Tensor, nn
from gpustd.gemm import matrix_tuning, matrix_units

from . import _harness

SHAPES = {"flux double image": (4096, 3072, 3072), "flux double text": (512, 3072, 3072),
          "flux single": (4608, 3072, 3072), "sd35 image b2": (8192, 2432, 2432),
          "sd35 text b2": (666, 2432, 2432), "sd35 joint": (4429, 2432, 2432)}
QUICK = {"small": (150, 64, 96), "ragged": (75, 40, 24)}
COLUMNS = ["shape", "impl", "tile", "dispatches", "gpu_ms", "wall_ms", "TFLOPs",
           "bitwise_equal", "rel_err"]


def _tflops(m: int, k: int, n: int, ms: float) -> float:
    return 3 * 2 * m * k * n / (ms * 1e-3) / 1e12 if ms == ms and ms > 0 else float("nan")


def _rel_err(got: np.ndarray, expected: np.ndarray) -> float:
    return float(np.abs(got.astype(np.float64) - expected).max() / np.abs(expected).max())


def _shape_rows(name: str, m: int, k: int, n: int, device: gpucore.Device, cuda: Any,
                repeat: int) -> list[dict[str, Any]]:
    rng = np.random.default_rng(m + k + n)
    x = rng.standard_normal((m, k)).astype(np.float16)
    ws = [(rng.standard_normal((n, k)) / np.sqrt(k)).astype(np.float16) for _ in range(3)]
    bs = [rng.standard_normal(n).astype(np.float16) for _ in range(3)]
    tx = Tensor.from_numpy(x, device=device)
    tws = [Tensor.from_numpy(w, device=device) for w in ws]
    tbs = [Tensor.from_numpy(b, device=device) for b in bs]
    if cuda is not None:
        import torch

        cx, cws, cbs = (torch.from_numpy(x).cuda(), [torch.from_numpy(w).cuda() for w in ws],
                        [torch.from_numpy(b).cuda() for b in bs])
        expected = [(cx.float() @ w.float().T + b.float()).double().cpu().numpy()
                    for w, b in zip(cws, cbs)]
    else:
        expected = [x.astype(np.float64) @ w.astype(np.float64).T + b for w, b in zip(ws, bs)]
    alone = [nn.linear(tx, w, b).numpy() for w, b in zip(tws, tbs)]
    together = [o.numpy() for o in nn.linears(tx, tws, tbs)]
    equal = all(np.array_equal(a.view(np.uint16), b.view(np.uint16))
                for a, b in zip(alone, together))
    matrix = matrix_units.available(device)
    rule = {batch: (matrix_tuning.gemm_tile(device, m, n, k, batch, False, True)
                    if matrix else None) for batch in (1, 3)}
    tile_name = {id(t): key for key, t in matrix_units.TILES.items()}
    rows = []

    def ours(impl: str, fn: Any, tile: Any, got: list[np.ndarray] | None) -> None:
        timing = _harness.ours_ms(fn, device, repeat=repeat)
        walls = _harness.ours_ms(fn, device, repeat=max(3, repeat // 2), inner=10)
        rows.append({"shape": f"{name} {m}x{k}x{n} x3", "impl": impl,
                     "tile": tile_name.get(id(tile), str(tile) if tile else "-"),
                     "dispatches": timing["dispatches"], "gpu_ms": timing["gpu_ms"],
                     "wall_ms": walls["wall_ms"], "TFLOPs": _tflops(m, k, n, timing["gpu_ms"]),
                     "bitwise_equal": equal if impl == "ours linears" else None,
                     "rel_err": max(_rel_err(g, e) for g, e in zip(got, expected))
                     if got is not None else None})

    ours("ours 3 linears", lambda: [nn.linear(tx, w, b) for w, b in zip(tws, tbs)], rule[1],
         alone)
    ours("ours linears", lambda: nn.linears(tx, tws, tbs), rule[3], together)
    ours("ours linears no bias", lambda: nn.linears(tx, tws), rule[3], None)
    if matrix:
        outs = [Tensor.empty((m, n), np.float16, device=device) for _ in ws]
        joined = Tensor.from_numpy(np.concatenate(bs), device=device)
        for key in [t for t in os.environ.get("BENCH_QKV_TILES", "").split(",") if t]:
            tile = matrix_units.TILES[key]
            if tile is rule[3] or tile.shared_bytes() > device.limits[
                    "max-compute-workgroup-storage-size"]:
                continue

            def parts(tile: Any = tile) -> None:
                matrix_units.record_gemm_parts(
                    tx.buffer, [w.buffer for w in tws], [o.buffer for o in outs], m=m, n=n,
                    k=k, tile=tile, bias=joined.buffer)
            parts()
            ours("ours parts kernel", parts, tile, [o.numpy() for o in outs])
    if cuda is not None:
        import torch.nn.functional as F

        stacked, joined_b = torch.cat(cws), torch.cat(cbs)
        for impl, fn, count in (
                ("torch 3 F.linear", lambda: [F.linear(cx, w, b) for w, b in zip(cws, cbs)], 3),
                ("torch stacked F.linear", lambda: F.linear(cx, stacked, joined_b), 1)):
            ms = _harness.torch_cuda_ms(fn, repeat=repeat)
            rows.append({"shape": f"{name} {m}x{k}x{n} x3", "impl": impl, "tile": "cuBLAS",
                         "dispatches": count, "gpu_ms": ms, "wall_ms": None,
                         "TFLOPs": _tflops(m, k, n, ms), "bitwise_equal": None,
                         "rel_err": None})
    return rows


def run(quick: bool = False) -> dict[str, Any]:
    device = gpucore.default_device()
    if not device.has_f16:
        raise RuntimeError(f"bench qkv needs shader-f16; {device.info.label} has none")
    cuda = _harness.torch_cuda()
    repeat = 3 if quick else 20
    rows = []
    for name, (m, k, n) in (QUICK if quick else SHAPES).items():
        shape_rows = _shape_rows(name, m, k, n, device, cuda, repeat)
        print(json.dumps(shape_rows, default=float), flush=True)
        rows += shape_rows
    return {"benchmark": "qkv", "environment": _harness.environment(device),
            "notes": __doc__, "columns": COLUMNS, "rows": rows}
