"""DC-AE decode and encode in overlapping tiles, as diffusers' `AutoencoderDC.enable_tiling()`
runs them: each tile through the whole network on its own, neighbours blended with linear
ramps across the overlap, then cropped to the stride. Unlike the SD VAE (tiled_vae) the DC-AE
has no group norms whose statistics tiles would have to share; its linear attention does mix
the whole tile, so a tiled picture differs from the untiled one a little, as diffusers' does.

    images = decode_tiled(vae, latents)            # 512-pixel tiles every 448 pixels
    latents = encode_tiled(vae, images, tile=1024, stride=896)

Each tile's activations are those of a tile-sized picture, whatever the picture's size; the
tiles and the blend wait on the host (numpy float32).
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from gpustd import Tensor, asarray

from .dc_ae import AutoencoderDC

__all__ = ["decode_tiled", "encode_tiled"]


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
