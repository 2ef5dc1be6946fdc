"""LTX-2's latent upsampler (diffusers' LTX2LatentUpsamplerModel names): a small conv net that
doubles the height and width of the video VAE's latents (unnormalized, as the VAE gives them)
for the second stage of a two-stage run. A 3x3x3 conv (zero-padded in time and space) to
`mid_channels`, GroupNorm(32) + SiLU, `num_blocks_per_stage` residual blocks (conv, norm, SiLU,
conv, norm, SiLU of the sum), per frame a 3x3 conv to 4x the channels and a 2x pixel shuffle,
as many residual blocks again, a 3x3x3 conv back to the latent channels.

Frames run frame-major, (T, C, H, W), as LTX-2's VAE runs them: each temporal tap of a 3D
conv a 2D conv over the frames as its batch (hunyuan_video_vae_blocks.Conv3d), the GroupNorm's
statistics over all frames. The released x2 spatial model is what this runs; the temporal
upsamplers, 2D (`dims` 2) ones and rational scales other than 2 are refused in one line.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from gpucore import Device
from gpustd import Tensor, asarray, concatenate, nn, permute

from .hunyuan_video_vae_blocks import Conv3d, TapState, frames_norm
from .layers import Place
from .ltx2_vae_blocks import depth_to_space

__all__ = ["LTX2_UPSAMPLER_CONFIG", "LTX2LatentUpsamplerModel"]

# diffusers' defaults (the released LTX-2 spatial x2 upsampler's)
LTX2_UPSAMPLER_CONFIG: dict[str, Any] = {
    "in_channels": 128, "mid_channels": 1024, "num_blocks_per_stage": 4, "dims": 3,
    "spatial_upsample": True, "temporal_upsample": False, "rational_spatial_scale": 2.0,
    "use_rational_resampler": True}
# the older diffusers names of the same two settings (the released folders' configs)
_OLD_NAMES = {"spatial_scale": "rational_spatial_scale",
              "rational_resampler": "use_rational_resampler"}
_GROUPS = 32


def upsampler_config(config: dict[str, Any]) -> dict[str, Any]:
    """`config` over the defaults, its older names read; ValueError in one line for a model
    this does not run."""
    cfg = {**LTX2_UPSAMPLER_CONFIG, **{_OLD_NAMES.get(k, k): v for k, v in config.items()
                                       if not k.startswith("_")}}
    if cfg["temporal_upsample"] or not cfg["spatial_upsample"] or cfg["dims"] != 3:
        raise ValueError("this LTX-2 latent upsampler is not the spatial x2 one (a temporal or "
                         "2D upsampler): give LTX-2's spatial upscaler (latent_upsampler/)")
    if cfg["use_rational_resampler"] and float(cfg["rational_spatial_scale"]) != 2.0:
        raise ValueError(f"LTX-2 latent upsampler scale {cfg['rational_spatial_scale']} is not "
                         "supported: give the x2 spatial upscaler")
    return cfg


def _zero_frames(x: Tensor) -> Tensor:
    """Frames (T, C, H, W) with a frame of zeros before and after (the 3D conv's padding)."""
    zero = asarray(np.zeros((1, *x.shape[1:]), np.float32), dtype=x.dtype, device=x.device)
    return concatenate([zero, x, zero], axis=0)


class _Conv3d(Conv3d):
    """nn.Conv3d(k=3, padding=1) of frames (T, in, H, W): zero padding in time and space."""

    def __init__(self, in_dim: int, out_dim: int, place: Place) -> None:
        super().__init__(in_dim, out_dim, 3, place)

    def forward(self, x: Tensor) -> Tensor:
        frames, padded = x.shape[0], _zero_frames(x)
        out = None
        for t, kernel in enumerate(self.kernels()):
            out = nn.conv2d(padded, kernel, self.bias if t == 0 else None, padding=1,
                            add=out, images=(t, frames))
        assert out is not None
        return out


def _norm(norm: nn.GroupNorm, x: Tensor, *, silu: bool) -> Tensor:
    """GroupNorm (+ SiLU) of frames (T, C, H, W) over all of them, frame-major again."""
    return permute(frames_norm(norm, x, silu=silu), (1, 0, 2, 3))


class _ResBlock(nn.Module):
    """conv1, norm1, SiLU, conv2, norm2, SiLU of it plus the input. diffusers: `ResBlock`."""

    def __init__(self, dim: int, place: Place) -> None:
        self.conv1 = _Conv3d(dim, dim, place)
        self.norm1 = nn.GroupNorm(_GROUPS, dim, **place)
        self.conv2 = _Conv3d(dim, dim, place)
        self.norm2 = nn.GroupNorm(_GROUPS, dim, **place)

    def forward(self, x: Tensor) -> Tensor:
        h = _norm(self.norm1, self.conv1(x), silu=True)
        return nn.silu(_norm(self.norm2, self.conv2(h), silu=False) + x)


class LTX2LatentUpsamplerModel(nn.Module):
    """Latents (B, C, F, h, w) -> (B, C, F, 2h, 2w), both unnormalized. Config: a
    `latent_upsampler/config.json` (module docstring); parameter names diffusers'. diffusers:
    `LTX2LatentUpsamplerModel(latents)`."""

    upsampler: Any  # the rational resampler's `.conv`, or the plain one's `[0]`

    def __init__(self, config: dict[str, Any], *, dtype: Any = np.float32,
                 device: Device | None = None) -> None:
        self.config = cfg = upsampler_config(config)
        place: Place = {"dtype": dtype, "device": device}
        mid, blocks = int(cfg["mid_channels"]), int(cfg["num_blocks_per_stage"])
        self.initial_conv = _Conv3d(int(cfg["in_channels"]), mid, place)
        self.initial_norm = nn.GroupNorm(_GROUPS, mid, **place)
        self.res_blocks = nn.ModuleList([_ResBlock(mid, place) for _ in range(blocks)])
        conv = nn.Conv2d(mid, 4 * mid, 3, padding=1, **place)
        if cfg["use_rational_resampler"]:  # its conv at scale 2 (its blur's stride 1: nothing)
            self.upsampler = nn.Namespace()
            self.upsampler.conv = conv
        else:
            self.upsampler = nn.ModuleList([conv])
        self.post_upsample_res_blocks = nn.ModuleList([_ResBlock(mid, place)
                                                       for _ in range(blocks)])
        self.final_conv = _Conv3d(mid, int(cfg["in_channels"]), place)
        self.dtype, self.device = dtype, device

    def load_state_dict(self, state: Mapping[str, Any], *, strict: bool = True,
                        dtype: Any = None, to_host: bool = False) -> None:
        """Load diffusers' tensors, each 3D kernel as its temporal taps (TapState)."""
        super().load_state_dict(TapState(state), strict=strict, dtype=dtype, to_host=to_host)

    def _frames(self, x: Tensor) -> Tensor:
        x = _norm(self.initial_norm, self.initial_conv(x), silu=True)
        for block in self.res_blocks:
            x = block(x)
        conv = self.upsampler.conv if self.config["use_rational_resampler"] else \
            self.upsampler[0]
        x = depth_to_space(conv(x), (1, 2, 2), 0)
        for block in self.post_upsample_res_blocks:
            x = block(x)
        return self.final_conv(x)

    def forward(self, latents: Any) -> Tensor:
        latents = asarray(latents, dtype=self.dtype, device=self.device)
        if latents.ndim != 5 or latents.shape[1] != self.config["in_channels"]:
            raise ValueError(f"LTX-2 latent upsampler input must be (B, "
                             f"{self.config['in_channels']}, F, h, w) latents, got "
                             f"{latents.shape}")
        videos = [permute(self._frames(permute(latents[b], (1, 0, 2, 3))), (1, 0, 2, 3))
                  for b in range(latents.shape[0])]
        return concatenate([v.reshape(1, *v.shape) for v in videos], axis=0)
