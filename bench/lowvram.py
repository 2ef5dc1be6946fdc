"""Small GPUs: the memory modes' peak and time against the plain run, and quantized UNets.

Rows "mode": SD 1.5 512x512 under --max-vram 2G and SDXL base 1024x1024 under --max-vram 4G
(and --medvram, --lowvram), float16, 20 steps, Euler a, CFG 7: the generation's peak device
memory (`memory_stats()`, absolute: weights included; reserved counts the pool's idle buffers,
what the device really holds), its wall time against the plain run's, and whether its picture
is the plain one bit for bit (else the mean pixel difference, 0-255). Each mode runs once to
warm up (kernels, captures) and once timed, on the same loaded pipeline.
Rows "quant": the same models with the UNet from a GGUF in Q8_0 and Q4_K (weights kept
quantized; "fused" rows: the linear layers' GEMM reads the blocks itself, on the matrix units'
devices too, each conv dequantizes into a scratch first; "scratch" rows: every GEMM too),
against the float16 UNet: the UNet's bytes, the txt2img time, and the mean pixel difference
from the float16 picture. Random weights from
diffusers' published configs, so the pictures are noise; the difference still measures the
quantization's effect on them.
Rows "mode" of the flow families (bench/_lowvram_flow.py): FLUX.1 dev (CFG 1, distilled
guidance 3.5) and Qwen-Image (true CFG 4: two transformer passes a step) at 1024x1024, float16,
BENCH_STEPS (default 3) Euler steps after a one-step warm-up, random weights at the released
configs built in-process: the same columns, and seconds_per_step (the mean time between the
step callbacks), the driver's peak (cudaMemGetInfo sampled, above the level before loading,
with CUDA) and the weights' GiB; --max-vram is the least budget the model takes
(flow_memory.smallest_flow_budget) rounded up to whole GiB plus 1 GiB.
BENCH_LOWVRAM=sd15,sdxl,flux,qwenimage,modes,quant (default: all) picks the models and the
parts (e.g. "sdxl,quant": only SDXL's quantized rows; the flow models have mode rows only);
`--quick`: tiny models at 64x64, 2 steps, a budget of 0.6 of the plain run's peak (flow
models: halfway from their least budget to the plain peak; a smoke run).
"""

from __future__ import annotations

import gc
import json
import os
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

import gpucore

from . import _harness
from . import _lowvram_flow as _flow
from .memory import _quantized_unet, _unet_gib, write_sdxl_folder
from .txt2img import write_sd15_folder

COLUMNS = ["kind", "model", "size", "setting", "seconds", "seconds_per_step", "vs_plain",
           "peak_allocated_gib", "peak_reserved_gib", "driver_peak_gib", "budget_gib",
           "within_budget", "unet_gib", "unet_vs_f16", "same_picture", "mean_pixel_diff",
           "evictions", "uploaded_gib"]
GIB = float(1 << 30)
MODELS = {"sd15": (512, 2 << 30, write_sd15_folder), "sdxl": (1024, 4 << 30, write_sdxl_folder)}


def _emit(row: dict[str, Any]) -> None:
    print(json.dumps(row), flush=True)  # a row at a time: a cut-off run keeps it


def _generate(pipe: Any, size: int, steps: int) -> tuple[np.ndarray, float]:
    start = time.perf_counter()
    image = pipe.txt2img("a lighthouse on a cliff at dusk", negative_prompt="blurry",
                         steps=steps, cfg_scale=7.0, seed=42, width=size, height=size,
                         sampler="Euler a").images[0]
    return image, time.perf_counter() - start


def _measured(pipe: Any, device: gpucore.Device, size: int, steps: int
              ) -> tuple[np.ndarray, float, gpucore.MemoryStats]:
    _generate(pipe, size, 2)  # warm: kernels compiled, captures recorded
    gc.collect()
    device.empty_pool()
    device.reset_peak_memory()
    image, seconds = _generate(pipe, size, steps)
    device.synchronize()
    return image, seconds, device.memory_stats()


def _compare(image: np.ndarray, plain: np.ndarray) -> dict[str, Any]:
    same = bool(np.array_equal(image, plain))
    return {"same_picture": same,
            "mean_pixel_diff": float(np.abs(image.astype(int) - plain).mean())}


def _modes(model: str, pipe: Any, device: gpucore.Device, quick: bool) -> list[dict[str, Any]]:
    from diffusion.pipelines.sd.memory import MemoryMode

    size, budget, _ = MODELS[model]
    size, steps = (64, 2) if quick else (size, 20)
    rows, plain = [], None
    for setting in ("plain", "--medvram", "--lowvram", "--max-vram"):
        if setting == "--max-vram" and quick:  # the budget is hard: 0.6 of the plain peak
            budget = int(0.6 * rows[0]["peak_reserved_gib"] * GIB)
        mode = {"plain": MemoryMode(), "--medvram": MemoryMode(medvram=True),
                "--lowvram": MemoryMode(lowvram=True)}.get(setting, MemoryMode(max_vram=budget))
        setting += f" {budget >> 20}M" if mode.max_vram else ""
        pipe.set_memory_mode(mode)
        image, seconds, stats = _measured(pipe, device, size, steps)
        if plain is None:
            plain = (image, seconds)
        residency = pipe.memory.residency if pipe.memory is not None else None
        row = {"kind": "mode", "model": model, "size": f"{size}x{size}", "setting": setting,
               "seconds": seconds, "vs_plain": seconds / plain[1],
               "peak_allocated_gib": stats.peak_allocated / GIB,
               "peak_reserved_gib": stats.peak_reserved / GIB,
               "budget_gib": mode.max_vram / GIB if mode.max_vram else None,
               "within_budget": stats.peak_reserved <= mode.max_vram if mode.max_vram else None,
               "evictions": residency.evictions if residency else 0,
               "uploaded_gib": residency.uploaded / GIB if residency else 0.0,
               **_compare(image, plain[0])}
        rows.append(row)
        _emit(row)
    pipe.set_memory_mode(MemoryMode())
    return rows


def _quant(model: str, pipe: Any, root: Path, device: gpucore.Device,
           quick: bool) -> list[dict[str, Any]]:
    size, _, _ = MODELS[model]
    size, steps = (64, 2) if quick else (size, 20)
    from gpustd.nn.quantized_linear import FUSED

    rows, reference = [], None
    original = pipe.unet
    # "fused": the linear layers' GEMM reads the blocks itself, on the matrix-unit devices too
    # (FUSED.everywhere; by default those keep the scratch); "scratch": every weight is
    # dequantized into a scratch before its GEMM (FUSED off)
    for format in ("f16", "q8_0 fused", "q8_0 scratch", "q4_k fused", "q4_k scratch"):
        if format.endswith("fused"):
            pipe.unet, _ = _quantized_unet(pipe, root, device, format.split()[0])
            gc.collect()
            device.empty_pool()
        FUSED.enabled = FUSED.everywhere = not format.endswith("scratch")
        pipe._unet_capture.captured.reset()  # the replay keeps the dispatches it recorded
        try:
            image, seconds, _ = _measured(pipe, device, size, steps)
        finally:
            FUSED.enabled, FUSED.everywhere = True, False
        unet = _unet_gib(pipe.unet)
        if reference is None:
            reference = (image, seconds, unet)
        row = {"kind": "quant", "model": model, "size": f"{size}x{size}", "setting": format,
               "seconds": seconds, "vs_plain": seconds / reference[1], "unet_gib": unet,
               "unet_vs_f16": unet / reference[2], **_compare(image, reference[0])}
        rows.append(row)
        print(json.dumps(row), flush=True)
    pipe.unet = original
    return rows


def run(quick: bool = False) -> dict[str, Any]:
    from diffusion import load_pipeline

    device = gpucore.default_device()
    parts = os.environ.get("BENCH_LOWVRAM", "sd15,sdxl,flux,qwenimage,modes,quant").split(",")
    unknown = sorted(set(parts) - {*MODELS, *_flow.MODELS, "modes", "quant"})
    if unknown:
        raise ValueError(f"BENCH_LOWVRAM names {unknown}; use any of sd15, sdxl, flux, "
                         "qwenimage, modes, quant, comma-separated (e.g. BENCH_LOWVRAM=flux)")
    if "modes" not in parts and "quant" not in parts:
        parts.append("modes")
    rows: list[dict[str, Any]] = []
    for model in ("sd15", "sdxl"):
        if model not in parts:
            continue
        with tempfile.TemporaryDirectory() as tmp:
            root = Path(tmp)
            MODELS[model][2](root, quick)
            pipe = load_pipeline(root, device=device,
                                 dtype=np.float16 if device.has_f16 else np.float32)
            if "modes" in parts:
                rows += _modes(model, pipe, device, quick)
            if "quant" in parts:
                rows += _quant(model, pipe, root, device, quick)
            pipe = None
            gc.collect()
            device.empty_pool()
    steps = 2 if quick else int(os.environ.get("BENCH_STEPS", "3"))
    for model in _flow.MODELS:
        if model in parts and "modes" in parts:
            try:  # an out-of-memory model loses its own rows only
                rows += _flow.mode_rows(model, device, quick, steps, _harness.torch_cuda(),
                                        _emit)
            except Exception as exc:  # recorded: the other models go on
                rows.append({"kind": "mode", "model": model,
                             "error": f"{type(exc).__name__}: {exc}"})
                _emit(rows[-1])
            gc.collect()
            device.empty_pool()
    return {
        "benchmark": "lowvram",
        "environment": _harness.environment(device),
        "notes": "mode rows: peaks absolute (weights included) over the timed generation; "
                 "vs_plain = seconds / the plain run's; medvram keeps the UNet replayed, "
                 "lowvram and max-vram run it eagerly (op by op) while its blocks stream. "
                 "flow mode rows: the same, seconds_per_step = the mean time between "
                 "step callbacks, driver_peak_gib = cudaMemGetInfo's peak above the level "
                 "before loading; "
                 "quant rows: the UNet from a GGUF (kept quantized, dequantized before each "
                 "GEMM/conv), vs_plain = seconds / float16's, unet_vs_f16 = its bytes / "
                 "float16's; random weights (pictures are noise)",
        "columns": COLUMNS,
        "rows": rows,
    }
