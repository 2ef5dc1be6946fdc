"""A video's audio in its files: an MP4's AAC track read back by PyAV (its rate, channels,
length and the waveform itself, to AAC's loss), a WebP's and a frames folder's WAV beside
them; bad audio refused in one line before anything is written."""

from __future__ import annotations

import wave
from pathlib import Path

import numpy as np
import pytest

from diffusion.pipelines.video.files import audio_beside, write_video

RATE = 24000
FRAMES = np.random.default_rng(3).integers(0, 256, (9, 32, 64, 3), dtype=np.uint8)


def _tone(channels: int, samples: int = 9000) -> np.ndarray:
    """A chord, a different one on each channel, with a little noise: random, audible."""
    rng = np.random.default_rng(channels)
    t = np.arange(samples) / RATE
    rows = [0.3 * np.sin(2 * np.pi * f * t) + 0.2 * np.sin(2 * np.pi * 2.7 * f * t)
            for f in rng.uniform(200, 900, channels)]
    return (np.stack(rows) + rng.normal(0, 0.01, (channels, samples))).astype(np.float32)


@pytest.mark.parametrize("channels", [2, 1])
def test_mp4_audio_track(tmp_path: Path, channels: int) -> None:
    av = pytest.importorskip("av")
    audio = _tone(channels)
    out = write_video(FRAMES, tmp_path / "clip.mp4", 24.0, audio, RATE)
    with av.open(str(out)) as container:
        stream = container.streams.audio[0]
        assert stream.codec_context.name == "aac" and stream.rate == RATE
        assert stream.codec_context.layout.nb_channels == channels
        decoded = np.concatenate([f.to_ndarray() for f in container.decode(audio=0)], axis=1)
    with av.open(str(out)) as container:
        assert sum(1 for _ in container.decode(video=0)) == len(FRAMES)
    # the encoder's 1024 samples of priming, then the audio, padded to whole AAC frames
    assert audio.shape[1] + 1024 <= decoded.shape[1] < audio.shape[1] + 3 * 1024
    heard = decoded[:, 1024:1024 + audio.shape[1]]
    for row, expected in zip(heard, audio, strict=True):  # measured correlation 0.998
        assert np.corrcoef(row, expected)[0, 1] > 0.99
    assert not list(tmp_path.glob(".*partial"))


@pytest.mark.parametrize("name", ["clip.webp", "frames"])
def test_wav_beside(tmp_path: Path, name: str) -> None:
    audio = _tone(2)
    target = write_video(FRAMES, tmp_path / name, 24.0, audio, RATE)
    wav = audio_beside(target)
    assert wav == (tmp_path / "clip.wav" if name == "clip.webp" else target / "audio.wav")
    with wave.open(str(wav)) as file:
        assert (file.getframerate(), file.getnchannels(), file.getnframes()) == \
            (RATE, 2, audio.shape[1])


@pytest.mark.parametrize(("audio", "rate", "message"), [
    (np.zeros((3, 100), np.float32), RATE, r"mono or stereo, got float32 \(3, 100\)"),
    (np.full((2, 100), np.nan, np.float32), RATE, "NaN or inf"),
    (np.zeros((2, 100), np.float32), 100, "sample_rate must be a whole number of Hz"),
])
def test_bad_audio_refused(tmp_path: Path, audio: np.ndarray, rate: int, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        write_video(FRAMES, tmp_path / "clip.mp4", 24.0, audio, rate)
    assert not list(tmp_path.iterdir())
