"""The SDXL base and refiner UNets against diffusers on torch CPU (tiny random models shaped
like diffusers' own SDXL test components), their error paths, and the SDXL VAE settings."""

from __future__ import annotations

import functools
import inspect
from typing import Any

import numpy as np
import pytest

pytest.importorskip("diffusers", reason="diffusers is a test-only reference (extra: reference)")
import diffusers
import torch
from sd_tiny import VAE_TINY, randomized, state_dict
from sdxl_tiny import UNET_REFINER_TINY, UNET_SDXL_TINY
from support import assert_close

import gpucore
import gpustd
from diffusion.models import AutoencoderKL, UNet2DConditionModel
from diffusion.models import unet as unet_module
from diffusion.models import vae as vae_module

# diffusers' SDXL test shapes: base (6 time ids, 64-wide context from two encoders, 32-wide
# pooled embedding) and refiner (5 time ids, one 32-wide encoder)
VARIANTS = {"base": (UNET_SDXL_TINY, 6), "refiner": (UNET_REFINER_TINY, 5)}
# the worst element's |error| / (rms + |expected|) (support.assert_close's rule) measured on
# lavapipe: 3.8e-6 in f32, 5.2e-3 in f16 (whose rounding of weights and activations, the same
# on every run, dominates: 4x, not 10x)
TOL = {np.float32: 4e-5, np.float16: 2e-2}


@functools.cache
def reference(name: str) -> Any:
    return randomized(diffusers.UNet2DConditionModel(**VARIANTS[name][0]), seed=11)


_ours: dict[tuple[str, int, str], UNet2DConditionModel] = {}


def ours_for(name: str, device: gpucore.Device, dtype: Any = np.float32) -> UNet2DConditionModel:
    key = (name, device.info.index, np.dtype(dtype).name)
    if key not in _ours:
        model = UNet2DConditionModel(dict(reference(name).config), dtype=dtype, device=device)
        model.load_state_dict(state_dict(reference(name)), dtype=dtype)
        _ours[key] = model
    return _ours[key]


def inputs(name: str, seed: int = 0) -> dict[str, np.ndarray]:
    """Batch 2 of 6x10 latents (not tile multiples; 3x5 at level 2), a 77-token context,
    pooled embeddings and realistic micro-conditioning: (orig h, w, crop top, left, target h,
    w) or, for the refiner, an aesthetic score instead of the target size."""
    config, count = VARIANTS[name]
    rng = np.random.default_rng(seed)
    ids = [[1024, 1024, 0, 0, 1024, 1024], [768, 1344, 32, 16, 896, 1152]] if count == 6 else \
        [[1024, 1024, 0, 0, 6.0], [832, 1216, 8, 24, 2.5]]
    return {
        "sample": rng.standard_normal((2, 4, 6, 10)).astype(np.float32),
        "timesteps": np.array([999.0, 17.0], np.float32),
        "context": rng.standard_normal((2, 77, config["cross_attention_dim"])).astype(np.float32),
        "text_embeds": rng.standard_normal((2, 32)).astype(np.float32),
        "time_ids": np.array(ids, np.float32),
    }


def expected(name: str, x: dict[str, np.ndarray]) -> np.ndarray:
    t = {k: torch.from_numpy(v) for k, v in x.items()}
    with torch.no_grad():
        return reference(name)(t["sample"], t["timesteps"], t["context"], added_cond_kwargs={
            "text_embeds": t["text_embeds"], "time_ids": t["time_ids"]}).sample.numpy()


@pytest.mark.parametrize("name", ["base", "refiner"])
def test_sdxl_unet_matches_diffusers(device: gpucore.Device, name: str,
                                     monkeypatch: pytest.MonkeyPatch) -> None:
    x = inputs(name)
    model = ours_for(name, device)
    on_device = {k: gpustd.asarray(v, device=device) for k, v in x.items()}
    # base: every per-step input a device tensor, as a replayed step needs; refiner: numpy
    # timesteps and time ids
    if name == "base":
        steps, cond = on_device["timesteps"], {k: on_device[k] for k in ("text_embeds",
                                                                         "time_ids")}
    else:
        steps, cond = x["timesteps"], {"text_embeds": on_device["text_embeds"],
                                       "time_ids": x["time_ids"]}

    def no_read_back(*args: Any) -> None:
        raise AssertionError("the UNet read a buffer back during forward")

    monkeypatch.setattr(device, "read_bytes", no_read_back)
    got = model(on_device["sample"], steps, on_device["context"], cond)
    monkeypatch.undo()
    assert_close(got.numpy(), expected(name, x), tol=TOL[np.float32])


def test_sdxl_unet_float16(f16_device: gpucore.Device) -> None:
    x = inputs("base", seed=1)
    model = ours_for("base", f16_device, np.float16)
    half = {k: gpustd.asarray(v, device=f16_device).astype(np.float16)
            for k, v in x.items() if k in ("sample", "context", "text_embeds")}
    got = model(half["sample"], x["timesteps"], half["context"],
                {"text_embeds": half["text_embeds"], "time_ids": x["time_ids"]})
    assert got.dtype == np.float16
    assert_close(got.numpy().astype(np.float32), expected("base", x), tol=TOL[np.float16])


def test_added_cond_errors(device: gpucore.Device) -> None:
    x = inputs("base")
    model = ours_for("base", device)
    sample = gpustd.asarray(x["sample"], device=device)
    context = gpustd.asarray(x["context"], device=device)
    good = {"text_embeds": x["text_embeds"], "time_ids": x["time_ids"]}
    bad_conds = [
        (None, "needs added_cond"),
        ({"text_embeds": x["text_embeds"]}, "needs added_cond"),
        ({**good, "extra": 1}, "needs added_cond"),
        ({**good, "time_ids": x["time_ids"][:, :5]}, r"P \+ n \* 8 == 80"),
        ({**good, "text_embeds": x["text_embeds"][:1]}, "batch of 2"),
        ({**good, "time_ids": x["time_ids"].reshape(-1)}, "time_ids"),
        ({**good, "time_ids": gpustd.asarray(x["time_ids"].astype(np.int32), device=device)},
         "float32"),
    ]
    for cond, message in bad_conds:
        with pytest.raises(ValueError, match=message):
            model(sample, x["timesteps"], context, cond)
    for steps in (gpustd.asarray(np.ones(3, np.float32), device=device),
                  gpustd.asarray(np.ones(2, np.int32), device=device)):
        with pytest.raises(ValueError, match=r"float32 of shape \(2,\)"):
            model(sample, steps, context, good)


def test_sd_unet_refuses_added_cond(device: gpucore.Device) -> None:
    config = {k: v for k, v in UNET_SDXL_TINY.items()
              if "addition" not in k and "projection" not in k}
    model = UNet2DConditionModel(config, device=device)
    x = inputs("base")
    with pytest.raises(ValueError, match="added_cond=None"):
        model(gpustd.asarray(x["sample"], device=device), 10,
              gpustd.asarray(x["context"], device=device),
              {"text_embeds": x["text_embeds"], "time_ids": x["time_ids"]})


@pytest.mark.parametrize("change, message", [
    ({"addition_embed_type": "text"}, "addition_embed_type='text'"),
    ({"addition_time_embed_dim": None}, "needs addition_time_embed_dim"),
    ({"projection_class_embeddings_input_dim": None},
     "needs projection_class_embeddings_input_dim"),
    ({"transformer_layers_per_block": [[1, 1], [2, 2]]}, "per-layer lists"),
    ({"transformer_layers_per_block": (1, 2, 3)}, "one per level"),
    ({"attention_head_dim": (2, 4, 8)}, "one per level"),
    ({"reverse_transformer_layers_per_block": [[2, 2, 2], [1, 1, 1]]},
     "reverse_transformer_layers_per_block"),
    ({"class_embed_type": "projection"}, "class_embed_type"),
    ({"time_cond_proj_dim": 256}, "time_cond_proj_dim"),
    ({"only_cross_attention": [False, True]}, "only_cross_attention"),
    ({"cross_attention_dim": (32, 64)}, "cross_attention_dim"),
    ({"up_block_types": ("UpBlock2D",)}, "up_block_types has 1"),
    ({"down_block_types": ("DownBlock2D", "AttnDownBlock2D")}, "AttnDownBlock2D"),
])
def test_unsupported_configs_are_refused(change: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        UNet2DConditionModel({**UNET_SDXL_TINY, **change})


@pytest.mark.nodevice
def test_fixed_keys_are_diffusers_defaults() -> None:
    """The values we require are the ones diffusers builds by default, so every config that
    leaves them out (or spells them out) loads."""
    for model, table in ((diffusers.UNet2DConditionModel, unet_module._FIXED),
                         (diffusers.AutoencoderKL, vae_module._FIXED)):
        defaults = inspect.signature(model.__init__).parameters
        assert {k: defaults[k].default for k in table} == table


def test_sdxl_vae_settings(first_device: gpucore.Device) -> None:
    sdxl = diffusers.AutoencoderKL(**VAE_TINY, scaling_factor=0.13025).config
    vae = AutoencoderKL(dict(sdxl), device=first_device)
    assert (vae.scaling_factor, vae.force_upcast) == (0.13025, True)
    fixed = AutoencoderKL({**VAE_TINY, "force_upcast": False}, device=first_device)
    assert (fixed.scaling_factor, fixed.force_upcast) == (0.18215, False)
    with pytest.raises(ValueError, match="latents_mean"):
        AutoencoderKL({**VAE_TINY, "latents_mean": [0.1] * 4}, device=first_device)


@pytest.mark.nodevice
def test_published_sdxl_configs_are_accepted() -> None:
    """The full-size base config (bench/sdxl.py) and the refiner's (4 levels, one depth for
    every level, 5 time ids) pass our checks; building them would take 10 GB."""
    from bench.sdxl import SDXL_BASE_UNET

    refiner = dict(
        SDXL_BASE_UNET, attention_head_dim=[6, 12, 24, 24],
        block_out_channels=[384, 768, 1536, 1536], cross_attention_dim=1280,
        transformer_layers_per_block=4,
        down_block_types=["DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D",
                          "DownBlock2D"],
        up_block_types=["UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"],
        projection_class_embeddings_input_dim=2560)
    for config in (SDXL_BASE_UNET, refiner):
        assert unet_module.check_config(config)["addition_embed_type"] == "text_time"
