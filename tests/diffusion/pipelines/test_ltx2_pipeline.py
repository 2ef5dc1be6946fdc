"""LTX-2 text to video with audio (an LTX2Pipeline folder): a tiny random one saved by diffusers
(ltx2_pipeline_tiny), our frames and waveform against diffusers' on PyTorch CPU float32 at its
default guidance (CFG 3 / audio 7 with rescale 0.7, STG 1, modality guidance 3), and unguided
with a timestep-conditioned VAE (decode_timestep and its noise); each guidance pass and the
prompt visibly mattering; bad settings refused in one line."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pytest

pytest.importorskip("diffusers", reason="diffusers is a test-only reference (extra: reference)")
import torch
from cli_support import cli_error, cli_ok, png_frames
from ltx2_pipeline_tiny import tiny_ltx2_pipeline
from ltx2_vae_tiny import LTX2_VAE_TINY_TIMESTEP, tiny_ltx2_vae

import gpucore
from diffusion.pipelines.video.ltx2 import LTX2Pipeline
from diffusion.pipelines.video.ltx2_guidance import LTX2Guidance

CAT, BIRDS = "a cat walks on the beach", "two birds flying over the water"
SIZE = {"height": 32, "width": 64, "num_frames": 9, "num_inference_steps": 2,
        "max_sequence_length": 32}  # 2 x 2 x 4 video tokens, 9 audio latents
STG = (1,)  # the tiny transformer's last block (diffusers' default 28 is past its 2)
# float32, measured: frames 5.3e-7 mean, 3.9e-6 max; waveform 3.3e-7 mean, 1.9e-6 max (its
# samples ~0.2); unguided with the timestep VAE 2.8e-6 and 9e-7 at most
FRAMES_MAX, AUDIO_MAX = 2e-5, 1e-5


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Any]:
    return tiny_ltx2_pipeline(tmp_path_factory.mktemp("ltx2"))


@pytest.fixture(scope="module")
def guided(tiny: tuple[Path, Any]) -> tuple[np.ndarray, np.ndarray]:
    """diffusers' frames and waveform of CAT at its default guidance, STG at STG."""
    return _diffusers(tiny[1], CAT, spatio_temporal_guidance_blocks=list(STG))


def _diffusers(reference: Any, prompt: str, **settings: Any) -> tuple[np.ndarray, np.ndarray]:
    with torch.no_grad():
        video, audio = reference(prompt, generator=torch.Generator().manual_seed(7),
                                 output_type="np", return_dict=False, **SIZE, **settings)
    return np.asarray(video[0]), audio[0].numpy()


def _close(ours: Any, frames: np.ndarray, audio: np.ndarray) -> None:
    assert ours.frames[0].shape == frames.shape and ours.audio[0].shape == audio.shape
    assert np.abs(ours.frames[0] - frames).max() < FRAMES_MAX
    assert np.abs(ours.audio[0] - audio).max() < AUDIO_MAX


def test_guided_equals_diffusers(first_device: gpucore.Device, tiny: tuple[Path, Any],
                                 guided: tuple[np.ndarray, np.ndarray]) -> None:
    """diffusers' default guidance, STG at the last block; dropping STG, modality guidance or
    the prompt moves both the frames and the waveform."""
    folder, frames, audio = tiny[0], *guided
    pipe = LTX2Pipeline.from_pretrained(folder)
    ours = pipe(CAT, guidance=LTX2Guidance(stg_blocks=STG), seed=7, **SIZE)
    _close(ours, frames, audio)
    assert ours.sample_rate == 24000 and ours.audio.shape == (1, 2, 200)
    # STG, modality guidance and the prompt each move both the frames and the waveform
    one = {**SIZE, "seed": 7}
    base = ours
    for prompt, changed in ((CAT, LTX2Guidance(stg_scale=0, audio_stg_scale=0)),
                            (CAT, LTX2Guidance(stg_blocks=STG, modality_scale=1,
                                               audio_modality_scale=1)),
                            (BIRDS, LTX2Guidance(stg_blocks=STG))):
        other = pipe(prompt, guidance=changed, **one)
        assert np.abs(other.frames - base.frames).mean() > 1e-3
        assert np.abs(other.audio - base.audio).mean() > 1e-3


def test_stg_without_perturbed_attention(first_device: gpucore.Device,
                                          tiny: tuple[Path, Any]) -> None:
    """On a model without perturbed_attn (LTX-2.0's) diffusers' STG pass perturbs nothing and
    its term is rounding; ours skips that pass and still gives diffusers' video and audio."""
    folder, reference = tiny
    blocks = reference.transformer.transformer_blocks
    try:
        for block in blocks:
            block.perturbed_attn = False
        frames, audio = _diffusers(reference, CAT, spatio_temporal_guidance_blocks=list(STG))
    finally:
        for block in blocks:
            block.perturbed_attn = True
    pipe = LTX2Pipeline.from_pretrained(folder)
    pipe.transformer.config["perturbed_attn"] = False
    _close(pipe(CAT, guidance=LTX2Guidance(stg_blocks=STG), seed=7, **SIZE), frames, audio)


def test_float16(f16_device: gpucore.Device, tiny: tuple[Path, Any],
                 guided: tuple[np.ndarray, np.ndarray]) -> None:
    """float16 networks (the audio VAE and vocoder float32): diffusers' float32 video and
    waveform within float16's error (measured 3.9e-3 and 2.4e-3 at most, 5e-4 mean)."""
    pipe = LTX2Pipeline.from_pretrained(tiny[0], dtype=np.float16, device=f16_device)
    ours = pipe(CAT, guidance=LTX2Guidance(stg_blocks=STG), seed=7, **SIZE)
    for got, expected in zip((ours.frames[0], ours.audio[0]), guided, strict=True):
        assert np.abs(got - expected).max() < 1.5e-2
        assert np.abs(got - expected).mean() < 2e-3


def test_unguided_timestep_vae_equals_diffusers(first_device: gpucore.Device,
                                                tiny: tuple[Path, Any],
                                                tmp_path: Path) -> None:
    """Every guidance off (one pass a step) and a timestep-conditioned decoder: its
    decode_timestep and the noise drawn after the audio's, against diffusers; the timestep
    matters."""
    folder, reference = tiny
    shutil.copytree(folder, tmp_path / "ltx2")
    vae = tiny_ltx2_vae(**LTX2_VAE_TINY_TIMESTEP)
    vae.save_pretrained(tmp_path / "ltx2" / "vae")
    off = {"guidance_scale": 1.0, "audio_guidance_scale": 1.0, "stg_scale": 0.0,
           "audio_stg_scale": 0.0, "modality_scale": 1.0, "audio_modality_scale": 1.0}
    saved, reference.vae = reference.vae, vae
    try:
        frames, audio = _diffusers(reference, CAT, decode_timestep=0.05,
                                   decode_noise_scale=0.025, **off)
    finally:
        reference.vae = saved
    pipe = LTX2Pipeline.from_pretrained(tmp_path / "ltx2")
    guidance = LTX2Guidance(**{k: v for k, v in off.items()})
    ours = pipe(CAT, guidance=guidance, seed=7, decode_timestep=0.05,
                decode_noise_scale=0.025, **SIZE)
    _close(ours, frames, audio)
    later = pipe(CAT, guidance=guidance, seed=7, decode_timestep=0.5, **SIZE)
    assert np.abs(later.frames - ours.frames).mean() > 1e-3
    assert later.audio is not None
    silent = pipe(CAT, guidance=guidance, seed=7, audio=False, **SIZE)
    assert silent.audio is None


def test_memory_modes_give_the_plain_video(first_device: gpucore.Device,
                                           tiny: tuple[Path, Any]) -> None:
    """Loaded to host memory (as the CLI loads for a memory mode): the offloaded run's frames
    and waveform bit for bit under --medvram and --lowvram."""
    from diffusion.pipelines.sd.memory import MemoryMode

    pipe = LTX2Pipeline.from_pretrained(tiny[0], device=first_device, offload=True)
    settings = {**SIZE, "guidance": LTX2Guidance(stg_blocks=STG), "seed": 7}
    plain = pipe(CAT, **settings)
    for mode in (MemoryMode(medvram=True), MemoryMode(lowvram=True)):
        pipe.set_memory_mode(mode)
        got = pipe(CAT, **settings)
        np.testing.assert_array_equal(got.frames, plain.frames)
        np.testing.assert_array_equal(got.audio, plain.audio)
    pipe.set_memory_mode(MemoryMode())


@pytest.mark.parametrize(("settings", "message"), [
    ({"num_frames": 10}, r"frames must be 1 \+ 8k"),
    ({"height": 40, "guidance": LTX2Guidance(stg_blocks=STG)}, "multiples of 16"),
    ({"guidance": LTX2Guidance(stg_blocks=(2,))}, r"stg_blocks \[2\] must be transformer "
                                                  "blocks 0 to 1"),
    ({"guidance": LTX2Guidance(stg_blocks=())}, "no blocks are given"),
    ({"rng": "philox"}, "rng must be one of"),
    ({"num_inference_steps": 1}, "at least 2 steps"),
])
def test_bad_settings_refused(first_device: gpucore.Device, tiny: tuple[Path, Any],
                              settings: dict[str, Any], message: str) -> None:
    pipe = LTX2Pipeline.from_pretrained(tiny[0])
    with pytest.raises(ValueError, match=message):
        pipe(CAT, **{**SIZE, **settings})


def test_txt2vid(first_device: gpucore.Device, tiny: tuple[Path, Any], tmp_path: Path,
                 capsys: pytest.CaptureFixture[str]) -> None:
    """`txt2vid` at the family's guidance: the pipeline's frames (its prompts of 1024
    tokens, diffusers') as PNGs with its waveform in a WAV beside them; an MP4 with its AAC
    track at the vocoder's 24 kHz, or none with --no-audio; what LTX-2 does not take refused
    in one line before anything is written."""
    import wave

    av = pytest.importorskip("av")
    common = ("txt2vid", "--model", str(tiny[0]), "--width", "64", "--height", "32",
              "--frames", "9", "--steps", "2", "--seed", "7", "--dtype", "float32",
              "--stg-blocks", "1", "--prompt", CAT)
    expected = LTX2Pipeline.from_pretrained(tiny[0])(
        CAT, guidance=LTX2Guidance(stg_blocks=STG), seed=7,
        **{k: v for k, v in SIZE.items() if k != "max_sequence_length"})
    guided = (expected.frames[0], expected.audio[0])
    out, err = cli_ok(capsys, *common, "-o", str(tmp_path / "cat"))
    assert "seed: 7" in err and "audio.wav (a WAV beside the frames)" in err
    assert np.abs(png_frames(out) - guided[0]).mean() < 0.01  # through 8-bit PNGs
    with wave.open(str(Path(out) / "audio.wav")) as file:
        assert (file.getframerate(), file.getnchannels()) == (24000, 2)
        pcm = np.frombuffer(file.readframes(file.getnframes()), "<i2").reshape(-1, 2).T
    assert np.abs(pcm / 32767 - guided[1]).max() < 1e-4  # 16-bit rounding
    out, _ = cli_ok(capsys, *common, "-o", str(tmp_path / "cat.mp4"))
    with av.open(out) as container:
        track = container.streams.audio[0]
        assert (track.rate, track.codec_context.layout.nb_channels) == (24000, 2)
        assert sum(f.samples for f in container.decode(audio=0)) >= guided[1].shape[1]
    # --lowvram: the transformer's blocks streamed, the plain run's frames bit for bit
    low, err = cli_ok(capsys, *common, "--lowvram", "--verbose", "-o", str(tmp_path / "low"))
    assert "mode: --lowvram" in err
    np.testing.assert_array_equal(png_frames(low), png_frames(tmp_path / "cat"))
    out, _ = cli_ok(capsys, *common, "--no-audio", "-o", str(tmp_path / "quiet.mp4"))
    with av.open(out) as container:
        assert not container.streams.audio and len(container.streams.video) == 1
    for flags, message in ((("--lora", out), "--lora is not taken by LTX-2"),
                           (("--cache", "teacache"), "LTX-2 runs First Block Cache"),
                           (("--frames", "13"), r"frames must be 1 + 8k"),
                           (("--stg-blocks", "x"), "--stg-blocks must be block numbers"),
                           (("--sampler", "UniPC"), "flow-match Euler")):
        assert message in cli_error(capsys, *common, *flags, "-o", str(tmp_path / "x.mp4"))
    assert not (tmp_path / "x.mp4").exists()
    assert cli_error(capsys, "txt2img", "--model", str(tiny[0]), "--prompt", CAT) == (
        f"error: {tiny[0]} is an LTX-2 (video with audio) text-to-video model: make videos "
        f"with `python -m diffusion txt2vid --model {tiny[0]} --prompt ...`")


def test_ltx2_options_refused_elsewhere() -> None:
    """Another family's txt2vid refuses LTX-2's options in one line (cli.txt2vid calls this
    for every model that is not LTX-2)."""
    import argparse

    from diffusion.cli.txt2vid_ltx2 import refuse_ltx2_only

    refuse_ltx2_only(argparse.Namespace(no_audio=False, audio_cfg_scale=None, stg_blocks=None))
    with pytest.raises(ValueError, match=r"--no-audio is an LTX-2 option .* wan is another "
                       "family's model: leave it out"):
        refuse_ltx2_only(argparse.Namespace(no_audio=True, model="wan"))
