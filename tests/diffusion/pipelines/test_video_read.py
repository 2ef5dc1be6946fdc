"""Frames read back from files (diffusion.pipelines.video.files.read_frames, Wan VACE's control
video and mask): an MP4 written by write_video decodes (PyAV) to its frames within H.264's
loss, an animated WebP and a folder of PNGs exactly, a mask as grey levels, the first frames
alone where a limit says; what cannot be read is refused in one line naming the option."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from diffusion.pipelines.video.files import read_frames, write_video

pytestmark = pytest.mark.nodevice


def _frames(seed: int) -> np.ndarray:
    """Five smooth random frames (H.264 keeps smooth pictures well; noise it would blur)."""
    rng = np.random.default_rng(seed)
    coarse = rng.integers(0, 256, (5, 4, 6, 3), dtype=np.uint8)
    return np.kron(coarse, np.ones((1, 8, 8, 1), np.uint8))


def test_read_mp4(tmp_path: Path) -> None:
    pytest.importorskip("av", reason="PyAV (the video extra) writes and reads the MP4")
    frames = _frames(1)
    read = read_frames(write_video(frames, tmp_path / "v.mp4", 8), "--control-video")
    got = np.stack([np.asarray(f) for f in read]).astype(np.float32)
    assert got.shape == frames.shape
    # measured 4.7 mean levels of 255 (H.264 at CRF 18, 4:2:0 colour at the blocks' edges)
    assert np.abs(got - frames).mean() < 7


def test_read_webp_folder_and_grey(tmp_path: Path) -> None:
    frames = _frames(2)
    for target in (tmp_path / "v.webp", tmp_path / "folder"):
        read = read_frames(write_video(frames, target, 8), "--control-video")
        assert np.array_equal(np.stack([np.asarray(f) for f in read]), frames)
    grey = read_frames(tmp_path / "folder", "--control-mask", "L")
    expected = [np.asarray(Image.fromarray(f).convert("L")) for f in frames]
    assert all(g.mode == "L" and np.array_equal(np.asarray(g), e)
               for g, e in zip(grey, expected, strict=True))


def test_read_first_frames(tmp_path: Path) -> None:
    """`limit`: the first frames of each form, the same as a whole read's."""
    frames = _frames(3)
    targets = [tmp_path / "v.webp", tmp_path / "folder"]
    try:
        import av  # noqa: F401

        targets.append(tmp_path / "v.mp4")
    except ImportError:
        pass
    for target in targets:
        write_video(frames, target, 8)
        whole = read_frames(target, "--init-video")
        first = read_frames(target, "--init-video", limit=3)
        assert len(first) == 3 and all(np.array_equal(np.asarray(a), np.asarray(b))
                                       for a, b in zip(first, whole, strict=False))


def test_unreadable_refused(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    (tmp_path / "bad.gif").write_bytes(b"not a gif")
    (tmp_path / "bad.mp4").write_bytes(b"not an mp4")
    cases = [("empty", "a folder without pictures"), ("missing", "no such file or folder"),
             ("bad.gif", "not a readable picture or animation")]
    try:
        import av  # noqa: F401

        cases.append(("bad.mp4", "not a readable video"))
    except ImportError:
        pass
    for name, message in cases:
        with pytest.raises(ValueError, match=message) as raised:
            read_frames(tmp_path / name, "--control-video")
        assert str(raised.value).startswith(f"--control-video {tmp_path / name}")
        assert "\n" not in str(raised.value)
