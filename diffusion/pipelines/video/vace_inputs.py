"""What Wan VACE's transformer reads besides the noise: the control latents made of a control
video (a pose or depth video, or a video to edit), its mask (white = regenerate) and reference
pictures. diffusers: WanVACEPipeline's `preprocess_conditions`, `prepare_video_latents` and
`prepare_masks`, concatenated along the channels as its `__call__` does.

    pixels = vace_pixels(height, width, num_frames, video=..., mask=..., references=[...])
    condition = vace_condition(vae, pixels)       # the VAE's three kinds of encodes
    noise: (B, C, condition.latent_frames, height / 8, width / 8)
    transformer(..., control=condition.control)   # (1, 2 z + 64, R + F', height / 8, width / 8)
    frames = decode(condition.without_references(latents))   # diffusers drops the R in front

The control latents, along the channels: the normalized latents (the posterior's mean) of the
video's kept part video * (1 - mask) and of its regenerated part video * mask (the mask made 0
or 1 at one half), then the mask itself (its levels, not made 0 or 1) folded 8x8 into 64
channels and subsampled in time by nearest-exact interpolation to F' = (F + 3) // 4 frames. R
reference pictures come first along time, last picture first as diffusers prepends each in
turn: each picture's latents, zeros for the regenerated part and for the mask.

Without a video: a zero (gray) one and an all-ones mask (regenerate everything); a mask needs
a video. Video and mask frames are resized to width x height with Lanczos (diffusers: the
VideoProcessor's PIL resize). diffusers keeps a video smaller than width x height, or of
another aspect, at its own size (fit inside, never enlarged, cut to multiples of 16) and pads
the transformer's control tokens with zeros; here every video is brought to width x height,
the same wherever diffusers' size is width x height. A reference picture is resized (Lanczos)
to its size cut down to multiples of 8, then scaled to fit width x height keeping its aspect
(bilinear, no antialias: torch's interpolate) and centred on white.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple

import numpy as np

from ...imaging import condition_picture, eight_bit
from ...models.wan_vae import AutoencoderKLWan
from .wan_image import _latents

__all__ = ["SPATIAL", "TEMPORAL", "VaceCondition", "VacePixels", "control_pixels", "folded_mask",
           "vace_condition", "vace_pixels"]

SPATIAL = 8  # Wan 2.1's VAE: pixels per latent along a side
TEMPORAL = 4  # frames per latent frame after the first
_BASE = SPATIAL * 2  # the transformer's 2x2 patches: height and width multiples of 16


class VacePixels(NamedTuple):
    """The inputs as diffusers' `preprocess_conditions` returns them: `video` (1, 3, F, H, W)
    in [-1, 1], `mask` (1, C, F, H, W) in [0, 1] (C = 1, or 3 for colour mask frames) and
    `references`, each (3, H, W) in [-1, 1]."""

    video: np.ndarray
    mask: np.ndarray
    references: list[np.ndarray]


@dataclass(frozen=True)
class VaceCondition:
    """`control`: (1, 2 z_dim + 64, R + F', H / 8, W / 8) float32, what the VACE transformer
    reads; `references`: R, the latent frames in front that the noise gets too and that
    diffusers drops from the sampled latents before decoding."""

    control: np.ndarray
    references: int

    @property
    def latent_frames(self) -> int:
        """The noise's frame count: R + F' (diffusers: `num_frames + R * 4` frames)."""
        return int(self.control.shape[2])

    def without_references(self, latents: np.ndarray) -> np.ndarray:
        """The sampled latents (B, C, R + F', h, w) without the R reference frames in front
        (diffusers: `latents[:, :, num_reference_images:]`)."""
        return latents[:, :, self.references:]


def _video_frames(video: Any, name: str) -> list[Any]:
    """A video ((F, H, W, C) array or a sequence of frames) as a list of frames; ValueError for
    anything else."""
    if isinstance(video, np.ndarray):
        if video.ndim not in (3, 4):
            raise ValueError(f"the {name} is (frames, height, width[, channels]) or a list of "
                             f"frames; got an array of shape {video.shape}")
        return list(video)
    if isinstance(video, (str, bytes)) or not isinstance(video, Sequence) or not video:
        raise ValueError(f"the {name} is a uint8 array of frames or a list of frames (PIL "
                         f"images or uint8 arrays); got {type(video).__name__}")
    return list(video)


def _same_size(pictures: list[Any], name: str, size: tuple[int, int]) -> None:
    for i, picture in enumerate(pictures):
        if picture.size != size:
            raise ValueError(f"{name} frame {i} is {picture.size[0]}x{picture.size[1]} but the "
                             f"control video's frames are {size[0]}x{size[1]}: give frames of "
                             "one size")


def _mask_picture(frame: Any, name: str) -> Any:
    """A mask frame (PIL, or a uint8 / bool HxW, HxWx1 or HxWx3 array) as an 8-bit PIL image
    as it is (a 16-bit one scaled: imaging.eight_bit); vace_pixels makes it grey or RGB."""
    from PIL import Image

    if not isinstance(frame, Image.Image):
        array = np.asarray(frame)
        if array.dtype == bool:
            array = array.astype(np.uint8) * 255
        if array.ndim == 3 and array.shape[2] == 1:
            array = array[..., 0]
        if array.dtype != np.uint8 or array.shape[2:] not in ((), (3,)) or array.ndim < 2:
            raise ValueError(f"{name} is a PIL image or a uint8 / bool HxW or HxWx3 array; got "
                             f"{array.dtype} {array.shape}")
        frame = Image.fromarray(array)
    if 0 in frame.size:
        raise ValueError(f"{name} is empty ({frame.size[0]}x{frame.size[1]} pixels)")
    return eight_bit(frame)


def _unit(pictures: list[Any], width: int, height: int) -> np.ndarray:
    """PIL pictures resized to width x height (Lanczos; Pillow copies one of that size as it
    is) as (F, H, W, C) float32 in [0, 1] (diffusers: VaeImageProcessor's resize and
    pil_to_numpy)."""
    from PIL import Image

    resized = [p.resize((width, height), Image.Resampling.LANCZOS) for p in pictures]
    frames = np.stack([np.asarray(p).astype(np.float32) / np.float32(255) for p in resized])
    return frames if frames.ndim == 4 else frames[..., None]


def _bilinear_taps(size: int, out: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """torch's bilinear interpolate from `size` to `out` samples (align_corners=False): each
    output's two source indices and the far one's weight, in float32 as torch computes them."""
    scale = np.float32(size) / np.float32(out)
    source = np.maximum(scale * (np.arange(out, dtype=np.float32) + np.float32(0.5))
                        - np.float32(0.5), np.float32(0))
    low = np.minimum(np.floor(source).astype(np.int64), size - 1)
    weight = np.clip(source - low.astype(np.float32), 0, 1).astype(np.float32)
    return low, np.minimum(low + 1, size - 1), weight


def _reference(picture: Any, index: int, height: int, width: int) -> np.ndarray:
    """Reference picture `index` as diffusers lays it out: (3, height, width) in [-1, 1]."""
    from PIL import Image

    name = f"reference picture {index}"
    image = condition_picture(picture, name)
    cut = (image.width - image.width % SPATIAL, image.height - image.height % SPATIAL)
    if 0 in cut:
        raise ValueError(f"{name} is {image.width}x{image.height}: give one at least "
                         f"{SPATIAL}x{SPATIAL} pixels")
    image = image.resize(cut, Image.Resampling.LANCZOS)
    pixels = (np.float32(2) * (np.asarray(image).astype(np.float32) / np.float32(255))
              - np.float32(1)).transpose(2, 0, 1)
    scale = min(height / image.height, width / image.width)
    new_h, new_w = int(image.height * scale), int(image.width * scale)
    rows, rows_up, dy = _bilinear_taps(image.height, new_h)
    cols, cols_up, dx = _bilinear_taps(image.width, new_w)
    pixels = pixels[:, rows] * (1 - dy)[:, None] + pixels[:, rows_up] * dy[:, None]
    pixels = pixels[:, :, cols] * (1 - dx) + pixels[:, :, cols_up] * dx
    canvas = np.ones((3, height, width), np.float32)
    top, left = (height - new_h) // 2, (width - new_w) // 2
    canvas[:, top:top + new_h, left:left + new_w] = pixels
    return canvas


def vace_pixels(height: int, width: int, num_frames: int, *, video: Any = None,
                mask: Any = None, references: Sequence[Any] = ()) -> VacePixels:
    """The control video, mask and reference pictures at width x height, checked (host only:
    call it before loading the networks). `video`: (F, H, W, 3) uint8 or a list of frames (PIL
    images or uint8 HxWx3 arrays), F = num_frames; `mask`: the same frame count and size,
    (F, H, W[, 1 or 3]) uint8 / bool or a list of frames, white = regenerate; `references`: PIL
    images or uint8 arrays of any size. ValueError in one line for what does not fit."""
    if height <= 0 or width <= 0 or height % _BASE or width % _BASE:
        raise ValueError(f"Wan VACE's height and width must be positive multiples of {_BASE}; "
                         f"got {width}x{height}")
    if num_frames < 1 or (num_frames - 1) % TEMPORAL:
        raise ValueError(f"Wan VACE's frame count must be 1 + {TEMPORAL}k (5, 9, ..., 81); got "
                         f"{num_frames}")
    if video is None:
        if mask is not None:
            raise ValueError("a VACE mask needs a control video: give the video it masks")
        frames = np.zeros((1, 3, num_frames, height, width), np.float32)
        masks = np.ones_like(frames)
    else:
        pictures = [condition_picture(f, f"control video frame {i}")
                    for i, f in enumerate(_video_frames(video, "control video"))]
        if len(pictures) != num_frames:
            raise ValueError(f"the control video has {len(pictures)} frames but {num_frames} "
                             "are to be made: give as many frames as the video is to have")
        size = pictures[0].size
        _same_size(pictures, "control video", size)
        frames = np.float32(2) * _unit(pictures, width, height) - np.float32(1)
        frames = frames.transpose(3, 0, 1, 2)[None]
        if mask is None:
            masks = np.ones_like(frames)
        else:
            shades = [_mask_picture(f, f"mask frame {i}")
                      for i, f in enumerate(_video_frames(mask, "mask video"))]
            if len(shades) != len(pictures):
                raise ValueError(f"the mask video has {len(shades)} frames but the control "
                                 f"video has {len(pictures)}: give one mask frame per frame")
            _same_size(shades, "mask", size)
            # grey frames stay one channel, as diffusers reads an "L" picture; colour ones
            # three (the kept and regenerated parts per channel, the red one folded)
            grey = all(s.mode in ("1", "L", "LA") for s in shades)
            shades = [s.convert("L" if grey else "RGB") for s in shades]
            # diffusers normalizes the mask to [-1, 1] and back: the same float32 steps
            unit = np.float32(2) * _unit(shades, width, height) - np.float32(1)
            masks = np.clip((unit + np.float32(1)) / np.float32(2), 0, 1)
            masks = masks.transpose(3, 0, 1, 2)[None]
    if isinstance(references, (str, bytes, np.ndarray)) or not isinstance(references,
                                                                          Sequence):
        raise ValueError("VACE reference pictures are a list of pictures (PIL images or uint8 "
                         f"arrays); got {type(references).__name__}")
    return VacePixels(frames, masks, [_reference(p, i, height, width)
                                      for i, p in enumerate(references)])


def control_pixels(control: VacePixels | None, height: int, width: int, num_frames: int
                   ) -> VacePixels:
    """`control` (vace_pixels) checked to be for num_frames frames of width x height, or the
    defaults where none (a gray video regenerated whole, no references); ValueError in one
    line for a control made for another video."""
    if control is None:
        return vace_pixels(height, width, num_frames)
    _, _, frames, rows, cols = control.video.shape
    if (frames, rows, cols) != (num_frames, height, width):
        raise ValueError(f"the VACE control was made for {frames} frames of {cols}x{rows}, the "
                         f"video is {num_frames} of {width}x{height}: make it with vace_pixels "
                         "for the video's size and frames")
    return control


def folded_mask(mask: np.ndarray, references: int) -> np.ndarray:
    """(1, 64, R + F', H / 8, W / 8) from the mask (1, C, F, H, W): its first channel's 8x8
    blocks as channels (row offset major), nearest-exact frames F -> F' = (F + 3) // 4
    (torch: index floor((i + 0.5) * F / F')), R zero frames in front. diffusers:
    `prepare_masks`."""
    _, _, count, height, width = mask.shape
    h, w = height // SPATIAL, width // SPATIAL
    blocks = mask[0, 0].reshape(count, h, SPATIAL, w, SPATIAL).transpose(2, 4, 0, 1, 3)
    blocks = blocks.reshape(SPATIAL * SPATIAL, count, h, w)
    out = (count + TEMPORAL - 1) // TEMPORAL
    scale = np.float32(count) / np.float32(out)
    index = np.minimum(np.floor((np.arange(out) + 0.5) * scale).astype(np.int64), count - 1)
    zeros = np.zeros((SPATIAL * SPATIAL, references, h, w), np.float32)
    return np.concatenate([zeros, blocks[:, index]], axis=1)[None].astype(np.float32)


def vace_condition(vae: AutoencoderKLWan, pixels: VacePixels) -> VaceCondition:
    """The control latents of `pixels` (vace_pixels) by Wan 2.1's VAE (its posterior's means,
    normalized): diffusers' `prepare_video_latents` and `prepare_masks` concatenated;
    VaeNonFiniteError where the encoder gave NaN or infinity."""
    if vae.spatial_factor != SPATIAL or vae.temporal_factor != TEMPORAL:
        raise ValueError(f"Wan VACE reads Wan 2.1's VAE ({SPATIAL}x, {TEMPORAL} frames a "
                         f"latent); this one is {vae.spatial_factor}x, {vae.temporal_factor}: "
                         "load the VACE model's own VAE")
    video, mask, references = pixels
    binary = np.where(mask > 0.5, np.float32(1), np.float32(0))
    latents = np.concatenate([_latents(vae, video * (1 - binary)),
                              _latents(vae, video * binary)], axis=1)
    for picture in references:  # each prepended in turn, as diffusers does
        latent = _latents(vae, picture[None, :, None])
        latent = np.concatenate([latent, np.zeros_like(latent)], axis=1)
        latents = np.concatenate([latent, latents], axis=2)
    control = np.concatenate([latents, folded_mask(mask, len(references))], axis=1)
    return VaceCondition(control.astype(np.float32), len(references))
