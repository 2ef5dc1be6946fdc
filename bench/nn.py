"""Stable Diffusion 1.5 layers: conv2d, group_norm and attention vs torch on the same GPU.
The resnet's GroupNorm -> SiLU -> conv and the decoder's upsample -> conv are timed both
ways, fused (the norm or the upsampling in the conv's input: "prologue") and as two ops.

Shapes are the UNet's at 64x64 latents (batch 2, classifier-free guidance) and the VAE
decoder's at 512x512. Baselines: torch CUDA (cuDNN / flash attention) in float32 with TF32
off, so both sides do true fp32 FMAs, and in float16 (tensor cores on the torch side) when
torch.cuda is available; torch on the CPU otherwise. ratio = baseline_ms / ours_ms (> 1:
we are faster); ours_ms is the timestamp-query GPU time where the adapter has it.
Then the DiTs' float16 attention with a key mask beside the same call unmasked
(DIT_ATTENTION). BENCH_NN_ATTENTION=1 runs the attention rows alone.
"""

from __future__ import annotations

import importlib.util
import os
from collections.abc import Callable
from functools import partial
from typing import Any

import numpy as np

import gpucore
from gpustd import Tensor, nn
from gpustd.nn import conv as conv_module

from . import _harness

COLUMNS = ["op", "shape", "dtype", "dispatches", "ours_gpu_ms", "ours_wall_ms", "ours_encode_ms",
           "ours_TFLOPs", "baseline", "baseline_ms", "ratio", "max_rel_err"]

# (label, x shape, out channels, kernel, stride, padding)
CONVS = [
    ("unet 320@64", (2, 320, 64, 64), 320, 3, 1, 1),
    ("unet 640@32", (2, 640, 32, 32), 640, 3, 1, 1),
    ("unet 1280@16", (2, 1280, 16, 16), 1280, 3, 1, 1),
    ("unet 1280@8", (2, 1280, 8, 8), 1280, 3, 1, 1),
    ("unet conv_in", (2, 4, 64, 64), 320, 3, 1, 1),
    ("unet down 320", (2, 320, 64, 64), 320, 3, 2, 1),
    ("unet 1x1 320@64", (2, 320, 64, 64), 320, 1, 1, 0),
    ("unet 1x1 320->640@32", (2, 320, 32, 32), 640, 1, 1, 0),
    ("vae 512@128", (1, 512, 128, 128), 512, 3, 1, 1),
    ("vae 512@256", (1, 512, 256, 256), 512, 3, 1, 1),
    ("vae 128@512", (1, 128, 512, 512), 128, 3, 1, 1),
]
# (label, x shape, out channels): GroupNorm(32) -> SiLU -> 3x3 conv, as in the resnets
NORM_CONVS = [
    ("unet 320@64", (2, 320, 64, 64), 320),
    ("unet 640@32", (2, 640, 32, 32), 640),
    ("unet 1280@16", (2, 1280, 16, 16), 1280),
    ("unet 1280@8", (2, 1280, 8, 8), 1280),
    ("vae 512@128", (1, 512, 128, 128), 512),
    ("vae 256@512->128", (1, 256, 512, 512), 128),
]
# (label, x shape before upsampling, out channels): nearest 2x -> 3x3 conv (Upsample2D)
UP_CONVS = [("vae up 512@128", (1, 512, 128, 128), 512),
            ("vae up 256@256", (1, 256, 256, 256), 256)]
QUICK_CONVS = [("tiny 3x3", (1, 8, 16, 16), 8, 3, 1, 1), ("tiny 1x1", (1, 8, 16, 16), 16, 1, 1, 0)]
# (label, batch, heads, query tokens, key tokens, head dim)
ATTENTION = [(f"{kind} {lq}x{lk} {h}x{d}", 2, h, lq, lk, d)
             for lq in (4096, 16384) for h, d in ((8, 40), (8, 80), (8, 160))
             for kind, lk in (("self", lq), ("cross", 77))]
QUICK_ATTENTION = [("tiny self", 1, 2, 64, 64, 40), ("tiny cross", 1, 2, 64, 77, 40)]
# The DiTs' float16 attention with a key mask (a batch of prompts padded to one length) beside
# the same call unmasked: (label, batch, heads, query tokens, key tokens, head dim, keys each
# batch entry keeps). LTX-2's text cross-attention (CFG's two prompts padded to 1024 tokens)
# and HunyuanVideo 1.5's joint self-attention at 480p, 121 frames (49,290 video tokens and
# its prompt's 256-token slot, 100 of them text).
DIT_ATTENTION = [("ltx2 text cross", 2, 32, 6144, 1024, 128, (1024, 230)),
                 ("hunyuanvideo15 joint self", 1, 16, 49546, 49546, 128, (49390,))]
QUICK_DIT_ATTENTION = [("tiny dit cross", 2, 2, 64, 100, 128, (100, 23))]


def _torch() -> tuple[Any, str]:
    """(torch, device) for the baseline: CUDA when usable, else CPU, else (None, '')."""
    torch = _harness.torch_cuda()
    if torch is not None:
        torch.backends.cudnn.allow_tf32 = False
        torch.backends.cuda.matmul.allow_tf32 = False
        torch.backends.cudnn.benchmark = True
        return torch, "cuda"
    if importlib.util.find_spec("torch") is not None:
        import torch as cpu_torch

        return cpu_torch, "cpu"
    return None, ""


def _measure(row: dict[str, Any], device: gpucore.Device, ours: Callable[[], Tensor],
             torch: Any, where: str, theirs: Callable[[], Any] | None, flops: float,
             repeat: int) -> dict[str, Any]:
    timing = _harness.ours_ms(ours, device, warmup=2, repeat=repeat)
    ms = timing["gpu_ms"] if np.isfinite(timing["gpu_ms"]) else timing["wall_ms"]
    row.update(dispatches=timing["dispatches"], ours_gpu_ms=timing["gpu_ms"],
               ours_wall_ms=timing["wall_ms"], ours_encode_ms=timing["encode_ms"],
               ours_TFLOPs=flops / (ms * 1e9) if flops else float("nan"))
    if theirs is None:
        return row
    expected = theirs().float().cpu().numpy()
    got = ours().numpy().astype(np.float32)
    row["max_rel_err"] = float(np.abs(got - expected).max() / max(np.abs(expected).max(), 1e-30))
    if where == "cuda":
        base = _harness.torch_cuda_ms(theirs, repeat=repeat)
    else:
        base = _harness.numpy_ms(theirs, repeat=max(2, repeat // 4))
    row.update(baseline=f"torch-{where}", baseline_ms=base, ratio=base / ms)
    return row


def _conv_rows(device, torch, where, specs, dtypes, repeat) -> list[dict[str, Any]]:
    rows = []
    rng = np.random.default_rng(0)
    for label, shape, c_out, k, stride, pad in specs:
        x = rng.standard_normal(shape, dtype=np.float32)
        w = (rng.standard_normal((c_out, shape[1], k, k), dtype=np.float32)
             / np.sqrt(shape[1] * k * k)).astype(np.float32)
        b = rng.standard_normal(c_out, dtype=np.float32)
        ho = (shape[2] + 2 * pad - k) // stride + 1
        flops = 2 * shape[0] * c_out * ho * ho * shape[1] * k * k
        variants = [("", None)]
        if k == 1:
            variants.append((" implicit-gemm", False))  # the path not taken by default
        for dtype in dtypes:
            xg, wg, bg = (Tensor.from_numpy(a.astype(dtype), device=device) for a in (x, w, b))
            theirs = None
            if torch is not None and (where == "cuda" or dtype == np.float32):
                tdt = torch.float32 if dtype == np.float32 else torch.float16
                tx, tw, tb = (torch.from_numpy(a).to(where, tdt) for a in (x, w, b))
                theirs = partial(torch.nn.functional.conv2d, tx, tw, tb, stride=stride,
                                 padding=pad)
            for suffix, via_linalg in variants:
                saved = conv_module.ONE_BY_ONE_VIA_LINALG
                if via_linalg is not None:
                    conv_module.ONE_BY_ONE_VIA_LINALG = via_linalg
                try:
                    row = {"op": f"conv2d {label}{suffix}",
                           "shape": f"{shape}->{c_out} k{k} s{stride}",
                           "dtype": np.dtype(dtype).name}
                    ours = partial(nn.conv2d, xg, wg, bg, stride=stride, padding=pad)
                    rows.append(_measure(row, device, ours, torch, where, theirs, flops, repeat))
                finally:
                    conv_module.ONE_BY_ONE_VIA_LINALG = saved
            del xg, wg, bg
    return rows


def _group_norm_rows(device, torch, where, shapes, dtypes, repeat) -> list[dict[str, Any]]:
    rows = []
    rng = np.random.default_rng(1)
    for shape, silu in shapes:
        x = rng.standard_normal(shape, dtype=np.float32)
        g, b = rng.standard_normal((2, shape[1]), dtype=np.float32)
        for dtype in dtypes:
            xg, gg, bg = (Tensor.from_numpy(a.astype(dtype), device=device) for a in (x, g, b))
            theirs = None
            if torch is not None and (where == "cuda" or dtype == np.float32):
                tdt = torch.float32 if dtype == np.float32 else torch.float16
                tx, tg, tb = (torch.from_numpy(a).to(where, tdt) for a in (x, g, b))
                f = torch.nn.functional

                def theirs(tx=tx, tg=tg, tb=tb, f=f, silu=silu) -> Any:
                    y = f.group_norm(tx, 32, tg, tb, eps=1e-6)
                    return f.silu(y) if silu else y

            row = {"op": "group_norm" + (" + silu" if silu else ""), "shape": f"{shape} g32",
                   "dtype": np.dtype(dtype).name}
            ours = partial(nn.group_norm, xg, 32, gg, bg, 1e-6, silu=silu)
            rows.append(_measure(row, device, ours, torch, where, theirs, 0, repeat))
    return rows


def _norm_conv(x: Tensor, w: Tensor, b: Tensor, g: Tensor, beta: Tensor,
               fused: bool) -> Tensor:
    if fused:
        return nn.conv2d(x, w, b, padding=1,
                         prologue=nn.group_norm_prologue(x, 32, g, beta, 1e-6, silu=True))
    return nn.conv2d(nn.group_norm(x, 32, g, beta, 1e-6, silu=True), w, b, padding=1)


def _up_conv(x: Tensor, w: Tensor, b: Tensor, fused: bool) -> Tensor:
    if fused:
        return nn.conv2d(x, w, b, padding=1, upsample=2)
    return nn.conv2d(nn.upsample_nearest2x(x), w, b, padding=1)


def _fused_rows(device, torch, where, dtypes, repeat, quick) -> list[dict[str, Any]]:
    """GroupNorm + SiLU + conv and upsample + conv, fused and as two ops, against torch's
    two or three ops."""
    rows = []
    rng = np.random.default_rng(3)
    specs = [("norm", *spec) for spec in NORM_CONVS] + [("up", *spec) for spec in UP_CONVS]
    if quick:
        specs = [("norm", "tiny", (1, 64, 16, 16), 32), ("up", "tiny", (1, 32, 8, 8), 32)]
    f = None if torch is None else torch.nn.functional
    for kind, label, shape, c_out in specs:
        x = rng.standard_normal(shape, dtype=np.float32)
        w = (rng.standard_normal((c_out, shape[1], 3, 3), dtype=np.float32)
             / np.sqrt(shape[1] * 9)).astype(np.float32)
        b = rng.standard_normal(c_out, dtype=np.float32)
        g, beta = rng.uniform(0.5, 1.5, shape[1]), rng.standard_normal(shape[1])
        size = shape[2] * (2 if kind == "up" else 1)
        flops = 2 * shape[0] * c_out * size * size * shape[1] * 9
        for dtype in dtypes:
            xg, wg, bg, gg, betag = (Tensor.from_numpy(np.asarray(a, dtype), device=device)
                                     for a in (x, w, b, g, beta))
            theirs = None
            if torch is not None and (where == "cuda" or dtype == np.float32):
                tdt = torch.float32 if dtype == np.float32 else torch.float16
                tx, tw, tb, tg, tbeta = (torch.from_numpy(np.asarray(a)).to(where, tdt)
                                         for a in (x, w, b, g, beta))

                def theirs(tx=tx, tw=tw, tb=tb, tg=tg, tbeta=tbeta, kind=kind) -> Any:
                    y = (f.silu(f.group_norm(tx, 32, tg, tbeta, eps=1e-6)) if kind == "norm"
                         else f.interpolate(tx, scale_factor=2, mode="nearest"))
                    return f.conv2d(y, tw, tb, padding=1)

            if kind == "norm":
                fused = partial(_norm_conv, xg, wg, bg, gg, betag, True)
                split = partial(_norm_conv, xg, wg, bg, gg, betag, False)
            else:
                fused, split = partial(_up_conv, xg, wg, bg, True), partial(_up_conv, xg, wg, bg,
                                                                            False)
            what = "group_norm+silu+conv2d" if kind == "norm" else "upsample2x+conv2d"
            for way, ours in (("fused", fused), ("two ops", split)):
                row = {"op": f"{what} {label} {way}", "shape": f"{shape}->{c_out} k3",
                       "dtype": np.dtype(dtype).name}
                rows.append(_measure(row, device, ours, torch, where, theirs, flops, repeat))
            del xg, wg, bg, gg, betag
    return rows


def _attention_rows(device, torch, where, specs, dtypes, repeat) -> list[dict[str, Any]]:
    if importlib.util.find_spec("gpustd.nn.attention") is None:
        return []
    rows = []
    rng = np.random.default_rng(2)
    for label, batch, heads, lq, lk, d, *kept in specs:
        q = rng.standard_normal((batch, heads, lq, d), dtype=np.float32)
        k, v = rng.standard_normal((2, batch, heads, lk, d), dtype=np.float32)
        flops = 4 * batch * heads * lq * lk * d
        masks: list[np.ndarray | None] = [None]
        if kept:  # a key mask: batch entry i keeps its first kept[i] keys
            masks.append(np.arange(lk) < np.array(kept[0])[:, None, None, None])
        for dtype, mask in ((t, m) for t in dtypes for m in masks):
            qg, kg, vg = (Tensor.from_numpy(a.astype(dtype), device=device) for a in (q, k, v))
            theirs = None
            if torch is not None and (where == "cuda" or (dtype == np.float32 and lq <= 4096)):
                tdt = torch.float32 if dtype == np.float32 else torch.float16
                tq, tk, tv = (torch.from_numpy(a).to(where, tdt) for a in (q, k, v))
                f = torch.nn.functional
                tmask = None if mask is None else torch.from_numpy(mask).to(where)
                theirs = partial(f.scaled_dot_product_attention, tq, tk, tv, attn_mask=tmask)
            what = "" if mask is None else f" masked, keeps {'/'.join(map(str, kept[0]))}"
            row = {"op": f"attention {label}{what}", "shape": f"B{batch} H{heads} {lq}x{lk} D{d}",
                   "dtype": np.dtype(dtype).name}
            # on the GPU, additive (LTX-2's form): the kernel timed, not an upload
            mg = None if mask is None else Tensor.from_numpy(
                np.where(mask, 0.0, -np.inf).astype(np.float32), device=device)
            ours = partial(nn.attention, qg, kg, vg, mask=mg)
            rows.append(_measure(row, device, ours, torch, where, theirs, flops, repeat))
            del qg, kg, vg, mg
    return rows


def run(quick: bool = False) -> dict[str, Any]:
    device = gpucore.default_device()
    torch, where = _torch()
    dtypes = [np.float32] + ([np.float16] if device.has_f16 else [])
    repeat = 3 if quick else 10
    norms = ([((1, 64, 32, 32), True)] if quick
             else [((1, 128, 512, 512), False), ((2, 320, 64, 64), True)])
    rows = []
    if os.environ.get("BENCH_NN_ATTENTION") != "1":  # 1: the attention rows only
        rows += _conv_rows(device, torch, where, QUICK_CONVS if quick else CONVS, dtypes, repeat)
        rows += _group_norm_rows(device, torch, where, norms, dtypes, repeat)
        rows += _fused_rows(device, torch, where, dtypes, repeat, quick)
    rows += _attention_rows(device, torch, where, QUICK_ATTENTION if quick else ATTENTION,
                            dtypes, repeat)
    if device.has_f16:  # the matrix units' path (float32 takes the portable kernel)
        rows += _attention_rows(device, torch, where,
                                QUICK_DIT_ATTENTION if quick else DIT_ATTENTION,
                                [np.float16], repeat)
    return {
        "benchmark": "nn",
        "environment": _harness.environment(device),
        "notes": "ms are medians; ours_gpu_ms from timestamp queries (all passes of the op), "
                 "ours_wall_ms includes submit + wait; ratio = baseline_ms / ours (> 1 means "
                 "we are faster); torch float32 runs with TF32 off; max_rel_err = max |ours - "
                 "torch| / max |torch|",
        "columns": COLUMNS,
        "rows": rows,
    }
