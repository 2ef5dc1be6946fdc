"""The Motif-Video transformer against diffusers' MotifVideoTransformer3DModel on torch CPU
(a tiny random model whose weights are scaled until the prompt visibly matters): dual and
single blocks with the shared text cross-attention, a DDT decoder block, a padded prompt
and, for image-to-video, SigLIP picture states; patch grids of odd sizes."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

pytest.importorskip("diffusers", reason="diffusers is a test-only reference")
import torch
from motif_tiny import MOTIF_TINY, tiny_motif_transformer
from sd_tiny import ported
from support import assert_close

import gpucore
from diffusion.models.motif_video import MotifVideoTransformer3DModel

TOL = 2e-5  # float32: measured 2.1e-6 (float16: 2.9e-3 against 1e-2 of the flow's rms)


def _inputs(seed: int) -> dict[str, Any]:
    """Two samples of 3 latent frames on a 5 x 7 patch grid; the first prompt's last 3 of 9
    tokens padding; 4 picture tokens each."""
    rng = np.random.default_rng(seed)

    def normal(*shape: int) -> np.ndarray:
        return rng.standard_normal(shape).astype(np.float32)

    mask = np.ones((2, 9), bool)
    mask[0, 6:] = False
    return dict(latents=normal(2, MOTIF_TINY["in_channels"], 3, 10, 14),
                text=normal(2, 9, MOTIF_TINY["text_embed_dim"]),
                other=normal(2, 9, MOTIF_TINY["text_embed_dim"]), mask=mask,
                image=normal(2, 4, MOTIF_TINY["image_embed_dim"]), t=np.float32([700.0, 250.0]))


def _reference(data: dict[str, Any], text: np.ndarray, image: bool) -> np.ndarray:
    with torch.no_grad():
        return tiny_motif_transformer()(
            torch.from_numpy(data["latents"]), torch.from_numpy(data["t"]),
            torch.from_numpy(text), torch.from_numpy(data["mask"]),
            image_embeds=torch.from_numpy(data["image"]) if image else None).sample.numpy()


def _ours(model: MotifVideoTransformer3DModel, data: dict[str, Any], text: np.ndarray,
          image: bool) -> np.ndarray:
    return model(data["latents"], data["t"], text, data["mask"],
                 data["image"] if image else None).numpy().astype(np.float32)


@pytest.mark.parametrize("image", [False, True])
def test_motif_transformer(device: gpucore.Device, image: bool) -> None:
    """Text-to-video and image-to-video calls equal diffusers', also from a context made
    once (the picture's tokens before the text); another prompt changes the flow visibly
    (the text is read)."""
    data = _inputs(3)
    ours = ported(MotifVideoTransformer3DModel, tiny_motif_transformer(), device)
    expected = _reference(data, data["text"], image)
    assert_close(_ours(ours, data, data["text"], image), expected, tol=TOL)
    picture = data["image"] if image else None
    once = ours(data["latents"], data["t"], None, data["mask"],
                context=ours.encode_text(data["text"], picture),
                image_tokens=0 if picture is None else picture.shape[1])
    assert_close(once.numpy(), expected, tol=TOL)
    other = _reference(data, data["other"], image)
    assert np.abs(other - expected).mean() > 0.02 * np.abs(expected).mean()


def test_motif_transformer_f16(f16_device: gpucore.Device) -> None:
    data = _inputs(5)
    ours = ported(MotifVideoTransformer3DModel, tiny_motif_transformer(), f16_device,
                  dtype=np.float16)
    expected = _reference(data, data["text"], True)
    got = _ours(ours, data, data["text"], True)
    rms = float(np.sqrt((expected ** 2).mean()))
    assert_close(got, expected, tol=1e-2, atol=1e-2 * rms)


def test_motif_transformer_refusals(device: gpucore.Device) -> None:
    with pytest.raises(ValueError, match="rope_axes_dim"):
        MotifVideoTransformer3DModel({**MOTIF_TINY, "rope_axes_dim": (4, 4, 2)})
    with pytest.raises(ValueError, match="mlp_ratio"):
        MotifVideoTransformer3DModel({**MOTIF_TINY, "mlp_ratio": 2.5})
    text_only = MotifVideoTransformer3DModel({**MOTIF_TINY, "image_embed_dim": None},
                                             device=device)
    with pytest.raises(ValueError, match="no image_embedder"):
        text_only.encode_text(np.zeros((1, 3, 32), np.float32),
                              np.zeros((1, 2, 16), np.float32))
