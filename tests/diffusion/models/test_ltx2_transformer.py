"""The LTX-2 audio-video transformer against diffusers' LTX2VideoTransformer3DModel on torch
CPU float32 (tiny random weights, loaded from the folder diffusers' save_pretrained writes):
two videos of odd latent sizes (3 frames of 5 x 7) with 11 audio latents each, their texts
masked to odd lengths; the positions diffusers makes from num_frames/height/width/fps and
audio_num_frames; one timestep per video, and one per token (image-to-video's first frame at
0). LTX-2.0's interleaved rotations and caption projections, LTX-2.3's split rotations, gated
heads, prompt modulations, cross timesteps and STG; float16 against float32."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

pytest.importorskip("diffusers", reason="diffusers is a test-only reference")
import torch
from ltx2_transformer_tiny import LTX23_TINY, tiny_ltx2_transformer, write_ltx2_transformer
from sd_tiny import ported
from support import assert_close

import gpucore
from diffusion.loaders.errors import WeightsError
from diffusion.loaders.ltx2 import load_ltx2_transformer
from diffusion.models.ltx2 import LTX2VideoTransformer3DModel
from gpustd import asarray

BATCH, FRAMES, HEIGHT, WIDTH, AUDIO = 2, 3, 5, 7, 11
TOKENS = FRAMES * HEIGHT * WIDTH
TEXT, AUDIO_TEXT = 7, 9
# measured up to 9e-6 over 3 inputs x 2 timestep layouts (float32 rounding: the timestep
# sinusoids of up to 937.5 rad alone differ by 3.5e-5 from float64's, torch's by as much)
TOL = 2e-5
# LTX-2.3's: up to 1.5e-5 over 4 inputs x its 3 calls (plain, STG, isolated)
TOL_23 = 4e-5
# float16 weights and streams against diffusers' float32: up to 4.6e-3 over 3 inputs
TOL_F16 = 1e-2


def _inputs(seed: int, text_width: int = 20, audio_text_width: int = 20) -> dict[str, Any]:
    """Random latents and texts of both streams, text masks keeping 5 and 3 of 7 tokens
    (video) and 9 and 7 of 9 (audio), one timestep per video."""
    rng = np.random.default_rng(seed)
    mask = np.zeros((BATCH, TEXT), np.float32)
    mask[0, :5], mask[1, :3] = 1, 1
    audio_mask = np.zeros((BATCH, AUDIO_TEXT), np.float32)
    audio_mask[0], audio_mask[1, :7] = 1, 1
    return {
        "hidden_states": rng.standard_normal((BATCH, TOKENS, 8)).astype(np.float32),
        "audio_hidden_states": rng.standard_normal((BATCH, AUDIO, 6)).astype(np.float32),
        "encoder_hidden_states": rng.standard_normal((BATCH, TEXT, text_width)
                                                     ).astype(np.float32),
        "audio_encoder_hidden_states": rng.standard_normal((BATCH, AUDIO_TEXT,
                                                            audio_text_width)
                                                           ).astype(np.float32),
        "timestep": np.array([937.5, 312.0], np.float32),
        "encoder_attention_mask": mask, "audio_encoder_attention_mask": audio_mask,
        "num_frames": FRAMES, "height": HEIGHT, "width": WIDTH, "fps": 25.0,
        "audio_num_frames": AUDIO}


_TENSORS = ("hidden_states", "audio_hidden_states", "encoder_hidden_states",
            "audio_encoder_hidden_states")


def _reference(model: Any, inputs: dict[str, Any]) -> tuple[np.ndarray, np.ndarray]:
    """diffusers' (video, audio) velocities of `inputs`."""
    args = {k: torch.from_numpy(v) if isinstance(v, np.ndarray) else v
            for k, v in inputs.items()}
    with torch.no_grad():
        video, audio = model(**args, return_dict=False)
    return video.numpy(), audio.numpy()


def _ours(model: LTX2VideoTransformer3DModel, inputs: dict[str, Any]
          ) -> tuple[np.ndarray, np.ndarray]:
    args = {k: asarray(v, device=model.device) if k in _TENSORS else v
            for k, v in inputs.items()}
    video, audio = model(**args)
    return video.numpy(), audio.numpy()


def _differs(a: np.ndarray, b: np.ndarray) -> bool:
    """Whether b is visibly not a: a mean change over 3% of a's mean size (another video
    moves the tiny model's audio velocity by 7%, another audio its video's by 20%)."""
    return bool(np.abs(a - b).mean() > 0.03 * np.abs(a).mean())


def test_ltx2_equals_diffusers(device: gpucore.Device, tmp_path: Path) -> None:
    """LTX-2.0 (interleaved rotations, caption projections) loaded from a diffusers folder:
    one timestep per video, then image-to-video's per-token timesteps (the first frame's
    tokens at 0, the audio's one per clip)."""
    reference = write_ltx2_transformer(tmp_path / "transformer")
    ours = load_ltx2_transformer(tmp_path, device=device)
    inputs = _inputs(1)
    got = _ours(ours, inputs)
    for mine, theirs in zip(got, _reference(reference, inputs), strict=True):
        assert_close(mine, theirs, tol=TOL)
    first = np.arange(TOKENS) < HEIGHT * WIDTH
    per_token = {**inputs, "timestep": inputs["timestep"][:, None] * ~first,
                 "audio_timestep": inputs["timestep"]}
    got_i2v = _ours(ours, per_token)
    for mine, theirs in zip(got_i2v, _reference(reference, per_token), strict=True):
        assert_close(mine, theirs, tol=TOL)
    assert _differs(got[0], got_i2v[0])
    # the positions given as diffusers' own coords instead of the sizes
    coords = {"video_coords": reference.rope.prepare_video_coords(
        BATCH, FRAMES, HEIGHT, WIDTH, "cpu", fps=25.0).numpy(),
        "audio_coords": reference.audio_rope.prepare_audio_coords(BATCH, AUDIO, "cpu").numpy()}
    for mine, before in zip(_ours(ours, {**inputs, **coords}), got, strict=True):
        assert_close(mine, before, tol=1e-6)


def test_ltx2_inputs_matter(device: gpucore.Device) -> None:
    """The premise of the comparisons: the text changes both velocities, the audio changes
    the video's and the video the audio's (their attention to each other runs), and the
    masked text tokens change nothing."""
    ours = ported(LTX2VideoTransformer3DModel, tiny_ltx2_transformer(), device)
    inputs = _inputs(2)
    video, audio = _ours(ours, inputs)
    rng = np.random.default_rng(3)
    text = {**inputs, "encoder_hidden_states": rng.standard_normal(
        (BATCH, TEXT, 20)).astype(np.float32)}
    audio_text = {**inputs, "audio_encoder_hidden_states": rng.standard_normal(
        (BATCH, AUDIO_TEXT, 20)).astype(np.float32)}
    other_audio = {**inputs, "audio_hidden_states": rng.standard_normal(
        (BATCH, AUDIO, 6)).astype(np.float32)}
    other_video = {**inputs, "hidden_states": rng.standard_normal(
        (BATCH, TOKENS, 8)).astype(np.float32)}
    assert _differs(video, _ours(ours, text)[0])
    assert _differs(audio, _ours(ours, audio_text)[1])
    assert _differs(video, _ours(ours, other_audio)[0])
    assert _differs(audio, _ours(ours, other_video)[1])
    masked = {**inputs, "encoder_hidden_states": inputs["encoder_hidden_states"].copy()}
    masked["encoder_hidden_states"][1, 3:] = 9.0
    assert_close(_ours(ours, masked)[0], video, tol=1e-6)


def test_ltx23_equals_diffusers(device: gpucore.Device) -> None:
    """LTX-2.3's parts (split rotations, gated heads, the text query and key/value
    modulations by sigma, cross timesteps, no caption projection, no feed-forward biases) and
    STG on the second block, which visibly moves both velocities; the streams isolated, with
    IC-LoRA's video self-attention mask and LTX-2.5's keyframe embedding; the blocks' norms
    with weights (norm_elementwise_affine)."""
    reference = tiny_ltx2_transformer(**LTX23_TINY, norm_elementwise_affine=True)
    ours = ported(LTX2VideoTransformer3DModel, reference, device)
    inputs = {**_inputs(4, text_width=20, audio_text_width=12), "use_cross_timestep": True,
              "sigma": np.array([0.9375, 0.312], np.float32),
              "audio_sigma": np.array([0.5, 0.75], np.float32)}
    plain = _ours(ours, inputs)
    for mine, theirs in zip(plain, _reference(reference, inputs), strict=True):
        assert_close(mine, theirs, tol=TOL_23)
    stg = {**inputs, "spatio_temporal_guidance_blocks": [1]}
    perturbed = _ours(ours, stg)
    for mine, theirs in zip(perturbed, _reference(reference, stg), strict=True):
        assert_close(mine, theirs, tol=TOL_23)
    assert _differs(plain[0], perturbed[0]) and _differs(plain[1], perturbed[1])
    # the streams kept apart, a soft video self-attention mask, keyframe-marked tokens
    rng = np.random.default_rng(5)
    apart = {**inputs, "isolate_modalities": True,
             "video_self_attention_mask": rng.uniform(size=(BATCH, TOKENS, TOKENS)
                                                      ).astype(np.float32),
             "video_keyframes_mask": (np.arange(TOKENS) < HEIGHT * WIDTH
                                      ).astype(np.float32)[None, :, None].repeat(BATCH, 0)}
    for mine, theirs in zip(_ours(ours, apart), _reference(reference, apart), strict=True):
        assert_close(mine, theirs, tol=TOL_23)


def test_ltx2_float16(device: gpucore.Device) -> None:
    """float16 weights and streams against diffusers' float32."""
    if not device.has_f16:
        pytest.skip(f"{device.info.label} has no shader-f16")
    reference = tiny_ltx2_transformer()
    ours = ported(LTX2VideoTransformer3DModel, reference, device, dtype=np.float16)
    inputs = _inputs(5)
    for mine, theirs in zip(_ours(ours, inputs), _reference(reference, inputs), strict=True):
        assert_close(mine.astype(np.float32), theirs, tol=TOL_F16)


def test_ltx2_refuses_bad_input(device: gpucore.Device, tmp_path: Path) -> None:
    """One-line errors: a grid that does not make the tokens, a timestep of the wrong
    shape, a mask of the wrong shape, STG masks mixing perturbed and plain elements, a
    folder of another model."""
    ours = ported(LTX2VideoTransformer3DModel, tiny_ltx2_transformer(num_layers=1), device)
    inputs = _inputs(6)
    bad: list[tuple[dict[str, Any], str]] = [
        ({"height": 4}, "make 84 video tokens"),
        ({"timestep": np.zeros((BATCH, 3), np.float32)}, "timestep must be"),
        ({"encoder_attention_mask": np.ones(TEXT)}, "encoder_attention_mask must be"),
        ({"video_coords": np.zeros((BATCH, 3, TOKENS, 2))}, "give both video_coords"),
    ]
    for change, message in bad:
        with pytest.raises(ValueError, match=message):
            _ours(ours, {**inputs, **change})
    stg = tiny_ltx2_transformer(num_layers=1, perturbed_attn=True)
    with pytest.raises(ValueError, match="perturbs some batch elements"):
        _ours(ported(LTX2VideoTransformer3DModel, stg, device),
              {**inputs, "spatio_temporal_guidance_blocks": [0],
               "perturbation_mask": np.array([0.0, 1.0])})
    (tmp_path / "config.json").write_text('{"_class_name": "WanTransformer3DModel"}')
    with pytest.raises(WeightsError, match="not an LTX2VideoTransformer3DModel"):
        load_ltx2_transformer(tmp_path, device=device)
