"""HunyuanImage 2.1 refiner's VAE (diffusers' AutoencoderKLHunyuanImageRefiner): 16x spatial
compression to 32 latent channels, pictures as one-frame videos. Its layers are HunyuanVideo
1.5's VAE's (causal 3D convolutions padded by replication, RMS norms, the channel-shuffle
samplers with parameter-free shortcuts, one-head attention in the bottleneck) under the same
names and config fields; on one frame the two compute the same (the samplers' "in time"
variants take the first-frame path: a frame's 2x2 pixels filling half the channels, copied
into the other half going down, half the channels read going up; the attention's causal mask
has nothing to hide). So this is hunyuan_video15_vae's model held to single pictures: on
several frames diffusers' refiner VAE (whose samplers never move frames) and HunyuanVideo
1.5's differ, and the refiner pipeline never gives it more than one.

Tiling is HunyuanVideo 1.5's (256 px tiles every 192, blended over 64 px), off by default as
in the refiner pipeline; diffusers' refiner VAE blends its tiles over the latent sizes in
pixel units, which this does not copy.

    vae = AutoencoderKLHunyuanImageRefiner(config, device=device)
    latents = vae.encode(pictures[:, :, None], noise=noise)  # (B, 32, 1, H/16, W/16)
    pictures = vae.decode(latents)[:, :, 0]                   # (B, 3, H, W)
"""

from __future__ import annotations

from typing import Any

from gpustd import Tensor

from .hunyuan_video15_vae import AutoencoderKLHunyuanVideo15

__all__ = ["AutoencoderKLHunyuanImageRefiner"]


def _one_frame(x: Any, what: str) -> None:
    frames = getattr(x, "shape", (0, 0, 0))[2:3]
    if getattr(x, "ndim", 0) == 5 and frames != (1,):
        raise ValueError(f"the HunyuanImage refiner VAE codes single pictures: give {what} of "
                         f"1 frame, (batch, channels, 1, height, width), got {x.shape}")


class AutoencoderKLHunyuanImageRefiner(AutoencoderKLHunyuanVideo15):
    """Pictures (B, 3, 1, H, W) in [-1, 1] <-> latents (B, 32, 1, H / 16, W / 16). Config:
    the `vae/config.json` of a HunyuanImage 2.1 refiner folder (diffusers' fields, its
    defaults HunyuanVideo 1.5's); parameter names are diffusers'. diffusers:
    `AutoencoderKLHunyuanImageRefiner.decode(z).sample`, `.encode(x).latent_dist` (`.mode()`,
    `.sample()`), on one frame."""

    def decode(self, latents: Tensor) -> Tensor:
        """(B, 32, 1, h, w) latents (the transformer's divided by `scaling_factor`) ->
        pictures (B, 3, 1, 16h, 16w), not clamped."""
        _one_frame(latents, "latents")
        return super().decode(latents)

    def moments(self, video: Tensor) -> tuple[Tensor, Tensor]:
        """(B, 3, 1, H, W) in [-1, 1] -> the posterior's mean and log variance (unclamped),
        each (B, 32, 1, H / 16, W / 16)."""
        _one_frame(video, "pictures")
        return super().moments(video)
