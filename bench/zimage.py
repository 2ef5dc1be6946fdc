"""Full-size Z-Image: one transformer step at 1024x1024 and one Qwen3-4B prompt encoding
(random weights at the real configs), ours against diffusers / transformers in one process.

The weights are drawn once by torch on its device in bf16 (normal(0, 0.02); norm scales
1 + normal(0, 0.02)), so converting them to float16 for ours loses nothing; the reference runs
them in bf16 and then fp16 (Qwen3's rotary table kept float32 through those casts, `_cast`),
they go to the host one tensor at a time, torch's copy is freed, and ours loads them. Ours:
float16 where the adapter has shader-f16, float32 otherwise. rel_err: ours against the
reference in fp16 on CUDA (fp32 on the CPU). Memory: ours from Device.memory_stats (weights
included), torch's from max_memory_allocated.

Shapes: the transformer (Z-Image Turbo's config), batch 1 (Turbo runs without CFG), 128x128
latents (4096 patches) and a 160-token caption; the text encoder (Qwen3-4B's config), one
prompt of 512 tokens (ZImagePipeline pads to 512), hidden states[-2] (35 of its 36 layers).
BENCH_MODELS=zimage,qwen3 picks them (default: both). BENCH_ACC16=1 adds the transformer's
step with every GEMM's f16 accumulators (`float16 acc16`, `--fp16-accumulation`). `--quick`:
tiny configs (a smoke run on any adapter).
"""

from __future__ import annotations

import gc
import json
import os
import time
from typing import Any

import numpy as np

import gpucore
import gpustd
from gpustd.gemm import matrix_units

from . import _harness
from .sdxl import _PeakMemory, _settled_use

# Tongyi-MAI/Z-Image-Turbo, transformer/config.json
ZIMAGE_TURBO: dict[str, Any] = dict(
    all_patch_size=(2,), all_f_patch_size=(1,), in_channels=16, dim=3840, n_layers=30,
    n_refiner_layers=2, n_heads=30, n_kv_heads=30, norm_eps=1e-5, qk_norm=True,
    cap_feat_dim=2560, rope_theta=256.0, t_scale=1000.0, axes_dims=(32, 48, 48),
    axes_lens=(1536, 512, 512))
TINY_ZIMAGE: dict[str, Any] = dict(ZIMAGE_TURBO, dim=64, n_layers=2, n_refiner_layers=1,
                                   n_heads=4, n_kv_heads=4, cap_feat_dim=48, axes_dims=(4, 6, 6))
# Qwen/Qwen3-4B, config.json
QWEN3_4B: dict[str, Any] = dict(
    model_type="qwen3", vocab_size=151936, hidden_size=2560, intermediate_size=9728,
    num_hidden_layers=36, num_attention_heads=32, num_key_value_heads=8, head_dim=128,
    rms_norm_eps=1e-6, rope_theta=1_000_000.0, max_position_embeddings=40960,
    tie_word_embeddings=True)
TINY_QWEN3: dict[str, Any] = dict(QWEN3_4B, vocab_size=512, hidden_size=48,
                                  intermediate_size=80, num_hidden_layers=3,
                                  num_attention_heads=4, num_key_value_heads=2, head_dim=12)
COLUMNS = ["model", "impl", "dtype", "dispatches", "rel_err", "gpu_ms", "wall_ms", "peak_gib",
           "vs_bf16", "vs_fp16"]
GIB = float(1 << 30)


def _inputs(model: str, quick: bool) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    if model == "zimage":
        config = TINY_ZIMAGE if quick else ZIMAGE_TURBO
        latent, caption = (16, 20) if quick else (128, 160)
        return {"latents": rng.standard_normal((1, 16, latent, latent)),
                "caption": rng.standard_normal((caption, config["cap_feat_dim"])),
                "t": np.array([0.3])}
    config = TINY_QWEN3 if quick else QWEN3_4B
    return {"ids": rng.integers(0, config["vocab_size"], (1, 24 if quick else 512))}


def _reference(model: str, quick: bool, dev: str) -> Any:
    """The reference built on `dev` in bf16, its weights drawn there (seed 0)."""
    import diffusers
    import torch
    import transformers

    torch.manual_seed(0)
    saved = torch.get_default_dtype()
    torch.set_default_dtype(torch.bfloat16)
    try:
        with torch.device(dev):
            if model == "zimage":
                ref = diffusers.ZImageTransformer2DModel(
                    **(TINY_ZIMAGE if quick else ZIMAGE_TURBO))
            else:
                ref = transformers.Qwen3Model(transformers.Qwen3Config(
                    **(TINY_QWEN3 if quick else QWEN3_4B)))
    finally:
        torch.set_default_dtype(saved)
    ref = _cast(ref, torch.bfloat16).eval()
    with torch.no_grad():
        for name, p in ref.named_parameters():
            if p.ndim == 1 and "norm" in name and name.endswith("weight"):
                p.normal_(1.0, 0.02)
            else:
                p.normal_(0.0, 0.02)
    return ref


def _cast(ref: Any, dtype: Any) -> Any:
    """`ref.to(dtype)` with Qwen3's rotary table left float32, as the model computes it:
    Module.to casts every floating buffer, and bf16's rounding of `inv_freq` (up to 3.7e-3
    relative) turns the angles of 512 positions by up to ~1.5 radians, which moved the
    reference's hidden states[-2] by 0.19 of their largest value (ours keep the float32
    table; torch's fp16 with the float32 table is within 0.006 of its float32)."""
    rotary = getattr(ref, "rotary_emb", None)
    if not hasattr(rotary, "original_inv_freq"):  # a DiT's (Krea 2's) computes its own
        return ref.to(dtype)
    table = rotary.original_inv_freq.float().clone()
    ref = ref.to(dtype)
    if rotary is not None:  # (always, here; for the type checker)
        rotary.inv_freq = table
        rotary.original_inv_freq = table.clone()
    return ref


def _torch_call(model: str, ref: Any, x: dict[str, np.ndarray], tdtype: Any, dev: str) -> Any:
    import torch

    if model == "zimage":
        latents = [torch.from_numpy(x["latents"][0, :, None]).to(dev, tdtype)]
        caption = [torch.from_numpy(x["caption"]).to(dev, tdtype)]
        t = torch.from_numpy(x["t"].astype(np.float32)).to(dev)

        def call() -> Any:
            with torch.no_grad():
                return ref(latents, t, caption).sample[0][:, 0]
    else:
        ids = torch.from_numpy(x["ids"]).to(dev)

        def call() -> Any:
            with torch.no_grad():
                return ref(input_ids=ids, output_hidden_states=True).hidden_states[-2]
    return call


def _torch_rows(model: str, ref: Any, x: dict[str, np.ndarray], cuda: Any, repeat: int,
                expected: dict[str, np.ndarray]) -> list[dict[str, Any]]:
    import torch

    if cuda is None:
        _cast(ref, torch.float32)
        expected["float32"] = _torch_call(model, ref, x, torch.float32, "cpu")().numpy()
        return [{"model": model, "impl": "reference", "dtype": "float32"}]
    rows = []
    for name, tdtype in (("bfloat16", torch.bfloat16), ("float16", torch.float16)):
        _cast(ref, tdtype)
        call = _torch_call(model, ref, x, tdtype, "cuda")
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        expected[name] = call().float().cpu().numpy()
        best = _harness.torch_best_eager(call, torch, repeat)
        rows.append({"model": model, "impl": "reference", "dtype": name,
                     "gpu_ms": best["torch_gpu_ms"], "wall_ms": best["torch_wall_ms"],
                     "peak_gib": torch.cuda.max_memory_allocated() / GIB})
        print(f"reference {model} {name}: {best['torch_wall_ms']:.1f} ms", flush=True)
    return rows


def _ours(model: str, config: dict[str, Any], weights: dict[str, np.ndarray],
          x: dict[str, np.ndarray], dtype: np.dtype, device: gpucore.Device, cuda: Any,
          repeat: int) -> list[tuple[dict[str, Any], np.ndarray]]:
    """Ours loaded from `weights`, one call timed: [(row, output)]; with BENCH_RAGGED_M
    (comma-separated row counts, e.g. "1000000000,2048") a row for each value of gpustd's
    matrix_units.RAGGED_M too, in the same process on the same weights (1e9: the GEMM rule
    before ragged M took the big tiles); with BENCH_RAGGED_KERNEL=0 a row with
    matrix_units.RAGGED_KERNEL off (ragged-M products in the checked kernel, as before)."""
    from diffusion.models.llm import LLMTextModel
    from diffusion.models.z_image import ZImageTransformer2DModel

    settled = _settled_use(device, cuda)
    device.reset_peak_memory()
    base = device.memory_stats().allocated
    kind = ZImageTransformer2DModel if model == "zimage" else LLMTextModel
    ours = kind(dict(config), dtype=dtype, device=device)
    ours.load_state_dict(weights, dtype=dtype)
    if model == "zimage":
        latents = gpustd.asarray(x["latents"], dtype=dtype, device=device)
        caption = [gpustd.asarray(x["caption"], device=device)]

        def fn() -> Any:
            return ours(latents, x["t"], caption)
    else:
        def fn() -> Any:
            return ours.hidden_states(x["ids"], layer=-2)
    device.reset_peak_memory()
    with _PeakMemory(cuda, settled) as driver:
        got = np.asarray(fn().numpy(), np.float64)
    step = device.memory_stats()
    timing = _harness.ours_ms(fn, device, warmup=1, repeat=repeat)
    row = {"model": model, "impl": "ours", "dtype": dtype.name, **timing,
           "peak_gib": (step.peak_allocated - base) / GIB, "driver_step_peak_gib": driver.peak}
    if device.has_timestamps:
        row["kernels"], row["gemms"] = kernel_profile(fn, device)
    out = [(row, got)]
    if os.environ.get("BENCH_ACC16") == "1" and dtype == np.float16 and model == "zimage":
        timing, other = acc16_call(fn, device, repeat)
        out.append(({"model": model, "impl": "ours", "dtype": "float16 acc16", **timing},
                    other))
        print(f"ours {model} float16 acc16: {timing['wall_ms']:.1f} ms", flush=True)
    rule = matrix_units.RAGGED_M, matrix_units.RAGGED_KERNEL
    settings = [("RAGGED_M", int(v)) for v in os.environ.get("BENCH_RAGGED_M", "").split(",")
                if v]
    settings += [("RAGGED_KERNEL", bool(int(v)))
                 for v in os.environ.get("BENCH_RAGGED_KERNEL", "").split(",") if v]
    try:
        for name, value in settings:
            matrix_units.RAGGED_M, matrix_units.RAGGED_KERNEL = rule
            setattr(matrix_units, name, value)
            print(f"-- ours {model} with {name}={value}", flush=True)
            other = np.asarray(fn().numpy(), np.float64)
            extra = {"model": model, "impl": f"ours {name.lower()}={int(value)}",
                     "dtype": dtype.name,
                     **_harness.ours_ms(fn, device, warmup=1, repeat=repeat),
                     "vs_default_max_abs": float(np.abs(other - got).max())}
            if device.has_timestamps:
                extra["kernels"], extra["gemms"] = kernel_profile(fn, device)
            out.append((extra, other))
    finally:
        matrix_units.RAGGED_M, matrix_units.RAGGED_KERNEL = rule
    return out


def acc16_call(fn: Any, device: gpucore.Device, repeat: int
               ) -> tuple[dict[str, Any], np.ndarray]:
    """BENCH_ACC16=1's run of a step: `fn` with every GEMM's f16 accumulators (what
    `--fp16-accumulation` asks): its timing and its output."""
    from gpustd.gemm.accumulate import accumulating

    with accumulating("f16"):
        got = np.asarray(fn().numpy(), np.float64)
        return _harness.ours_ms(fn, device, warmup=1, repeat=repeat), got


def kernel_profile(fn: Any, device: gpucore.Device
                   ) -> tuple[dict[str, dict[str, float]], list[dict[str, Any]]]:
    """Where one call's GPU time goes: {kernel label: {"calls", "ms"}}, and its GEMM
    dispatches grouped by (label, m, n, k, workgroups) -- the first three u32 of a GEMM's
    params are m, n, k; its grid says the tile (n / x by m / y) -- with their calls and ms,
    slowest first. Printed as tables."""
    shapes: list[tuple[str, tuple[int, ...]]] = []
    record = device.record_dispatch

    def noted(pipeline: Any, layout: Any, buffers: Any, params: Any, workgroups: Any,
              label: str) -> None:
        gemm = "gemm" in label and params is not None and len(params) >= 12
        shapes.append((label, (*np.frombuffer(params[:12], np.uint32).tolist(),
                               *workgroups) if gemm else ()))
        record(pipeline, layout, buffers, params, workgroups, label)

    device.record_dispatch = noted  # type: ignore[method-assign]
    try:
        with device.profile() as prof:
            fn()
    finally:
        del device.record_dispatch
    kernels = {k: {"calls": n, "ms": ns / 1e6} for k, (n, ns) in prof.summary().items()}
    groups: dict[tuple[Any, ...], list[float]] = {}
    if len(shapes) == len(prof.records):  # one timestamp pair a dispatch, in order
        for (label, shape), (_, ns) in zip(shapes, prof.records, strict=True):
            if shape:
                groups.setdefault((label, *shape), []).append(ns / 1e6)
    gemms = sorted(({"kernel": key[0], "m": key[1], "n": key[2], "k": key[3],
                     "workgroups": list(key[4:]), "calls": len(ms), "ms": sum(ms),
                     "tflops": 2 * key[1] * key[2] * key[3] * key[6] * len(ms)
                     / (sum(ms) * 1e9)} for key, ms in groups.items()),
                   key=lambda g: -g["ms"])
    print("\n".join(prof.table().splitlines()[:16]))
    for g in gemms[:16]:
        print(f"{g['kernel']:<44} m{g['m']:>6} n{g['n']:>6} k{g['k']:>6} "
              f"grid {g['workgroups']} x{g['calls']:>3} {g['ms']:8.2f} ms "
              f"{g['tflops']:6.1f} TFLOP/s", flush=True)
    return kernels, gemms


def _one_model(model: str, quick: bool, device: gpucore.Device, cuda: Any
               ) -> list[dict[str, Any]]:
    import torch

    config = {"zimage": TINY_ZIMAGE if quick else ZIMAGE_TURBO,
              "qwen3": TINY_QWEN3 if quick else QWEN3_4B}[model]
    repeat = 2 if quick else 5
    dtype = np.dtype(np.float16 if device.has_f16 else np.float32)
    ref = _reference(model, quick, "cuda" if cuda else "cpu")
    x = _inputs(model, quick)
    expected: dict[str, np.ndarray] = {}
    rows = _torch_rows(model, ref, x, cuda, repeat, expected)
    tdtype = torch.float16 if dtype == np.float16 else torch.float32
    weights = {k: v.detach().to(tdtype).cpu().numpy() for k, v in ref.state_dict().items()}
    del ref
    gc.collect()
    if cuda:
        torch.cuda.empty_cache()
    ours = _ours(model, config, weights, x, dtype, device, cuda, repeat)
    del weights
    gc.collect()
    device.empty_pool()
    main = expected.get("float16" if cuda else "float32")
    for row, got in ours:
        row["rel_err"] = float(np.abs(got - main).max() / np.abs(main).max())
        for other in rows:
            if "wall_ms" in other:
                row["vs_bf16" if other["dtype"] == "bfloat16" else "vs_fp16"] = (
                    other["wall_ms"] / row["wall_ms"])
    return [*rows, *(row for row, _ in ours)]


def run(quick: bool = False) -> dict[str, Any]:
    device = gpucore.default_device()
    cuda = _harness.torch_cuda()
    wanted = [m for m in os.environ.get("BENCH_MODELS", "zimage,qwen3").split(",") if m]
    unknown = sorted(set(wanted) - {"zimage", "qwen3"})
    if unknown:
        raise ValueError(f"BENCH_MODELS names {unknown}; use zimage and/or qwen3, "
                         "comma-separated (e.g. BENCH_MODELS=zimage,qwen3)")
    rows = []
    for model in wanted:
        start = time.perf_counter()
        model_rows = _one_model(model, quick, device, cuda)
        print(json.dumps(model_rows, default=float), f"({time.perf_counter() - start:.0f} s)",
              flush=True)  # a cut-off run keeps it
        rows += model_rows
    return {
        "benchmark": "zimage",
        "environment": _harness.environment(device),
        "notes": "Z-Image Turbo's transformer, one step at 1024x1024 (4096 patches, a "
                 "160-token caption, batch 1), and Qwen3-4B's hidden states[-2] of one "
                 "512-token prompt; random bf16 weights drawn by torch (normal(0, 0.02), norm "
                 "scales 1 + normal(0, 0.02)) shared by every row (Qwen3's rotary table "
                 "kept float32 through the reference's dtype casts); ours float16 (float32 "
                 "without shader-f16), eager; rel_err = max|ours - reference| / "
                 "max|reference| against the reference in fp16 on CUDA (fp32 on the CPU); "
                 "wall_ms medians; vs_bf16 / vs_fp16 = reference wall_ms / ours (above 1: we "
                 "are faster); peak_gib: reference torch.cuda.max_memory_allocated, ours "
                 "Device.memory_stats peak above the level before loading, weights included",
        "columns": COLUMNS,
        "rows": rows,
    }
