"""LTX-2's audio parts against diffusers on torch CPU (tiny random models, odd lengths): the
audio VAE (AutoencoderKLLTX2Audio) decoding and encoding, causal in time; the vocoder
(LTX2Vocoder: the released leaky-ReLU one and a SnakeBeta anti-aliased one); LTX-2.3's
LTX2VocoderWithBWE; the pipeline's packing and normalization; latents -> WAV; the loaders."""

from __future__ import annotations

import wave
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("diffusers", reason="diffusers is a test-only reference")
import torch
from conftest import ADAPTERS
from diffusers.pipelines.ltx2.pipeline_ltx2 import LTX2Pipeline
from ltx2_audio_tiny import (
    LTX2_VOCODER_SNAKE_TINY,
    tiny_ltx2_audio_vae,
    tiny_ltx2_vocoder,
    tiny_ltx2_vocoder_bwe,
)
from sd_tiny import ported
from support import assert_close

import gpucore
from diffusion.loaders.errors import WeightsError
from diffusion.loaders.ltx2 import load_ltx2_audio_vae, load_ltx2_vocoder
from diffusion.models.ltx2_audio import AutoencoderKLLTX2Audio, pack, unpack
from diffusion.models.ltx2_audio_wav import decode_audio, write_wav
from diffusion.models.ltx2_vocoder import LTX2Vocoder
from diffusion.models.ltx2_vocoder_bwe import LTX2VocoderWithBWE, ltx2_vocoder
from gpustd import asarray

TOL = 1e-5  # measured: 1.3e-6 (decode), 8e-7 (encode), 4e-6 (vocoders), 2.2e-6 (BWE)
F16_TOL = 1e-2  # measured: 5.3e-3 (mel), 1.8e-3 (waveform)


def _first_adapter(device: gpucore.Device) -> None:
    if ADAPTERS and device.info.index != ADAPTERS[0].index:
        pytest.skip("LTX-2 audio runs gpustd.nn's convs (tested on every adapter there); the "
                    "models run on the first adapter (CI time)")


def _torch(model: torch.nn.Module, *args: np.ndarray) -> np.ndarray:
    with torch.no_grad():
        out = model(*(torch.from_numpy(a) for a in args))
    return out.sample.numpy() if hasattr(out, "sample") else out.numpy()


@pytest.mark.parametrize("options", [
    {},  # the released layout: time-causal, pixel norms, no attention
    dict(causality_axis="width", mid_block_add_attention=True, attn_resolutions=(64, 128)),
])
def test_audio_vae_decode_equals_diffusers(device: gpucore.Device, options) -> None:
    _first_adapter(device)
    reference = tiny_ltx2_audio_vae(**options)
    ours = ported(AutoencoderKLLTX2Audio, reference, device)
    latents = np.random.default_rng(3).standard_normal((2, 2, 5, 4)).astype(np.float32)
    got = ours.decode(asarray(latents, device=device)).numpy()
    expected = _torch(reference.decode, latents)
    assert got.shape == (2, 2, 17, 16) and np.abs(expected).mean() > 0.1
    assert_close(got, expected, tol=TOL)
    if not options:  # causal in time: the last latent frame reaches the last 4 mel frames only
        later = latents.copy()
        later[:, :, -1] = 0
        moved = np.abs(ours.decode(asarray(later, device=device)).numpy() - got).max(axis=(0, 1, 3))
        assert moved[:13].max() == 0 and moved[13:].min() > 1e-3


def test_audio_vae_encode_equals_diffusers(device: gpucore.Device) -> None:
    _first_adapter(device)
    reference = tiny_ltx2_audio_vae()
    ours = ported(AutoencoderKLLTX2Audio, reference, device)
    rng = np.random.default_rng(4)
    mel = rng.standard_normal((2, 2, 19, 16)).astype(np.float32)
    with torch.no_grad():
        posterior = reference.encode(torch.from_numpy(mel)).latent_dist
    mean, logvar = ours.moments(asarray(mel, device=device))
    assert mean.shape == (2, 2, 5, 4) and np.abs(posterior.mean.numpy()).mean() > 0.1
    assert_close(mean.numpy(), posterior.mean.numpy(), tol=TOL)
    assert_close(logvar.numpy(), posterior.logvar.numpy(), tol=TOL)
    noise = rng.standard_normal(mean.shape).astype(np.float32)
    expected = posterior.mean.numpy() + posterior.std.numpy() * noise
    assert_close(ours.encode(asarray(mel, device=device), noise=noise).numpy(), expected,
                 tol=TOL)


@pytest.mark.parametrize("options", [{}, LTX2_VOCODER_SNAKE_TINY],
                         ids=["leaky_relu", "snakebeta_antialias"])
def test_vocoder_equals_diffusers(device: gpucore.Device, options) -> None:
    _first_adapter(device)
    reference = tiny_ltx2_vocoder(**options)
    ours = ported(LTX2Vocoder, reference, device)
    mel = np.random.default_rng(5).standard_normal((2, 2, 13, 16)).astype(np.float32)
    got = ours(asarray(mel, device=device)).numpy()
    expected = _torch(reference, mel)
    assert got.shape == (2, 2, 80) and np.abs(expected).mean() > 0.1
    assert np.abs(expected[0] - expected[1]).mean() > 0.05  # the mel matters
    assert_close(got, expected, tol=TOL)


# diffusers' LTX2VocoderWithBWE reads its config's hop_length off the model (deprecated)
@pytest.mark.filterwarnings("ignore:Accessing config attribute `hop_length`:FutureWarning")
def test_bwe_vocoder_equals_diffusers(device: gpucore.Device) -> None:
    _first_adapter(device)
    reference = tiny_ltx2_vocoder_bwe()
    ours = ported(LTX2VocoderWithBWE, reference, device)
    mel = np.random.default_rng(6).standard_normal((1, 2, 11, 16)).astype(np.float32)
    expected = _torch(reference, mel)  # 88 samples: padded to 96, a multiple of the hop
    got = ours(asarray(mel, device=device)).numpy()
    assert got.shape == (1, 2, 264) and (np.abs(expected) < 1).mean() > 0.8
    assert_close(got, expected, tol=TOL)
    with torch.no_grad():  # the bandwidth extender's share is visible
        reference.bwe_generator.conv_out.weight.zero_()
    assert np.abs(_torch(reference, mel) - expected).mean() > 0.02


def test_pack_and_normalize_as_the_pipeline(device: gpucore.Device) -> None:
    _first_adapter(device)
    reference = tiny_ltx2_audio_vae()
    ours = ported(AutoencoderKLLTX2Audio, reference, device)
    latents = np.random.default_rng(7).standard_normal((2, 2, 5, 4)).astype(np.float32)
    mean, std = reference.latents_mean, reference.latents_std
    packed = LTX2Pipeline._pack_audio_latents(torch.from_numpy(latents))
    normalized = LTX2Pipeline._normalize_audio_latents(packed, mean, std)
    tokens = pack(asarray(latents, device=ours.latents_mean.device))
    np.testing.assert_array_equal(tokens.numpy(), packed.numpy())
    assert_close(ours.normalize(tokens).numpy(), normalized.numpy(), tol=1e-6)
    back = ours.denormalize(ours.normalize(tokens))
    assert_close(back.numpy(), packed.numpy(), tol=1e-6)
    np.testing.assert_array_equal(unpack(tokens, 2).numpy(), latents)
    with pytest.raises(ValueError, match=r"packed latents must be a \(batch, frames, 8\)"):
        ours.normalize(asarray(latents, device=tokens.device))


def test_latents_to_wav(device: gpucore.Device, tmp_path: Path) -> None:
    _first_adapter(device)
    vae_ref, vocoder_ref = tiny_ltx2_audio_vae(), tiny_ltx2_vocoder()
    vae, vocoder = ported(AutoencoderKLLTX2Audio, vae_ref, device), ported(
        LTX2Vocoder, vocoder_ref, device)
    latents = np.random.default_rng(8).standard_normal((1, 2, 3, 4)).astype(np.float32)
    audio, rate = decode_audio(vae, vocoder, latents)
    with torch.no_grad():
        expected = vocoder_ref(vae_ref.decode(torch.from_numpy(latents)).sample).numpy()
    assert audio.dtype == np.float32 and rate == 24000
    assert_close(audio, expected, tol=TOL)
    path = write_wav(tmp_path / "clip.wav", audio[0], rate)
    assert [p.name for p in tmp_path.iterdir()] == ["clip.wav"]
    with wave.open(str(path), "rb") as file:
        assert (file.getnchannels(), file.getsampwidth(), file.getframerate()) == (2, 2, rate)
        pcm = np.frombuffer(file.readframes(file.getnframes()), "<i2").reshape(-1, 2).T
    np.testing.assert_array_equal(pcm, np.round(np.clip(audio[0], -1, 1) * 32767))


@pytest.mark.nodevice
def test_write_wav_refuses_what_it_cannot_write(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="waveform must be float"):
        write_wav(tmp_path / "a.wav", np.zeros((1, 2, 5), np.float32), 24000)
    with pytest.raises(ValueError, match="NaN or inf"):
        write_wav(tmp_path / "a.wav", np.array([0.0, np.nan]), 24000)
    with pytest.raises(ValueError, match="sample_rate must be a positive int"):
        write_wav(tmp_path / "a.wav", np.zeros(4), 0)
    assert not list(tmp_path.iterdir())


def test_loaders_read_a_diffusers_folder(device: gpucore.Device, tmp_path: Path) -> None:
    _first_adapter(device)
    vae, vocoder, bwe = tiny_ltx2_audio_vae(), tiny_ltx2_vocoder(), tiny_ltx2_vocoder_bwe()
    vae.save_pretrained(tmp_path / "pipe" / "audio_vae")
    vocoder.save_pretrained(tmp_path / "pipe" / "vocoder")
    bwe.save_pretrained(tmp_path / "bwe" / "vocoder")
    weights = load_ltx2_audio_vae(tmp_path / "pipe")
    assert weights.config["latent_channels"] == 2
    np.testing.assert_array_equal(weights["latents_std"], vae.latents_std.numpy())
    model = ltx2_vocoder(load_ltx2_vocoder(tmp_path / "pipe"), device=device)
    assert isinstance(model, LTX2Vocoder) and model.sample_rate == 24000
    model = ltx2_vocoder(load_ltx2_vocoder(tmp_path / "bwe" / "vocoder"), device=device)
    assert isinstance(model, LTX2VocoderWithBWE) and model.sample_rate == 48000
    with pytest.raises(WeightsError, match="a LTX2Vocoder, not AutoencoderKLLTX2Audio"):
        load_ltx2_audio_vae(tmp_path / "pipe" / "vocoder")
    with pytest.raises(WeightsError, match="no such folder"):
        load_ltx2_vocoder(tmp_path / "missing")


@pytest.mark.nodevice
def test_bad_config_says_what_in_one_line() -> None:
    with pytest.raises(ValueError, match="causality_axis 'depth'"):
        AutoencoderKLLTX2Audio({"causality_axis": "depth"})
    with pytest.raises(ValueError, match="norm_type 'group' with a causal axis"):
        AutoencoderKLLTX2Audio({"norm_type": "group"})
    with pytest.raises(ValueError, match="act_fn 'gelu'"):
        LTX2Vocoder({"act_fn": "gelu"})
    with pytest.raises(ValueError, match="output_sampling_rate 44100 is not a multiple"):
        LTX2VocoderWithBWE({"output_sampling_rate": 44100})


def test_bad_input_says_what_in_one_line(device: gpucore.Device) -> None:
    _first_adapter(device)
    vae = AutoencoderKLLTX2Audio(dict(tiny_ltx2_audio_vae().config), device=device)
    with pytest.raises(ValueError, match=r"latents must be a \(batch, 2, frames, mel bins\)"):
        vae.decode(asarray(np.zeros((1, 3, 5, 4), np.float32), device=device))
    vocoder = LTX2Vocoder(dict(tiny_ltx2_vocoder().config), device=device)
    with pytest.raises(ValueError, match="channels x mel bins = 32"):
        vocoder(asarray(np.zeros((1, 2, 5, 8), np.float32), device=device))


def test_float16_holds(f16_device: gpucore.Device) -> None:
    """float16 weights and activations (float32 accumulation) against the float32 reference:
    the decoder's mel and the released vocoder's waveform."""
    _first_adapter(f16_device)
    vae_ref, vocoder_ref = tiny_ltx2_audio_vae(), tiny_ltx2_vocoder()
    vae = ported(AutoencoderKLLTX2Audio, vae_ref, f16_device, dtype=np.float16)
    vocoder = ported(LTX2Vocoder, vocoder_ref, f16_device, dtype=np.float16)
    latents = np.random.default_rng(9).standard_normal((1, 2, 5, 4)).astype(np.float32)
    mel = vae.decode(asarray(latents, dtype=np.float16, device=f16_device))
    assert mel.dtype == np.float16
    expected_mel = _torch(vae_ref.decode, latents)
    assert_close(mel.numpy().astype(np.float32), expected_mel, tol=F16_TOL)
    audio = vocoder(mel).numpy().astype(np.float32)
    assert_close(audio, _torch(vocoder_ref, expected_mel), tol=F16_TOL)
