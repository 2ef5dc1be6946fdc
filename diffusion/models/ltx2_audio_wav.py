"""LTX-2's audio out of the model: latents -> mel (the audio VAE) -> waveform (the vocoder)
as float32 numpy, and a WAV writer (stdlib `wave`, 16-bit PCM, written whole or not at all).

    audio, rate = decode_audio(vae, vocoder, latents)  # (B, 2, samples), e.g. 24000 Hz
    write_wav("out.wav", audio[0], rate)
"""

from __future__ import annotations

import os
import wave
from pathlib import Path
from typing import Any

import numpy as np

from gpustd import Tensor, asarray

__all__ = ["decode_audio", "write_wav"]


def decode_audio(vae: Any, vocoder: Any, latents: Any) -> tuple[np.ndarray, int]:
    """(B, C, T, M) audio latents (the VAE's scale: `vae.denormalize` and `unpack` the
    transformer's first) -> (waveforms (B, channels, samples) float32, sample rate). diffusers:
    `vocoder(audio_vae.decode(latents).sample)`, as LTX2Pipeline ends."""
    if not isinstance(latents, Tensor):
        latents = asarray(np.asarray(latents, np.float32), device=vae.latents_mean.device)
    mel = vae.decode(_as(latents, vae.dtype))
    waveform = vocoder(_as(mel, vocoder.dtype)).astype(np.float32)
    return waveform.numpy(), vocoder.sample_rate


def _as(x: Tensor, dtype: Any) -> Tensor:
    return x if x.dtype == dtype else x.astype(dtype)


def write_wav(path: str | os.PathLike[str], waveform: Any, sample_rate: int) -> Path:
    """Write `waveform` ((channels, samples) or (samples,), floats in [-1, 1], clipped) as a
    16-bit PCM WAV at `sample_rate` Hz; the file appears whole (written beside it, then
    renamed) or not at all. Returns the path. scipy: `wavfile.write(path, rate,
    (waveform.T * 32767).astype(np.int16))`."""
    audio = np.asarray(waveform.numpy() if isinstance(waveform, Tensor) else waveform)
    if audio.ndim == 1:
        audio = audio[None]
    if audio.ndim != 2 or audio.shape[1] == 0 or audio.dtype.kind != "f":
        raise ValueError(f"write_wav: waveform must be float (channels, samples) or "
                         f"(samples,) audio, got {audio.dtype} {audio.shape}; pass one clip "
                         "of decode_audio's batch (audio[0])")
    if not np.isfinite(audio).all():
        raise ValueError("write_wav: waveform has NaN or inf samples; decode in float32")
    if not isinstance(sample_rate, (int, np.integer)) or sample_rate <= 0:
        raise ValueError(f"write_wav: sample_rate must be a positive int (Hz), got "
                         f"{sample_rate!r}; use the vocoder's sample_rate")
    pcm = np.round(np.clip(audio, -1.0, 1.0) * 32767).astype("<i2")
    target = Path(path)
    partial = target.with_name(target.name + ".partial")
    try:
        with wave.open(str(partial), "wb") as file:
            file.setnchannels(pcm.shape[0])
            file.setsampwidth(2)
            file.setframerate(int(sample_rate))
            file.writeframes(np.ascontiguousarray(pcm.T).tobytes())
        os.replace(partial, target)
    finally:
        partial.unlink(missing_ok=True)
    return target
