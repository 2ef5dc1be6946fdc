"""ControlNet against diffusers' ControlNetModel, and the UNet fed its residuals against
diffusers' UNet fed the same (tiny random models on torch CPU)."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

pytest.importorskip("diffusers", reason="diffusers is a test-only reference (extra: reference)")
import torch
from sd_tiny import UNET_TINY, randomized, state_dict, tiny_unet
from sdxl_tiny import UNET_SDXL_TINY
from support import assert_close

import gpucore
import gpustd
from diffusion.models import UNet2DConditionModel
from diffusion.models.controlnet import ControlNetModel, soft_injection_scales

# f32 through dozens of layers: the worst element's |error| / (rms + |expected|)
# (support.assert_close's rule) measured on lavapipe and llvmpipe is 3.6e-6
TOL = 4e-5
_UNET_ONLY = ("up_block_types", "out_channels", "sample_size")


def tiny_controlnet(unet_config: dict[str, Any], seed: int = 4, **overrides: Any) -> Any:
    """diffusers' ControlNetModel of a tiny UNet's architecture, its control image at twice
    the latent size (the tiny VAE's factor), every weight random (no zero convs)."""
    import diffusers

    config = {k: v for k, v in unet_config.items() if k not in _UNET_ONLY}
    config = {"conditioning_embedding_out_channels": (8, 16), **config, **overrides}
    return randomized(diffusers.ControlNetModel(**config), seed)


def _inputs(batch: int, size: tuple[int, int], ctx: int, seed: int = 0) -> dict[str, Any]:
    rng = np.random.default_rng(seed)
    h, w = size
    return {"sample": rng.standard_normal((batch, 4, h, w)).astype(np.float32),
            "context": rng.standard_normal((batch, 7, ctx)).astype(np.float32),
            "image": rng.uniform(0, 1, (batch, 3, 2 * h, 2 * w)).astype(np.float32),
            "t": np.array([999.0, 17.0][:batch], np.float32)}


def _sdxl_added(batch: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(5)
    return {"text_embeds": rng.standard_normal((batch, 32)).astype(np.float32),
            "time_ids": np.tile(np.array([[24, 20, 0, 0, 24, 20]], np.float32), (batch, 1))}


def _reference(cn: Any, x: dict[str, Any], added: dict | None, **kw: Any) -> tuple[list, Any]:
    t = {k: torch.from_numpy(v) for k, v in x.items()}
    extra = {} if added is None else {
        "added_cond_kwargs": {k: torch.from_numpy(v) for k, v in added.items()}}
    with torch.no_grad():
        down, mid = cn(t["sample"], t["t"], t["context"], t["image"], return_dict=False,
                       **extra, **kw)
    return [d.numpy() for d in down], mid.numpy()


def _ours(cn: ControlNetModel, x: dict[str, Any], added: dict | None, device: gpucore.Device,
          **kw: Any) -> tuple[list, Any]:
    def up(a: np.ndarray) -> gpustd.Tensor:
        return gpustd.asarray(a, device=device)

    return cn(up(x["sample"]), x["t"], up(x["context"]), up(x["image"]), added, **kw)


@pytest.mark.parametrize("kind", ["sd", "sdxl"])
def test_controlnet_residuals(first_device: gpucore.Device, kind: str) -> None:
    """The ops are checked on every adapter by the UNet's tests: one adapter here."""
    device = first_device
    config = UNET_TINY if kind == "sd" else UNET_SDXL_TINY
    reference = tiny_controlnet(config)
    ours = ControlNetModel(dict(reference.config), device=device)
    ours.load_state_dict(state_dict(reference))
    x = _inputs(2, (12, 10), config["cross_attention_dim"])
    added = _sdxl_added(2) if kind == "sdxl" else None
    down, mid = _ours(ours, x, added, device, conditioning_scale=0.7)
    want_down, want_mid = _reference(reference, x, added, conditioning_scale=0.7)
    assert len(down) == len(want_down)
    for got, want in zip(down, want_down):
        assert_close(got.numpy(), want, tol=TOL)
    assert_close(mid.numpy(), want_mid, tol=TOL)


def test_guess_mode_soft_scales_and_bgr(first_device: gpucore.Device) -> None:
    """Scale choices and the channel flip are host logic: one adapter shows them."""
    reference = tiny_controlnet(UNET_TINY, controlnet_conditioning_channel_order="bgr")
    ours = ControlNetModel(dict(reference.config), device=first_device)
    ours.load_state_dict(state_dict(reference))
    x = _inputs(1, (8, 8), 32, seed=3)
    down, mid = _ours(ours, x, None, first_device, conditioning_scale=0.5, guess_mode=True)
    want_down, want_mid = _reference(reference, x, None, conditioning_scale=0.5,
                                     guess_mode=True)
    for got, want in zip([*down, mid], [*want_down, want_mid]):
        assert_close(got.numpy(), want, tol=TOL)
    # the extension's soft weights: per residual, relative to the plain ones
    scales = soft_injection_scales(len(down) + 1, 0.8)
    soft_down, soft_mid = _ours(ours, x, None, first_device, conditioning_scale=scales)
    plain_down, plain_mid = _ours(ours, x, None, first_device)
    for got, plain, s in zip([*soft_down, soft_mid], [*plain_down, plain_mid], scales):
        assert_close(got.numpy(), plain.numpy() * s, tol=1e-5)
    # counted from SD 1.5's 13 residuals whatever the model: the extension zips them
    assert scales[0] == pytest.approx(0.8 * 0.825 ** 12)
    assert soft_injection_scales(13)[-1] == 1.0


def test_unet_with_residuals(first_device: gpucore.Device) -> None:
    """ControlNet's down/mid residuals and T2I-Adapter's intra-block ones, as diffusers adds
    them."""
    device = first_device
    reference = tiny_unet()
    ours = UNet2DConditionModel(dict(reference.config), device=device)
    ours.load_state_dict(state_dict(reference))
    x = _inputs(2, (12, 10), 32, seed=6)
    cn = tiny_controlnet(UNET_TINY)
    down, mid = _reference(cn, x, None)
    rng = np.random.default_rng(7)
    # T2I-Adapter: one feature per down block, at the block's last resolution/width; one
    # more, of the mid block's shape, goes to its output (SDXL's adapter has that)
    intra = [rng.standard_normal((2, 32, 6, 5)).astype(np.float32),
             rng.standard_normal((2, 64, 6, 5)).astype(np.float32),
             rng.standard_normal((2, 64, 6, 5)).astype(np.float32)]
    t = {k: torch.from_numpy(v) for k, v in x.items()}

    def up(a: np.ndarray) -> gpustd.Tensor:
        return gpustd.asarray(a, device=device)

    for kw, ref_kw in [
            ({"down_block_additional_residuals": [up(d) for d in down],
              "mid_block_additional_residual": up(mid)},
             {"down_block_additional_residuals": [torch.from_numpy(d) for d in down],
              "mid_block_additional_residual": torch.from_numpy(mid)}),
            ({"down_intrablock_additional_residuals": [up(a) for a in intra]},
             {"down_intrablock_additional_residuals": [torch.from_numpy(a) for a in intra]})]:
        with torch.no_grad():
            want = reference(t["sample"], t["t"], t["context"], **ref_kw).sample.numpy()
        got = ours(up(x["sample"]), x["t"], up(x["context"]), **kw)
        assert_close(got.numpy(), want, tol=TOL)
