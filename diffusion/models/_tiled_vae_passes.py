"""One tile's pass through the VAE, as a generator that stops at every GroupNorm.

A pass yields its tile's GroupNorm moments (count, mean and sum of squared deviations over the
tile's core) and is sent back the whole image's (mean, var), so every tile is normalised by the
image's statistics (`run_together` pools them). Between GroupNorms a tile's activations stay on
the device, or with `offload` wait on the host so that the device holds one tile's tensors at a
time (for GPUs short of memory rather than of binding size; every GroupNorm then moves the tile
across the bus, which costs far more than the arithmetic). The passes mirror `models/vae.py`'s
forward step by step; the tests check a one-tile pass against diffusers' untiled AutoencoderKL.
"""

from __future__ import annotations

from collections.abc import Generator
from typing import Any

import numpy as np

from gpucore import Device
from gpustd import Tensor, asarray, nn, reduction
from gpustd.shape import take_slice

from . import AutoencoderKL
from .layers import to_image, to_tokens

__all__ = ["Pass", "Tile", "decode_pass", "down_pass", "encode_pass", "encoder_tail",
           "run_together", "up_pass"]

# an activation between GroupNorms: on the device, or on the host when offloading
Activation = Tensor | np.ndarray
# yields GroupNorm moments (batch, groups, 3), is sent (mean, var) per (batch, group), returns the
# tile's output on the host
Pass = Generator[np.ndarray, tuple[np.ndarray, np.ndarray], np.ndarray]
# a stretch of a pass, as a Pass, that returns its activation where it stops
Step = Generator[np.ndarray, tuple[np.ndarray, np.ndarray], Activation]


class Tile:
    """One tile's pass: its GroupNorm moments over its core, and where activations wait."""

    def __init__(self, size: tuple[int, int], core: tuple[int, int, int, int], *,
                 device: Device, dtype: np.dtype, offload: bool) -> None:
        self.size, self.core, self.device, self.dtype = size, core, device, dtype
        self.offload = offload

    def gpu(self, x: Activation) -> Tensor:
        return asarray(x, dtype=self.dtype, device=self.device)

    def park(self, x: Tensor) -> Activation:
        """Where `x` waits for the next GroupNorm: the host when offloading."""
        return x.numpy() if self.offload else x

    def norm(self, norm: nn.GroupNorm, x: Activation, *,
             silu: bool) -> Generator[np.ndarray, tuple[np.ndarray, np.ndarray], Tensor]:
        """`norm(x, silu=silu)` with the whole image's statistics: yields this tile's moments,
        receives the pooled (mean, var), returns the normalised tile on the device."""
        origin, scale, shift = yield from self._affine(norm, x)
        batch, channels = x.shape[:2]
        y = self.gpu(x) * self.gpu(scale.reshape(batch, channels, 1, 1)) + self.gpu(
            (shift - origin * scale).reshape(batch, channels, 1, 1))
        return nn.silu(y) if silu else y

    def prologue(self, norm: nn.GroupNorm, x: Activation, *, silu: bool
                 ) -> Generator[np.ndarray, tuple[np.ndarray, np.ndarray], nn.ConvPrologue]:
        """`norm.prologue(x, silu=silu)` with the whole image's statistics, for the next conv
        to read x through (the normalised tile is never written)."""
        table = np.stack((yield from self._affine(norm, x)), axis=2)
        table = np.concatenate([table, np.zeros_like(table[..., :1])], axis=2)
        return nn.ConvPrologue(asarray(table.astype(np.float32), device=self.device), silu)

    def _affine(self, norm: nn.GroupNorm, x: Activation
                ) -> Generator[np.ndarray, tuple[np.ndarray, np.ndarray], tuple[np.ndarray, ...]]:
        """(origin, scale, shift) per (image, channel), float64: the norm is (x - origin) *
        scale + shift, from the pooled statistics this yields this tile's moments for."""
        mean, var = yield self._moments(x, norm.num_groups)
        per_group = x.shape[1] // norm.num_groups
        weight = norm.weight.numpy().astype(np.float64) if norm.weight is not None else 1.0
        bias = norm.bias.numpy().astype(np.float64) if norm.bias is not None else 0.0
        scale = np.repeat(1.0 / np.sqrt(var + norm.eps), per_group, axis=1) * weight
        origin = np.repeat(mean, per_group, axis=1)
        return origin, scale, np.broadcast_to(bias, scale.shape)

    def _moments(self, x: Activation, groups: int) -> np.ndarray:
        """(batch, groups, 3): count, mean and sum of squared deviations of x's core (pooled
        with Chan's formula, which stays exact where sums of squares would cancel)."""
        (height, width), (top, bottom, left, right) = self.size, self.core
        h, w = x.shape[2:]
        rows, cols = (top * h // height, bottom * h // height), (left * w // width,
                                                                right * w // width)
        core: Activation
        if isinstance(x, np.ndarray):
            core = x[:, :, rows[0]:rows[1], cols[0]:cols[1]]
            core = core.reshape(*x.shape[:1], groups, core[0].size // groups)
            mean = core.mean(axis=2, dtype=np.float64)
            var = core.var(axis=2, dtype=np.float64)
        else:  # on the device, in float32 as GroupNorm's own statistics
            core = take_slice(take_slice(x, *rows, axis=2), *cols, axis=3).astype(np.float32)
            core = core.reshape(x.shape[0], groups, core.size // (x.shape[0] * groups))
            mean = reduction.mean(core, axis=2).numpy().astype(np.float64)
            var = reduction.var(core, axis=2).numpy().astype(np.float64)
        count = np.full(mean.shape, core.shape[2], np.float64)
        return np.stack([count, mean, var * count], axis=2)


def _resnet(block: Any, x: Activation, tile: Tile) -> Step:
    prologue = yield from tile.prologue(block.norm1, x, silu=True)
    h = tile.park(block.conv1(tile.gpu(x), prologue=prologue))
    prologue = yield from tile.prologue(block.norm2, h, silu=True)
    h_gpu = block.conv2(tile.gpu(h), prologue=prologue)
    shortcut = tile.gpu(x)
    if block.conv_shortcut is not None:
        return tile.park(block.conv_shortcut(shortcut, add=h_gpu))
    return tile.park(shortcut + h_gpu)


def _attention(attn: Any, x: Activation, tile: Tile) -> Step:
    normed = yield from tile.norm(attn.group_norm, x, silu=False)
    height, width = x.shape[2:]
    return tile.park(to_image(attn(to_tokens(normed)), height, width) + tile.gpu(x))


def _blocks(blocks: Any, sampler: str, x: Activation, tile: Tile) -> Step:
    for block in blocks:
        for resnet in block.resnets:
            x = yield from _resnet(resnet, x, tile)
        if (resampler := getattr(block, sampler, None)) is not None:
            x = tile.park(resampler[0](tile.gpu(x)))
    return x


def _mid(mid: Any, x: Activation, tile: Tile) -> Step:
    x = yield from _resnet(mid.resnets[0], x, tile)
    x = yield from _attention(mid.attentions[0], x, tile)
    return (yield from _resnet(mid.resnets[1], x, tile))


def decode_pass(vae: AutoencoderKL, z: np.ndarray, tile: Tile) -> Pass:
    decoder = vae.decoder
    x = tile.park(decoder.conv_in(vae.post_quant_conv(tile.gpu(z))))
    x = yield from _mid(decoder.mid_block, x, tile)
    return (yield from up_pass(vae, x, tile))


def up_pass(vae: AutoencoderKL, x: Activation, tile: Tile) -> Pass:
    """The decoder after its mid block: up blocks, norm, conv_out."""
    decoder = vae.decoder
    x = yield from _blocks(decoder.up_blocks, "upsamplers", x, tile)
    prologue = yield from tile.prologue(decoder.conv_norm_out, x, silu=True)
    return decoder.conv_out(tile.gpu(x), prologue=prologue).numpy()


def encode_pass(vae: AutoencoderKL, image: np.ndarray, tile: Tile) -> Pass:
    x: Activation = yield from down_pass(vae, image, tile)
    x = yield from _mid(vae.encoder.mid_block, x, tile)
    return encoder_tail(vae, (yield from tile.norm(vae.encoder.conv_norm_out, x,
                                                    silu=True))).numpy()


def down_pass(vae: AutoencoderKL, image: np.ndarray, tile: Tile) -> Pass:
    """The encoder up to its mid block: conv_in, down blocks."""
    x = tile.park(vae.encoder.conv_in(tile.gpu(image)))
    x = yield from _blocks(vae.encoder.down_blocks, "downsamplers", x, tile)
    return x.numpy() if isinstance(x, Tensor) else x


def encoder_tail(vae: AutoencoderKL, normed: Tensor) -> Tensor:
    return vae.quant_conv(vae.encoder.conv_out(normed))


def run_together(passes: list[Pass]) -> list[np.ndarray]:
    """Step every tile to its next GroupNorm, pool their moments, send back the image's mean
    and variance (biased, as GroupNorm's); repeat until every pass returns its output."""
    requests = [next(p) for p in passes]
    while True:
        count, mean, squares = np.moveaxis(np.array(requests), 3, 0)  # each (tiles, B, groups)
        total = count.sum(axis=0)
        pooled = (count * mean).sum(axis=0) / total
        var = (squares + count * np.square(mean - pooled)).sum(axis=0) / total
        outputs, requests = [], []
        for p in passes:
            try:
                requests.append(p.send((pooled, var)))
            except StopIteration as done:
                outputs.append(done.value)
        if outputs:
            if requests:
                raise RuntimeError("tiled VAE: tiles reached different numbers of GroupNorms")
            return outputs
