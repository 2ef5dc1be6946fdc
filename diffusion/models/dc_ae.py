"""DC-AE, the deep-compression autoencoder (diffusers' AutoencoderDC): Sana's VAE (and
SANA-Video's, PRX's), 32x spatial compression to 32 latent channels in the f32c32 models,
deterministic (no latent Gaussian). Residual autoencoding: every resampler, the encoder's
output and the decoder's input add parameter-free shortcuts that move space into channels
(averaging channel groups) or channels into space (duplicating channels); the top levels run
residual blocks, the lower ones EfficientViT blocks (ReLU linear attention, GLUMBConv).
Blocks: dc_ae_blocks; attention: dc_ae_attention.

    vae = AutoencoderDC(config, dtype=np.float16, device=device)   # vae/config.json
    latents = vae.encode(pixels)     # (B, 3, H, W) in [-1, 1] -> (B, 32, H/32, W/32)
    pixels = vae.decode(latents)     # VAE latents (a Sana transformer's / scaling_factor)

H and W must be multiples of `spatial_compression_ratio` (SanaPipeline's sizes are).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from gpucore import Device
from gpustd import Tensor, nn

from .dc_ae_blocks import (
    ChannelRMSNorm,
    DownBlock,
    EfficientViTBlock,
    ResBlock,
    UpBlock,
    group_mean,
)
from .hunyuanimage_vae import repeat_channels
from .layers import Place

__all__ = ["AutoencoderDC"]

_SANA_BLOCKS = ("ResBlock",) * 3 + ("EfficientViTBlock",) * 3
# diffusers' AutoencoderDC defaults, where a config leaves a field out
_DEFAULTS: dict[str, Any] = {
    "in_channels": 3, "latent_channels": 32, "attention_head_dim": 32,
    "encoder_block_types": "ResBlock", "decoder_block_types": "ResBlock",
    "encoder_block_out_channels": (128, 256, 512, 512, 1024, 1024),
    "decoder_block_out_channels": (128, 256, 512, 512, 1024, 1024),
    "encoder_layers_per_block": (2, 2, 2, 3, 3, 3), "decoder_layers_per_block": (3,) * 6,
    "encoder_qkv_multiscales": ((), (), (), (5,), (5,), (5,)),
    "decoder_qkv_multiscales": ((), (), (), (5,), (5,), (5,)),
    "upsample_block_type": "pixel_shuffle", "downsample_block_type": "pixel_unshuffle",
    "decoder_norm_types": "rms_norm", "decoder_act_fns": "silu",
    "encoder_out_shortcut": True, "decoder_in_shortcut": True, "decoder_conv_act_fn": "relu",
    "scaling_factor": 1.0,
}


def _per_level(value: Any, levels: int, name: str) -> list[Any]:
    """A config field given once for all levels or once per level, as a list per level."""
    values = [value] * levels if isinstance(value, str) else list(value)
    if len(values) != levels:
        raise ValueError(f"DC-AE: config {name} has {len(values)} entries for {levels} levels; "
                         "fix the VAE's config.json")
    return values


def _block(kind: str, channels: int, head_dim: int, scales: Any, act_fn: str,
           place: Place) -> nn.Module:
    if kind == "ResBlock":
        return ResBlock(channels, act_fn, place)
    if kind == "EfficientViTBlock":
        return EfficientViTBlock(channels, head_dim, tuple(scales), place)
    raise ValueError(f"DC-AE: block type {kind!r} is not supported (ResBlock, "
                     "EfficientViTBlock); fix the VAE's config.json")


class Encoder(nn.Module):
    """conv_in, each level's blocks then its down-sampler, conv_out plus the channel-group
    means of its input. diffusers: autoencoder_dc's `Encoder`."""

    def __init__(self, cfg: dict[str, Any], place: Place) -> None:
        ch = list(cfg["encoder_block_out_channels"])
        n = len(ch)
        kinds = _per_level(cfg["encoder_block_types"], n, "encoder_block_types")
        layers = _per_level(cfg["encoder_layers_per_block"], n, "encoder_layers_per_block")
        scales = _per_level(cfg["encoder_qkv_multiscales"], n, "encoder_qkv_multiscales")
        unshuffle, head_dim = cfg["downsample_block_type"] == "pixel_unshuffle", cfg[
            "attention_head_dim"]
        top = ch[0] if layers[0] > 0 else ch[1]
        self.conv_in: nn.Module = (
            nn.Conv2d(cfg["in_channels"], top, 3, padding=1, **place) if layers[0] > 0 else
            DownBlock(cfg["in_channels"], top, unshuffle=unshuffle, shortcut=False,
                      place=place))
        stages = []
        for i, (channels, count) in enumerate(zip(ch, layers)):
            level = [_block(kinds[i], channels, head_dim, scales[i], "silu", place)
                     for _ in range(count)]
            if i < n - 1 and count > 0:
                level.append(DownBlock(channels, ch[i + 1], unshuffle=unshuffle, shortcut=True,
                                       place=place))
            stages.append(nn.ModuleList(level))
        self.down_blocks = nn.ModuleList(stages)
        self.conv_out = nn.Conv2d(ch[-1], cfg["latent_channels"], 3, padding=1, **place)
        self.out_group = ch[-1] // cfg["latent_channels"] if cfg["encoder_out_shortcut"] else 0

    def forward(self, x: Tensor) -> Tensor:
        x = self.conv_in(x)
        for stage in self.down_blocks:
            for layer in stage:
                x = layer(x)
        return self.conv_out(x, add=group_mean(x, self.out_group) if self.out_group else None)


class Decoder(nn.Module):
    """conv_in plus the latents' channels duplicated, from the lowest level up each level's
    up-sampler then its blocks, RMS norm, ReLU, conv_out. diffusers: autoencoder_dc's
    `Decoder`."""

    def __init__(self, cfg: dict[str, Any], place: Place) -> None:
        ch = list(cfg["decoder_block_out_channels"])
        n = len(ch)
        kinds = _per_level(cfg["decoder_block_types"], n, "decoder_block_types")
        layers = _per_level(cfg["decoder_layers_per_block"], n, "decoder_layers_per_block")
        scales = _per_level(cfg["decoder_qkv_multiscales"], n, "decoder_qkv_multiscales")
        acts = _per_level(cfg["decoder_act_fns"], n, "decoder_act_fns")
        for norm in _per_level(cfg["decoder_norm_types"], n, "decoder_norm_types"):
            if norm != "rms_norm":
                raise ValueError(f"DC-AE: decoder norm {norm!r} is not supported (the Sana "
                                 "VAEs' rms_norm is); this DC-AE is not one we implement")
        if cfg["decoder_conv_act_fn"] != "relu":
            raise ValueError(f"DC-AE: decoder_conv_act_fn {cfg['decoder_conv_act_fn']!r} is "
                             "not supported (relu is); fix the VAE's config.json")
        interpolate, head_dim = cfg["upsample_block_type"] == "interpolate", cfg[
            "attention_head_dim"]
        latent = cfg["latent_channels"]
        self.conv_in = nn.Conv2d(latent, ch[-1], 3, padding=1, **place)
        self.in_repeats = ch[-1] // latent if cfg["decoder_in_shortcut"] else 0
        stages = []
        for i, (channels, count) in enumerate(zip(ch, layers)):
            level: list[nn.Module] = []
            if i < n - 1 and count > 0:
                level.append(UpBlock(ch[i + 1], channels, interpolate=interpolate,
                                     shortcut=True, place=place))
            level += [_block(kinds[i], channels, head_dim, scales[i], acts[i], place)
                      for _ in range(count)]
            stages.append(nn.ModuleList(level))
        self.up_blocks = nn.ModuleList(stages)
        top = ch[0] if layers[0] > 0 else ch[1]
        self.norm_out = ChannelRMSNorm(top, place)
        self.conv_out: nn.Module = (
            nn.Conv2d(top, cfg["in_channels"], 3, padding=1, **place) if layers[0] > 0 else
            UpBlock(top, cfg["in_channels"], interpolate=interpolate, shortcut=False,
                    place=place))

    def forward(self, z: Tensor) -> Tensor:
        x = self.conv_in(z, add=repeat_channels(z, self.in_repeats) if self.in_repeats
                         else None)
        for stage in reversed(list(self.up_blocks)):
            for layer in stage:
                x = layer(x)
        return self.conv_out(self.norm_out(x, relu=True))


class AutoencoderDC(nn.Module):
    """Sana's DC-AE. Config: diffusers' `vae/config.json` (AutoencoderDC); `scaling_factor`
    maps VAE latents to the transformer's, latents * scaling_factor (Sana's f32c32: 0.41407;
    no shift)."""

    def __init__(self, config: dict[str, Any], *, dtype: Any = np.float32,
                 device: Device | None = None) -> None:
        place: Place = {"dtype": dtype, "device": device}
        cfg = {**_DEFAULTS, **config}
        for key in ("downsample_block_type", "upsample_block_type"):
            known = ("pixel_unshuffle", "conv", "Conv") if key[0] == "d" else (
                "pixel_shuffle", "interpolate")
            if cfg[key] not in known:
                raise ValueError(f"DC-AE: {key} {cfg[key]!r} is not supported ({', '.join(known)}"
                                 "); fix the VAE's config.json")
        self.config = cfg
        self.encoder = Encoder(cfg, place)
        self.decoder = Decoder(cfg, place)

    @property
    def scaling_factor(self) -> float:
        """Transformer latents = VAE latents * scaling_factor (config `scaling_factor`)."""
        return float(self.config["scaling_factor"])

    @property
    def spatial_compression_ratio(self) -> int:
        """Image pixels per latent pixel along each side: 2^(levels - 1)."""
        return 2 ** (len(self.config["encoder_block_out_channels"]) - 1)

    def _check(self, x: Tensor, channels: int, what: str, multiple: int) -> None:
        if x.ndim != 4 or x.shape[1] != channels or x.shape[2] % multiple or (
                x.shape[3] % multiple):
            sides = f" with H and W multiples of {multiple}" if multiple > 1 else ""
            raise ValueError(f"DC-AE {what}: expected (B, {channels}, H, W){sides}, got "
                             f"{tuple(x.shape)}; resize or crop the input")

    def encode(self, images: Tensor) -> Tensor:
        """Images in [-1, 1], (B, 3, H, W) -> latents (B, C, H/f, W/f), f the compression
        ratio. Unscaled: multiply by `scaling_factor` before the transformer sees them.
        diffusers: `vae.encode(images).latent`."""
        self._check(images, self.config["in_channels"], "encode",
                    self.spatial_compression_ratio)
        return self.encoder(images)

    def decode(self, latents: Tensor) -> Tensor:
        """Unscaled latents (divide the transformer's by `scaling_factor` first), (B, C, h, w)
        -> images in about [-1, 1], (B, 3, f h, f w). diffusers: `vae.decode(latents).sample`."""
        self._check(latents, self.config["latent_channels"], "decode", 1)
        return self.decoder(latents)
