"""The Qwen-Image VAE (diffusers' AutoencoderKLQwenImage names) over single pictures: the Wan
video VAE's causal 3D network applied to one frame. A causal convolution over one frame
pads the time axis with zeros in front, so only its last temporal tap reads the frame: each
3D kernel is the 2D convolution of that tap (`single_frame_state` takes it from the
checkpoint), and the temporal resampling convolutions never run on a first frame. Norms are
RMS norms over the channels with a learned `gamma` (F.normalize, times sqrt(channels));
16 latent channels normalized per channel by the config's `latents_mean` / `latents_std`.

Wan's video VAE (wan_vae, wan_vae_blocks) is these networks over causal 3D convolutions
that keep the frames' caches.
"""

from __future__ import annotations

import itertools
import math
import typing
from collections.abc import Callable, Iterator, Mapping
from typing import Any

import numpy as np

from gpucore import Device
from gpustd import Tensor, clip, elementwise_kernel, nn, take_slice
from gpustd.reduction import mean

from .layers import Place, to_image, to_tokens
from .wan_vae_common import FlatGammas, LatentStatistics, checked_config

__all__ = ["AutoencoderKLQwenImage", "single_frame_state"]

_DEFAULTS: dict[str, Any] = {
    "base_dim": 96, "z_dim": 16, "dim_mult": (1, 2, 4, 4), "num_res_blocks": 2,
    "attn_scales": (), "temperal_downsample": (False, True, True), "input_channels": 3,
    "latents_mean": (-0.7571, -0.7089, -0.9113, 0.1075, -0.1745, 0.9653, -0.1517, 1.5508,
                     0.4134, -0.0715, 0.5517, -0.3632, -0.1922, -0.9497, 0.2503, -0.2921),
    "latents_std": (2.8184, 1.4541, 2.3275, 2.6558, 1.2196, 1.7708, 2.6052, 2.0743, 3.2687,
                    2.1526, 2.8652, 1.5579, 1.6382, 1.1253, 2.8251, 1.9160),
}


@elementwise_kernel
def _square(x):
    return float(x) * float(x)


@elementwise_kernel
def _channel_norm(x, mean_square, gamma, floor):
    return float(x) / max(math.sqrt(mean_square), floor) * float(gamma)


@elementwise_kernel
def _channel_norm_silu(x, mean_square, gamma, floor):
    y = float(x) / max(math.sqrt(mean_square), floor) * float(gamma)
    return y / (1.0 + math.exp(-y))


def _clamp_unit(x: Tensor) -> Tensor:
    """x clamped to [-1, 1] as diffusers' `torch.clamp` does, NaN kept NaN (gpustd.clip): a
    WGSL min(max(...)) turns NaN into -1 on GPUs whose max drops NaN, which would hide a
    float16 overflow from the pictures' NaN check as saturated colour noise."""
    return clip(x, -1.0, 1.0)


class RMSNorm(nn.Module):
    """x / ||x over channels|| * sqrt(C) * gamma on (B, C, H, W), optionally followed by SiLU.
    diffusers: `QwenImageRMS_norm` (F.normalize's floor 1e-12 on the norm)."""

    def __init__(self, dim: int, place: Place) -> None:
        self.floor = 1e-12 / math.sqrt(dim)  # F.normalize's floor on the root mean square
        self.gamma = nn.parameter((dim,), **place)

    def forward(self, x: Tensor, *, silu: bool = False) -> Tensor:
        mean_square = mean(_square(x), axis=1, keepdims=True)
        kernel = _channel_norm_silu if silu else _channel_norm
        out = typing.cast(Tensor, kernel(x, mean_square, self.gamma.reshape(1, -1, 1, 1),
                                         self.floor))
        return out.astype(x.dtype) if out.dtype != x.dtype else out


def _conv(in_dim: int, out_dim: int, kernel: int, place: Place) -> nn.Conv2d:
    """A causal 3D convolution's last temporal tap: its 2D convolution, same padding."""
    return nn.Conv2d(in_dim, out_dim, kernel, padding=kernel // 2, **place)


class ResidualBlock(nn.Module):
    """norm1, SiLU, conv1, norm2, SiLU, conv2, plus the (projected) input.
    diffusers: `QwenImageResidualBlock`. `make_conv` (in, out, kernel side, place) makes its
    convolutions: Wan's block (wan_vae_blocks) is this one with causal 3D ones."""

    make_conv: Callable[[int, int, int, Place], Any] = staticmethod(_conv)

    def __init__(self, in_dim: int, out_dim: int, place: Place) -> None:
        self.norm1 = RMSNorm(in_dim, place)
        self.conv1 = self.make_conv(in_dim, out_dim, 3, place)
        self.norm2 = RMSNorm(out_dim, place)
        self.conv2 = self.make_conv(out_dim, out_dim, 3, place)
        self.conv_shortcut = (self.make_conv(in_dim, out_dim, 1, place) if in_dim != out_dim
                              else None)

    def forward(self, x: Tensor) -> Tensor:
        shortcut = self.conv_shortcut(x) if self.conv_shortcut is not None else x
        h = self.conv1(self.norm1(x, silu=True))
        return self.conv2(self.norm2(h, silu=True), add=shortcut)


class AttentionBlock(nn.Module):
    """One-head self-attention over the pixels (to_qkv and proj 1x1 convolutions), plus the
    input. diffusers: `QwenImageAttentionBlock`."""

    def __init__(self, dim: int, place: Place) -> None:
        self.norm = RMSNorm(dim, place)
        self.to_qkv = nn.Conv2d(dim, 3 * dim, 1, **place)
        self.proj = nn.Conv2d(dim, dim, 1, **place)

    def forward(self, x: Tensor) -> Tensor:
        _, channels, height, width = x.shape
        qkv = to_tokens(self.to_qkv(self.norm(x)))
        q, k, v = (take_slice(qkv, i * channels, (i + 1) * channels, axis=2) for i in range(3))
        out = to_image(nn.attention(q, k, v, heads=1), height, width)
        return self.proj(out, add=x)


class Resample(nn.Module):
    """`resample.1`: a 2x nearest upsampling and a conv halving the channels (or making
    `out_dim`: Wan 2.2's), or a stride-2 conv after padding right and bottom by one. The
    `time_conv` of the 3D modes only runs from the second frame on (Wan's, wan_vae_blocks,
    adds it). diffusers: `QwenImageResample`."""

    def __init__(self, dim: int, mode: str, place: Place, *, out_dim: int | None = None) -> None:
        self.up = mode.startswith("upsample")
        conv = (nn.Conv2d(dim, out_dim or dim // 2, 3, padding=1, **place) if self.up
                else nn.Conv2d(dim, dim, 3, stride=2, **place))
        self.resample = nn.ModuleList([nn.Identity(), conv])

    def forward(self, x: Tensor) -> Tensor:
        if self.up:
            return self.resample[1](x, upsample=2)
        return self.resample[1](nn.pad(x, (0, 1, 0, 1)))


class MidBlock(nn.Module):
    """Residual block, attention, residual block; `residual_kind` (Wan's: wan_vae_blocks)."""

    residual_kind: type[ResidualBlock] = ResidualBlock

    def __init__(self, dim: int, place: Place) -> None:
        self.resnets = nn.ModuleList([self.residual_kind(dim, dim, place) for _ in range(2)])
        self.attentions = nn.ModuleList([AttentionBlock(dim, place)])

    def forward(self, x: Tensor) -> Tensor:
        return self.resnets[1](self.attentions[0](self.resnets[0](x)))


class UpBlock(nn.Module):
    """count + 1 residual blocks, then the up-sampler where `upsample` names its mode;
    `residual_kind`, `resample_kind` (Wan's: wan_vae_blocks)."""

    residual_kind, resample_kind = ResidualBlock, Resample

    def __init__(self, in_dim: int, out_dim: int, count: int, upsample: str | None,
                 place: Place) -> None:
        self.resnets = nn.ModuleList([self.residual_kind(in_dim if i == 0 else out_dim,
                                                         out_dim, place)
                                      for i in range(count + 1)])
        self.upsamplers = (nn.ModuleList([self.resample_kind(out_dim, upsample, place)])
                           if upsample else None)

    def forward(self, x: Tensor) -> Tensor:
        for resnet in self.resnets:
            x = resnet(x)
        return self.upsamplers[0](x) if self.upsamplers is not None else x


class Encoder(nn.Module):
    """diffusers: `QwenImageEncoder3d` on one frame (its attention scales unsupported). Wan's
    (wan_vae) is this one with its own kinds of parts, input channels' key and `stage`."""

    make_conv: Callable[[int, int, int, Place], Any] = staticmethod(_conv)
    residual_kind, resample_kind, mid_kind = ResidualBlock, Resample, MidBlock
    channels_key = "input_channels"

    def __init__(self, cfg: dict[str, Any], place: Place) -> None:
        dim, mult = cfg["base_dim"], list(cfg["dim_mult"])
        dims = [dim * u for u in [1, *mult]]
        self.conv_in = self.make_conv(cfg[self.channels_key], dims[0], 3, place)
        blocks: list[nn.Module] = []
        for i, (in_dim, out_dim) in enumerate(itertools.pairwise(dims)):
            temporal = None if i == len(mult) - 1 else bool(cfg["temperal_downsample"][i])
            blocks += self.stage(cfg, in_dim, out_dim, temporal, place)
        self.down_blocks = nn.ModuleList(blocks)
        self.mid_block = self.mid_kind(dims[-1], place)
        self.norm_out = RMSNorm(dims[-1], place)
        self.conv_out = self.make_conv(dims[-1], 2 * cfg["z_dim"], 3, place)

    def stage(self, cfg: dict[str, Any], in_dim: int, out_dim: int, temporal: bool | None,
              place: Place) -> list[nn.Module]:
        """One level's residual blocks, then its down-sampler (3D where `temporal`; none on
        the last level, `temporal` None)."""
        blocks: list[nn.Module] = []
        for _ in range(cfg["num_res_blocks"]):
            blocks.append(self.residual_kind(in_dim, out_dim, place))
            in_dim = out_dim
        if temporal is not None:
            mode = "downsample3d" if temporal else "downsample2d"
            blocks.append(self.resample_kind(out_dim, mode, place))
        return blocks

    def forward(self, x: Tensor) -> Tensor:
        x = self.conv_in(x)
        for block in self.down_blocks:
            x = block(x)
        return self.conv_out(self.norm_out(self.mid_block(x), silu=True))


class Decoder(nn.Module):
    """diffusers: `QwenImageDecoder3d` on one frame. Wan's (wan_vae) is this one with its own
    kinds of parts, output channels' key and `stage`, as its encoder."""

    make_conv: Callable[[int, int, int, Place], Any] = staticmethod(_conv)
    up_kind, mid_kind = UpBlock, MidBlock
    channels_key = "input_channels"

    def __init__(self, cfg: dict[str, Any], place: Place) -> None:
        dim, mult = cfg["base_dim"], list(cfg["dim_mult"])
        dims = [dim * u for u in [mult[-1], *mult[::-1]]]
        upsample = list(cfg["temperal_downsample"])[::-1]
        self.conv_in = self.make_conv(cfg["z_dim"], dims[0], 3, place)
        self.mid_block = self.mid_kind(dims[0], place)
        blocks = []
        for i, (in_dim, out_dim) in enumerate(itertools.pairwise(dims)):
            temporal = None if i == len(mult) - 1 else bool(upsample[i])
            blocks.append(self.stage(cfg, in_dim, out_dim, temporal, first=i == 0, place=place))
        self.up_blocks = nn.ModuleList(blocks)
        self.norm_out = RMSNorm(dims[-1], place)
        self.conv_out = self.make_conv(dims[-1], cfg[self.channels_key], 3, place)

    def stage(self, cfg: dict[str, Any], in_dim: int, out_dim: int, temporal: bool | None, *,
              first: bool, place: Place) -> nn.Module:
        """One level's up block (its up-sampler 3D where `temporal`; none on the last level,
        `temporal` None): after the first level it reads half of `in_dim`, what the level
        before's up-sampler made."""
        mode = None if temporal is None else "upsample3d" if temporal else "upsample2d"
        return self.up_kind(in_dim if first else in_dim // 2, out_dim, cfg["num_res_blocks"],
                            mode, place)

    def forward(self, x: Tensor) -> Tensor:
        x = self.mid_block(self.conv_in(x))
        for block in self.up_blocks:
            x = block(x)
        return self.conv_out(self.norm_out(x, silu=True))


class _SingleFrameState(FlatGammas):
    """FlatGammas for the single-frame network: 5D kernels cut to their last temporal tap,
    time_conv dropped."""

    def __init__(self, state: Mapping[str, Any]) -> None:
        super().__init__(state)
        self._keys = [k for k in state if ".time_conv." not in k]

    def __iter__(self) -> Iterator[str]:
        return iter(self._keys)

    def __len__(self) -> int:
        return len(self._keys)

    def __getitem__(self, key: str) -> Any:
        if ".time_conv." in key:
            raise KeyError(key)
        value = np.asarray(super().__getitem__(key))
        return value[:, :, -1] if value.ndim == 5 else value

    def shape(self, key: str) -> tuple[int, ...]:
        shape = super().shape(key)
        return (*shape[:2], *shape[3:]) if len(shape) == 5 else shape


def single_frame_state(state: Mapping[str, Any]) -> Mapping[str, Any]:
    """`state` (AutoencoderKLQwenImage's keys and shapes) for `AutoencoderKLQwenImage`."""
    return _SingleFrameState(state)


class AutoencoderKLQwenImage(LatentStatistics, nn.Module):
    """Pictures (B, input_channels, H, W) in [-1, 1] <-> latents (B, z_dim, H / 8, W / 8):
    3 channels (RGB), or Qwen-Image-Layered's 4 (RGBA).

    Config: `vae/config.json` of a Qwen-Image folder. Parameter names are diffusers'
    (`decoder.up_blocks.0.resnets.0.conv1.weight`, `decoder.mid_block.attentions.0.to_qkv.
    weight`, `post_quant_conv.weight`, ...), the 3D kernels read through
    `single_frame_state`. diffusers: `AutoencoderKLQwenImage.decode(z[:, :, None])` and
    `.encode(x[:, :, None]).latent_dist.mode()` with the frame axis squeezed back.
    """

    def __init__(self, config: dict[str, Any], *, dtype: Any = np.float32,
                 device: Device | None = None) -> None:
        cfg = {**_DEFAULTS, **config}
        self.config = checked_config(cfg, "Qwen-Image", "Qwen-Image's VAE")
        place: Place = {"dtype": dtype, "device": device}
        z_dim = cfg["z_dim"]
        self.encoder = Encoder(cfg, place)
        self.quant_conv = _conv(2 * z_dim, 2 * z_dim, 1, place)
        self.post_quant_conv = _conv(z_dim, z_dim, 1, place)
        self.decoder = Decoder(cfg, place)

    def load_state_dict(self, state: Mapping[str, Any], *, strict: bool = True,
                        dtype: Any = None, to_host: bool = False) -> None:
        """Load diffusers' AutoencoderKLQwenImage tensors (5D kernels, 4D/5D gammas)."""
        super().load_state_dict(single_frame_state(state), strict=strict, dtype=dtype,
                                to_host=to_host)

    def decode(self, latents: Tensor) -> Tensor:
        """(B, z_dim, h, w) VAE latents (denormalized) -> (B, input_channels, 8h, 8w)
        clamped to [-1, 1]."""
        out = self.decoder(self.post_quant_conv(latents))
        return _clamp_unit(out)

    def encode(self, pixels: Tensor) -> tuple[Tensor, Tensor]:
        """(B, input_channels, H, W) in [-1, 1], H and W multiples of 8 -> the posterior's
        mean and log variance, each (B, z_dim, H / 8, W / 8) (not normalized). diffusers:
        `encode(x[:, :, None]).latent_dist` (`.mean`, `.logvar`, the latter unclamped)."""
        moments = self.quant_conv(self.encoder(pixels))
        z_dim = self.config["z_dim"]
        return (take_slice(moments, 0, z_dim, axis=1),
                take_slice(moments, z_dim, 2 * z_dim, axis=1))
