"""Full-size FLUX.1 dev and SD 3.5 Large transformer steps at 1024x1024 (random weights).

One denoising step of each transformer runs on diffusers/torch (bf16 and fp16, on CUDA) and on
our kernels (float16 where the adapter has shader-f16, float32 otherwise), on the same weights
and inputs. The weights are drawn once by torch on its device, in bf16 (normal(0, 0.02); norm
scales 1 + normal(0, 0.02)), so converting them to float16 for ours loses nothing; diffusers
runs them in bf16 and then in fp16, they go to the host one tensor at a time, torch's copy is
freed, and ours loads them. Timings: ours eager (the Python ops) and replayed (gpustd.capture),
torch's best eager configuration. rel_err: ours against diffusers fp16 (and bf16) on CUDA, or
against diffusers fp32 on the CPU. Memory: ours from Device.memory_stats (and the driver's
cudaMemGetInfo peak with CUDA), torch's from max_memory_allocated; weights included.

Step shapes (1024x1024 pictures: 128x128 latents): FLUX dev, batch 1 (distilled guidance, no
CFG), 4096 image tokens of 64 channels, 512 T5 tokens, guidance 3.5; SD 3.5 Large, batch 2
(CFG), 16x128x128 latents (4096 patches), 333 text tokens (77 CLIP + 256 T5).
BENCH_MODELS=flux,sd35 picks the models (default: flux; each takes ~1-1.5 min on an H100).
BENCH_INT8=1 adds ours with `--int8`'s W8A8 linear layers (diffusion.models.int8) after the
float rows, its rel_err against the same references: first with each activation quantized by
a pass of its own (`+int8 separate`), then as --int8 runs (`+int8`: the modulated norms and
GELUs quantize the rows they write), `bitwise_equal_separate` saying the outputs are equal.
BENCH_ACC16=1 adds ours with the GEMMs accumulating in float16 (GPUSTD_GEMM_ACCUMULATE=f16:
`float16 acc16`) and diffusers fp16 with cuBLAS's fp16 accumulation
(torch.backends.cuda.matmul.allow_fp16_accumulation), each rel_err against diffusers fp16;
the bfloat16 row's rel_err is diffusers bf16 against diffusers fp16 (the baseline's own
distance from the fp16 output).
BENCH_PARTS_OFF=1 adds ours with q, k and v as one GEMM each (gpustd.nn.linear.PARTS off:
`float16 parts off`) after the float rows: the A/B of nn.linears' one dispatch.
`--quick`: tiny configs at 16x16 latents (a smoke run on any adapter).
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

from . import _harness
from .sdxl import _PeakMemory, _settled_use

# black-forest-labs/FLUX.1-dev, transformer/config.json
FLUX_DEV: dict[str, Any] = dict(
    patch_size=1, in_channels=64, num_layers=19, num_single_layers=38, attention_head_dim=128,
    num_attention_heads=24, joint_attention_dim=4096, pooled_projection_dim=768,
    guidance_embeds=True, axes_dims_rope=(16, 56, 56))
TINY_FLUX: dict[str, Any] = dict(
    FLUX_DEV, in_channels=16, num_layers=2, num_single_layers=2, attention_head_dim=16,
    num_attention_heads=2, joint_attention_dim=32, pooled_projection_dim=24,
    axes_dims_rope=(4, 6, 6))
# stabilityai/stable-diffusion-3.5-large, transformer/config.json
SD35_LARGE: dict[str, Any] = dict(
    sample_size=128, patch_size=2, in_channels=16, num_layers=38, attention_head_dim=64,
    num_attention_heads=38, joint_attention_dim=4096, caption_projection_dim=2432,
    pooled_projection_dim=2048, out_channels=16, pos_embed_max_size=192, qk_norm="rms_norm",
    dual_attention_layers=())
TINY_SD35: dict[str, Any] = dict(
    SD35_LARGE, sample_size=16, num_layers=3, attention_head_dim=16, num_attention_heads=2,
    joint_attention_dim=32, caption_projection_dim=32, pooled_projection_dim=24,
    pos_embed_max_size=16)
COLUMNS = ["model", "impl", "dtype", "mode", "dispatches", "rel_err", "rel_err_vs_bf16",
           "gpu_ms", "wall_ms", "peak_gib", "vs_bf16", "vs_fp16"]
GIB = float(1 << 30)


def _inputs(model: str, config: dict[str, Any], quick: bool) -> dict[str, np.ndarray]:
    """The step's inputs as float32 arrays (random normal, seeded), by diffusers' argument
    names: 128x128 latents (a 1024x1024 picture), 16x16 with --quick."""
    from diffusion.pipelines.flow.flux import image_ids

    rng = np.random.default_rng(0)
    latent = 16 if quick else 128
    width = config["joint_attention_dim"]
    if model == "flux":  # 2x2 patches packed: (latent/2)^2 tokens of 4 x 16 channels
        side, text = latent // 2, 16 if quick else 512
        return {"hidden_states": rng.standard_normal((1, side * side, config["in_channels"])),
                "encoder_hidden_states": rng.standard_normal((1, text, width)),
                "pooled_projections": rng.standard_normal((1, config["pooled_projection_dim"])),
                "timestep": np.array([0.8]), "guidance": np.array([3.5]),
                "img_ids": image_ids(side, side), "txt_ids": np.zeros((text, 3))}
    text = 20 if quick else 333
    return {"hidden_states": rng.standard_normal((2, config["in_channels"], latent, latent)),
            "encoder_hidden_states": rng.standard_normal((2, text, width)),
            "pooled_projections": rng.standard_normal((2, config["pooled_projection_dim"])),
            "timestep": np.array([800.0, 800.0])}


def _reference(model: str, config: dict[str, Any], dev: str) -> Any:
    """diffusers' transformer built on `dev` in bf16 (never a float32 copy: 48 GB for FLUX),
    its weights drawn there (seed 0)."""
    import diffusers
    import torch

    kind = diffusers.FluxTransformer2DModel if model == "flux" else \
        diffusers.SD3Transformer2DModel
    torch.manual_seed(0)
    saved = torch.get_default_dtype()
    torch.set_default_dtype(torch.bfloat16)
    try:
        with torch.device(dev):
            reference = kind(**config).eval()
    finally:
        torch.set_default_dtype(saved)
    reference.to(torch.bfloat16)  # the buffers too (SD3's position table)
    with torch.no_grad():
        for name, p in reference.named_parameters():
            owner = name.rsplit(".", 2)[-2]
            if p.ndim == 1 and "norm" in owner and name.endswith("weight"):
                p.normal_(1.0, 0.02)  # RMSNorm / LayerNorm scales near one
            else:
                p.normal_(0.0, 0.02)  # keeps activations finite through 57 blocks in fp16
    return reference


def _torch_call(model: str, reference: Any, x: dict[str, np.ndarray], tdtype: Any,
                dev: str) -> Any:
    """A no-argument call of `reference` on `x` (floats in `tdtype`; timestep, guidance and
    position ids in float32, as the diffusers pipelines pass them)."""
    import torch

    t = {k: torch.from_numpy(np.asarray(v, np.float32)).to(dev) for k, v in x.items()}
    for k in ("hidden_states", "encoder_hidden_states", "pooled_projections"):
        t[k] = t[k].to(tdtype)

    def call() -> Any:
        with torch.no_grad():
            return reference(**t).sample

    return call


def _torch_rows(model: str, reference: Any, x: dict[str, np.ndarray], cuda: Any, repeat: int,
                expected: dict[str, np.ndarray]) -> list[dict[str, Any]]:
    """diffusers bf16 then fp16 on CUDA (the model converted in place), or fp32 on the CPU
    (the reference alone); fills `expected` with each dtype's output."""
    import torch

    if cuda is None:
        reference.float()
        expected["float32"] = _torch_call(model, reference, x, torch.float32, "cpu")().numpy()
        return [{"model": model, "impl": "diffusers", "dtype": "float32"}]
    rows = []
    runs = [("bfloat16", torch.bfloat16), ("float16", torch.float16)]
    if os.environ.get("BENCH_ACC16") == "1":  # cuBLAS's fp16 accumulation (torch >= 2.7)
        runs.append(("float16 acc16", torch.float16))
    for name, tdtype in runs:
        reference.to(tdtype)
        call = _torch_call(model, reference, x, tdtype, "cuda")
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        matmul = torch.backends.cuda.matmul
        matmul.allow_fp16_accumulation = name.endswith("acc16")
        try:
            expected[name] = call().float().cpu().numpy()
            peak = torch.cuda.max_memory_allocated() / GIB
            best = _harness.torch_best_eager(call, torch, repeat)
        finally:
            matmul.allow_fp16_accumulation = False
        rows.append({"model": model, "impl": "diffusers", "dtype": name,
                     "gpu_ms": best["torch_gpu_ms"], "wall_ms": best["torch_wall_ms"],
                     "peak_gib": peak, **{k: v for k, v in best.items() if k.startswith("torch")}})
        print(f"diffusers {model} {name}: {best['torch_wall_ms']:.1f} ms", flush=True)
    return rows


def _host_weights(reference: Any, dtype: np.dtype) -> dict[str, np.ndarray]:
    """The reference's tensors on the host in `dtype`, one at a time (a device copy of one
    tensor at most, never of the model)."""
    import torch

    tdtype = torch.float16 if dtype == np.float16 else torch.float32
    return {k: v.detach().to(tdtype).cpu().numpy() for k, v in reference.state_dict().items()}


def _our_rows(model: str, config: dict[str, Any], weights: dict[str, np.ndarray],
              x: dict[str, np.ndarray], dtype: np.dtype, device: gpucore.Device, cuda: Any,
              repeat: int) -> tuple[list[dict[str, Any]], np.ndarray, dict[str, Any]]:
    """Ours loaded from `weights`, stepped eager and replayed: (rows, eager output, the
    kernel-time summary of one eager step)."""
    from diffusion.models import FluxTransformer2DModel, SD3Transformer2DModel

    # 1. load, watching memory
    settled = _settled_use(device, cuda)
    device.reset_peak_memory()
    base = device.memory_stats().allocated
    with _PeakMemory(cuda, settled) as load_driver:
        start = time.perf_counter()
        kind = FluxTransformer2DModel if model == "flux" else SD3Transformer2DModel
        ours = kind(dict(config), dtype=dtype, device=device)
        ours.load_state_dict(weights, dtype=dtype)
        device.synchronize()
        load_s = time.perf_counter() - start
    loaded = device.memory_stats()

    # 2. the step's inputs on the device; timestep and guidance float32 Tensors (captured)
    def put(name: str, as_dtype: Any = dtype) -> gpustd.Tensor:
        return gpustd.asarray(x[name], dtype=as_dtype, device=device)

    text, pooled = put("encoder_hidden_states"), put("pooled_projections")
    if model == "flux":
        rotary = ours.rotary(x["txt_ids"], x["img_ids"])

        def fn(h: Any, t: Any, g: Any) -> Any:
            return ours(h, text, pooled, t, None, None, g, rotary=rotary)

        args: tuple[Any, ...] = (put("hidden_states"), put("timestep", np.float32),
                                 put("guidance", np.float32))
    else:
        def fn(h: Any, t: Any) -> Any:
            return ours(h, text, pooled, t)

        args = (put("hidden_states"), put("timestep", np.float32))

    # 3. one eager step alone for its peak memory (and the shaders' first compile)
    device.reset_peak_memory()
    with _PeakMemory(cuda, settled) as step_driver:
        start = time.perf_counter()
        fn(*args).numpy()
        first_s = time.perf_counter() - start
    step = device.memory_stats()
    print(f"ours {model} {dtype.name}: loaded in {load_s:.1f} s, first step {first_s:.1f} s",
          flush=True)

    # 4. timings, eager and replayed, and where one step's kernel time goes
    got, replayed, timings, capture = _harness.eager_and_replay(fn, args, device, repeat)
    captured = device.memory_stats()  # the capture pins the buffers its one call used
    with device.profile() as prof:
        fn(*args)
    kernels = {k: {"calls": n, "ms": ns / 1e6} for k, (n, ns) in prof.summary().items()}
    print(f"-- where our {model} {dtype.name} step's kernel time goes")
    print("\n".join(prof.table().splitlines()[:12]))
    memory = {"peak_gib": (step.peak_allocated - base) / GIB,
              "peak_reserved_gib": (step.peak_reserved - base) / GIB,
              "weights_gib": (loaded.allocated - base) / GIB,
              "load_peak_gib": (loaded.peak_reserved - base) / GIB,
              "capture_peak_reserved_gib": (captured.peak_reserved - base) / GIB,
              "driver_load_peak_gib": load_driver.peak, "driver_step_peak_gib": step_driver.peak,
              "load_s": load_s, "first_step_s": first_s}
    rows = []
    for mode in ("eager", "replay"):
        t = timings[mode]
        rows.append({"model": model, "impl": "ours", "dtype": dtype.name, "mode": mode,
                     "dispatches": t["dispatches"], "gpu_ms": t["gpu_ms"],
                     "wall_ms": t["wall_ms"], "encode_ms": t["encode_ms"],
                     "replay_bitwise_equal_eager": bool(np.array_equal(replayed, got)),
                     **memory, "_out": got if mode == "eager" else replayed})
    capture.reset()  # the model, its inputs and the capture go when this returns
    if os.environ.get("BENCH_ACC16") == "1" and dtype == np.float16:
        rows += _acc16_rows(model, fn, args, device, repeat, dtype)
    if os.environ.get("BENCH_INT8") == "1":
        rows += _int8_rows(model, ours, fn, args, device, repeat, dtype)
    if os.environ.get("BENCH_PARTS_OFF") == "1":
        rows += _parts_off_rows(model, fn, args, device, repeat, dtype)
    return rows, got, kernels


def _parts_off_rows(model: str, fn: Any, args: tuple[Any, ...], device: gpucore.Device,
                    repeat: int, dtype: np.dtype) -> list[dict[str, Any]]:
    """BENCH_PARTS_OFF=1: the same step with q, k and v as a GEMM each (gpustd.nn.linear.PARTS
    off: what the DiTs ran before nn.linears took biases), eager and replayed
    (`<dtype> parts off`)."""
    import importlib

    linear = importlib.import_module("gpustd.nn.linear")  # gpustd.nn.linear is the function
    linear.PARTS = False
    try:
        got, replayed, timings, capture = _harness.eager_and_replay(fn, args, device, repeat)
        with device.profile() as prof:
            fn(*args)
        capture.reset()
    finally:
        linear.PARTS = True
    gemms = {k: {"calls": n, "ms": ns / 1e6} for k, (n, ns) in prof.summary().items()
             if "gemm" in k or "matrix" in k}
    label = f"{dtype.name} parts off"
    print(f"ours {model} {label}: replay {timings['replay']['wall_ms']:.1f} ms", flush=True)
    return [{"model": model, "impl": "ours", "dtype": label, "mode": mode,
             "dispatches": timings[mode]["dispatches"], "gpu_ms": timings[mode]["gpu_ms"],
             "wall_ms": timings[mode]["wall_ms"], "encode_ms": timings[mode]["encode_ms"],
             "kernels_gemm": gemms,
             "replay_bitwise_equal_eager": bool(np.array_equal(replayed, got)),
             "_out": got if mode == "eager" else replayed} for mode in ("eager", "replay")]


def _acc16_rows(model: str, fn: Any, args: tuple[Any, ...], device: gpucore.Device,
                repeat: int, dtype: np.dtype) -> list[dict[str, Any]]:
    """BENCH_ACC16=1: the same step with the GEMMs' f16 accumulators
    (GPUSTD_GEMM_ACCUMULATE=f16), eager and replayed (`float16 acc16`)."""
    from gpustd.gemm import matrix_units

    saved = os.environ.get(matrix_units.ACCUMULATE_ENV)
    os.environ[matrix_units.ACCUMULATE_ENV] = "f16"
    try:
        got, replayed, timings, capture = _harness.eager_and_replay(fn, args, device, repeat)
        with device.profile() as prof:
            fn(*args)
        capture.reset()
    finally:
        if saved is None:
            del os.environ[matrix_units.ACCUMULATE_ENV]
        else:
            os.environ[matrix_units.ACCUMULATE_ENV] = saved
    gemms = {k: {"calls": n, "ms": ns / 1e6} for k, (n, ns) in prof.summary().items()
             if "gemm" in k or "matrix" in k}
    label = f"{dtype.name} acc16"
    print(f"ours {model} {label}: replay {timings['replay']['wall_ms']:.1f} ms", flush=True)
    return [{"model": model, "impl": "ours", "dtype": label, "mode": mode,
             "dispatches": timings[mode]["dispatches"], "gpu_ms": timings[mode]["gpu_ms"],
             "wall_ms": timings[mode]["wall_ms"], "encode_ms": timings[mode]["encode_ms"],
             "kernels_gemm": gemms,
             "replay_bitwise_equal_eager": bool(np.array_equal(replayed, got)),
             "_out": got if mode == "eager" else replayed} for mode in ("eager", "replay")]


def _int8_rows(model: str, ours: Any, fn: Any, args: tuple[Any, ...], device: gpucore.Device,
               repeat: int, dtype: np.dtype) -> list[dict[str, Any]]:
    """BENCH_INT8=1: the same step after `--int8`'s quantization of the transformer's linear
    layers (diffusion.models.int8), eager and replayed: first with every activation quantized
    by a pass of its own (gpustd.nn.int8_rows.FUSED off, dtype `...+int8 separate`), then as
    --int8 runs, the norms and GELUs quantizing the rows they write (`...+int8`)."""
    from diffusion.models.int8 import quantize_linears
    from gpustd.nn import int8_rows

    start = time.perf_counter()
    count = quantize_linears(ours)
    device.synchronize()
    quantize_s = time.perf_counter() - start
    print(f"ours {model} {dtype.name}+int8: {count} layers quantized in {quantize_s:.1f} s",
          flush=True)
    rows, outputs = [], {}
    for fused, label in ((False, f"{dtype.name}+int8 separate"), (True, f"{dtype.name}+int8")):
        int8_rows.FUSED = fused
        try:
            got, replayed, timings, capture = _harness.eager_and_replay(fn, args, device, repeat)
            with device.profile() as prof:
                fn(*args)
            capture.reset()
        finally:
            int8_rows.FUSED = True
        outputs[fused] = got
        # the passes the fusion touches: norms, modulations, activations, quantizations
        touched = {k: {"calls": n, "ms": ns / 1e6} for k, (n, ns) in prof.summary().items()
                   if any(p in k for p in ("quant/", "layer_norm", "modulate", "activation"))}
        print(f"ours {model} {label}: replay {timings['replay']['wall_ms']:.1f} ms, "
              f"{timings['eager']['dispatches']} dispatches, {touched}", flush=True)
        rows += [{"model": model, "impl": "ours", "dtype": label, "mode": mode,
                  "dispatches": timings[mode]["dispatches"], "gpu_ms": timings[mode]["gpu_ms"],
                  "wall_ms": timings[mode]["wall_ms"], "encode_ms": timings[mode]["encode_ms"],
                  "int8_layers": count, "quantize_s": quantize_s, "kernels_touched": touched,
                  "replay_bitwise_equal_eager": bool(np.array_equal(replayed, got)),
                  "_out": got if mode == "eager" else replayed} for mode in ("eager", "replay")]
    for row in rows[2:]:
        row["bitwise_equal_separate"] = bool(np.array_equal(outputs[True], outputs[False]))
    return rows


def _rel_err(got: np.ndarray, expected: np.ndarray) -> float:
    got, expected = got.astype(np.float64), expected.astype(np.float64)
    return float(np.abs(got - expected).max() / np.abs(expected).max())


def _one_model(model: str, quick: bool, device: gpucore.Device, cuda: Any
               ) -> tuple[list[dict[str, Any]], dict[str, Any], dict[str, Any]]:
    """Rows for one model (diffusers', then ours), its kernel summary and its facts."""
    import torch

    config = {"flux": TINY_FLUX if quick else FLUX_DEV,
              "sd35": TINY_SD35 if quick else SD35_LARGE}[model]
    repeat = 2 if quick else 3
    dtype = np.dtype(np.float16 if device.has_f16 else np.float32)
    start = time.perf_counter()
    reference = _reference(model, config, "cuda" if cuda else "cpu")
    params = sum(p.numel() for p in reference.parameters())
    if cuda:
        torch.cuda.synchronize()
    build_s = time.perf_counter() - start
    print(f"{model}: {params / 1e9:.2f}B parameters drawn in {build_s:.1f} s", flush=True)
    x = _inputs(model, config, quick)
    expected: dict[str, np.ndarray] = {}
    rows = _torch_rows(model, reference, x, cuda, repeat, expected)
    weights = _host_weights(reference, dtype)
    del reference
    gc.collect()
    if cuda:
        torch.cuda.empty_cache()
    ours, _got, kernels = _our_rows(model, config, weights, x, dtype, device, cuda, repeat)
    del weights
    gc.collect()
    device.empty_pool()
    # rel_err against diffusers in our dtype where it ran (fp16 on CUDA), else its float32
    main = expected.get(dtype.name if cuda else "float32", expected.get("float16"))
    speed = {r["dtype"]: r["wall_ms"] for r in rows if "wall_ms" in r}
    for row in ours:
        out = row.pop("_out")
        row["rel_err"] = _rel_err(out, main)
        if "bfloat16" in expected:
            row["rel_err_vs_bf16"] = _rel_err(out, expected["bfloat16"])
        for name, key in (("bfloat16", "vs_bf16"), ("float16", "vs_fp16"),
                          ("float16 acc16", "vs_fp16_acc16")):
            if name in speed:
                row[key] = speed[name] / row["wall_ms"]
    if "float16" in expected and "bfloat16" in expected:
        rows[1]["rel_err_vs_bf16"] = _rel_err(expected["float16"], expected["bfloat16"])
        rows[0]["rel_err"] = _rel_err(expected["bfloat16"], expected["float16"])
    if "float16 acc16" in expected:  # cuBLAS's fp16 accumulation against its fp32
        rows[2]["rel_err"] = _rel_err(expected["float16 acc16"], expected["float16"])
    facts = {"params_M": params / 1e6, "reference_build_s": build_s, "config": config,
             "inputs": {k: list(v.shape) for k, v in x.items()},
             "output_max_abs": float(np.abs(main).max())}
    return rows + ours, kernels, facts


def run(quick: bool = False) -> dict[str, Any]:
    device = gpucore.default_device()
    cuda = _harness.torch_cuda()
    wanted = [m for m in os.environ.get("BENCH_MODELS", "flux").split(",") if m]
    unknown = sorted(set(wanted) - {"flux", "sd35"})
    if unknown:
        raise ValueError(f"BENCH_MODELS names {unknown}; use flux and/or sd35, comma-separated "
                         "(e.g. BENCH_MODELS=flux,sd35)")
    rows, kernels, models = [], {}, {}
    for model in wanted:
        model_rows, kernels[model], models[model] = _one_model(model, quick, device, cuda)
        rows += model_rows
        print(json.dumps(model_rows, default=float), flush=True)  # a cut-off run keeps it
    return {
        "benchmark": "flux",
        "environment": _harness.environment(device),
        "notes": "one transformer step at 1024x1024 (128x128 latents): FLUX.1 dev batch 1 "
                 "(4096 image + 512 text tokens, guidance 3.5), SD 3.5 Large batch 2 (4096 + "
                 "333 tokens); random weights drawn by torch in bf16 (normal(0, 0.02), norm "
                 "scales 1 + normal(0, 0.02)), shared by every row; ours float16 (float32 "
                 "without shader-f16), eager = the Python ops, replay = gpustd.capture of the "
                 "same call; rel_err = max|ours - diffusers| / max|diffusers| against diffusers "
                 "fp16 on CUDA (float32 on the CPU), rel_err_vs_bf16 against diffusers bf16 "
                 "(the diffusers fp16 row: fp16 against bf16); gpu_ms: ours = timestamp-query "
                 "kernel time, diffusers = CUDA events; wall_ms: ours = record + submit + wait, "
                 "diffusers = call + synchronize, both medians, diffusers the faster of "
                 "cudnn.benchmark off/on; vs_bf16 / vs_fp16 = diffusers wall_ms / ours wall_ms "
                 "(above 1: we are faster); peak_gib: diffusers = torch.cuda."
                 "max_memory_allocated during its first step, ours = Device.memory_stats "
                 "peak_allocated during one eager step above the level before loading, "
                 "weights included (peak_reserved_gib adds the pool's idle buffers; "
                 "driver_step_peak_gib: cudaMemGetInfo sampled, wgpu's own allocations "
                 "included); torch's copy of the weights is freed before ours loads",
        "models": models,
        "columns": COLUMNS,
        "rows": rows,
        "kernels": kernels,
    }
