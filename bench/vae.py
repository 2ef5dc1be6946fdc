"""The SD VAE decoder at 512x512 (1x4x64x64 latents, random weights) on our kernels and on
diffusers' AutoencoderKL.decode in the same process. BENCH_VAE_SIZE=1024 decodes SDXL's
picture size (1x4x128x128); BENCH_VAE_TF32=1 lets torch's float32 rows take TF32, cuDNN's
default, which is what diffusers' users get (SDXL's VAE decodes in float32: force_upcast).

The weights are drawn once by diffusers and go through its safetensors file and our reader.
Ours runs float32 and float16 (where the device has it), eagerly and replayed (gpustd.capture);
torch runs the same dtype on CUDA with TF32 off (cuDNN convolutions in true fp32, as ours), on
the CPU in fp32 when there is no CUDA (--quick only).
"""

from __future__ import annotations

import copy
import os
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

import gpucore
import gpustd

from . import _harness

SD_VAE: dict[str, Any] = dict(
    in_channels=3, out_channels=3, latent_channels=4, layers_per_block=2,
    block_out_channels=(128, 256, 512, 512), norm_num_groups=32, sample_size=512,
    down_block_types=("DownEncoderBlock2D",) * 4, up_block_types=("UpDecoderBlock2D",) * 4,
)
TINY_VAE: dict[str, Any] = dict(SD_VAE, block_out_channels=(32, 32, 64, 64), sample_size=64)
COLUMNS = ["dtype", "mode", "image", "dispatches", "rel_err", "ours_gpu_ms", "ours_encode_ms",
           "ours_wall_ms", "torch_gpu_ms", "torch_wall_ms", "vs_torch", "TFLOP"]


def _decoder_tflop(reference: Any, latent: np.ndarray) -> float:
    """Convolution FLOPs of the decode (2 per multiply-add), from torch's own conv shapes."""
    import torch

    flops = [0]

    def hook(module: Any, _inputs: Any, output: Any) -> None:
        k = module.weight.shape[1] * module.weight.shape[2] * module.weight.shape[3]
        flops[0] += 2 * output.numel() * k

    handles = [m.register_forward_hook(hook) for m in reference.modules()
               if isinstance(m, torch.nn.Conv2d)]
    with torch.no_grad():
        reference.decode(torch.from_numpy(latent).to(next(reference.parameters()).device))
    for h in handles:
        h.remove()
    return flops[0] / 1e12


def run(quick: bool = False) -> dict[str, Any]:
    import diffusers
    import torch

    from diffusion.loaders import SafetensorsFile

    config = TINY_VAE if quick else dict(SD_VAE, sample_size=int(
        os.environ.get("BENCH_VAE_SIZE", SD_VAE["sample_size"])))
    tf32 = os.environ.get("BENCH_VAE_TF32") == "1"
    device = gpucore.default_device()
    cuda = _harness.torch_cuda()
    repeat = 3 if quick else 10
    torch.manual_seed(0)
    reference = diffusers.AutoencoderKL(**config).eval()
    size = config["sample_size"] // 8
    latent = np.random.default_rng(0).standard_normal((1, 4, size, size)).astype(np.float32)
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    dev = "cuda" if cuda else "cpu"
    model = reference.to(dev)
    zt = torch.from_numpy(latent).to(dev)
    with torch.no_grad():
        expected = model.decode(zt).sample.cpu().numpy().astype(np.float64)
    torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = tf32
    tflop = _decoder_tflop(model, latent)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        reference.save_pretrained(Path(tmp) / "vae")
        weights = SafetensorsFile(Path(tmp) / "vae" / "diffusion_pytorch_model.safetensors")
        for dtype in _harness.dtypes(device):
            rows += _dtype_rows(weights, dict(reference.config), dtype, latent, expected, model,
                                torch, cuda, repeat, device)
    for row in rows:
        row.update(image=f"{8 * size}x{8 * size}", TFLOP=tflop)
    return {
        "benchmark": "vae",
        "environment": _harness.environment(device),
        "notes": "SD VAE decode (post_quant_conv + decoder) of 1x4xhxw latents to an 8h x 8w "
                 "image, random weights drawn by diffusers, float32 and (where the device has "
                 "it; BENCH_DTYPES picks) float16; mode eager = the Python ops, replay = "
                 "gpustd.capture of the same call; rel_err = max|ours - diffusers fp32| / "
                 "max|diffusers fp32|; ours_gpu_ms sums timestamp-query kernel times, "
                 "ours_encode_ms is the call alone on the host, ours_wall_ms call + submit + "
                 "wait; torch (fp32 rows: fp32, fp16 rows: fp16) torch_gpu_ms by CUDA events, "
                 "torch_wall_ms by perf_counter around call + cuda.synchronize (TF32 "
                 + ("on (BENCH_VAE_TF32=1)" if tf32 else "off") + " in "
                 "cuBLAS and cuDNN; the reference for rel_err always without it), the "
                 "faster of cudnn.benchmark off and on (both kept); "
                 "vs_torch = torch_wall_ms / ours_wall_ms (above 1: we are faster); TFLOP "
                 "counts the convolutions.",
        "columns": COLUMNS,
        "rows": rows,
    }


def _dtype_rows(weights: Any, config: dict[str, Any], dtype: np.dtype, latent: np.ndarray,
                expected: np.ndarray, model: Any, torch: Any, cuda: Any, repeat: int,
                device: gpucore.Device) -> list[dict[str, Any]]:
    """The eager and replay rows of one dtype beside torch's decode in the same dtype."""
    from diffusion.models import AutoencoderKL

    ours = AutoencoderKL(config, dtype=dtype, device=device)
    ours.load_state_dict({k: weights.read(k) for k in weights.keys()})
    got, replayed, timings, step = _harness.eager_and_replay(
        ours.decode, (gpustd.asarray(latent.astype(dtype), device=device),), device, repeat)
    half = dtype == np.float16 and cuda
    theirs_model = copy.deepcopy(model).half() if half else model
    zt = torch.from_numpy(latent).to(next(theirs_model.parameters()).device,
                                     torch.float16 if half else torch.float32)

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
