"""DC-AE decode and encode in overlapping tiles, as diffusers' `AutoencoderDC.enable_tiling()`
runs them: each tile through the whole network on its own, neighbours blended with linear
ramps across the overlap, then cropped to the stride. Unlike the SD VAE (tiled_vae) the DC-AE
has no group norms whose statistics tiles would have to share; its linear attention does mix
the whole tile, so a tiled picture differs from the untiled one a little, as diffusers' does.

    if needs_tiling(vae, latents.shape):          # a tensor past the device's binding size
        images = decode_tiled(vae, latents)        # 512-pixel tiles every 448 pixels
    latents = encode_tiled(vae, images, tile=1024, stride=896)

Each tile's activations are those of a tile-sized picture, whatever the picture's size; the
tiles and the blend wait on the host (numpy float32).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any, Literal

import numpy as np

from gpustd import Tensor, asarray

from .dc_ae import AutoencoderDC

__all__ = ["bytes_per_input_pixel", "decode_tiled", "encode_tiled", "needs_tiling"]


def bytes_per_input_pixel(config: dict[str, Any], mode: Literal["decode", "encode"],
                          itemsize: int) -> int:
    """Bytes of the largest tensor a pass makes per input pixel (latent pixel when decoding,
    image pixel when encoding). Level i runs at 4^(levels - 1 - i) times the latent's pixels;
    its widest tensors per pixel: its C channels (the resamplers' duplicated or unshuffled
    channels, C per pixel of this level, are no wider), and in an EfficientViT block the q, k,
    v of every scale in float32 (3 C (1 + scales) channels) and GLUMBConv's 8 C. A level of no
    layers makes only its resampler's narrow tensors; the picture itself, 3 channels in float32
    at most. Not counted: the convs' own workspaces (split-K partial sums of a conv too small
    to fill the GPU, a CPU adapter's copy of the weights), far below a binding where tiling
    matters."""
    side = "decoder" if mode == "decode" else "encoder"
    channels = list(config[f"{side}_block_out_channels"])
    kinds, layers = config[f"{side}_block_types"], config[f"{side}_layers_per_block"]
    scales = config[f"{side}_qkv_multiscales"]
    levels = len(channels)
    widest = 4.0 * config["in_channels"] * 4 ** (levels - 1)
    for i, c in enumerate(channels):
        if layers[i] == 0:
            continue
        per_pixel = c * itemsize
        if (kinds if isinstance(kinds, str) else kinds[i]) == "EfficientViTBlock":
            per_pixel = max(per_pixel, 3 * c * (1 + len(scales[i])) * 4, 8 * c * itemsize)
        widest = max(widest, per_pixel * 4.0 ** (levels - 1 - i))
    return math.ceil(widest if mode == "decode" else widest / 4.0 ** (levels - 1))


def needs_tiling(vae: AutoencoderDC, shape: tuple[int, ...], *,
                 mode: Literal["decode", "encode"] = "decode") -> bool:
    """Whether an untiled `mode` pass over a (B, C, H, W) input of `shape` would make a tensor
    larger than the device can bind (`max-storage-buffer-binding-size`, `max-buffer-size`):
    decode_tiled / encode_tiled then. Sana's float16 decode makes 1 GiB tensors at 2048 x
    2048 (its top level's 128 channels), 4 GiB at 4096 x 4096."""
    weight = vae.decoder.conv_in.weight
    limits = weight.device.limits
    budget = min(limits["max-storage-buffer-binding-size"], limits["max-buffer-size"])
    batch, _, height, width = shape
    per_pixel = bytes_per_input_pixel(vae.config, mode, int(weight.dtype.itemsize))
    return batch * height * width * per_pixel > budget


def _blend(a: np.ndarray, b: np.ndarray, extent: int, axis: int) -> None:
    """b's first rows (axis 2) or columns (axis 3) faded in from a's last ones, in place.
    diffusers: `AutoencoderDC.blend_v` / `blend_h`."""
    extent = min(a.shape[axis], b.shape[axis], extent)
    if extent <= 0:
        return
    ramp = (np.arange(extent, dtype=np.float32) / extent).reshape(
        (-1, 1) if axis == 2 else (1, -1))
    tail = a[:, :, -extent:] if axis == 2 else a[:, :, :, -extent:]
    head = b[:, :, :extent] if axis == 2 else b[:, :, :, :extent]
    head[...] = tail * (1 - ramp) + head * ramp


def _tiled(x: np.ndarray, run: Callable[[np.ndarray], np.ndarray], tile: int, stride: int,
           out_tile: int, out_stride: int) -> np.ndarray:
    """`run` of x's tiles (tile x tile every stride along H and W), blended over
    out_tile - out_stride of their outputs and cropped to out_stride x out_stride."""
    rows = [[run(x[:, :, i:i + tile, j:j + tile]) for j in range(0, x.shape[3], stride)]
            for i in range(0, x.shape[2], stride)]
    blend = out_tile - out_stride
    joined = []
    for i, row in enumerate(rows):
        for j, out in enumerate(row):
            # in place and in this order, as diffusers: a neighbour is blended already
            if i > 0:
                _blend(rows[i - 1][j], out, blend, axis=2)
            if j > 0:
                _blend(row[j - 1], out, blend, axis=3)
        joined.append(np.concatenate([out[:, :, :out_stride, :out_stride] for out in row],
                                     axis=3))
    return np.concatenate(joined, axis=2)


def _check(tile: int, stride: int, factor: int) -> None:
    if tile % factor or stride % factor or not 0 < stride <= tile:
        raise ValueError(f"DC-AE tiling: tile {tile} and stride {stride} must be multiples of "
                         f"{factor} pixels with 0 < stride <= tile (diffusers' 512 and 448)")


def decode_tiled(vae: AutoencoderDC, latents: np.ndarray | Tensor, *, tile: int = 512,
                 stride: int = 448) -> np.ndarray:
    """Unscaled latents (B, C, h, w) -> images (B, 3, f h, f w) as float32 numpy, decoded in
    tiles of `tile` pixels every `stride` (untiled where the latents fit in one tile).
    diffusers: `vae.enable_tiling(tile, tile, stride, stride); vae.decode(latents).sample`."""
    factor = vae.spatial_compression_ratio
    _check(tile, stride, factor)
    device = vae.decoder.conv_in.weight.device
    dtype = vae.decoder.conv_in.weight.dtype
    z = np.asarray(latents.numpy() if isinstance(latents, Tensor) else latents, np.float32)

    def run(part: np.ndarray) -> np.ndarray:
        images = vae.decode(asarray(part, dtype=dtype, device=device))
        return images.numpy().astype(np.float32)

    if z.shape[2] <= tile // factor and z.shape[3] <= tile // factor:
        return run(z)
    return _tiled(z, run, tile // factor, stride // factor, tile, stride)


def encode_tiled(vae: AutoencoderDC, images: np.ndarray | Tensor, *, tile: int = 512,
                 stride: int = 448) -> np.ndarray:
    """Images (B, 3, H, W) -> unscaled latents (B, C, H/f, W/f) as float32 numpy, encoded in
    tiles of `tile` pixels every `stride` (edge tiles zero-padded to a multiple of f; untiled
    where the picture fits in one tile). diffusers: `vae.enable_tiling(tile, tile, stride,
    stride); vae.encode(images).latent`."""
    factor = vae.spatial_compression_ratio
    _check(tile, stride, factor)
    device = vae.encoder.conv_out.weight.device
    dtype = vae.encoder.conv_out.weight.dtype
    x = np.asarray(images.numpy() if isinstance(images, Tensor) else images, np.float32)

    def run(part: np.ndarray) -> np.ndarray:
        return vae.encode(asarray(part, dtype=dtype, device=device)).numpy().astype(np.float32)

    def padded(part: np.ndarray) -> np.ndarray:
        pad_h, pad_w = -part.shape[2] % factor, -part.shape[3] % factor
        return run(np.pad(part, ((0, 0), (0, 0), (0, pad_h), (0, pad_w))))

    if x.shape[2] <= tile and x.shape[3] <= tile:
        return run(x)
    out = _tiled(x, padded, tile, stride, tile // factor, stride // factor)
    return out[:, :, :x.shape[2] // factor, :x.shape[3] // factor]
