"""Frames to files: an MP4 (H.264 through PyAV; a video's audio, LTX-2's, as its AAC track), an
animated WebP (Pillow) or a folder of numbered PNGs, chosen by the output path's suffix (the
audio of those two a WAV beside them: `audio_beside`). Each file is written beside its target
and renamed into place, so an interrupted run leaves no partial video. And frames from files
(`read_frames`: Wan VACE's control video and mask): a video PyAV decodes (MP4, WebM, MOV,
MKV), an animated WebP or GIF or a single picture (Pillow), or a folder of pictures in name
order."""

from __future__ import annotations

import os
from collections import deque
from collections.abc import Callable, Iterator
from fractions import Fraction
from itertools import islice
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["VIDEO_SUFFIXES", "audio_beside", "check_fps", "check_output", "read_frames",
           "write_video"]

VIDEO_SUFFIXES = (".mp4", ".webp")
_MAX_FPS = 240
_DECODED = (".mp4", ".webm", ".mov", ".mkv", ".avi", ".m4v")  # through PyAV
_PICTURES = (".png", ".jpg", ".jpeg", ".webp", ".bmp", ".gif", ".tif", ".tiff")
Sound = tuple[np.ndarray, int] | None  # (waveform (channels, samples), sample rate)


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


def _mp4(frames: np.ndarray, target: Path, fps: Fraction, audio: Sound) -> None:
    import av

    partial = _partial(target)
    try:
        with av.open(str(partial), "w", format="mp4") as container:
            stream = container.add_stream("libx264", rate=fps)
            stream.width, stream.height = frames.shape[2], frames.shape[1]
            stream.pix_fmt = "yuv420p"
            stream.options = {"crf": "18"}
            # every stream is added before the first packet is muxed (the header is written)
            track = None if audio is None else _aac(container, *audio)
            for frame in frames:
                container.mux(stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")))
            container.mux(stream.encode())
            if track is not None:
                track()
        os.replace(partial, target)
    finally:
        partial.unlink(missing_ok=True)


def _aac(container: Any, waveform: np.ndarray, rate: int) -> Callable[[], None]:
    """The container's AAC track at `rate` Hz added; returns what writes the waveform
    (channels, samples) into it (PyAV's encoder cuts it into the codec's frames)."""
    import av

    layout = "mono" if len(waveform) == 1 else "stereo"
    stream = container.add_stream("aac", rate=rate, layout=layout)

    def write() -> None:
        frame = av.AudioFrame.from_ndarray(np.ascontiguousarray(waveform, np.float32),
                                           format="fltp", layout=layout)
        frame.sample_rate = rate
        container.mux(stream.encode(frame))
        container.mux(stream.encode())
    return write


def audio_beside(target: Path) -> Path:
    """Where a WebP's or a frames folder's audio goes: `clip.webp` -> `clip.wav`, a folder
    `clip/` -> `clip/audio.wav`."""
    return target / "audio.wav" if not target.suffix else target.with_suffix(".wav")


def _checked_audio(audio: Any, sample_rate: int | None) -> Sound:
    """(waveform (channels, samples) float32, rate) of write_video's audio; ValueError in
    one line for what no file can hold."""
    if audio is None:
        return None
    waveform = np.asarray(audio)
    if waveform.ndim == 1:
        waveform = waveform[None]
    if waveform.ndim != 2 or waveform.shape[0] not in (1, 2) or not waveform.shape[1] \
            or waveform.dtype.kind != "f":
        raise ValueError(f"audio must be float (channels, samples), mono or stereo, got "
                         f"{waveform.dtype} {waveform.shape}")
    if not np.isfinite(waveform).all():
        raise ValueError("audio has NaN or inf samples; decode it in float32")
    if not isinstance(sample_rate, (int, np.integer)) or not 8000 <= sample_rate <= 192000:
        raise ValueError(f"sample_rate must be a whole number of Hz from 8000 to 192000, got "
                         f"{sample_rate!r}")
    return np.clip(waveform, -1.0, 1.0).astype(np.float32), int(sample_rate)


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


def write_video(frames: np.ndarray, target: Path, fps: float, audio: Any = None,
                sample_rate: int | None = None) -> Path:
    """Write `frames` (T, H, W, 3) uint8 to `target` as its suffix says (check_output) at
    `fps`; returns `target`. An MP4 is H.264 (yuv420p, CRF 18, so H and W must be even).
    `audio` (channels, samples) floats in [-1, 1] at `sample_rate` Hz: an MP4's AAC track
    (mono or stereo as given), else a 16-bit WAV at `audio_beside(target)`."""
    kind = check_output(target)
    rate = check_fps(fps)
    sound = _checked_audio(audio, sample_rate)
    if frames.dtype != np.uint8 or frames.ndim != 4 or frames.shape[-1] != 3:
        raise ValueError(f"frames must be (T, H, W, 3) uint8, got {frames.dtype} "
                         f"{frames.shape}")
    if kind != "frames":
        target.parent.mkdir(parents=True, exist_ok=True)
    if kind == "mp4":
        _mp4(frames, target, rate, sound)
    elif kind == "webp":
        _webp(frames, target, rate)
    else:
        _folder(frames, target)
    if sound is not None and kind != "mp4":
        from ...models.ltx2_audio_wav import write_wav

        write_wav(audio_beside(target), *sound)
    return target


def _take(frames: Iterator[Any], limit: int | None, last: int | None) -> list[Any]:
    """The first `limit` of `frames`, or with `last` the last that many (each before them
    dropped once read: a long video is never held whole)."""
    return list(deque(frames, maxlen=last) if last else islice(frames, limit))


def _decoded(path: Path, name: str, limit: int | None, last: int | None) -> list[Any]:
    """The frames of a video file PyAV decodes, as RGB PIL images (`_take`'s)."""
    try:
        import av
    except ImportError:
        raise ValueError(f"{name} {path}: reading {path.suffix} needs PyAV: pip install "
                         "'avx-gpu[video]', or give a .webp / .gif or a folder of frames"
                         ) from None
    try:
        with av.open(str(path)) as container:
            return _take((frame.to_image() for frame in container.decode(video=0)), limit,
                         last)
    except (av.error.FFmpegError, IndexError):  # IndexError: no video stream
        raise ValueError(f"{name} {path}: not a readable video") from None


def _pictures(path: Path, name: str, limit: int | None = None, last: int | None = None
              ) -> list[Any]:
    """Every frame of a picture file (an animated WebP or GIF: each of its frames; `_take`'s),
    loaded."""
    from PIL import Image, ImageSequence, UnidentifiedImageError

    try:
        with Image.open(path) as opened:
            return _take((frame.copy() for frame in ImageSequence.Iterator(opened)), limit,
                         last)
    except (UnidentifiedImageError, OSError):
        raise ValueError(f"{name} {path}: not a readable picture or animation (PNG, WebP, "
                         "GIF...)") from None


def read_frames(path: Path, name: str, mode: str = "RGB", limit: int | None = None,
                last: int | None = None) -> list[Any]:
    """The frames of the video at `path` as PIL images of `mode` ("RGB", or "L": a mask's
    grey levels; a 16-bit picture scaled to 8 bits, imaging.eight_bit): a file PyAV decodes
    (.mp4, .webm, .mov, .mkv), a picture file (every frame of an animated WebP or GIF), or a
    folder of pictures in name order (00000.png, 00001.png, ...); `limit`: only the first
    that many (a long video is not decoded whole); `last`: only the last that many (Cosmos'
    video2world). ValueError in one line, naming the option
    `name`, for what cannot be read."""
    from ...imaging import eight_bit

    if path.is_dir():
        files = sorted(f for f in path.iterdir() if f.suffix.lower() in _PICTURES)
        if not files:
            raise ValueError(f"{name} {path}: a folder without pictures (give frames as "
                             "00000.png, 00001.png, ...)")
        frames = _take((frame for file in files for frame in _pictures(file, name)), limit,
                       last)
    elif not path.is_file():
        raise ValueError(f"{name} {path}: no such file or folder")
    elif path.suffix.lower() in _DECODED:
        frames = _decoded(path, name, limit, last)
    else:
        frames = _pictures(path, name, limit, last)
    if not frames:
        raise ValueError(f"{name} {path}: holds no frames")
    return [eight_bit(frame).convert(mode) for frame in frames]
