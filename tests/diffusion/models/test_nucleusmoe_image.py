"""The NucleusMoE-Image transformer and its mixture of experts against diffusers'
NucleusMoEImageTransformer2DModel / NucleusMoELayer on torch CPU (tiny, random): float32 with
a padded prompt and a patch grid no tile divides, and float16."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("diffusers", reason="diffusers is a test-only reference (extra: reference)")
import torch
from nucleus_tiny import NUCLEUS_TINY, tiny_nucleus_transformer
from sd_tiny import state_dict
from support import assert_close

import gpucore
import gpustd
from diffusion.models.nucleus_moe import NucleusMoELayer, expert_choice
from diffusion.models.nucleusmoe_image import NucleusMoEImageTransformer2DModel

ROWS, COLUMNS, TEXT = 3, 5, 9  # 15 image patches, 9 text places (the second prompt's last 3
# padding)


def _inputs(rng: np.random.Generator) -> tuple[np.ndarray, ...]:
    latents = rng.standard_normal((2, ROWS * COLUMNS, NUCLEUS_TINY["in_channels"]))
    text = 2 * rng.standard_normal((2, TEXT, NUCLEUS_TINY["joint_attention_dim"]))
    mask = np.ones((2, TEXT), np.int64)
    mask[1, -3:] = 0
    return latents.astype(np.float32), text.astype(np.float32), mask


def _reference(model: object, latents: np.ndarray, text: np.ndarray, mask: np.ndarray,
               t: np.ndarray) -> np.ndarray:
    with torch.no_grad():
        return model(torch.from_numpy(latents), [(1, ROWS, COLUMNS)] * 2,  # type: ignore
                     torch.from_numpy(text), torch.from_numpy(mask),
                     torch.from_numpy(t)).sample.float().numpy()


def _ours(reference: object, device: gpucore.Device, dtype: type) -> object:
    ours = NucleusMoEImageTransformer2DModel(dict(reference.config),  # type: ignore
                                             dtype=dtype, device=device)
    ours.load_state_dict(state_dict(reference))
    return ours


def test_expert_choice_layer(first_device: gpucore.Device) -> None:
    """One mixture-of-experts layer against diffusers' on 2 x 13 tokens: the routing (each
    expert's tokens) equal, the output within float rounding; several experts at work, and
    tokens chosen by different numbers of experts (0 included)."""
    reference = tiny_nucleus_transformer().transformer_blocks[1].img_mlp
    dim = NUCLEUS_TINY["num_attention_heads"] * NUCLEUS_TINY["attention_head_dim"]
    ours = NucleusMoELayer(dim, 24, 4, 1.5, False, 2.5,
                           {"dtype": np.float32, "device": first_device})
    ours.load_state_dict(state_dict(reference))
    rng = np.random.default_rng(5)
    x, unmodulated = (rng.standard_normal((2, 13, dim)).astype(np.float32) for _ in range(2))
    temb = rng.standard_normal((2, dim)).astype(np.float32)
    with torch.no_grad():
        expected = reference(torch.from_numpy(x), torch.from_numpy(unmodulated),
                             torch.from_numpy(temb)).numpy()
    got = ours(*(gpustd.asarray(a, device=first_device) for a in (x, unmodulated, temb)))
    # measured on lavapipe: 3.6e-7
    assert_close(got.numpy(), expected, tol=3e-6)
    routes = ours.last_routes
    assert routes is not None
    assert list(routes.per_expert()) == [2 * 5] * 4  # ceil(1.5 * 13 / 4) = 5 a picture
    counts = routes.choices_per_token(26)
    assert counts.min() == 0 and counts.max() >= 2 and len(set(counts)) >= 3
    # the router matters: diffusers' own top-k picks the same tokens per expert
    logits = torch.cat([torch.from_numpy(temb)[:, None].expand(-1, 13, -1),
                        torch.from_numpy(unmodulated)], -1) @ reference.gate.weight.T
    top = torch.topk(torch.softmax(logits, -1).transpose(1, 2), 5, dim=-1).indices
    mine = routes.tokens.reshape(4, 2, 5).transpose(1, 0, 2) - np.arange(2)[:, None, None] * 13
    assert (np.sort(mine, -1) == np.sort(top.numpy(), -1)).all()


def test_expert_choice_refuses_overfull_capacity() -> None:
    with pytest.raises(ValueError, match=r"capacity_factor 8\.0"):
        expert_choice(np.zeros((1, 6, 4), np.float32), capacity_factor=8.0, route_scale=1.0)


def test_nucleus_transformer(first_device: gpucore.Device) -> None:
    """float32 against diffusers, one prompt padded; the text visibly matters."""
    reference = tiny_nucleus_transformer()
    ours = _ours(reference, first_device, np.float32)
    latents, text, mask = _inputs(np.random.default_rng(3))
    t = np.array([0.83, 0.25], np.float32)
    expected = _reference(reference, latents, text, mask, t)
    got = ours(gpustd.asarray(latents, device=first_device),  # type: ignore[operator]
               gpustd.asarray(text, device=first_device), t, ROWS, COLUMNS, mask).numpy()
    # the worst element's |error| / (rms + |expected|) measured on lavapipe: under 1e-5
    assert_close(got, expected, tol=1e-5)
    other = _reference(reference, latents, text[::-1].copy(), mask, t)
    assert np.abs(other - expected).mean() > 0.05 * np.abs(expected).mean()


def test_nucleus_transformer_f16(f16_device: gpucore.Device) -> None:
    """float16 weights and activations against diffusers' float16 model (torch CPU): the
    experts' choices are made on float16 scores, which float16 rounding reorders (diffusers'
    own float16 output is 30 from its float32 on these inputs), so the reference runs in
    float16 too and makes the same choices."""
    reference = tiny_nucleus_transformer()
    ours = _ours(reference, f16_device, np.float16)
    latents, text, mask = _inputs(np.random.default_rng(4))
    t = np.array([0.5, 0.97], np.float32)
    expected = _reference(reference.half(), latents.astype(np.float16),
                          text.astype(np.float16), mask, t).astype(np.float32)
    got = ours(gpustd.asarray(latents, dtype=np.float16, device=f16_device),  # type: ignore
               gpustd.asarray(text, dtype=np.float16, device=f16_device), t, ROWS, COLUMNS,
               mask)
    assert got.dtype == np.float16
    # measured on lavapipe: 1.45e-2 (float16 rounding through activations up to 92)
    assert_close(got.numpy().astype(np.float32), expected, tol=2e-2)


def test_short_capacity_factors_refused(first_device: gpucore.Device) -> None:
    with pytest.raises(ValueError, match="capacity_factors names 2 blocks of 3"):
        NucleusMoEImageTransformer2DModel({**NUCLEUS_TINY, "capacity_factors": [1.0, 2.0]},
                                          device=first_device)
