"""Wan's VAE in float32 under a float16 model (diffusion/pipelines/vae_float32.py, as the
pictures' families): a float16 VAE whose frames (or the encode of a first frame) overflow is
made float32 from its own weights, with a warning, and the video made again, giving diffusers'
float32 frames of the same latents instead of black ones; `txt2vid --no-half-vae` and the
server's `no_half_vae` start there."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest

pytest.importorskip("diffusers", reason="diffusers is a test-only reference (extra: reference)")
from wan_tiny import tiny_wan_pipeline

import diffusion.cli.main as cli
import gpucore
from diffusion.loaders.wan import WanFiles
from diffusion.pipelines.sd.memory import MemoryMode
from diffusion.pipelines.vae_float32 import VaeRevertWarning

RED = "a red cube on a wooden table"
SETTINGS = dict(height=32, width=48, num_frames=5, num_inference_steps=1, guidance_scale=4.0,
                seed=9)


def _overflowing(folder: Path, part: str) -> Any:
    """The folder's diffusers VAE with its decoder's (or encoder's) conv_in times 1e5, so that
    the stream passes float16's 65504 (the VAE's RMS norms take the scale out again: its
    float32 output is an ordinary one), rounded to float16 as a float16 model holds it; saved
    back, and returned (float32, CPU)."""
    import diffusers
    import torch

    vae = diffusers.AutoencoderKLWan.from_pretrained(folder / "vae")
    with torch.no_grad():
        getattr(vae, part).conv_in.weight.mul_(1e5)
        getattr(vae, part).conv_in.bias.mul_(1e5)
        for p in vae.parameters():
            p.copy_(p.half().float())
    vae.save_pretrained(folder / "vae")
    return vae


@pytest.fixture(scope="module")
def overflowing(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Any]:
    """A tiny Wan 2.1 folder whose VAE decoder overflows float16, and that VAE."""
    root = tmp_path_factory.mktemp("wan-overflow")
    tiny_wan_pipeline(root)
    return root / "wan", _overflowing(root / "wan", "decoder")


def _diffusers_frames(vae: Any, latents: np.ndarray) -> np.ndarray:
    """Reference: diffusers' WanPipeline decode in float32 on the CPU, (T, H, W, 3) in [0, 1]."""
    import torch

    mean = torch.tensor(vae.config.latents_mean).view(1, -1, 1, 1, 1)
    std = torch.tensor(vae.config.latents_std).view(1, -1, 1, 1, 1)
    with torch.no_grad():
        z = torch.from_numpy(latents) * std + mean
        video = vae.decode(z).sample.numpy()
    return np.clip(video / 2 + 0.5, 0, 1)[0].transpose(1, 2, 3, 0)


def test_a_nan_wan_vae_is_made_float32_and_decodes_again(
        f16_device: gpucore.Device, overflowing: tuple[Path, Any]) -> None:
    """The VAE pass of a float16 pipeline with `offload`: one warning, the latents decoded
    again by a float32 copy that is offloaded as the VAE was, diffusers' float32 frames of
    them. (The VAE alone: the tiny transformer's float16 kernels would be most of the
    test's time, and the pass is the same one the pipeline's call ends with.)"""
    from diffusion.pipelines.video import WanPipeline
    from gpustd.nn.offload import device_bytes

    folder, reference = overflowing
    pipe = WanPipeline.from_pretrained(folder, dtype=np.float16, device=f16_device,
                                       offload=True)
    half = pipe.vae
    latents = np.random.default_rng(2).standard_normal((1, 4, 2, 4, 6)).astype(np.float32)
    with pytest.warns(VaeRevertWarning, match="^the model's VAE.* gave NaN .* float16 decode "
                      ".*now runs in float32") as said:
        video = pipe._with_vae(lambda vae: pipe.decode(latents))
    assert len(said) == 1
    assert pipe.vae.decoder.conv_in.weight.dtype == np.float32
    assert half.decoder.conv_in.weight.dtype == np.float16
    assert device_bytes(pipe.vae) == 0  # offloaded after its turn, as the float16 one was
    assert np.isfinite(video).all() and video.std() > 0.05  # frames, not a flat fill
    assert np.abs(video[0] - _diffusers_frames(reference, latents)).max() < 2e-3
    assert not pipe.use_float32_vae()  # float32 now: nothing left to revert


def test_the_first_frame_encode_reverts_under_a_memory_mode(
        f16_device: gpucore.Device, tmp_path: Path) -> None:
    """Wan 2.2 TI2V 5B's first-frame encode under --medvram, its VAE encoder overflowing
    float16: the encode's NaN is the VAE's (not the transformer's, which it would reach), the
    mode's VAE unit becomes the float32 copy and the latents are made."""
    from diffusion.pipelines.video import WanPipeline
    from diffusion.pipelines.video.wan_image import first_frame_latents

    tiny_wan_pipeline(tmp_path, wan22=True)
    _overflowing(tmp_path / "wan22", "encoder")
    pipe = WanPipeline.from_pretrained(tmp_path / "wan22", dtype=np.float16, device=f16_device,
                                       offload=True)
    pipe.set_memory_mode(MemoryMode(medvram=True))
    half = pipe.vae
    picture = (np.random.default_rng(3).random((24, 40, 3)) * 255).astype(np.uint8)
    with pytest.warns(VaeRevertWarning):
        latents = pipe._with_vae(lambda vae: first_frame_latents(vae, picture, 32, 64))
    assert pipe.vae.encoder.conv_in.weight.dtype == np.float32
    residency = pipe._memory.residency
    assert pipe.vae in residency and half not in residency
    assert np.isfinite(latents).all() and latents.std() > 0.05


def test_the_call_ends_with_the_reverting_pass(first_device: gpucore.Device,
                                               overflowing: tuple[Path, Any],
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    """The pipeline's call decodes through the reverting pass: a float32 VAE whose frames
    still come out NaN ends the run in one line naming the VAE, with no frames."""
    from diffusion.pipelines.finite import NonFiniteError
    from diffusion.pipelines.video import WanPipeline

    pipe = WanPipeline.from_pretrained(overflowing[0], device=first_device)
    decode = pipe.vae.decode
    monkeypatch.setattr(pipe.vae, "decode", lambda z, **kw: decode(z, **kw) * np.nan)
    with pytest.raises(NonFiniteError, match=r"VAE's decode gave NaN.*runs in float32 already"):
        pipe(RED, **SETTINGS)


def test_txt2vid_takes_no_half_vae(overflowing: tuple[Path, Any],
                                   monkeypatch: pytest.MonkeyPatch, tmp_path: Path,
                                   capsys: pytest.CaptureFixture[str]) -> None:
    """`txt2vid --no-half-vae` (and img2vid's): the loaded pipeline's VAE made float32, the
    line said; not without the flag."""
    from diffusion.pipelines import video as video_pipelines

    made: list[str] = []

    class Loaded:
        memory_mode = None

        def use_float32_vae(self) -> bool:
            made.append("made")
            return True

        def set_memory_mode(self, mode: Any) -> None:
            pass

        def __call__(self, *args: Any, **kwargs: Any) -> np.ndarray:
            return np.full((1, 5, 32, 48, 3), 0.5, np.float32)

    monkeypatch.setattr(video_pipelines.WanPipeline, "from_pretrained",
                        classmethod(lambda cls, *args, **kwargs: Loaded()))
    argv = ["txt2vid", "--model", str(overflowing[0]), "--width", "48", "--height", "32",
            "--frames", "5", "--steps", "1", "--seed", "9", "--prompt", RED]
    for flag, expected in ((["--no-half-vae"], ["made"]), ([], ["made"])):
        code = cli.main([*argv, *flag, "-o", str(tmp_path / f"frames{len(flag)}")])
        err = capsys.readouterr().err
        assert code == 0, err
        assert made == expected
        assert ("no-half-vae: the VAE runs in float32" in err) == bool(flag)


def test_the_server_video_jobs_take_no_half_vae(monkeypatch: pytest.MonkeyPatch) -> None:
    """The server's --no-half-vae reaches the Wan pipelines its video jobs load."""
    pytest.importorskip("fastapi", reason="the server extra is not installed")
    from diffusion.pipelines import video as video_pipelines
    from diffusion.server.api import video_pipelines as served

    made: list[str] = []
    pipe = SimpleNamespace(use_float32_vae=lambda: made.append("made") or True)
    monkeypatch.setattr(video_pipelines.WanPipeline, "from_pretrained",
                        lambda *args, **kwargs: pipe)
    monkeypatch.setattr(served, "_loaded", {})
    model = (Path("wan"), WanFiles())
    assert served.video_pipeline(model, None, object(), no_half_vae=True) is pipe
    assert made == ["made"]
    monkeypatch.setattr(served, "_loaded", {})
    served.video_pipeline(model, None, object())
    assert made == ["made"]  # not without it


def test_the_clamp_keeps_nan(first_device: gpucore.Device) -> None:
    """Wan's and Qwen-Image's VAE outputs are clamped to [-1, 1] as diffusers' torch.clamp
    does, NaN kept (a WGSL max drops it on GPUs, which turned an overflowed decode into
    saturated noise that the NaN check could not see)."""
    from diffusion.models.qwen_image_vae import _clamp_unit
    from gpustd import asarray

    for dtype in (np.float32, np.float16) if first_device.has_f16 else (np.float32,):
        values = np.array([np.nan, 2.0, -3.0, 0.5, -np.inf, np.inf], dtype)
        got = _clamp_unit(asarray(values, device=first_device)).numpy()
        np.testing.assert_array_equal(got, np.array([np.nan, 1, -1, 0.5, -1, 1], dtype))
