"""Plumbing for gpustd.image: image layouts, uint8 packing, and the kernel cache.

An image on the GPU is a flat buffer of `channels` planes of `height` x `width` stored HWC or
CHW. float images are float32 elements; uint8 images are packed 4 bytes per uint32 word (WGSL
has no 8-bit storage), little-endian, so the byte at element index i is bits 8*(i%4).. of
word i//4 — exactly numpy's `.view(np.uint32)` of the zero-padded bytes.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import Any

import numpy as np

from gpucore import Buffer, Device, Kernel, default_device

from ._tensor import Tensor

__all__ = ["LAYOUTS", "MODES", "GpuImage", "as_image", "dispatch", "kernel", "like", "result"]

LAYOUTS = ("HWC", "CHW")
# scipy.ndimage border modes, numbered as shaders/image/correlate.wgsl numbers them.
MODES = {"reflect": 0, "nearest": 1, "mirror": 2, "wrap": 3, "constant": 4}


@dataclass(frozen=True)
class GpuImage:
    """An image in a GPU buffer: float32 elements, or uint8 packed into uint32 words."""

    buffer: Buffer[Any]
    channels: int
    height: int
    width: int
    hwc: bool  # HWC (channels interleaved) or CHW (planar) storage
    u8: bool
    planar_2d: bool  # the caller gave a 2-D HxW image (returned 2-D too)

    @property
    def size(self) -> int:
        return self.channels * self.height * self.width

    @property
    def device(self) -> Device:
        return self.buffer.device

    @property
    def shape(self) -> tuple[int, ...]:
        if self.planar_2d:
            return (self.height, self.width)
        if self.hwc:
            return (self.height, self.width, self.channels)
        return (self.channels, self.height, self.width)


def check_layout(layout: str) -> None:
    if layout not in LAYOUTS:
        raise ValueError(
            f"layout must be 'HWC' (height, width, channels) or 'CHW' (channels, height, "
            f"width), got {layout!r}; 2-D images are HxW whatever the layout"
        )


def check_mode(mode: str) -> int:
    if mode not in MODES:
        raise ValueError(
            f"mode must be one of {', '.join(map(repr, MODES))} (scipy.ndimage border modes), "
            f"got {mode!r}; numpy.pad's 'symmetric' is 'reflect' here, its 'edge' is 'nearest'"
        )
    return MODES[mode]


def _dims(shape: tuple[int, ...], layout: str) -> tuple[int, int, int]:
    if len(shape) == 2:
        return 1, shape[0], shape[1]
    if len(shape) == 3:
        return (shape[2], shape[0], shape[1]) if layout == "HWC" else shape
    raise ValueError(
        f"an image must be 2-D (HxW) or 3-D (HxWxC with layout='HWC', CxHxW with "
        f"layout='CHW'), got shape {shape}"
    )


def as_image(img: Any, layout: str, device: Device | None) -> GpuImage:
    """Validate `img` (numpy uint8/float array or float32 Tensor) and put it on the GPU."""
    check_layout(layout)
    if isinstance(img, Tensor):
        if img.dtype != np.float32:
            raise TypeError(
                f"image Tensors must be float32, got {img.dtype}; convert with "
                "img.astype(np.float32) (uint8 images are passed as numpy arrays)"
            )
        if device is not None and device is not img.device:
            raise ValueError("device= differs from the image Tensor's device; move it with .to()")
        array, shape = None, img.shape
    else:
        array = np.asarray(img)
        if array.dtype != np.uint8 and array.dtype.kind != "f":
            raise TypeError(
                f"images must be uint8 or floating point, got {array.dtype}; convert with "
                "img.astype(np.uint8) or img.astype(np.float32)"
            )
        shape = array.shape
    channels, height, width = _dims(tuple(shape), layout)
    if min(channels, height, width) <= 0:
        raise ValueError(f"the image has no pixels (shape {tuple(shape)}); pass a non-empty image")
    fields: dict[str, Any] = dict(channels=channels, height=height, width=width,
                                  hwc=layout == "HWC", planar_2d=len(shape) == 2)
    if array is None:
        return GpuImage(img.buffer, u8=False, **fields)
    device = device or default_device()
    if array.dtype == np.uint8:
        data: np.ndarray = np.zeros(math.ceil(array.size / 4) * 4, np.uint8)
        data[: array.size] = array.reshape(-1)
        return GpuImage(Buffer.from_numpy(data.view(np.uint32), device=device), u8=True,
                        **fields)
    data = np.ascontiguousarray(array, dtype=np.float32).reshape(-1)
    return GpuImage(Buffer.from_numpy(data, device=device), u8=False, **fields)


def like(image: GpuImage, *, height: int | None = None, width: int | None = None,
         u8: bool | None = None) -> GpuImage:
    """A new (uninitialized) image with `image`'s channels and layout."""
    u8 = image.u8 if u8 is None else u8
    height, width = height or image.height, width or image.width
    n = image.channels * height * width
    buffer: Buffer[Any] = Buffer(math.ceil(n / 4) if u8 else n, np.uint32 if u8 else np.float32,
                    device=image.device)
    return replace(image, buffer=buffer, height=height, width=width, u8=u8)


def result(image: GpuImage) -> Any:
    """uint8 images come back as numpy uint8 (this reads back); float ones as a Tensor."""
    if image.u8:
        return image.buffer.read().view(np.uint8)[: image.size].reshape(image.shape)
    return Tensor(image.buffer, image.shape)




def kernel(name: str, src_u8: bool, dst_u8: bool, **constants: Any) -> Kernel:
    """The cached `shaders/image/<name>.wgsl` kernel for this storage/constant combination
    (correlate or resample, both with their shared part image/planes)."""
    types = {"Src": "u32" if src_u8 else "f32", "Dst": "u32" if dst_u8 else "f32"}
    return Kernel.cached(f"image/{name}", parts=("image/planes",), types=types,
                         constants={"IN_U8": src_u8, "OUT_U8": dst_u8, **constants})


def dispatch(k: Kernel, dst: GpuImage, *buffers: Any, **params: Any) -> None:
    """Run `k` over every element of `dst` (one invocation per packed word for uint8)."""
    n = dst.size
    groups = k.groups_for(math.ceil(n / 4) if dst.u8 else n)
    k.dispatch(groups, *buffers, dst.buffer, n=n, channels=dst.channels, hwc=int(dst.hwc),
               **params)
