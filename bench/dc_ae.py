"""Sana's DC-AE (diffusers' AutoencoderDC, the f32c32 Sana VAE's config, random weights)
decoding 1x32x32x32 latents to 1024x1024 on our kernels and on diffusers in the same process.
BENCH_DC_AE_SIZE=2048 decodes a 2048 x 2048 picture (its tensors up to 1 GiB in float16).

The weights are drawn once by diffusers (its init, so that the activations keep their scale);
ours runs float32 and float16 (where the device has it), eagerly and replayed (gpustd.capture);
torch runs the same dtype on CUDA with TF32 off, on the CPU in fp32 when there is no CUDA
(--quick only: the tiny test DC-AE at 64 x 64).
"""

from __future__ import annotations

import copy
import os
from typing import Any

import numpy as np

import gpucore
import gpustd

from . import _harness

TINY: dict[str, Any] = dict(
    latent_channels=8, attention_head_dim=8,
    encoder_block_types=("ResBlock", "EfficientViTBlock", "EfficientViTBlock"),
    decoder_block_types=("ResBlock", "EfficientViTBlock", "EfficientViTBlock"),
    encoder_block_out_channels=(8, 16, 32), decoder_block_out_channels=(8, 16, 32),
    encoder_layers_per_block=(1, 1, 2), decoder_layers_per_block=(1, 2, 2),
    encoder_qkv_multiscales=((), (5,), (5,)), decoder_qkv_multiscales=((), (5,), (5,)),
    downsample_block_type="Conv", upsample_block_type="interpolate")
COLUMNS = ["dtype", "mode", "image", "dispatches", "rel_err", "ours_gpu_ms", "ours_encode_ms",
           "ours_wall_ms", "torch_gpu_ms", "torch_wall_ms", "vs_torch"]


def run(quick: bool = False) -> dict[str, Any]:
    import diffusers
    import torch

    from diffusion.loaders.sana import DC_AE_SANA_CONFIG

    config = TINY if quick else {k: v for k, v in DC_AE_SANA_CONFIG.items()
                                 if not k.startswith("_")}
    size = 64 if quick else int(os.environ.get("BENCH_DC_AE_SIZE", "1024"))
    device = gpucore.default_device()
    cuda = _harness.torch_cuda()
    repeat = 3 if quick else 10
    torch.manual_seed(0)
    reference = diffusers.AutoencoderDC(**config).eval()
    factor = 2 ** (len(config["decoder_block_out_channels"]) - 1)
    latent = np.random.default_rng(0).standard_normal(
        (1, config["latent_channels"], size // factor, size // factor)).astype(np.float32)
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    model = reference.to("cuda" if cuda else "cpu")
    with torch.no_grad():
        expected = model.decode(torch.from_numpy(latent).to(model.device)).sample
    expected = expected.cpu().numpy().astype(np.float64)
    state = {k: v.cpu().numpy() for k, v in model.state_dict().items()}
    rows = []
    for dtype in _harness.dtypes(device):
        rows += _dtype_rows(state, dict(model.config), dtype, latent, expected, model, torch,
                            cuda, repeat, device)
    for row in rows:
        row.update(image=f"{size}x{size}")
    return {
        "benchmark": "dc_ae",
        "environment": _harness.environment(device),
        "notes": "Sana's DC-AE decode of 1x32xhxw latents to a 32h x 32w image (--quick: the "
                 "tiny test DC-AE), diffusers' random init, float32 and (where the device has "
                 "it; BENCH_DTYPES picks) float16; mode eager = the Python ops, replay = "
                 "gpustd.capture of the same call; rel_err = max|ours - diffusers fp32| / "
                 "max|diffusers fp32|; ours_gpu_ms sums timestamp-query kernel times, "
                 "ours_encode_ms is the call alone on the host, ours_wall_ms call + submit + "
                 "wait; torch in the row's dtype (TF32 off), torch_gpu_ms by CUDA events, "
                 "torch_wall_ms by perf_counter around call + cuda.synchronize, the faster of "
                 "cudnn.benchmark off and on; vs_torch = torch_wall_ms / ours_wall_ms (above "
                 "1: we are faster).",
        "columns": COLUMNS,
        "rows": rows,
    }


def _dtype_rows(state: dict[str, np.ndarray], config: dict[str, Any], dtype: np.dtype,
                latent: np.ndarray, expected: np.ndarray, model: Any, torch: Any, cuda: Any,
                repeat: int, device: gpucore.Device) -> list[dict[str, Any]]:
    """The eager and replay rows of one dtype beside torch's decode in the same dtype."""
    from diffusion.models.dc_ae import AutoencoderDC

    ours = AutoencoderDC(config, dtype=dtype, device=device)
    ours.load_state_dict(state)
    got, replayed, timings, step = _harness.eager_and_replay(
        ours.decode, (gpustd.asarray(latent.astype(dtype), device=device),), device, repeat)
    half = dtype == np.float16 and cuda
    theirs_model = copy.deepcopy(model).half() if half else model
    zt = torch.from_numpy(latent).to(model.device, torch.float16 if half else torch.float32)

    def decode() -> Any:
        return theirs_model.decode(zt).sample

    with torch.no_grad():
        if cuda:
            theirs = _harness.torch_best_eager(decode, torch, repeat)
        else:
            theirs = {"torch_wall_ms": _harness.torch_wall_ms(decode, torch, max(1, repeat // 3),
                                                              cuda=False)}
    step.reset()
    baseline = f"torch-{'cuda' if cuda else 'cpu'}-{'fp16' if half else 'fp32'}"
    return [{"dtype": np.dtype(dtype).name, **row, **theirs,
             "vs_torch": theirs["torch_wall_ms"] / row["ours_wall_ms"], "baseline": baseline}
            for row in _harness.mode_rows(got, replayed, expected, timings)]
