"""A full-size SD 1.5 UNet (859M parameters, random weights): parity with diffusers and step time.

The weights go through a diffusers `save_pretrained` safetensors file and our reader, then one
classifier-free-guidance step (batch 2, 64x64 latents, 77 tokens of context) runs on our
kernels and on diffusers/torch on the same GPU (fp32 with TF32 off; and fp16 where both can).
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

import gpucore
import gpustd

from . import _harness

SD15_UNET: dict[str, Any] = dict(
    sample_size=64, in_channels=4, out_channels=4, layers_per_block=2,
    block_out_channels=(320, 640, 1280, 1280), cross_attention_dim=768, attention_head_dim=8,
    down_block_types=("CrossAttnDownBlock2D",) * 3 + ("DownBlock2D",),
    up_block_types=("UpBlock2D",) + ("CrossAttnUpBlock2D",) * 3,
)
TINY_UNET: dict[str, Any] = dict(
    SD15_UNET, block_out_channels=(32, 64, 64, 64), cross_attention_dim=32,
    attention_head_dim=2, sample_size=16,
)
COLUMNS = ["dtype", "mode", "dispatches", "rel_err", "ours_gpu_ms", "ours_encode_ms",
           "ours_wall_ms", "torch_gpu_ms", "torch_wall_ms", "torch_cudnn_benchmark", "vs_torch",
           "torch_compile_wall_ms"]


def run(quick: bool = False) -> dict[str, Any]:
    import diffusers
    import torch

    from diffusion.loaders import SafetensorsFile
    from diffusion.models import UNet2DConditionModel

    config = TINY_UNET if quick else SD15_UNET
    device = gpucore.default_device()
    cuda = _harness.torch_cuda()
    repeat = 3 if quick else 10
    torch.manual_seed(0)
    reference = diffusers.UNet2DConditionModel(**config).eval()
    params = sum(p.numel() for p in reference.parameters())
    rng = np.random.default_rng(0)
    size = config["sample_size"]
    sample = rng.standard_normal((2, 4, size, size)).astype(np.float32)
    context = rng.standard_normal((2, 77, config["cross_attention_dim"])).astype(np.float32)
    timesteps = np.array([500.0, 500.0], np.float32)
    rows = []
    kernels: dict[str, Any] = {}
    with tempfile.TemporaryDirectory() as tmp:
        reference.save_pretrained(Path(tmp) / "unet")
        weights = SafetensorsFile(Path(tmp) / "unet" / "diffusion_pytorch_model.safetensors")
        for dtype in _harness.dtypes(device):
            name = np.dtype(dtype).name
            ours = UNet2DConditionModel(dict(reference.config), dtype=dtype, device=device)
            ours.load_state_dict({k: weights.read(k) for k in weights.keys()}, dtype=dtype)
            x = gpustd.asarray(sample, device=device).astype(dtype)
            ctx = gpustd.asarray(context, device=device).astype(dtype)
            ts = gpustd.asarray(timesteps, device=device)
            got, replayed, timings, step = _harness.eager_and_replay(
                ours.forward, (x, ts, ctx), device, repeat)
            with device.profile() as prof:
                ours(x, ts, ctx)
            kernels[name] = {k: {"calls": n, "ms": ns / 1e6}
                             for k, (n, ns) in prof.summary().items()}
            print(f"-- where the {name} step's kernel time goes")
            print("\n".join(prof.table().splitlines()[:13]))
            model = reference.to("cuda" if cuda else "cpu")
            torch.backends.cuda.matmul.allow_tf32 = False
            torch.backends.cudnn.allow_tf32 = False
            tdtype = torch.float16 if dtype == np.float16 else torch.float32
            model = model.to(tdtype)
            dev = "cuda" if cuda else "cpu"
            args = [torch.from_numpy(a).to(dev) for a in (sample, timesteps, context)]
            args[0], args[2] = args[0].to(tdtype), args[2].to(tdtype)
            theirs: dict[str, Any] = {}
            with torch.no_grad():
                expected = model(*args).sample.float().cpu().numpy().astype(np.float64)
                if cuda:
                    theirs = _harness.torch_best_eager(
                        lambda model=model, args=args: model(*args), torch, repeat)
                    if os.environ.get("BENCH_TORCH_COMPILE") == "1":
                        theirs.update(_harness.torch_compiled(model, args, torch, repeat))
            for row in _harness.mode_rows(got, replayed, expected, timings):
                row.update(dtype=name, params_M=params / 1e6, latent=f"2x4x{size}x{size}",
                           **theirs)
                if "torch_wall_ms" in theirs:
                    row["vs_torch"] = theirs["torch_wall_ms"] / row["ours_wall_ms"]
                rows.append(row)
            reference = reference.float().cpu()
            step.reset()
            del ours, x, ctx, ts, step
            device.empty_pool()
    return {
        "benchmark": "unet",
        "environment": _harness.environment(device),
        "notes": "one UNet call with CFG batch 2 (timesteps as a device tensor); mode eager = "
                 "the Python ops, replay = gpustd.capture of the same call (recorded once, "
                 "then replayed with the inputs copied in and a fresh output); rel_err = "
                 "max|ours - diffusers| / max|diffusers| on the same weights (fp16 rows against "
                 "torch fp16); ours_gpu_ms sums timestamp-query kernel times (one pass per "
                 "dispatch while profiling), ours_encode_ms is the call alone on the host, "
                 "ours_wall_ms the call + submit + wait; torch_gpu_ms by CUDA events, "
                 "torch_wall_ms by perf_counter around call + cuda.synchronize (TF32 off), "
                 "the faster of cudnn.benchmark off and on (both kept); "
                 "vs_torch = torch_wall_ms / ours_wall_ms (above 1: we are faster); with "
                 "BENCH_TORCH_COMPILE=1 also torch.compile's times (torch_compile_*_ms, "
                 "reported only)",
        "columns": COLUMNS,
        "rows": rows,
        "kernels": kernels,
    }
