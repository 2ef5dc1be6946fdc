"""What HunyuanVideo 1.5's pipelines make besides the denoising loop (video/hunyuan_video15):
the video's size (the aspect-ratio bucket of the model's target size nearest the picture's, or
16:9 for text to video), the first frame (the picture scaled to cover that size, its middle
kept), SigLIP's pixels of it, and the condition channels the transformer reads beside the
latents (the first frame's latents and a mask that marks them; zeros for text to video).

    height, width = bucket_size(picture.height, picture.width, target_size=640)
    frame = first_frame(picture, height, width)
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ...imaging import fit_picture, rgb_picture

__all__ = ["bucket_size", "condition_channels", "crop_sizes", "first_frame"]


def crop_sizes(base_size: int, patch_size: int = 16, max_ratio: float = 4.0
               ) -> list[tuple[int, int]]:
    """The buckets: every (a, b) multiple of patch_size with a * b / patch_size^2 patches no
    more than (base_size / patch_size)^2 as the patches walk from (n, 1) to (1, n), sides at
    most max_ratio apart. diffusers: `hunyuan_video1_5.image_processor.
    generate_crop_size_list`."""
    patches = round((base_size / patch_size) ** 2)
    sizes = []
    wide, high = patches, 1
    while wide > 0:
        if max(wide, high) / min(wide, high) <= max_ratio:
            sizes.append((wide * patch_size, high * patch_size))
        if (high + 1) * wide <= patches:
            high += 1
        else:
            wide -= 1
    return sizes


def bucket_size(height: float, width: float, *, target_size: int, patch_size: int = 16
                ) -> tuple[int, int]:
    """(height, width) of the bucket (crop_sizes of target_size, read as (height, width))
    whose aspect is nearest height / width on the same side of 1 (a wide picture a bucket no
    taller, a tall one a bucket no wider). diffusers: `HunyuanVideo15ImageProcessor.
    calculate_default_height_width`."""
    sizes = crop_sizes(target_size, patch_size)
    ratios = np.array([round(float(h) / float(w), 5) for h, w in sizes])
    diffs = ratios - float(height) / float(width)
    side = diffs <= 0 if float(height) / float(width) >= 1 else diffs >= 0
    # never empty: the buckets run from 4:1 to 1:4 through 1:1
    best = min((i for i in range(len(sizes)) if side[i]), key=lambda i: abs(diffs[i]))
    return sizes[best][0], sizes[best][1]


def first_frame(image: Any, height: int, width: int) -> Any:
    """The picture (PIL, or HxWx3 / HxWx4 uint8) as the video's first frame: RGB (see-through
    pixels over white), scaled (Lanczos) to cover width x height, the middle kept.
    diffusers: `video_processor.resize(image, height, width, resize_mode="crop")`."""
    return fit_picture(rgb_picture(image), width, height, 1)


def condition_channels(frame_latents: np.ndarray | None, shape: tuple[int, ...]
                       ) -> np.ndarray:
    """The channels joined to the latents (B, C, F, h, w) of `shape`: (B, C + 1, F, h, w)
    float32, the first frame's latents (1, C, 1, h, w) (scaled) on frame 0 and a mask channel
    1 there, zeros elsewhere; all zeros without a picture (text to video). diffusers:
    `prepare_cond_latents_and_mask` (HunyuanVideo15ImageToVideoPipeline's and
    HunyuanVideo15Pipeline's)."""
    batch, channels, frames, height, width = shape
    out = np.zeros((batch, channels + 1, frames, height, width), np.float32)
    if frame_latents is not None:
        if frame_latents.shape != (1, channels, 1, height, width):
            raise ValueError(f"the first frame's latents are {frame_latents.shape}, the video's "
                             f"frame (1, {channels}, 1, {height}, {width})")
        out[:, :channels, :1] = frame_latents
        out[:, channels, 0] = 1
    return out
