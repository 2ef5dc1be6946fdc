"""A full-size SD 1.5 UNet (859M parameters, random weights): parity with diffusers and step time.

The weights go through a diffusers `save_pretrained` safetensors file and our reader, then one
classifier-free-guidance step (batch 2, 64x64 latents, 77 tokens of context) runs on our
kernels and on diffusers/torch on the same GPU (fp32 with TF32 off; and fp16 where both can).
"""

from __future__ import annotations

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
COLUMNS = ["dtype", "params_M", "latent", "rel_err", "ours_gpu_ms", "ours_wall_ms", "torch_ms",
           "vs_torch"]


def run(quick: bool = False) -> dict[str, Any]:
    import diffusers
    import torch

    from diffusion.loaders import SafetensorsFile
    from diffusion.models import UNet2DConditionModel

    config = TINY_UNET if quick else SD15_UNET
    device = gpucore.default_device()
    cuda = _harness.torch_cuda()
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
        for dtype in (np.float32, np.float16):
            if dtype == np.float16 and not device.has_f16:
                continue
            ours = UNet2DConditionModel(dict(reference.config), dtype=dtype, device=device)
            ours.load_state_dict({k: weights.read(k) for k in weights.keys()}, dtype=dtype)
            x = gpustd.asarray(sample, device=device).astype(dtype)
            ctx = gpustd.asarray(context, device=device).astype(dtype)
            got = ours(x, timesteps, ctx).numpy().astype(np.float64)
            timing = _harness.ours_ms(lambda ours=ours, x=x, ctx=ctx: ours(x, timesteps, ctx),
                                      device, warmup=2, repeat=3 if quick else 10)
            with device.profile() as prof:
                ours(x, timesteps, ctx)
            kernels[np.dtype(dtype).name] = {name: {"calls": n, "ms": ns / 1e6}
                                             for name, (n, ns) in prof.summary().items()}
            print(f"-- where the {np.dtype(dtype).name} step's kernel time goes")
            print("\n".join(prof.table().splitlines()[:13]))
            row: dict[str, Any] = {"dtype": np.dtype(dtype).name, "params_M": params / 1e6,
                                   "latent": f"2x4x{size}x{size}", **{
                                       f"ours_{k}": v for k, v in timing.items()}}
            model = reference.to("cuda" if cuda else "cpu")
            torch.backends.cuda.matmul.allow_tf32 = False
            torch.backends.cudnn.allow_tf32 = False
            tdtype = torch.float16 if dtype == np.float16 else torch.float32
            model = model.to(tdtype)
            dev = "cuda" if cuda else "cpu"
            args = [torch.from_numpy(a).to(dev) for a in (sample, timesteps, context)]
            args[0], args[2] = args[0].to(tdtype), args[2].to(tdtype)
            with torch.no_grad():
                expected = model(*args).sample.float().cpu().numpy().astype(np.float64)
                if cuda:
                    row["torch_ms"] = _harness.torch_cuda_ms(
                        lambda model=model, args=args: model(*args), repeat=3 if quick else 10)
                    row["vs_torch"] = row["torch_ms"] / row["ours_gpu_ms"]
            row["rel_err"] = float(np.abs(got - expected).max() / np.abs(expected).max())
            reference = reference.float().cpu()
            rows.append(row)
            del ours, x, ctx
            device.empty_pool()
    return {
        "benchmark": "unet",
        "environment": _harness.environment(device),
        "notes": "one UNet call with CFG batch 2; rel_err = max|ours - diffusers| / max|diffusers| "
                 "on the same weights (fp16 rows compare against torch fp16); ours_gpu_ms sums "
                 "timestamp-query kernel times, ours_wall_ms is record + submit + wait",
        "columns": COLUMNS,
        "rows": rows,
        "kernels": kernels,
    }
