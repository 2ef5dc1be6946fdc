"""Count the compute dispatches (and copies) of one SD 1.5-shaped UNet call or VAE decode.

    python -m tools.count_dispatches unet [--full] [--dry]
    python -m tools.count_dispatches vae [--full] [--dry]

The count depends on shapes only (plans choose split-K from sizes, so count the real shapes
with --full where they fit). --dry records nothing on the device (weights uninitialized,
kernels never run), so the full-size SD 1.5 UNet at 2x4x64x64 can be counted on lavapipe.
"""

from __future__ import annotations

import argparse
import collections
from typing import Any

import numpy as np

import gpucore
import gpustd
from bench._harness import counting
from bench.unet import SD15_UNET
from bench.vae import SD_VAE

# The same structure (blocks, depths, heads) at a width lavapipe runs in seconds.
SCALED_UNET: dict[str, Any] = dict(SD15_UNET, block_out_channels=(32, 64, 64, 64),
                                   cross_attention_dim=32, sample_size=16)
SCALED_VAE: dict[str, Any] = dict(SD_VAE, block_out_channels=(32, 32, 64, 64))


def unet_counts(config: dict[str, Any], device: gpucore.Device, *, dry: bool = False,
                batch: int = 2) -> collections.Counter:
    """Dispatches of one UNet call (batch x 4 x size x size latents, 77 context tokens)."""
    from diffusion.models import UNet2DConditionModel

    model = UNet2DConditionModel(config, device=device)
    size = config["sample_size"]
    rng = np.random.default_rng(0)
    x = gpustd.asarray(rng.standard_normal((batch, 4, size, size)).astype(np.float32),
                       device=device)
    ctx = gpustd.asarray(rng.standard_normal((batch, 77, config["cross_attention_dim"]))
                         .astype(np.float32), device=device)
    ts = gpustd.asarray(np.full(batch, 500.0, np.float32), device=device)
    with counting(device, dry=dry) as counts:
        model(x, ts, ctx)
    return counts


def vae_counts(config: dict[str, Any], device: gpucore.Device, *, latent: int,
               dry: bool = False) -> collections.Counter:
    """Dispatches of one VAE decode of 1 x 4 x latent x latent latents."""
    from diffusion.models import AutoencoderKL

    model = AutoencoderKL(config, device=device)
    z = np.random.default_rng(0).standard_normal((1, 4, latent, latent)).astype(np.float32)
    z_t = gpustd.asarray(z, device=device)
    with counting(device, dry=dry) as counts:
        model.decode(z_t)
    return counts


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model", choices=("unet", "vae"))
    parser.add_argument("--full", action="store_true", help="SD 1.5's real widths")
    parser.add_argument("--dry", action="store_true", help="record nothing on the device")
    args = parser.parse_args()
    device = gpucore.default_device()
    if args.model == "unet":
        counts = unet_counts(SD15_UNET if args.full else SCALED_UNET, device, dry=args.dry)
    else:
        counts = vae_counts(SD_VAE if args.full else SCALED_VAE, device,
                            latent=64 if args.full else 16, dry=args.dry)
    for label, count in counts.most_common():
        print(f"{count:6d}  {label}")
    print(f"{sum(v for k, v in counts.items() if k != 'copy'):6d}  dispatches in all")


if __name__ == "__main__":
    main()
