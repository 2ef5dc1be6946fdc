"""Wan 2.2 Animate's transformer against diffusers' WanAnimateTransformer3DModel on torch CPU
(a tiny random model whose weights are scaled until the pose and the face visibly matter)."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("diffusers", reason="diffusers is a test-only reference")
import torch
from sd_tiny import state_dict
from support import assert_close
from wan_animate_tiny import ANIMATE_TINY, TEXT_TOKENS, tiny_animate_transformer

import gpucore
from diffusion.models.wan_animate import WanAnimateTransformer3DModel
from gpustd import asarray

# measured (relative, lavapipe): float32 within 2.7e-6 of diffusers, float16 within 2.1e-3
TOL, TOL_F16 = 5e-6, 5e-3
LATENT, SIZE = ANIMATE_TINY["latent_channels"], ANIMATE_TINY["motion_encoder_size"]


def _inputs(rng: np.random.Generator, batch: int, frames: int, height: int, width: int
            ) -> dict[str, np.ndarray]:
    """Random latents of `frames` latent frames, text, CLIP states, pose latents (one frame
    fewer) and face pixels in -1..1 (4 (frames - 2) + 1 of them, as the pipeline cuts)."""
    def normal(*shape: int) -> np.ndarray:
        return rng.standard_normal(shape).astype(np.float32)

    return {"latents": normal(batch, 2 * LATENT + 4, frames, height, width),
            "text": normal(batch, TEXT_TOKENS, ANIMATE_TINY["text_dim"]),
            "image": normal(batch, 5, ANIMATE_TINY["image_dim"]),
            "pose": normal(batch, LATENT, frames - 1, height, width),
            "face": rng.uniform(-1, 1, (batch, 3, 4 * (frames - 2) + 1, SIZE, SIZE)).astype(
                np.float32)}


def _reference(model: torch.nn.Module, x: dict[str, np.ndarray], timestep: np.ndarray
               ) -> np.ndarray:
    t = {k: torch.from_numpy(v) for k, v in x.items()}
    with torch.no_grad():
        return model(t["latents"], torch.from_numpy(timestep), t["text"], t["image"],
                     t["pose"], t["face"]).sample.numpy()


def _ours(model: WanAnimateTransformer3DModel, x: dict[str, np.ndarray], timestep: np.ndarray,
          device: gpucore.Device, **options: object) -> np.ndarray:
    def on(name: str) -> object:
        return asarray(x[name], device=device)

    latents = asarray(x["latents"], dtype=model.dtype, device=device)  # the rest cast inside
    return model(latents, timestep, on("text"), encoder_hidden_states_image=on("image"),
                 pose_hidden_states=on("pose"), face_pixel_values=on("face"),
                 **options).numpy()


def test_animate_transformer_equals_diffusers(device: gpucore.Device) -> None:
    """Two videos of 4 latent frames (9 face frames each: 18 crops through the motion encoder
    4 at a time), 6 x 10 latents; a new pose and a new face each visibly change the flow;
    the face tokens encoded once give the same flow."""
    reference = tiny_animate_transformer()
    ours = WanAnimateTransformer3DModel(dict(reference.config), device=device)
    ours.load_state_dict(state_dict(reference))
    rng = np.random.default_rng(0)
    x = _inputs(rng, 2, 4, 6, 10)
    timestep = np.array([700.0, 250.5], np.float32)
    expected = _reference(reference, x, timestep)
    got = _ours(ours, x, timestep, device)
    assert got.shape == (2, LATENT, 4, 6, 10)
    assert_close(got, expected, tol=TOL)
    scale = np.abs(expected).mean()
    new_pose = _reference(reference, {**x, "pose": 2 * rng.standard_normal(
        x["pose"].shape).astype(np.float32)}, timestep)
    assert np.abs(new_pose - expected).mean() > 0.1 * scale
    new_face = _reference(reference, {**x, "face": rng.uniform(-1, 1, x["face"].shape).astype(
        np.float32)}, timestep)
    assert np.abs(new_face - expected).mean() > 0.1 * scale
    context = ours.encode_face(asarray(x["face"], device=device), batch_size=7)
    assert context.shape == (2, 4, ANIMATE_TINY["face_encoder_num_heads"] + 1, 24)
    again = ours(asarray(x["latents"], device=device), timestep,
                 asarray(x["text"], device=device),
                 encoder_hidden_states_image=asarray(x["image"], device=device),
                 pose_hidden_states=asarray(x["pose"], device=device),
                 face_context=context).numpy()
    assert_close(again, expected, tol=TOL)


def test_animate_one_pose_and_face_for_the_batch(first_device: gpucore.Device) -> None:
    """One pose video and one face video for a batch of two (diffusers given them twice), odd
    sizes: 3 latent frames, 4 x 6 latents, 5 face frames; bad inputs get one-line errors."""
    reference = tiny_animate_transformer(seed=33)
    ours = WanAnimateTransformer3DModel(dict(reference.config), device=first_device)
    ours.load_state_dict(state_dict(reference))
    rng = np.random.default_rng(1)
    x = _inputs(rng, 2, 3, 4, 6)
    one = {**x, "pose": x["pose"][:1], "face": x["face"][:1]}
    both = {**x, "pose": np.repeat(one["pose"], 2, 0), "face": np.repeat(one["face"], 2, 0)}
    timestep = np.array([900.0, 30.0], np.float32)
    expected = _reference(reference, both, timestep)
    assert_close(_ours(ours, one, timestep, first_device), expected, tol=TOL)
    with pytest.raises(ValueError, match="one frame fewer"):
        _ours(ours, {**x, "pose": x["latents"][:, :LATENT]}, timestep, first_device)
    with pytest.raises(ValueError, match=f"crop the faces to {SIZE} x {SIZE}"):
        _ours(ours, {**x, "face": x["face"][..., :8]}, timestep, first_device)
    with pytest.raises(ValueError, match="do not divide the latent video's 18 patches"):
        # 9 face frames give 3 + 1 face tokens per head, 3 latent frames want 3
        _ours(ours, {**x, "face": np.concatenate([x["face"], x["face"][:, :, :4]], axis=2)},
              timestep, first_device)
    with pytest.raises(ValueError, match="for 2 videos and a batch of 3"):
        _ours(ours, {**x, "latents": np.concatenate([x["latents"], x["latents"][:1]])},
              np.array([1.0, 2.0, 3.0], np.float32), first_device)
    with pytest.raises(ValueError, match="give pose_hidden_states"):
        ours(asarray(x["latents"], device=first_device), timestep,
             asarray(x["text"], device=first_device))


def test_animate_transformer_f16(f16_device: gpucore.Device) -> None:
    reference = tiny_animate_transformer()
    ours = WanAnimateTransformer3DModel(dict(reference.config), dtype=np.float16,
                                        device=f16_device)
    ours.load_state_dict(state_dict(reference))
    x = _inputs(np.random.default_rng(3), 1, 3, 4, 6)
    timestep = np.array([500.0], np.float32)
    expected = _reference(reference, x, timestep)
    got = _ours(ours, x, timestep, f16_device)
    assert got.dtype == np.float16
    assert_close(got.astype(np.float32), expected, tol=TOL_F16)


@pytest.mark.nodevice
def test_animate_config_refused() -> None:
    with pytest.raises(ValueError, match="must divide num_layers"):
        WanAnimateTransformer3DModel({**ANIMATE_TINY, "inject_face_latents_blocks": 3})
    with pytest.raises(ValueError, match=r"must be 2 \* latent_channels \+ 4"):
        WanAnimateTransformer3DModel({**ANIMATE_TINY, "in_channels": 13})
