"""What Wan 2.2 Animate reads besides the noise: the character picture, the pose video, the face
video and, to replace a character in a video, that video (the background) and its mask (white =
the character, made anew; black = kept). diffusers: WanAnimatePipeline's input handling in
`__call__` (its image and video processors, `pad_video_frames`), `get_i2v_mask` and the
segments it generates a long video in.

    pixels = animate_pixels(picture, pose, face, height=480, width=832, face_size=512)
    for start in segment_starts(pixels.frames, 77, 1): pixels.pose_segment(start, 77) ...

Every video is checked and resized once (host only: before the networks load) and kept as
uint8 frames (Pillow's output, so no value is lost), the float frames made per segment. The
picture is fitted inside width x height keeping its aspect and centred on black
(diffusers: WanAnimateImageProcessor's "fill"); the pose, background and mask frames are
resized to width x height, the face frames to face_size x face_size (Lanczos: its
VideoProcessor); a mask is read as grey levels in [0, 1]. The videos are padded to whole
segments by reflection (0 1 2 3 2 1 0 1 ...) and the result cut back to the pose video's
length.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from ...imaging import condition_picture
from .vace_inputs import _mask_picture, _video_frames

__all__ = ["AnimatePixels", "animate_pixels", "check_segments", "i2v_mask", "reflect_indices",
           "segment_condition", "segment_starts"]

TEMPORAL = 4  # Wan's VAE: frames per latent frame after the first
OVERLAPS = (1, 5)  # the previous segment's frames a segment continues from (diffusers' choice)


def check_segments(segment: int, overlap: int) -> None:
    """ValueError in one line unless `segment` is 1 + 4k frames and `overlap` 1 or 5 and
    fewer than `segment`."""
    if overlap not in OVERLAPS:
        raise ValueError(f"the frames a segment continues from must be 1 or 5, got {overlap!r}")
    if isinstance(segment, bool) or not isinstance(segment, (int, np.integer)) \
            or segment <= overlap or (segment - 1) % TEMPORAL:
        raise ValueError(f"the segment length must be 1 + {TEMPORAL}k frames (77, Wan "
                         f"Animate's) and more than the {overlap} it continues from, got "
                         f"{segment!r}")


def segment_starts(frames: int, segment: int, overlap: int) -> list[int]:
    """The first frame of each segment (`segment` frames, each after the first beginning with
    the previous one's last `overlap` frames) covering `frames` frames. diffusers: the
    `num_segments` and `start` of WanAnimatePipeline's `__call__` (where its count, `target //
    step`, counts one segment too many when `overlap` >= `step`, its assert refuses it)."""
    step = segment - overlap
    left = (frames - overlap) % step
    target = frames + (step - left if left else 0)
    return [i * step for i in range((target - overlap) // step)]


def reflect_indices(count: int, target: int) -> np.ndarray:
    """Frame indices that pad a video of `count` frames to `target` by reflection (0 1 2 1 0 1
    ...; the first `target` frames of a longer one). diffusers: `pad_video_frames`."""
    if count == 1:
        return np.zeros(target, np.int64)
    period = 2 * (count - 1)
    phase = np.arange(target) % period
    return np.where(phase < count, phase, period - phase)


def i2v_mask(latent_frames: int, height: int, width: int, kept: int,
             pixels: np.ndarray | None = None) -> np.ndarray:
    """(1, 4, latent_frames, height, width): the frame mask `pixels` (1, 1, 4 (F - 1) + 1, h, w;
    zeros where none) with its first `kept` frames made 1, the first frame repeated 4 times and
    every 4 frames folded into the channels. diffusers: `get_i2v_mask`."""
    count = (latent_frames - 1) * TEMPORAL + 1
    mask = np.zeros((1, 1, count, height, width), np.float32) if pixels is None \
        else pixels.astype(np.float32, copy=True)
    mask[:, :, :kept] = 1
    mask = np.concatenate([np.repeat(mask[:, :, :1], TEMPORAL, axis=2), mask[:, :, 1:]], axis=2)
    return np.ascontiguousarray(
        mask.reshape(1, latent_frames, TEMPORAL, height, width).transpose(0, 2, 1, 3, 4))


def _unit(frames: np.ndarray) -> np.ndarray:
    """uint8 frames (T, H, W, C) as (C, T, H, W) float32 in [0, 1] (diffusers' pil_to_numpy)."""
    return (frames.astype(np.float32) / np.float32(255)).transpose(3, 0, 1, 2)


def _signed(frames: np.ndarray) -> np.ndarray:
    return np.float32(2) * _unit(frames) - np.float32(1)


@dataclass(frozen=True)
class AnimatePixels:
    """The inputs checked and resized: `picture` the character picture as given (RGB PIL;
    CLIP reads it), `reference` that picture fitted, (3, H, W) in [-1, 1]; `pose`, `face` and,
    to replace, `background` (T, H, W, 3) and `mask` (T, H, W, 1) uint8 frames; `frames`: the
    pose video's count (the video made)."""

    picture: Any
    reference: np.ndarray
    pose: np.ndarray
    face: np.ndarray
    background: np.ndarray | None = None
    mask: np.ndarray | None = None

    @property
    def frames(self) -> int:
        return len(self.pose)

    @property
    def replace(self) -> bool:
        """Whether a character in the background video is replaced ("replace" mode)."""
        return self.background is not None

    def _cut(self, video: np.ndarray, start: int, segment: int) -> np.ndarray:
        return video[reflect_indices(len(video), start + segment)[start:]]

    def pose_segment(self, start: int, segment: int) -> np.ndarray:
        """The pose frames start .. start + segment, (1, 3, segment, H, W) in [-1, 1]."""
        return _signed(self._cut(self.pose, start, segment))[None]

    def face_segment(self, start: int, segment: int) -> np.ndarray:
        """The face crops start .. start + segment, (1, 3, segment, S, S) in [-1, 1]."""
        return _signed(self._cut(self.face, start, segment))[None]

    def background_segment(self, start: int, segment: int) -> tuple[np.ndarray, np.ndarray]:
        """The background (1, 3, segment, H, W) in [-1, 1] and its mask (1, 1, segment, H, W)
        in [0, 1] from frame `start`."""
        assert self.background is not None and self.mask is not None
        return (_signed(self._cut(self.background, start, segment))[None],
                _unit(self._cut(self.mask, start, segment))[None])


def segment_condition(pixels: AnimatePixels, start: int, segment: int, overlap: int,
                      before: np.ndarray | None, batch: int, spatial: int
                      ) -> tuple[np.ndarray, np.ndarray]:
    """The segment's condition video (B, 3, segment, H, W) in [-1, 1] and its mask (1, 4, F',
    H / spatial, W / spatial): zeros (animate) or the background (replace), its first
    `overlap` frames the previous segment's last ones (`before`, (B, 3, overlap, H, W); none
    for the first segment), the mask 1 on those and, replacing, where the background's mask
    is black (sampled at every `spatial`-th pixel: torch's nearest). diffusers:
    `prepare_prev_segment_cond_latents` before its VAE encode."""
    height, width = pixels.reference.shape[1:]
    video = np.zeros((batch, 3, segment, height, width), np.float32)
    h, w = height // spatial, width // spatial
    shades = None
    if pixels.replace:
        background, mask = pixels.background_segment(start, segment)
        video[:] = background
        shades = 1 - mask[:, :, :, ::spatial, ::spatial]
    if before is not None:
        video[:, :, :overlap] = before
    kept = overlap if before is not None else 0
    return video, i2v_mask((segment - 1) // TEMPORAL + 1, h, w, kept, shades)


def _frames(video: Any, name: str, what: str, size: tuple[int, int]) -> np.ndarray:
    """A video (uint8 (T, H, W, 3) array or a list of PIL images / uint8 arrays) resized to
    `size` (width, height) with Lanczos, (T, H, W, C) uint8; `what`: "RGB" or "L" (a mask)."""
    from PIL import Image

    frames = _video_frames(video, name)
    pictures = [_mask_picture(f, f"{name} frame {i}").convert("L") if what == "L"
                else condition_picture(f, f"{name} frame {i}") for i, f in enumerate(frames)]
    if any(p.size != pictures[0].size for p in pictures):
        raise ValueError(f"the {name}'s frames are not all one size: give frames of one size")
    out = np.stack([np.asarray(p.resize(size, Image.Resampling.LANCZOS)) for p in pictures])
    return out if out.ndim == 4 else out[..., None]


def fill_picture(image: Any, height: int, width: int) -> np.ndarray:
    """The character picture fitted inside width x height keeping its aspect (Lanczos) and
    centred on black, (3, H, W) in [-1, 1]. diffusers: WanAnimateImageProcessor's
    `_resize_and_fill` with fill_color 0 (the pipeline asks for bilinear, but the processor's
    base class registers its own defaults over it: Lanczos is what runs)."""
    from PIL import Image

    picture = condition_picture(image, "the character picture")
    wide = width / height < picture.width / picture.height
    cols = width if wide else picture.width * height // picture.height
    rows = height if width / height >= picture.width / picture.height \
        else picture.height * width // picture.width
    canvas = Image.new("RGB", (width, height), 0)
    canvas.paste(picture.resize((cols, rows), Image.Resampling.LANCZOS),
                 (width // 2 - cols // 2, height // 2 - rows // 2))
    return _signed(np.asarray(canvas)[None])[:, 0]


def animate_pixels(image: Any, pose: Any, face: Any, *, height: int, width: int,
                   face_size: int, background: Any = None, mask: Any = None,
                   names: Sequence[str] = ("pose video", "face video", "background video",
                                           "mask video")) -> AnimatePixels:
    """The character picture `image` and the videos (each a uint8 (T, H, W, 3) array or a list
    of frames) checked and resized (module docstring); `background` and `mask` together
    replace a character. `names`: how the caller's user names the four videos in messages.
    ValueError in one line for what does not fit."""
    if height <= 0 or width <= 0 or height % 16 or width % 16:
        raise ValueError(f"Wan Animate's height and width must be positive multiples of 16; got "
                         f"{width}x{height}")
    if (background is None) != (mask is None):
        raise ValueError(f"replacing a character needs both the {names[2]} and the {names[3]} "
                         "(white where the character is); give both, or neither to animate "
                         "the picture")
    videos = {"pose": _frames(pose, names[0], "RGB", (width, height)),
              "face": _frames(face, names[1], "RGB", (face_size, face_size))}
    if background is not None:
        videos["background"] = _frames(background, names[2], "RGB", (width, height))
        videos["mask"] = _frames(mask, names[3], "L", (width, height))
    count = len(videos["pose"])
    for frames, name in zip(videos.values(), names, strict=False):
        if len(frames) != count:
            raise ValueError(f"the {name} has {len(frames)} frames but the {names[0]} has "
                             f"{count}: give videos of one length")
    picture = condition_picture(image, "the character picture")
    return AnimatePixels(picture, fill_picture(picture, height, width), **videos)
