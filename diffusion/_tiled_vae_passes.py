"""One tile's pass through the VAE, as a generator that stops at every GroupNorm.

A pass yields its tile's GroupNorm sums (count, sum, sum of squares over the tile's core) and is
sent back the whole image's (mean, var), so every tile is normalised by the image's statistics
(`run_together` pools them). Between GroupNorms the tile's activations are host arrays: the device
holds one tile's tensors at a time. The passes mirror `models/vae.py`'s forward step by step; the
tests check a one-tile pass against diffusers' untiled AutoencoderKL.
"""

from __future__ import annotations

from collections.abc import Generator
from typing import Any

import numpy as np

from gpucore import Device
from gpustd import Tensor, asarray, nn

from .models import AutoencoderKL
from .models.layers import to_image, to_tokens

__all__ = ["Pass", "Tile", "decode_pass", "down_pass", "encode_pass", "encoder_tail",
           "run_together", "up_pass"]

# yields GroupNorm sums (batch, groups, 3), is sent (mean, var) per (batch, group), returns the
# tile's output on the host
Pass = Generator[np.ndarray, tuple[np.ndarray, np.ndarray], np.ndarray]


class Tile:
    """One tile's pass: its GroupNorm sums over its core, and host <-> device moves."""

    def __init__(self, size: tuple[int, int], core: tuple[int, int, int, int],
                 device: Device, dtype: np.dtype) -> None:
        self.size, self.core, self.device, self.dtype = size, core, device, dtype

    def gpu(self, x: np.ndarray) -> Tensor:
        return asarray(x, dtype=self.dtype, device=self.device)

    @staticmethod
    def host(x: Tensor) -> np.ndarray:
        return x.numpy()

    def norm(self, norm: nn.GroupNorm, x: np.ndarray, *,
             silu: bool) -> Generator[np.ndarray, tuple[np.ndarray, np.ndarray], Tensor]:
        """`norm(x, silu=silu)` with the whole image's statistics: yields this tile's sums,
        receives the pooled (mean, var), returns the normalised tile on the device."""
        mean, var = yield self._sums(x, norm.num_groups)
        batch, channels = x.shape[:2]
        per_group = channels // norm.num_groups
        inv_std = np.repeat(1.0 / np.sqrt(var + norm.eps), per_group, axis=1)
        weight = norm.weight.numpy().astype(np.float64) if norm.weight is not None else 1.0
        bias = norm.bias.numpy().astype(np.float64) if norm.bias is not None else 0.0
        scale = inv_std * weight
        shift = bias - np.repeat(mean, per_group, axis=1) * scale
        y = self.gpu(x) * self.gpu(scale.reshape(batch, channels, 1, 1)) + self.gpu(
            shift.reshape(batch, channels, 1, 1))
        return nn.silu(y) if silu else y

    def _sums(self, x: np.ndarray, groups: int) -> np.ndarray:
        """(batch, groups, 3): count, sum and sum of squares of x's core, in float64."""
        (height, width), (top, bottom, left, right) = self.size, self.core
        h, w = x.shape[2:]
        core = x[:, :, top * h // height:bottom * h // height, left * w // width:right * w // width]
        core = core.reshape(*x.shape[:1], groups, core[0].size // groups).astype(np.float64)
        count = np.full(core.shape[:2], core.shape[2], np.float64)
        return np.stack([count, core.sum(axis=2), np.square(core).sum(axis=2)], axis=2)


def _resnet(block: Any, x: np.ndarray, tile: Tile) -> Pass:
    h = tile.host(block.conv1((yield from tile.norm(block.norm1, x, silu=True))))
    h_gpu = block.conv2((yield from tile.norm(block.norm2, h, silu=True)))
    shortcut = tile.gpu(x)
    if block.conv_shortcut is not None:
        shortcut = block.conv_shortcut(shortcut)
    return tile.host(shortcut + h_gpu)


def _attention(attn: Any, x: np.ndarray, tile: Tile) -> Pass:
    normed = yield from tile.norm(attn.group_norm, x, silu=False)
    height, width = x.shape[2:]
    return tile.host(to_image(attn(to_tokens(normed)), height, width) + tile.gpu(x))


def _blocks(blocks: Any, sampler: str, x: np.ndarray, tile: Tile) -> Pass:
    for block in blocks:
        for resnet in block.resnets:
            x = yield from _resnet(resnet, x, tile)
        if (resampler := getattr(block, sampler, None)) is not None:
            x = tile.host(resampler[0](tile.gpu(x)))
    return x


def _mid(mid: Any, x: np.ndarray, tile: Tile) -> Pass:
    x = yield from _resnet(mid.resnets[0], x, tile)
    x = yield from _attention(mid.attentions[0], x, tile)
    return (yield from _resnet(mid.resnets[1], x, tile))


def decode_pass(vae: AutoencoderKL, z: np.ndarray, tile: Tile) -> Pass:
    decoder = vae.decoder
    x = tile.host(decoder.conv_in(vae.post_quant_conv(tile.gpu(z))))
    x = yield from _mid(decoder.mid_block, x, tile)
    return (yield from up_pass(vae, x, tile))


def up_pass(vae: AutoencoderKL, x: np.ndarray, tile: Tile) -> Pass:
    """The decoder after its mid block: up blocks, norm, conv_out."""
    decoder = vae.decoder
    x = yield from _blocks(decoder.up_blocks, "upsamplers", x, tile)
    return tile.host(decoder.conv_out((yield from tile.norm(decoder.conv_norm_out, x, silu=True))))


def encode_pass(vae: AutoencoderKL, image: np.ndarray, tile: Tile) -> Pass:
    x = yield from down_pass(vae, image, tile)
    x = yield from _mid(vae.encoder.mid_block, x, tile)
    return tile.host(encoder_tail(vae, (yield from tile.norm(vae.encoder.conv_norm_out, x,
                                                              silu=True))))


def down_pass(vae: AutoencoderKL, image: np.ndarray, tile: Tile) -> Pass:
    """The encoder up to its mid block: conv_in, down blocks."""
    x = tile.host(vae.encoder.conv_in(tile.gpu(image)))
    return (yield from _blocks(vae.encoder.down_blocks, "downsamplers", x, tile))


def encoder_tail(vae: AutoencoderKL, normed: Tensor) -> Tensor:
    return vae.quant_conv(vae.encoder.conv_out(normed))


def run_together(passes: list[Pass]) -> list[np.ndarray]:
    """Step every tile to its next GroupNorm, pool their sums, send back the image's mean and
    variance (biased, as GroupNorm's); repeat until every pass returns its output."""
    requests = [next(p) for p in passes]
    while True:
        total = np.sum(requests, axis=0)
        mean = total[..., 1] / total[..., 0]
        var = np.maximum(total[..., 2] / total[..., 0] - np.square(mean), 0.0)
        outputs, requests = [], []
        for p in passes:
            try:
                requests.append(p.send((mean, var)))
            except StopIteration as done:
                outputs.append(done.value)
        if outputs:
            if requests:
                raise RuntimeError("tiled VAE: tiles reached different numbers of GroupNorms")
            return outputs
