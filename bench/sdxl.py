"""The full-size SDXL base UNet (2.6B parameters, random weights): one CFG step beside diffusers.

The weights are drawn once, by diffusers on the GPU (seeded), and copied tensor by tensor into
ours; then one classifier-free-guidance step (batch 2, 128x128 latents, 77x2048 context, pooled
text embeddings of 1280 and 6 micro-conditioning time ids) runs on diffusers/torch (fp32 with
TF32 off, and fp16) and on our kernels (float32, and float16 where the adapter has shader-f16;
BENCH_DTYPES=float16 times ours in float16 alone, to save device time; BENCH_INT8=1 adds ours
in float16 (float32 without shader-f16) with `--int8`'s W8A8 linear layers, its rel_err
against diffusers in that dtype).
Memory: torch's peak allocation, and for ours the peak device memory in use as the driver
reports it (cudaMemGetInfo, sampled every few ms) above what was in use before the model, while
loading and while stepping.
"""

from __future__ import annotations

import gc
import os
import threading
import time
from typing import Any

import numpy as np

import gpucore
import gpustd

from . import _harness

# stabilityai/stable-diffusion-xl-base-1.0, unet/config.json (diffusers' published config)
SDXL_BASE_UNET: dict[str, Any] = dict(
    act_fn="silu", addition_embed_type="text_time", addition_embed_type_num_heads=64,
    addition_time_embed_dim=256, attention_head_dim=[5, 10, 20],
    block_out_channels=[320, 640, 1280], center_input_sample=False, class_embed_type=None,
    class_embeddings_concat=False, conv_in_kernel=3, conv_out_kernel=3, cross_attention_dim=2048,
    cross_attention_norm=None,
    down_block_types=["DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"],
    downsample_padding=1, dual_cross_attention=False, encoder_hid_dim=None,
    encoder_hid_dim_type=None, flip_sin_to_cos=True, freq_shift=0, in_channels=4,
    layers_per_block=2, mid_block_only_cross_attention=None, mid_block_scale_factor=1,
    mid_block_type="UNetMidBlock2DCrossAttn", norm_eps=1e-05, norm_num_groups=32,
    num_attention_heads=None, num_class_embeds=None, only_cross_attention=False, out_channels=4,
    projection_class_embeddings_input_dim=2816, resnet_out_scale_factor=1.0,
    resnet_skip_time_act=False, resnet_time_scale_shift="default", sample_size=128,
    time_cond_proj_dim=None, time_embedding_act_fn=None, time_embedding_dim=None,
    time_embedding_type="positional", timestep_post_act=None,
    transformer_layers_per_block=[1, 2, 10],
    up_block_types=["CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"],
    upcast_attention=None, use_linear_projection=True,
)
TINY_SDXL_UNET: dict[str, Any] = dict(
    SDXL_BASE_UNET, block_out_channels=[32, 64, 64], attention_head_dim=[2, 4, 4],
    cross_attention_dim=64, transformer_layers_per_block=[1, 2, 2], addition_time_embed_dim=8,
    projection_class_embeddings_input_dim=32 + 6 * 8, sample_size=16,
)
COLUMNS = ["impl", "dtype", "rel_err", "rel_err_vs_fp32", "gpu_ms", "wall_ms", "peak_gib",
           "vs_torch"]
GIB = float(1 << 30)


class _PeakMemory:
    """Peak device memory in use (all APIs: cudaMemGetInfo) while the block runs, in GiB
    above `baseline`; nan without CUDA."""

    def __init__(self, torch: Any, baseline: float) -> None:
        self.torch, self.baseline, self.peak = torch, baseline, float("nan")
        self._stop = threading.Event()

    @staticmethod
    def used(torch: Any) -> float:
        if torch is None:
            return float("nan")
        free, total = torch.cuda.mem_get_info()
        return (total - free) / GIB

    def _poll(self) -> None:
        while not self._stop.wait(0.003):
            self.peak = max(self.peak, self.used(self.torch) - self.baseline)

    def __enter__(self) -> _PeakMemory:
        if self.torch is not None:
            self.peak = 0.0
            self._thread = threading.Thread(target=self._poll, daemon=True)
            self._thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        if self.torch is not None:
            self._stop.set()
            self._thread.join()
            self.peak = max(self.peak, self.used(self.torch) - self.baseline)


def _settled_use(device: gpucore.Device, cuda: Any) -> float:
    """Device memory in use once what an earlier model freed is really gone: wgpu releases
    dropped buffers when the device next polls, so submit, wait, and watch it stop falling."""
    gc.collect()
    device.empty_pool()
    device.synchronize()
    used = _PeakMemory.used(cuda)
    for _ in range(30):
        time.sleep(0.1)
        device.synchronize()
        now = _PeakMemory.used(cuda)
        if now == used:
            break
        used = now
    return used


def _rel_err(got: np.ndarray, expected: np.ndarray) -> float:
    got, expected = got.astype(np.float64), expected.astype(np.float64)
    return float(np.abs(got - expected).max() / np.abs(expected).max())


def _inputs(config: dict[str, Any]) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    size, pooled = config["sample_size"], config["projection_class_embeddings_input_dim"] - 6 * \
        config["addition_time_embed_dim"]
    return {
        "sample": rng.standard_normal((2, 4, size, size)).astype(np.float32),
        "timesteps": np.array([500.0, 500.0], np.float32),
        "context": rng.standard_normal((2, 77, config["cross_attention_dim"])).astype(
            np.float32),
        "text_embeds": rng.standard_normal((2, pooled)).astype(np.float32),
        "time_ids": np.array([[8 * size, 8 * size, 0, 0, 8 * size, 8 * size]] * 2, np.float32),
    }


def _torch_rows(reference: Any, x: dict[str, np.ndarray], cuda: Any, repeat: int,
                outputs: dict[str, np.ndarray]) -> list[dict[str, Any]]:
    """diffusers fp32 (TF32 off) then fp16 (on CUDA), in place on `reference`."""
    import torch

    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    dev = "cuda" if cuda else "cpu"
    rows = []
    for name, tdtype in (("float32", torch.float32), ("float16", torch.float16)):
        if tdtype == torch.float16 and not cuda:
            continue
        reference.to(tdtype)
        t = {k: torch.from_numpy(v).to(dev) for k, v in x.items()}
        args = (t["sample"].to(tdtype), t["timesteps"], t["context"].to(tdtype))
        cond = {"text_embeds": t["text_embeds"].to(tdtype), "time_ids": t["time_ids"]}
        row: dict[str, Any] = {"impl": "diffusers", "dtype": name}
        with torch.no_grad():
            if cuda:
                torch.cuda.synchronize()
                torch.cuda.reset_peak_memory_stats()
            outputs[name] = reference(*args, added_cond_kwargs=cond).sample.float().cpu().numpy()
            if cuda:
                row["peak_gib"] = torch.cuda.max_memory_allocated() / GIB
                best = _harness.torch_best_eager(
                    lambda args=args, cond=cond: reference(*args, added_cond_kwargs=cond),
                    torch, repeat)
                row.update(best, gpu_ms=best["torch_gpu_ms"], wall_ms=best["torch_wall_ms"])
        rows.append(row)
    return rows


def _our_row(weights: dict[str, np.ndarray], config: dict[str, Any], x: dict[str, np.ndarray],
             dtype: Any, device: gpucore.Device, cuda: Any, repeat: int) -> tuple[
                 list[tuple[dict[str, Any], np.ndarray]], dict[str, Any]]:
    """Ours in `dtype`: its row and output, an int8 row after it where asked (BENCH_INT8),
    and the kernel-time summary of one eager step."""
    from diffusion.models import UNet2DConditionModel

    baseline = _settled_use(device, cuda)
    with _PeakMemory(cuda, baseline) as load_memory:
        start = time.perf_counter()
        ours = UNet2DConditionModel(config, dtype=dtype, device=device)
        ours.load_state_dict(weights, dtype=dtype)
        device.synchronize()
        load_s = time.perf_counter() - start
    resident = _PeakMemory.used(cuda) - baseline
    on_device = {k: gpustd.asarray(v, device=device) for k, v in x.items()}
    sample, context = (on_device[k].astype(dtype) for k in ("sample", "context"))
    # every per-step input a device tensor, as a recorded-and-replayed step has them
    cond = {"text_embeds": on_device["text_embeds"].astype(dtype),
            "time_ids": on_device["time_ids"]}

    def eager(sample: Any, timesteps: Any, context: Any) -> Any:
        return ours(sample, timesteps, context, cond)

    args = (sample, on_device["timesteps"], context)
    with _PeakMemory(cuda, baseline) as step_memory:
        start = time.perf_counter()
        eager(*args).numpy()
        first_s = time.perf_counter() - start
        # a pipeline replays its step (gpustd.capture): that is the row's time; eager beside it
        got, replayed, timings, step = _harness.eager_and_replay(eager, args, device, repeat)
    step.reset()
    with device.profile() as prof:
        eager(*args)
    kernels = {name: {"calls": n, "ms": ns / 1e6} for name, (n, ns) in prof.summary().items()}
    print(f"-- where our {np.dtype(dtype).name} step's kernel time goes")
    print("\n".join(prof.table().splitlines()[:12]))
    timing = timings["replay"]
    row = {"impl": "ours", "dtype": np.dtype(dtype).name, "gpu_ms": timing["gpu_ms"],
           "wall_ms": timing["wall_ms"], "eager_gpu_ms": timings["eager"]["gpu_ms"],
           "eager_wall_ms": timings["eager"]["wall_ms"],
           "replay_bitwise_equal_eager": bool(np.array_equal(replayed, got)),
           "peak_gib": step_memory.peak,
           "weights_gib": sum(v.size for v in weights.values()) * np.dtype(dtype).itemsize / GIB,
           "load_peak_gib": load_memory.peak, "resident_gib": resident, "load_s": load_s,
           "first_call_s": first_s}
    extra = [(row, got)]
    if os.environ.get("BENCH_INT8") == "1" and np.dtype(dtype) == _harness.dtypes(device)[-1]:
        extra.append(_int8_row(ours, eager, args, np.dtype(dtype), device, repeat))
    return extra, kernels


def _int8_row(ours: Any, eager: Any, args: tuple[Any, ...], dtype: np.dtype,
              device: gpucore.Device, repeat: int) -> tuple[dict[str, Any], np.ndarray]:
    """BENCH_INT8=1: the step in the last dtype (float16 where the device has it) again
    after `--int8`'s quantization of the UNet's linear layers (diffusion.models.int8),
    replayed (eager beside it)."""
    from diffusion.models.int8 import quantize_linears

    start = time.perf_counter()
    count = quantize_linears(ours)
    device.synchronize()
    quantize_s = time.perf_counter() - start
    got, replayed, timings, step = _harness.eager_and_replay(eager, args, device, repeat)
    step.reset()
    print(f"ours {dtype.name}+int8: {count} layers quantized in {quantize_s:.1f} s, "
          f"{timings['replay']['wall_ms']:.1f} ms a step", flush=True)
    return {"impl": "ours", "dtype": f"{dtype.name}+int8", "gpu_ms": timings["replay"]["gpu_ms"],
            "wall_ms": timings["replay"]["wall_ms"],
            "eager_gpu_ms": timings["eager"]["gpu_ms"],
            "eager_wall_ms": timings["eager"]["wall_ms"],
            "replay_bitwise_equal_eager": bool(np.array_equal(replayed, got)),
            "int8_layers": count, "quantize_s": quantize_s}, got


def run(quick: bool = False) -> dict[str, Any]:
    import diffusers
    import torch

    config = TINY_SDXL_UNET if quick else SDXL_BASE_UNET
    repeat = 3 if quick else 5
    device = gpucore.default_device()
    cuda = _harness.torch_cuda()
    dev = "cuda" if cuda else "cpu"
    start = time.perf_counter()
    torch.manual_seed(0)
    with torch.device(dev):
        reference = diffusers.UNet2DConditionModel(**config).eval()
    params = sum(p.numel() for p in reference.parameters())
    # one tensor at a time to the host, so the copy never holds a second full model on the GPU
    weights = {k: v.detach().cpu().numpy() for k, v in reference.state_dict().items()}
    build_s = time.perf_counter() - start
    x = _inputs(config)
    expected: dict[str, np.ndarray] = {}
    rows = _torch_rows(reference, x, cuda, repeat, expected)
    del reference
    gc.collect()
    if cuda:
        torch.cuda.empty_cache()
    kernels = {}
    for dtype in _harness.dtypes(device):  # diffusers runs both: its fp32 is the reference
        name = dtype.name
        ours, kernels[name] = _our_row(weights, dict(config), x, dtype, device, cuda, repeat)
        for row, got in ours:
            row["rel_err"] = _rel_err(got, expected.get(name, expected["float32"]))
            row["rel_err_vs_fp32"] = _rel_err(got, expected["float32"])
            torch_row = next((r for r in rows if r["impl"] == "diffusers"
                              and r["dtype"] == name and "gpu_ms" in r), None)
            if torch_row is not None:
                row["vs_torch"] = torch_row["wall_ms"] / row["wall_ms"]
                row["vs_torch_gpu"] = torch_row["gpu_ms"] / row["gpu_ms"]
            rows.append(row)
    for row in rows:
        if row["impl"] == "diffusers" and row["dtype"] == "float16":
            row["rel_err_vs_fp32"] = _rel_err(expected["float16"], expected["float32"])
    return {
        "benchmark": "sdxl",
        "environment": _harness.environment(device),
        "notes": "one SDXL base UNet call with CFG batch 2 (2x4x{0}x{0} latents, 2x77x{1} context, "
                 "text_embeds 2x{2}, 6 time ids), random weights drawn once by diffusers (seed 0) "
                 "and copied into ours; rel_err = max|ours - diffusers| / max|diffusers| against "
                 "diffusers in the same dtype (fp32 with TF32 off), rel_err_vs_fp32 against "
                 "diffusers fp32; ours: the step replayed by gpustd.capture, as the pipelines "
                 "run it (eager_*: the Python ops); diffusers: the faster of cudnn.benchmark "
                 "off and on; both timed after 0.5 s of queued work (the GPU's clock falls "
                 "between short bursts); gpu_ms: ours = timestamp-query kernel time, diffusers "
                 "= CUDA events; wall_ms: median of call + wait; peak_gib: diffusers = "
                 "torch.cuda.max_memory_allocated (weights "
                 "included), ours = peak device memory in use (cudaMemGetInfo, sampled) above "
                 "the level before the model was built, weights included, while stepping "
                 "(load_peak_gib: while loading; resident_gib: after loading; the float16 "
                 "model follows the float32 one in the same process and wgpu's allocator keeps "
                 "freed memory blocks for reuse, so its figures are lower bounds); vs_torch = "
                 "diffusers wall_ms / ours wall_ms (same dtype; vs_torch_gpu by gpu_ms); "
                 "float16+int8: ours float16 after --int8's W8A8 quantization of the linear "
                 "layers (diffusion.models.int8), against diffusers fp16".format(
                     config["sample_size"], config["cross_attention_dim"],
                     x["text_embeds"].shape[1]),
        "params_M": params / 1e6,
        "reference_build_s": build_s,
        "config": config,
        "columns": COLUMNS,
        "rows": rows,
        "kernels": kernels,
    }
