"""SDXL's float32 VAE at 1024x1024 (BENCH_VAE_SIZE), its decode and its encode: ours in
float32 and by the scaled float16 twins a float16 pipeline runs (diffusion/models/vae_half.py),
beside diffusers' AutoencoderKL in float32 in the same process, with TF32 on (cuDNN's default:
what diffusers' SDXL users get, its VAE kept in float32 by `force_upcast`) and off.

Ours is timed through what the pipeline calls (models.tiled_vae.vae_decode / vae_encode, and
HalfPasses.decode / encode after the two passes that calibrate and build the twin): host
array in, host array out, the twin's finiteness check included; diffusers' call is timed to
its CUDA synchronize, its output left on the GPU. Random weights drawn by diffusers; the
errors are against diffusers float32 without TF32 (the encoder's: its mean and logvar).

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

COLUMNS = ["part", "side", "image", "wall_ms", "rel_err", "k", "vs_diffusers_tf32"]


def _error(got: np.ndarray, want: np.ndarray) -> float:
    return float(np.abs(got - want).max() / np.abs(want).max())


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
    return {
        "benchmark": "vae_half",
        "environment": _harness.environment(device),
        "notes": __doc__.split("\n\n")[0] + " wall_ms: medians of " + str(repeat) + "; "
                 "vs_diffusers_tf32 = diffusers float32 TF32 wall / this row's (above 1: "
                 "faster); k: the twin's scale 2^-k.",
        "columns": COLUMNS,
        "rows": rows,
    }
