"""The Sana Video transformer against diffusers' SanaVideoTransformer3DModel on torch CPU
(tiny random weights): float32 and float16, odd grids, masked captions."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

pytest.importorskip("diffusers", reason="diffusers is a test-only reference")
import torch
from sana_video_tiny import SANA_VIDEO_TINY, tiny_sana_video_transformer
from sd_tiny import state_dict
from support import assert_close

import gpucore
from diffusion.models.sana_video import SanaVideoTransformer3DModel
from gpustd import asarray, nn

# float32: measured 2.0e-5 (float16: 6.7e-3 against its 1e-2); small timesteps as in test_sana
TOL = 5e-5
CHANNELS, WIDTH = SANA_VIDEO_TINY["in_channels"], SANA_VIDEO_TINY["caption_channels"]


def _inputs(seed: int, batch: int, size: tuple[int, int, int], tokens: int,
            lengths: list[int]) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    mask = np.arange(tokens)[None, :] < np.asarray(lengths)[:, None]
    return {"latents": rng.standard_normal((batch, CHANNELS, *size)).astype(np.float32),
            "states": rng.standard_normal((batch, tokens, WIDTH)).astype(np.float32),
            "mask": mask}


def _reference(model: torch.nn.Module, x: dict[str, np.ndarray], t: np.ndarray) -> np.ndarray:
    with torch.no_grad():
        return model(torch.from_numpy(x["latents"]), torch.from_numpy(x["states"]),
                     torch.from_numpy(t), encoder_attention_mask=torch.from_numpy(
                         x["mask"].astype(np.int64)), return_dict=False)[0].numpy()


def _ours(reference: torch.nn.Module, device: gpucore.Device, dtype: Any = np.float32
          ) -> SanaVideoTransformer3DModel:
    ours = SanaVideoTransformer3DModel(dict(reference.config), dtype=dtype, device=device)
    ours.load_state_dict(state_dict(reference))
    return ours


def _run(ours: SanaVideoTransformer3DModel, x: dict[str, np.ndarray], t: np.ndarray,
         dtype: Any = np.float32) -> np.ndarray:
    device = ours.device
    return ours(asarray(x["latents"], dtype=dtype, device=device),
                asarray(x["states"], device=device), t, None, x["mask"]).numpy()


def test_sana_video_equals_diffusers(device: gpucore.Device) -> None:
    """Two videos of 3 frames of 6 x 10 latents (3 x 5 patches), captions of 5 and 9 tokens
    masked in 11: diffusers' output; the caption, the frame order (rotary positions, the
    temporal conv) visibly matter."""
    reference = tiny_sana_video_transformer()
    ours = _ours(reference, device)
    x = _inputs(1, 2, (3, 6, 10), 11, [5, 9])
    t = np.array([130.0, 410.0], np.float32)
    got = _run(ours, x, t)
    assert_close(got, _reference(reference, x, t), tol=TOL)
    swapped = dict(x, states=x["states"][::-1].copy(), mask=x["mask"][::-1].copy())
    changed = _run(ours, swapped, t)
    assert np.abs(changed[1] - got[1]).mean() > 0.1 * np.abs(got[1]).mean()
    reversed_frames = _run(ours, dict(x, latents=x["latents"][:, :, ::-1].copy()), t)
    assert np.abs(reversed_frames[:, :, ::-1] - got).mean() > 0.05 * np.abs(got).mean()


def test_frame_timesteps_equal_diffusers(device: gpucore.Device) -> None:
    """Image-to-video's timesteps, one per latent frame (the first 0, its latents held), as
    (B, F): diffusers' output given them per token (SanaImageToVideoPipeline's (B, 1, F, h,
    w)); they visibly differ from the uniform timestep's."""
    reference = tiny_sana_video_transformer()
    ours = _ours(reference, device)
    x = _inputs(6, 2, (3, 4, 6), 5, [5, 3])
    t = np.array([[0.0, 130.0, 130.0], [0.0, 410.0, 410.0]], np.float32)
    per_token = np.broadcast_to(t[:, None, :, None, None], (2, 1, 3, 2, 3)).copy()
    got = _run(ours, x, t)
    assert_close(got, _reference(reference, x, per_token), tol=TOL)
    uniform = _run(ours, x, t[:, 1].copy())
    assert np.abs(uniform - got).mean() > 0.02 * np.abs(got).mean()


def test_sana_video_f16(f16_device: gpucore.Device) -> None:
    """float16 weights, 2 frames of 4 x 6 latents, the captions float32 as Gemma 2 returns
    them: diffusers' float32 output to float16 error."""
    reference = tiny_sana_video_transformer()
    ours = _ours(reference, f16_device, np.float16)
    x = _inputs(4, 1, (2, 4, 6), 7, [7])
    t = np.array([600.0], np.float32)
    got = _run(ours, x, t, np.float16)
    assert got.dtype == np.float16
    assert_close(got.astype(np.float32), _reference(reference, x, t), tol=1e-2)


def test_full_size_names_and_shapes(first_device: gpucore.Device) -> None:
    """SANA-Video 2B's full config (diffusers' defaults): every parameter diffusers' has, of
    its shape (allocated neither side)."""
    import diffusers
    from accelerate import init_empty_weights

    with init_empty_weights():
        reference = diffusers.SanaVideoTransformer3DModel()
    with nn.deferred():
        ours = SanaVideoTransformer3DModel(dict(reference.config), dtype=np.float16,
                                           device=first_device)
    assert {k: tuple(v.shape) for k, v in ours.named_parameters()} == {
        k: tuple(v.shape) for k, v in reference.state_dict().items()}


def test_bad_inputs_get_one_line(first_device: gpucore.Device) -> None:
    ours = SanaVideoTransformer3DModel(SANA_VIDEO_TINY, device=first_device)
    x = _inputs(5, 1, (1, 4, 4), 3, [3])
    latents = asarray(x["latents"], device=first_device)
    states = asarray(x["states"], device=first_device)
    with pytest.raises(ValueError, match="latent video"):
        ours(asarray(x["latents"][:, :, 0], device=first_device), states, [5.0])
    with pytest.raises(ValueError, match="channels"):
        ours(asarray(x["latents"][:, :2], device=first_device), states, [5.0])
    with pytest.raises(ValueError, match="multiple"):
        ours(asarray(x["latents"][..., :3], device=first_device), states, [5.0])
    with pytest.raises(ValueError, match="guidance"):
        ours(latents, states, [5.0], [0.1])
