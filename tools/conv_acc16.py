"""Lab tool: the f16 implicit-GEMM conv (gpustd/nn/_conv_subgroup_matrix.py) with f16
accumulators against f32 ones, per SD 1.5 / SDXL 3x3 conv and over a whole SDXL UNet step.
Needs Dawn with f16 subgroup matrices; torch CUDA for the float64 reference and cuDNN:

    GPUCORE_RUNTIME=dawn python -m tools.conv_acc16 convs --json convs.json [--quick]
    GPUCORE_RUNTIME=dawn python -m tools.conv_acc16 sdxl --json sdxl.json [--quick]

convs: per conv, the f32 rule's tile (choose_conv_tile) and every CONV_TILES_ACC16 tile whose
rows divide C_out (and 64 x 64; not the narrow ones), each in the conv's K splits, checked
against torch's float64 conv of the same f16 operands (max error over max |reference|, and the
largest ratio of an element's error to the bound (K / 16 + 2) 2^-10 sum |x w| of K / 16 f16
roundings of the running sum, 2^-10 allowing truncation), then timed by timestamp queries (GPU
ms), beside cuDNN fp16 channels_last (cudnn.benchmark on, CUDA events). sdxl: the SDXL base
UNet (random weights drawn by diffusers) eager step's GPU ms and conv kernel ms under f32
accumulation, GPUSTD_GEMM_ACCUMULATE=f16 with the convs kept f32 (the GEMMs' f16 alone), and
f16 for both; each output's error against diffusers fp32.
"""

from __future__ import annotations

import argparse
import json
import math
import os
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import numpy as np

import gpucore
from bench import _harness
from gpustd import Tensor
from gpustd.gemm import accumulate, matrix_units
from gpustd.nn import _conv_subgroup_matrix as csm

# (batch, c_in, size, c_out): 3x3, stride 1, padding 1. SD 1.5 at 512 px (64 x 64 latents),
# SDXL at 1024 px (128 x 128), CFG batch 2; the brief's six first, then SDXL's deeper ones.
CONVS = [(2, 320, 64, 320), (2, 640, 32, 640), (2, 1280, 16, 1280),
         (2, 320, 128, 320), (2, 640, 64, 640), (2, 1280, 32, 1280),
         (2, 960, 128, 320), (2, 1920, 64, 640), (2, 2560, 32, 1280)]
QUICK = [(1, 64, 16, 64), (1, 96, 12, 160)]


def _torch() -> Any:
    import torch

    return torch


def _reference(torch: Any, x: np.ndarray, w: np.ndarray, b: np.ndarray) -> tuple[
        np.ndarray, np.ndarray]:
    """(float64 conv, float64 conv of |x|, |w| plus |b|): on CUDA where present."""
    dev = "cuda" if torch.cuda.is_available() else "cpu"
    tx, tw, tb = (torch.from_numpy(v.astype(np.float64)).to(dev) for v in (x, w, b))
    conv = torch.nn.functional.conv2d
    return (conv(tx, tw, tb, padding=1).cpu().numpy(),
            conv(tx.abs(), tw.abs(), tb.abs(), padding=1).cpu().numpy())


def _cudnn_ms(torch: Any, x: np.ndarray, w: np.ndarray, b: np.ndarray) -> float:
    if not torch.cuda.is_available():
        return float("nan")
    torch.backends.cudnn.benchmark = True
    tx, tw, tb = (torch.from_numpy(v).cuda() for v in (x, w, b))
    tx = tx.contiguous(memory_format=torch.channels_last)
    tw = tw.contiguous(memory_format=torch.channels_last)
    return _harness.torch_cuda_ms(lambda: torch.nn.functional.conv2d(tx, tw, tb, padding=1),
                                  repeat=20)


def _candidates(c_out: int) -> dict[str, Any]:
    """The f32 rule's tile is added by the caller; here the f16-accumulating tiles worth a
    try: every f32 tile's twin that is not a narrow one, and the larger ones dividing C_out."""
    return {name: tile for name, tile in csm.CONV_TILES_ACC16.items()
            if name not in csm.NARROW_ONLY and name != "32x32"
            and (name == "64x64" or c_out % tile.bm == 0)}


def convs(device: gpucore.Device, shapes: list[tuple[int, int, int, int]]) -> list[dict]:
    torch = _torch()
    limits = device.limits
    rows = []
    for n, c_in, size, c_out in shapes:
        rng = np.random.default_rng(c_in + c_out)
        x = rng.standard_normal((n, c_in, size, size)).astype(np.float16)
        w = (rng.standard_normal((c_out, c_in, 3, 3)) / math.sqrt(9 * c_in)).astype(np.float16)
        b = rng.standard_normal(c_out).astype(np.float16)
        expected, magnitude = _reference(torch, x, w, b)
        k_total, pixels = c_in * 9, n * size * size
        gx, gw, gb = (Tensor.from_numpy(v, device=device) for v in (x, w, b))
        cudnn = _cudnn_ms(torch, x, w, b)
        rule32 = csm.choose_conv_tile(c_out, pixels, k_total)
        rule16 = csm.choose_conv_tile(c_out, pixels, k_total, accumulate="f16")
        tiles = {f"f32 {csm_name(rule32)}": rule32, **{
            f"f16 {name}": tile for name, tile in _candidates(c_out).items()}}
        for label, tile in tiles.items():
            if (tile.shared_bytes() > limits["max-compute-workgroup-storage-size"]
                    or tile.threads > limits["max-compute-invocations-per-workgroup"]):
                continue

            def call(tile: Any = tile, operands: tuple[Tensor, ...] = (gx, gw, gb),
                     size: int = size) -> Tensor:
                return csm.conv2d_matrix(*operands, stride=(1, 1), padding=(1, 1),
                                         dilation=(1, 1), out_hw=(size, size), tile=tile)

            got = call().numpy().astype(np.float64)
            error = np.abs(got - expected)
            bound = (k_total / 16 + 2) * 2.0 ** -10 * magnitude + 2.0 ** -11 * np.abs(expected)
            ours = _harness.ours_ms(call, device, warmup=2, repeat=10, inner=3)
            rows.append({
                "shape": f"{n}x{c_in}x{size}x{size}->{c_out}", "tile": label,
                "tile_name": tile.name, "rule": tile in (rule32, rule16),
                "splits": csm.split_count(c_out, pixels, k_total),
                "rel_err": float(error.max() / np.abs(expected).max()),
                "worst_of_bound": float((error / bound).max()),
                "gpu_ms": ours["gpu_ms"], "wall_ms": ours["wall_ms"], "cudnn_ms": cudnn,
                "TFLOPs": 2 * pixels * c_out * k_total / (ours["gpu_ms"] * 1e9)})
            r = rows[-1]
            print(f"{r['shape']:>22} {label:<18} {'*' if r['rule'] else ' '} "
                  f"{r['gpu_ms']:7.4f} ms  cudnn {cudnn:7.4f}  err {r['rel_err']:.1e}  "
                  f"bound x{r['worst_of_bound']:.3f}", flush=True)
    return rows


def csm_name(tile: Any) -> str:
    return next(name for name, t in csm.CONV_TILES.items() if t == tile)


@contextmanager
def _accumulate(gemm: str, conv: str) -> Iterator[None]:
    """GPUSTD_GEMM_ACCUMULATE=`gemm` for the GEMMs, GPUSTD_CONV_ACCUMULATE=`conv` for the
    convs, both restored after."""
    names = (accumulate.ACCUMULATE_ENV, accumulate.CONV_ACCUMULATE_ENV)
    saved = [os.environ.get(name) for name in names]
    os.environ.update(zip(names, (gemm, conv)))
    try:
        yield
    finally:
        for name, value in zip(names, saved):
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


def sdxl(device: gpucore.Device, quick: bool) -> list[dict]:
    import diffusers

    import gpustd
    from bench import sdxl as bench_sdxl
    from diffusion.models import UNet2DConditionModel

    torch = _torch()
    config = bench_sdxl.TINY_SDXL_UNET if quick else bench_sdxl.SDXL_BASE_UNET
    dev = "cuda" if torch.cuda.is_available() else "cpu"
    torch.manual_seed(0)
    with torch.device(dev):
        reference = diffusers.UNet2DConditionModel(**config).eval()
    weights = {k: v.detach().cpu().numpy() for k, v in reference.state_dict().items()}
    x = bench_sdxl._inputs(config)
    outputs: dict[str, np.ndarray] = {}
    torch_rows = bench_sdxl._torch_rows(reference, x, torch.cuda.is_available() or None, 3,
                                        outputs)
    del reference
    if dev == "cuda":
        torch.cuda.empty_cache()
    ours = UNet2DConditionModel(dict(config), dtype=np.float16, device=device)
    ours.load_state_dict(weights, dtype=np.float16)
    del weights
    on = {k: gpustd.asarray(v, device=device) for k, v in x.items()}
    cond = {"text_embeds": on["text_embeds"].astype(np.float16), "time_ids": on["time_ids"]}
    args = (on["sample"].astype(np.float16), on["timesteps"], on["context"].astype(np.float16))

    def step() -> Any:
        return ours(*args, cond)

    rows = [{k: r.get(k) for k in ("impl", "dtype", "gpu_ms", "wall_ms")} for r in torch_rows]
    expected = outputs["float32"]
    for label, gemm, conv in (("f32", "f32", "f32"), ("gemm f16, conv f32", "f16", "f32"),
                              ("f16", "f16", "f16")):
        with _accumulate(gemm, conv):
            got = step().numpy().astype(np.float64)
            timing = _harness.ours_ms(step, device, warmup=2, repeat=5)
            with device.profile() as prof:
                step()
        conv_ms = sum(ns for name, (_, ns) in prof.summary().items()
                      if "conv2d_subgroup_matrix" in name) / 1e6
        rows.append({"impl": "ours", "accumulate": label, "gpu_ms": timing["gpu_ms"],
                     "wall_ms": timing["wall_ms"], "matrix_conv_ms": conv_ms,
                     "rel_err_vs_fp32": float(np.abs(got - expected).max()
                                              / np.abs(expected).max())})
        print(rows[-1], flush=True)
    for row in rows:
        if row["impl"] == "diffusers" and row["dtype"] == "float16":
            row["rel_err_vs_fp32"] = float(np.abs(outputs["float16"] - expected).max()
                                           / np.abs(expected).max())
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("what", choices=("convs", "sdxl"))
    parser.add_argument("--json")
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    device = gpucore.default_device()
    if not matrix_units.available(device):
        raise SystemExit(f"{device.info.label}: no f16 subgroup matrices (Dawn on a GPU has)")
    rows: list[dict] = []
    if args.what == "sdxl":
        rows = sdxl(device, args.quick)
    for shape in [] if args.what == "sdxl" else QUICK if args.quick else CONVS:
        rows += convs(device, [shape])  # written after each conv: a time limit keeps them
        _write(args.json, args.what, device, rows)
    _write(args.json, args.what, device, rows)


def _write(path: str | None, what: str, device: gpucore.Device, rows: list[dict]) -> None:
    if path:
        with open(path, "w") as f:
            json.dump({"tool": f"conv_acc16 {what}", "environment": _harness.environment(device),
                       "rows": rows}, f, indent=1)


if __name__ == "__main__":
    main()
