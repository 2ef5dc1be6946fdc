"""SDXL's float32 VAE at 1024x1024 (BENCH_VAE_SIZE), its decode and its encode: ours in
float32 and by the scaled float16 twins a float16 pipeline runs (diffusion/models/vae_half.py),
beside diffusers' AutoencoderKL in float32 in the same process, with TF32 on (cuDNN's default:
what diffusers' SDXL users get, its VAE kept in float32 by `force_upcast`) and off.

Ours is timed through what the pipeline calls (models.tiled_vae.vae_decode / vae_encode, and
HalfPasses.decode / encode after the two passes that calibrate and build the twin): host
array in, host array out, the twin's finiteness check included; diffusers' call is timed to
its CUDA synchronize, its output left on the GPU. Random weights drawn by diffusers; the
errors are against diffusers float32 without TF32 (the encoder's: its mean and logvar).
Each of ours again with the mid block's attention (16,384 tokens, one 512-wide head at 1024²)
in the flash kernel instead of two GEMMs (gpustd/nn/_attention_wide.py), and that attention
call alone against torch's SDPA in float16 and float32.

    GPUCORE_RUNTIME=dawn python -m bench vae_half --json OUT.json   # --quick: tiny, 64 px
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

import numpy as np

import gpucore

from . import _harness
from .vae import SD_VAE, TINY_VAE

COLUMNS = ["part", "side", "image", "wall_ms", "gpu_ms", "rel_err", "k", "vs_diffusers_tf32",
           "vs_torch_sdpa"]


def _error(got: np.ndarray, want: np.ndarray) -> float:
    return float(np.abs(got - want).max() / np.abs(want).max())


def _flash(fn: Callable[[], np.ndarray]) -> Callable[[], np.ndarray]:
    """`fn` with wide heads in the flash kernel (gpustd/nn/_attention_wide.py off)."""
    from gpustd.nn import _attention_wide

    def call() -> np.ndarray:
        before = _attention_wide.WIDE_FROM
        _attention_wide.WIDE_FROM = 1 << 30
        try:
            return fn()
        finally:
            _attention_wide.WIDE_FROM = before

    return call


def _attention_rows(size: int, repeat: int, cuda: bool,
                    device: gpucore.Device) -> list[dict[str, Any]]:
    """The mid block's attention alone, (1, (size / 8)², 512) one head: ours as two GEMMs
    (the default) and in the flash kernel, GPU and wall ms, against torch's SDPA (CUDA
    events) in float16 and float32 (TF32 off); errors against torch float64 on the CPU for
    4 query rows."""
    import torch
    import torch.nn.functional as F

    tokens = (size // 8) ** 2
    rng = np.random.default_rng(1)
    # the VAE's q, k, v: GroupNorm'd activations through 512 x 512 projections, O(1)
    host = [rng.standard_normal((1, tokens, 512)).astype(np.float32) for _ in range(3)]
    rows = [0, 1, tokens // 2, tokens - 1]
    q, k, v = (torch.from_numpy(x[:, None].astype(np.float64)) for x in host)
    want = F.scaled_dot_product_attention(q[:, :, rows], k, v)[0, 0].numpy()  # rows alone
    out = []
    for dtype in (np.float16, np.float32):
        arrays = [x.astype(dtype) for x in host]
        part = f"attention {np.dtype(dtype).name}"
        for row in _attention_calls(arrays, repeat, cuda, device):
            got = row.pop("out")
            out.append({"part": part, "image": f"{size}x{size}", **row,
                        "rel_err": _error(got[rows].astype(np.float64), want), "k": None})
            print(f"{part}, {row['side']}: {row['gpu_ms']:.3f} ms GPU", flush=True)
    baseline = {row["part"]: row["gpu_ms"] for row in out if row["side"] == "torch SDPA"}
    for row in out:
        row["vs_torch_sdpa"] = baseline.get(row["part"], float("nan")) / row["gpu_ms"]
    return out


def _attention_calls(arrays: list[np.ndarray], repeat: int, cuda: bool,
                     device: gpucore.Device) -> list[dict[str, Any]]:
    """{side, wall_ms, gpu_ms, out} of ours (two GEMMs, the flash kernel) and torch's SDPA
    (CUDA events, TF32 off) on (1, L, 512) q, k, v."""
    import torch
    import torch.nn.functional as F

    from gpustd import Tensor
    from gpustd.nn.attention import attention

    tensors = [Tensor.from_numpy(x, device=device) for x in arrays]

    def ours() -> Any:
        return attention(*tensors, heads=1)

    found = []
    for side, fn in (("ours, two GEMMs", ours), ("ours, flash kernel", _flash(ours))):
        timed = _harness.ours_ms(fn, device, warmup=1, repeat=repeat)
        found.append({"side": side, "wall_ms": timed["wall_ms"], "gpu_ms": timed["gpu_ms"],
                      "out": fn().numpy()[0]})
    if cuda:
        torch.backends.cuda.matmul.allow_tf32 = False
        q, k, v = (torch.from_numpy(x[:, None]).cuda() for x in arrays)

        def sdpa() -> Any:
            return F.scaled_dot_product_attention(q, k, v)

        ms = _harness.torch_cuda_ms(sdpa, repeat=repeat)
        found.append({"side": "torch SDPA", "wall_ms": ms, "gpu_ms": ms,
                      "out": sdpa()[0, 0].float().cpu().numpy()})
    return found


def run(quick: bool = False) -> dict[str, Any]:
    import diffusers
    import torch

    from diffusion.models import AutoencoderKL
    from diffusion.models.tiled_vae import vae_decode, vae_encode
    from diffusion.models.vae_half import HalfPasses

    size = 64 if quick else int(os.environ.get("BENCH_VAE_SIZE", "1024"))
    config = dict(TINY_VAE if quick else SD_VAE, sample_size=size, scaling_factor=0.13025,
                  force_upcast=True)
    device = gpucore.default_device()
    cuda = _harness.torch_cuda() is not None
    repeat = 2 if quick else 10
    torch.manual_seed(0)
    reference = diffusers.AutoencoderKL(**config).eval().to("cuda" if cuda else "cpu")
    ours = AutoencoderKL(dict(reference.config), device=device)
    ours.load_state_dict({k: v.float().cpu().numpy() for k, v in reference.state_dict().items()})
    rng = np.random.default_rng(0)
    inputs = {"decode": rng.standard_normal((1, 4, size // 8, size // 8)).astype(np.float32),
              "encode": rng.uniform(-1, 1, (1, 3, size, size)).astype(np.float32)}
    passes = HalfPasses()

    def theirs(part: str) -> Callable[[], Any]:
        x = torch.from_numpy(inputs[part]).to(next(reference.parameters()).device)
        if part == "decode":
            return lambda: reference.decode(x).sample

        def encode() -> Any:
            dist = reference.encode(x).latent_dist
            return torch.cat([dist.mean, dist.logvar], 1)

        return encode

    def moments(pair: tuple[np.ndarray, np.ndarray]) -> np.ndarray:
        return np.concatenate(pair, axis=1)

    sides: dict[str, dict[str, Callable[[], np.ndarray]]] = {
        "decode": {"ours float32": lambda: vae_decode(ours, inputs["decode"]),
                   "ours float16 twin": lambda: passes.decode(ours, inputs["decode"])},
        "encode": {"ours float32": lambda: moments(vae_encode(ours, inputs["encode"])),
                   "ours float16 twin": lambda: moments(passes.encode(ours, inputs["encode"]))}}
    for part in sides:  # the mid block's attention in the flash kernel, as before it
        for name in list(sides[part]):
            sides[part][f"{name}, flash attention"] = _flash(sides[part][name])
    rows = []
    for part in ("decode", "encode"):
        call = theirs(part)
        found: dict[str, tuple[float, np.ndarray]] = {}
        with torch.no_grad():
            for tf32 in (False, True):
                torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = tf32
                name = "diffusers float32" + (" TF32" if tf32 else "")
                out = call().float().cpu().numpy().astype(np.float64)
                found[name] = (_harness.torch_wall_ms(call, torch, repeat, cuda=cuda), out)
                print(f"{part}, {name}: {found[name][0]:.1f} ms", flush=True)
        want = found["diffusers float32"][1]
        for name, fn in sides[part].items():  # the twin's warm-up calibrates, then builds it
            found[name] = (_harness.numpy_ms(fn, warmup=2, repeat=repeat), fn())
            print(f"{part}, {name}: {found[name][0]:.1f} ms", flush=True)
        baseline = found["diffusers float32 TF32"][0]
        for name, (ms, out) in found.items():
            scale = passes.scales.get((id(ours), "decoder" if part == "decode" else "encoder"))
            rows.append({"part": part, "side": name, "image": f"{size}x{size}", "wall_ms": ms,
                         "rel_err": _error(out, want), "vs_diffusers_tf32": baseline / ms,
                         "k": scale if "twin" in name else None})
    rows += _attention_rows(size, repeat, cuda, device)
    return {
        "benchmark": "vae_half",
        "environment": _harness.environment(device),
        "notes": __doc__.split("\n\n")[0] + " wall_ms: medians of " + str(repeat) + "; "
                 "vs_diffusers_tf32 = diffusers float32 TF32 wall / this row's (above 1: "
                 "faster); k: the twin's scale 2^-k. The attention rows: the mid block's "
                 "call alone, ours against torch's SDPA by GPU time (vs_torch_sdpa, above "
                 "1: faster), errors on 4 query rows against torch float64.",
        "columns": COLUMNS,
        "rows": rows,
    }
