"""Frames to files: an MP4 (H.264 through PyAV), an animated WebP (Pillow) or a folder of
numbered PNGs, chosen by the output path's suffix. Each file is written beside its target and
renamed into place, so an interrupted run leaves no partial video."""

from __future__ import annotations

import os
from fractions import Fraction
from pathlib import Path

import numpy as np

__all__ = ["VIDEO_SUFFIXES", "check_fps", "check_output", "write_video"]

VIDEO_SUFFIXES = (".mp4", ".webp")
_MAX_FPS = 240


def check_fps(fps: float) -> Fraction:
    """`fps` as the exact rate the container stores; ValueError in one line unless it is a
    number of frames per second from 1/100 to 240."""
    if isinstance(fps, bool) or not isinstance(fps, (int, float)) or not np.isfinite(fps) \
            or not 0.01 <= fps <= _MAX_FPS:
        raise ValueError(f"--fps must be a number from 0.01 to {_MAX_FPS}, got {fps!r}")
    return Fraction(fps).limit_denominator(1001)


def check_output(path: Path) -> str:
    """The kind of output `path` asks for, "mp4", "webp" or "frames" (a path without a
    suffix: a folder of PNGs); ValueError in one line for any other suffix, or for MP4 when
    PyAV is not installed."""
    suffix = path.suffix.lower()
    if not suffix:
        return "frames"
    if suffix not in VIDEO_SUFFIXES:
        raise ValueError(f"--out {path}: write .mp4, .webp or a folder (a path without a "
                         f"suffix), not {suffix}")
    if suffix == ".mp4":
        try:
            import av  # noqa: F401
        except ImportError:
            raise ValueError("writing MP4 needs PyAV: pip install 'avx-gpu[video]', or write "
                             ".webp or a frames folder") from None
    return suffix[1:]


def _partial(target: Path) -> Path:
    return target.with_name(f".{target.name}.{os.getpid()}.partial")


def _mp4(frames: np.ndarray, target: Path, fps: Fraction) -> None:
    import av

    partial = _partial(target)
    try:
        with av.open(str(partial), "w", format="mp4") as container:
            stream = container.add_stream("libx264", rate=fps)
            stream.width, stream.height = frames.shape[2], frames.shape[1]
            stream.pix_fmt = "yuv420p"
            stream.options = {"crf": "18"}
            for frame in frames:
                container.mux(stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")))
            container.mux(stream.encode())
        os.replace(partial, target)
    finally:
        partial.unlink(missing_ok=True)


def _webp(frames: np.ndarray, target: Path, fps: Fraction) -> None:
    from PIL import Image

    partial = _partial(target)
    pictures = [Image.fromarray(frame) for frame in frames]
    try:
        pictures[0].save(partial, format="WEBP", save_all=True, append_images=pictures[1:],
                         duration=round(1000 / fps), loop=0, lossless=True)
        os.replace(partial, target)
    finally:
        partial.unlink(missing_ok=True)


def _folder(frames: np.ndarray, target: Path) -> None:
    from PIL import Image

    target.mkdir(parents=True, exist_ok=True)
    for i, frame in enumerate(frames):
        file = target / f"{i:05d}.png"
        partial = _partial(file)
        try:
            Image.fromarray(frame).save(partial, format="PNG")
            os.replace(partial, file)
        finally:
            partial.unlink(missing_ok=True)


def write_video(frames: np.ndarray, target: Path, fps: float) -> Path:
    """Write `frames` (T, H, W, 3) uint8 to `target` as its suffix says (check_output) at
    `fps`; returns `target`. An MP4 is H.264 (yuv420p, CRF 18, so H and W must be even)."""
    kind = check_output(target)
    rate = check_fps(fps)
    if frames.dtype != np.uint8 or frames.ndim != 4 or frames.shape[-1] != 3:
        raise ValueError(f"frames must be (T, H, W, 3) uint8, got {frames.dtype} "
                         f"{frames.shape}")
    if kind != "frames":
        target.parent.mkdir(parents=True, exist_ok=True)
    if kind == "mp4":
        _mp4(frames, target, rate)
    elif kind == "webp":
        _webp(frames, target, rate)
    else:
        _folder(frames, target)
    return target
