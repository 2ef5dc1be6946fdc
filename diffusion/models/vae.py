"""AutoencoderKL (the SD VAE): encoder to a latent Gaussian, decoder back to pixels."""

from __future__ import annotations

from typing import Any

import numpy as np

from gpucore import Device
from gpustd import Tensor, nn
from gpustd.shape import take_slice

from .layers import (
    Attention,
    Downsample2D,
    Place,
    ResnetBlock2D,
    Upsample2D,
    to_image,
    to_tokens,
)

_DEFAULTS: dict[str, Any] = {
    "in_channels": 3, "out_channels": 3, "latent_channels": 4, "layers_per_block": 2,
    "norm_num_groups": 32, "block_out_channels": (128, 256, 512, 512),
    "scaling_factor": 0.18215, "force_upcast": True, "shift_factor": None,
    "use_quant_conv": True, "use_post_quant_conv": True,
}
# Config keys whose other values change the layers or the latent mapping in ways we do not
# build: each must keep diffusers' default (missing counts as the default).
_FIXED: dict[str, Any] = {
    "act_fn": "silu", "latents_mean": None, "latents_std": None,
    "mid_block_add_attention": True,
}


def _resnet(in_channels: int, out_channels: int, groups: int, place: Place) -> ResnetBlock2D:
    """A VAE resnet: no time embedding; a projected shortcut added last, for the memory."""
    return ResnetBlock2D(in_channels, out_channels, temb_channels=None, groups=groups, eps=1e-6,
                         place=place, shortcut_last=True)


def _attention(channels: int, groups: int, place: Place) -> Attention:
    """A VAE attention whose parameters sit where diffusers puts them (to_q, ... beside
    group_norm): the Attention module itself, with a group_norm added."""
    attn = Attention(channels, 1, channels, qkv_bias=True, place=place)
    attn.group_norm = nn.GroupNorm(groups, channels, eps=1e-6, **place)
    return attn


def _attend(attn: Any, x: Tensor) -> Tensor:
    _, _, height, width = x.shape
    return to_image(attn(to_tokens(attn.group_norm(x))), height, width) + x


class _MidBlock(nn.Module):
    def __init__(self, channels: int, groups: int, place: Place) -> None:
        self.resnets = nn.ModuleList([_resnet(channels, channels, groups, place)
                                      for _ in range(2)])
        self.attentions = nn.ModuleList([_attention(channels, groups, place)])

    def forward(self, x: Tensor) -> Tensor:
        x = self.resnets[0](x)
        x = _attend(self.attentions[0], x)
        return self.resnets[1](x)


class _Sampling(nn.Module):
    """DownEncoderBlock2D / UpDecoderBlock2D: resnets, then an optional resampler."""

    def __init__(self, resnets: list[ResnetBlock2D], sampler: nn.Module | None, name: str) -> None:
        self.resnets = nn.ModuleList(resnets)
        self._name = name
        if sampler is not None:
            setattr(self, name, nn.ModuleList([sampler]))

    def layers(self) -> list[nn.Module]:
        """The resnets, then the resampler if any: what forward runs, in order."""
        sampler = getattr(self, self._name, None)
        return [*self.resnets, *(sampler or ())]

    def forward(self, x: Tensor) -> Tensor:
        for layer in self.layers():
            x = layer(x)
        return x


class Encoder(nn.Module):
    def __init__(self, cfg: dict[str, Any], place: Place) -> None:
        ch, groups, n = list(cfg["block_out_channels"]), cfg["norm_num_groups"], cfg[
            "layers_per_block"]
        self.conv_in = nn.Conv2d(cfg["in_channels"], ch[0], 3, padding=1, **place)
        blocks = []
        for i, cout in enumerate(ch):
            cin, last = ch[max(i - 1, 0)], i == len(ch) - 1
            resnets = [_resnet(cin if j == 0 else cout, cout, groups, place) for j in range(n)]
            down = None if last else Downsample2D(cout, padding=0, place=place)
            blocks.append(_Sampling(resnets, down, "downsamplers"))
        self.down_blocks = nn.ModuleList(blocks)
        self.mid_block = _MidBlock(ch[-1], groups, place)
        self.conv_norm_out = nn.GroupNorm(groups, ch[-1], eps=1e-6, **place)
        self.conv_out = nn.Conv2d(ch[-1], 2 * cfg["latent_channels"], 3, padding=1, **place)

    def forward(self, x: Tensor) -> Tensor:
        x = self.conv_in(x)
        for block in self.down_blocks:
            x = block(x)
        x = self.mid_block(x)
        return self.conv_out(x, prologue=self.conv_norm_out.prologue(x, silu=True))


class Decoder(nn.Module):
    def __init__(self, cfg: dict[str, Any], place: Place) -> None:
        ch, groups, n = list(cfg["block_out_channels"]), cfg["norm_num_groups"], cfg[
            "layers_per_block"]
        rev = ch[::-1]
        self.conv_in = nn.Conv2d(cfg["latent_channels"], rev[0], 3, padding=1, **place)
        self.mid_block = _MidBlock(rev[0], groups, place)
        blocks = []
        for i, cout in enumerate(rev):
            cin, last = rev[max(i - 1, 0)], i == len(rev) - 1
            resnets = [_resnet(cin if j == 0 else cout, cout, groups, place)
                       for j in range(n + 1)]
            up = None if last else Upsample2D(cout, place=place)
            blocks.append(_Sampling(resnets, up, "upsamplers"))
        self.up_blocks = nn.ModuleList(blocks)
        self.conv_norm_out = nn.GroupNorm(groups, ch[0], eps=1e-6, **place)
        self.conv_out = nn.Conv2d(ch[0], cfg["out_channels"], 3, padding=1, **place)

    def forward(self, z: Tensor) -> Tensor:
        x = self.mid_block(self.conv_in(z))
        # every block's layers in this one loop: a caller's frame would keep each block's
        # input alive until the block returns (128 MiB at 512 px, float16)
        for block in self.up_blocks:
            for layer in block.layers():
                x = layer(x)
        return self.conv_out(x, prologue=self.conv_norm_out.prologue(x, silu=True))


class AutoencoderKL(nn.Module):
    """The SD / SDXL / SD3 / FLUX VAE. Config: diffusers' `vae/config.json`; `scaling_factor`
    and `shift_factor` map latents to the denoiser's unit-variance space, (latents - shift) *
    scale (SD 0.18215 and no shift, SDXL 0.13025, SD3 1.5305 and 0.0609, FLUX 0.3611 and
    0.1159), and `force_upcast` says the float16 decode overflows (the SDXL VAE), so decode
    in float32. SD3's and FLUX's 16-channel VAEs have no quant convs (`use_quant_conv`,
    `use_post_quant_conv` false): those attributes are then Identity."""

    def __init__(self, config: dict[str, Any], *, dtype: Any = np.float32,
                 device: Device | None = None) -> None:
        place: Place = {"dtype": dtype, "device": device}
        cfg = {**_DEFAULTS, **config}
        for key, default in _FIXED.items():
            if cfg.get(key, default) != default:
                raise ValueError(f"VAE config {key}={cfg[key]!r} is not supported (SD and SDXL "
                                 f"VAEs have {default!r}); this VAE is not one we implement")
        self.config = cfg
        latent = cfg["latent_channels"]
        self.encoder = Encoder(cfg, place)
        self.decoder = Decoder(cfg, place)
        self.quant_conv = (nn.Conv2d(2 * latent, 2 * latent, 1, **place)
                           if cfg["use_quant_conv"] else nn.Identity())
        self.post_quant_conv = (nn.Conv2d(latent, latent, 1, **place)
                                if cfg["use_post_quant_conv"] else nn.Identity())

    @property
    def scaling_factor(self) -> float:
        """UNet latents = VAE latents * scaling_factor (config `scaling_factor`)."""
        return float(self.config["scaling_factor"])

    @property
    def shift_factor(self) -> float:
        """Denoiser latents = (VAE latents - shift_factor) * scaling_factor (config
        `shift_factor`; 0 when absent or null, as SD 1/2 and SDXL)."""
        return float(self.config["shift_factor"] or 0.0)

    @property
    def force_upcast(self) -> bool:
        """Config `force_upcast` (diffusers' default True): a float16 model should decode in
        float32. diffusers' SDXL pipelines honour it; its SD 1.x/2.x pipelines ignore it, and
        the SDXL "fp16-fix" VAE sets it false."""
        return bool(self.config["force_upcast"])

    def encode(self, images: Tensor) -> tuple[Tensor, Tensor]:
        """images in [-1, 1], (B, 3, H, W) -> (mean, logvar) of the latent, (B, 4, H/8, W/8).

        Unscaled: multiply a sample by `scaling_factor` before the UNet sees it.
        """
        moments = self.quant_conv(self.encoder(images))
        latent = self.config["latent_channels"]
        mean = take_slice(moments, 0, latent, axis=1)
        logvar = take_slice(moments, latent, 2 * latent, axis=1)
        return mean, logvar

    def decode(self, latents: Tensor) -> Tensor:
        """Unscaled latents (divide the UNet's by `scaling_factor` first) -> images in about
        [-1, 1], (B, 3, 8h, 8w)."""
        return self.decoder(self.post_quant_conv(latents))

    @staticmethod
    def sample(mean: np.ndarray, logvar: np.ndarray, noise: np.ndarray) -> np.ndarray:
        """A draw from the latent Gaussian, as diffusers' DiagonalGaussianDistribution."""
        logvar = np.clip(logvar, -30.0, 20.0)
        return mean + np.exp(0.5 * logvar) * noise
