"""HunyuanImage 2.1's VAE (diffusers' AutoencoderKLHunyuanImage): a 2D KL autoencoder with
32x spatial compression and 64 latent channels whose resamplers and heads carry parameter-free
shortcuts: going down, the pixels of each 2x2 patch move into channels and consecutive
channels are averaged (diffusers' `HunyuanImageDownsample`); going up, channels are repeated
and spread over the 2x2 patch (`HunyuanImageUpsample`); the encoder's output adds its input's
channel-group means, the decoder's first conv adds its latents repeated over channels. The
resnets and the mid block's single-head attention are the SD VAE's (`vae`), their 1x1
projections kept as diffusers stores them (`to_q`, `to_k`, `to_v`, `proj` of shape (C, C, 1,
1)). Latents scale by the config's `scaling_factor` (no shift).

    vae = AutoencoderKLHunyuanImage(config, device=device)
    mean, logvar = vae.encode(pixels)        # (B, 3, H, W) -> (B, 64, H/32, W/32) each
    pixels = vae.decode(latents)             # VAE latents (transformer's / scaling_factor)
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import numpy as np

from gpucore import Device
from gpustd import Tensor, concatenate, nn, permute, take_slice
from gpustd.reduction import mean

from .layers import Place, ResnetBlock2D, to_image, to_tokens

__all__ = ["AutoencoderKLHunyuanImage", "repeat_channels", "shuffle", "unshuffle"]

# the released model's vae/config.json where a config leaves a field out
_DEFAULTS: dict[str, Any] = {
    "in_channels": 3, "out_channels": 3, "latent_channels": 64,
    "block_out_channels": (128, 256, 512, 512, 1024, 1024), "layers_per_block": 2,
    "spatial_compression_ratio": 32, "scaling_factor": 0.75289,
    "downsample_match_channel": True, "upsample_match_channel": True,
}


def unshuffle(x: Tensor) -> Tensor:
    """(B, C, H, W) -> (B, 4C, H/2, W/2), channel (row offset * 2 + column offset) * C + c.
    diffusers: the `reshape(B, C, H/2, 2, W/2, 2).permute(0, 3, 5, 1, 2, 4)` of
    HunyuanImageDownsample."""
    b, c, h, w = x.shape
    cut = permute(x.reshape(b, c, h // 2, 2, w // 2, 2), (0, 3, 5, 1, 2, 4))
    return cut.reshape(b, 4 * c, h // 2, w // 2)


def shuffle(x: Tensor) -> Tensor:
    """unshuffle's inverse, (B, 4C, H, W) -> (B, C, 2H, 2W). diffusers: HunyuanImageUpsample's
    `reshape(B, 2, 2, C, H, W).permute(0, 3, 4, 1, 5, 2)`."""
    b, c4, h, w = x.shape
    cut = permute(x.reshape(b, 2, 2, c4 // 4, h, w), (0, 3, 4, 1, 5, 2))
    return cut.reshape(b, c4 // 4, 2 * h, 2 * w)


def repeat_channels(x: Tensor, repeats: int) -> Tensor:
    """Each channel `repeats` times in a row. torch: `x.repeat_interleave(repeats, dim=1)`."""
    if repeats == 1:
        return x
    b, c, h, w = x.shape
    copies = x.reshape(b, c, 1, h, w)
    return concatenate([copies] * repeats, axis=2).reshape(b, c * repeats, h, w)


def _group_mean(x: Tensor, size: int) -> Tensor:
    """Consecutive channels averaged in groups of `size`: (B, C, H, W) -> (B, C/size, H, W)."""
    if size == 1:
        return x
    b, c, h, w = x.shape
    return mean(x.reshape(b, c // size, size, h, w), axis=2)


def _resnet(in_channels: int, out_channels: int, place: Place) -> ResnetBlock2D:
    if in_channels != out_channels:
        # diffusers' HunyuanImageResnetBlock applies its shortcut conv to the wrong tensor
        # and fails on such a block: no released config has one
        raise ValueError(f"HunyuanImage VAE: a resnet from {in_channels} to {out_channels} "
                         "channels is not supported (diffusers' cannot run one); fix the VAE's "
                         "block_out_channels")
    return ResnetBlock2D(in_channels, out_channels, temb_channels=None, eps=1e-6, place=place)


class _Attention(nn.Module):
    """Single-head self-attention over the pixels, 1x1 conv projections. diffusers:
    `HunyuanImageAttentionBlock`."""

    def __init__(self, channels: int, place: Place) -> None:
        self.norm = nn.GroupNorm(32, channels, eps=1e-6, **place)
        self.to_q, self.to_k, self.to_v, self.proj = (
            nn.Conv2d(channels, channels, 1, **place) for _ in range(4))

    def forward(self, x: Tensor) -> Tensor:
        _, _, height, width = x.shape
        normed = self.norm(x)
        q, k, v = (to_tokens(conv(normed)) for conv in (self.to_q, self.to_k, self.to_v))
        attended = to_image(nn.attention(q, k, v, heads=1), height, width)
        return self.proj(attended, add=x)


class _MidBlock(nn.Module):
    def __init__(self, channels: int, place: Place) -> None:
        self.resnets = nn.ModuleList([_resnet(channels, channels, place) for _ in range(2)])
        self.attentions = nn.ModuleList([_Attention(channels, place)])

    def forward(self, x: Tensor) -> Tensor:
        return self.resnets[1](self.attentions[0](self.resnets[0](x)))


class _Downsample(nn.Module):
    """A conv to a quarter of the channels, its 2x2 patches moved into channels, plus the
    input's patches averaged down to as many channels. diffusers: `HunyuanImageDownsample`."""

    def __init__(self, in_channels: int, out_channels: int, place: Place) -> None:
        if out_channels % 4 or (4 * in_channels) % out_channels:
            raise ValueError(f"HunyuanImage VAE: a down-sampler from {in_channels} to "
                             f"{out_channels} channels is not supported; fix block_out_channels")
        self.conv = nn.Conv2d(in_channels, out_channels // 4, 3, padding=1, **place)
        self.group_size = 4 * in_channels // out_channels

    def forward(self, x: Tensor) -> Tensor:
        return unshuffle(self.conv(x)) + _group_mean(unshuffle(x), self.group_size)


class _Upsample(nn.Module):
    """A conv to four times the channels plus the input's channels repeated, spread over each
    2x2 patch (one shuffle of the sum: the shuffle is linear). diffusers:
    `HunyuanImageUpsample`."""

    def __init__(self, in_channels: int, out_channels: int, place: Place) -> None:
        if (4 * out_channels) % in_channels:
            raise ValueError(f"HunyuanImage VAE: an up-sampler from {in_channels} to "
                             f"{out_channels} channels is not supported; fix block_out_channels")
        self.conv = nn.Conv2d(in_channels, 4 * out_channels, 3, padding=1, **place)
        self.repeats = 4 * out_channels // in_channels

    def forward(self, x: Tensor) -> Tensor:
        return shuffle(self.conv(x, add=repeat_channels(x, self.repeats)))


def _levels(channels: list[int], count: int, ratio: int, match: bool, place: Place,
            resampler: Callable[[int, int, Place], nn.Module]) -> list[nn.Module]:
    """The encoder's down blocks or the decoder's up blocks, flat as diffusers lists them:
    `count` resnets a level, a resampler after each of the first log2(ratio) levels but the
    last (to the next level's width where `match`)."""
    layers: list[nn.Module] = []
    width = channels[0]
    for i, out in enumerate(channels):
        for _ in range(count):
            layers.append(_resnet(width, out, place))
            width = out
        if i < math.log2(ratio) and i != len(channels) - 1:
            target = channels[i + 1] if match else out
            layers.append(resampler(width, target, place))
            width = target
    return layers


class Encoder(nn.Module):
    """diffusers: `HunyuanImageEncoder2D`."""

    def __init__(self, cfg: dict[str, Any], place: Place) -> None:
        ch, z = list(cfg["block_out_channels"]), cfg["latent_channels"]
        if ch[-1] % (2 * z):
            raise ValueError(f"HunyuanImage VAE: block_out_channels[-1] ({ch[-1]}) must be a "
                             f"multiple of twice latent_channels ({2 * z})")
        self.group_size = ch[-1] // (2 * z)
        self.conv_in = nn.Conv2d(cfg["in_channels"], ch[0], 3, padding=1, **place)
        self.down_blocks = nn.ModuleList(_levels(
            ch, cfg["layers_per_block"], cfg["spatial_compression_ratio"],
            cfg["downsample_match_channel"], place, _Downsample))
        self.mid_block = _MidBlock(ch[-1], place)
        self.norm_out = nn.GroupNorm(32, ch[-1], eps=1e-6, **place)
        self.conv_out = nn.Conv2d(ch[-1], 2 * z, 3, padding=1, **place)

    def forward(self, x: Tensor) -> Tensor:
        x = self.conv_in(x)
        for block in self.down_blocks:
            x = block(x)
        x = self.mid_block(x)
        return self.conv_out(x, prologue=self.norm_out.prologue(x, silu=True),
                             add=_group_mean(x, self.group_size))


class Decoder(nn.Module):
    """diffusers: `HunyuanImageDecoder2D` (its block_out_channels the encoder's reversed)."""

    def __init__(self, cfg: dict[str, Any], place: Place) -> None:
        ch, z = list(cfg["block_out_channels"])[::-1], cfg["latent_channels"]
        if ch[0] % z:
            raise ValueError(f"HunyuanImage VAE: block_out_channels[-1] ({ch[0]}) must be a "
                             f"multiple of latent_channels ({z})")
        self.repeat = ch[0] // z
        self.conv_in = nn.Conv2d(z, ch[0], 3, padding=1, **place)
        self.mid_block = _MidBlock(ch[0], place)
        self.up_blocks = nn.ModuleList(_levels(
            ch, cfg["layers_per_block"] + 1, cfg["spatial_compression_ratio"],
            cfg["upsample_match_channel"], place, _Upsample))
        self.norm_out = nn.GroupNorm(32, ch[-1], eps=1e-6, **place)
        self.conv_out = nn.Conv2d(ch[-1], cfg["out_channels"], 3, padding=1, **place)

    def forward(self, z: Tensor) -> Tensor:
        x = self.mid_block(self.conv_in(z, add=repeat_channels(z, self.repeat)))
        for block in self.up_blocks:
            x = block(x)
        return self.conv_out(x, prologue=self.norm_out.prologue(x, silu=True))


class AutoencoderKLHunyuanImage(nn.Module):
    """Pictures (B, 3, H, W) in [-1, 1] <-> latents (B, 64, H/32, W/32). Config: diffusers'
    `vae/config.json` of a HunyuanImage 2.1 folder; parameter names are diffusers'."""

    def __init__(self, config: dict[str, Any], *, dtype: Any = np.float32,
                 device: Device | None = None) -> None:
        cfg = {**_DEFAULTS, **config}
        ratio = cfg["spatial_compression_ratio"]
        if ratio < 1 or 2 ** int(math.log2(ratio)) != ratio or int(math.log2(ratio)) >= len(
                cfg["block_out_channels"]):
            raise ValueError(f"HunyuanImage VAE spatial_compression_ratio {ratio} must be a "
                             "power of 2 below 2 ** len(block_out_channels); fix the VAE's "
                             "config.json")
        self.config = cfg
        place: Place = {"dtype": dtype, "device": device}
        self.encoder = Encoder(cfg, place)
        self.decoder = Decoder(cfg, place)

    @property
    def spatial_factor(self) -> int:
        """Pixels per latent along a side (32 for the released VAE)."""
        return int(self.config["spatial_compression_ratio"])

    @property
    def scaling_factor(self) -> float:
        """The transformer's latents = VAE latents * scaling_factor."""
        return float(self.config["scaling_factor"])

    @property
    def shift_factor(self) -> float:
        """None: the transformer's latents are the VAE's scaled, not shifted."""
        return 0.0

    @property
    def device(self) -> Device:
        return self.decoder.conv_in.weight.device

    def encode(self, pixels: Tensor) -> tuple[Tensor, Tensor]:
        """(B, 3, H, W) in [-1, 1], H and W multiples of `spatial_factor` -> the posterior's
        mean and log variance, (B, 64, H/32, W/32) each, unscaled. diffusers:
        `encode(x).latent_dist` (`.mean`, `.logvar` unclamped)."""
        side, z = self.spatial_factor, self.config["latent_channels"]
        if pixels.ndim != 4 or pixels.shape[1] != self.config["in_channels"] or any(
                n % side for n in pixels.shape[2:]):
            raise ValueError(f"HunyuanImage VAE input must be (batch, "
                             f"{self.config['in_channels']}, height, width) with height and "
                             f"width multiples of {side}, got shape {pixels.shape}")
        moments = self.encoder(pixels)
        return take_slice(moments, 0, z, axis=1), take_slice(moments, z, 2 * z, axis=1)

    def decode(self, latents: Tensor) -> Tensor:
        """VAE latents (B, 64, h, w) (the transformer's divided by `scaling_factor`) ->
        pictures (B, 3, 32h, 32w) in about [-1, 1]. diffusers: `decode(z).sample`."""
        z = self.config["latent_channels"]
        if latents.ndim != 4 or latents.shape[1] != z:
            raise ValueError(f"HunyuanImage VAE latents must be (batch, {z}, height, width), "
                             f"got shape {latents.shape}")
        return self.decoder(latents)
