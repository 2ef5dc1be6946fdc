"""A full-size SD 1.5 UNet step with one ControlNet (random weights) beside diffusers, and the
canny preprocessor at 512x512 beside OpenCV's on the CPU.

The step is what a sampler runs once per step with one unit: the ControlNet on the latents and
the 512x512 control image (classifier-free guidance batch 2), then the UNet with its residuals.
Both models go through diffusers `save_pretrained` safetensors files and our readers; torch runs
the same weights on the same GPU (fp32 with TF32 off, fp16), its best eager configuration
(cudnn.benchmark off and on). Canny: the extension's default thresholds (100, 200) on a photo-like
picture (smooth gradients plus noise), ours including the upload and the read-back, against
`cv2.Canny` of the same picture.
"""

from __future__ import annotations

import functools
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

import gpucore
import gpustd

from . import _harness
from .unet import SD15_UNET, TINY_UNET

COLUMNS = ["work", "dtype", "mode", "dispatches", "rel_err", "ours_gpu_ms", "ours_wall_ms",
           "torch_gpu_ms", "torch_wall_ms", "pixels_differ", "vs_torch"]


def _picture(size: int) -> np.ndarray:
    """A uint8 size x size x 3 picture with edges at many scales: overlapping discs over a
    gradient, plus noise (random, never flat)."""
    rng = np.random.default_rng(0)
    y, x = np.mgrid[0:size, 0:size] / size
    image = np.stack([x, y, 1 - x], axis=2) * 120.0
    for _ in range(24):
        cx, cy, r = rng.random(3) * [1, 1, 0.25]
        image[(x - cx) ** 2 + (y - cy) ** 2 < r * r] += rng.random(3) * 100
    image += rng.normal(0, 6, image.shape)
    return np.clip(image, 0, 255).astype(np.uint8)


def _canny_row(size: int, device: gpucore.Device, repeat: int) -> dict[str, Any]:
    import cv2

    from gpustd.canny import canny

    image = _picture(size)
    got = canny(image, 100, 200, device=device)
    expected = cv2.Canny(image, 100, 200)
    ours = _harness.numpy_ms(lambda: canny(image, 100, 200, device=device), repeat=repeat)
    theirs = _harness.numpy_ms(lambda: cv2.Canny(image, 100, 200), repeat=repeat)
    return {"work": f"canny {size}x{size} (100, 200)", "dtype": "uint8", "mode": "round trip",
            "pixels_differ": int((got != expected).sum()), "ours_wall_ms": ours,
            "torch_wall_ms": theirs, "baseline": "opencv-cpu cv2.Canny",
            "vs_torch": theirs / ours}


def _torch_step(unet: Any, controlnet: Any, x: Any, ts: Any, ctx: Any, cond: Any) -> Any:
    down, mid = controlnet(x, ts, ctx, cond, return_dict=False)
    return unet(x, ts, ctx, down_block_additional_residuals=down,
                mid_block_additional_residual=mid).sample


def run(quick: bool = False) -> dict[str, Any]:
    import diffusers
    import torch

    from diffusion.loaders import SafetensorsFile
    from diffusion.models import UNet2DConditionModel
    from diffusion.models.controlnet import ControlNetModel

    config = TINY_UNET if quick else SD15_UNET
    device = gpucore.default_device()
    cuda = _harness.torch_cuda()
    dev = "cuda" if cuda else "cpu"
    repeat = 3 if quick else 10
    torch.manual_seed(0)
    unet_ref = diffusers.UNet2DConditionModel(**config).eval()
    cn_config = {k: v for k, v in config.items()
                 if k not in ("sample_size", "out_channels", "up_block_types")}
    if quick:
        cn_config["conditioning_embedding_out_channels"] = (8, 8, 8, 8)
    cn_ref = diffusers.ControlNetModel(**cn_config).eval()
    with torch.no_grad():  # zero convs start at zero: give them weights so residuals matter
        for p in cn_ref.parameters():
            if not p.abs().max() > 0:
                p.normal_(0, 0.02)
    size = config["sample_size"]
    rng = np.random.default_rng(0)
    sample = rng.standard_normal((2, 4, size, size)).astype(np.float32)
    context = rng.standard_normal((2, 77, config["cross_attention_dim"])).astype(np.float32)
    timesteps = np.array([500.0, 500.0], np.float32)
    control = rng.random((2, 3, 8 * size, 8 * size), dtype=np.float32)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        unet_ref.save_pretrained(Path(tmp) / "unet")
        cn_ref.save_pretrained(Path(tmp) / "controlnet")
        files = {name: SafetensorsFile(Path(tmp) / name / "diffusion_pytorch_model.safetensors")
                 for name in ("unet", "controlnet")}
        for dtype in _harness.dtypes(device):
            unet = UNet2DConditionModel(dict(unet_ref.config), dtype=dtype, device=device)
            cn = ControlNetModel(dict(cn_ref.config), dtype=dtype, device=device)
            for model, name in ((unet, "unet"), (cn, "controlnet")):
                model.load_state_dict({k: files[name].read(k) for k in files[name].keys()},
                                      dtype=dtype)

            def step(x: Any, ts: Any, ctx: Any, cond: Any, unet: Any = unet, cn: Any = cn) -> Any:
                down, mid = cn(x, ts, ctx, cond)
                return unet(x, ts, ctx, down_block_additional_residuals=down,
                            mid_block_additional_residual=mid)

            x_, ctx_, cond_ = (gpustd.asarray(a, device=device).astype(dtype)
                               for a in (sample, context, control))
            args = (x_, gpustd.asarray(timesteps, device=device), ctx_, cond_)
            got, replayed, timings, captured = _harness.eager_and_replay(
                step, args, device, repeat)
            tdtype = torch.float16 if dtype == np.float16 else torch.float32
            torch.backends.cuda.matmul.allow_tf32 = False
            torch.backends.cudnn.allow_tf32 = False
            u, c = unet_ref.to(dev).to(tdtype), cn_ref.to(dev).to(tdtype)
            x, ts, ctx, cond = (torch.from_numpy(a).to(dev) for a in
                                (sample, timesteps, context, control))
            x, ctx, cond = x.to(tdtype), ctx.to(tdtype), cond.to(tdtype)

            theirs_step = functools.partial(_torch_step, u, c, x, ts, ctx, cond)
            theirs: dict[str, Any] = {}
            with torch.no_grad():
                expected = theirs_step().float().cpu().numpy().astype(np.float64)
                if cuda:
                    theirs = _harness.torch_best_eager(theirs_step, torch, repeat)
            for row in _harness.mode_rows(got, replayed, expected, timings):
                row.update(work=f"UNet + ControlNet step 2x4x{size}x{size}", dtype=dtype.name,
                           **theirs)
                if "torch_wall_ms" in theirs:
                    row["vs_torch"] = theirs["torch_wall_ms"] / row["ours_wall_ms"]
                rows.append(row)
            unet_ref, cn_ref = unet_ref.float().cpu(), cn_ref.float().cpu()
            captured.reset()
            del unet, cn, args, x_, ctx_, cond_, captured
            device.empty_pool()
    rows.append(_canny_row(64 if quick else 512, device, repeat))
    return {
        "benchmark": "controlnet",
        "environment": _harness.environment(device),
        "notes": "UNet + ControlNet: one sampler step with one unit (ControlNet residuals into "
                 "the UNet), CFG batch 2, the control image 8x the latents; modes and timings as "
                 "bench unet (eager = Python ops, replay = gpustd.capture; torch the faster of "
                 "cudnn.benchmark off/on, TF32 off); rel_err against diffusers on the same "
                 "weights in the row's dtype. canny: ours = upload + kernels + read-back of a "
                 "512x512 RGB picture, pixels_differ counts edge pixels unlike cv2.Canny's; the "
                 "baseline column holds OpenCV's CPU time. vs_torch = baseline / ours (above 1: "
                 "we are faster).",
        "columns": COLUMNS,
        "rows": rows,
    }
