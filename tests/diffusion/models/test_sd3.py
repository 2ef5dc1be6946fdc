"""The SD3/3.5 MMDiT against diffusers' SD3Transformer2DModel on torch CPU (tiny, random)."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("diffusers", reason="diffusers is a test-only reference (extra: reference)")
import diffusers
import torch
from conftest import host_variant_on_first_adapter
from sd_tiny import randomized, state_dict
from support import assert_close

import gpucore
import gpustd
from diffusion.models import SD3Transformer2DModel

# f32 end to end: the worst element's |error| / (rms + |expected|) (support.assert_close's
# rule) measured on lavapipe and llvmpipe is 3.1e-5
TOL = 3e-4
SD3_TINY = dict(sample_size=8, patch_size=2, in_channels=4, num_layers=3, attention_head_dim=8,
                num_attention_heads=2, joint_attention_dim=32, caption_projection_dim=16,
                pooled_projection_dim=24, out_channels=4, pos_embed_max_size=12)
VARIANTS = {"sd3": {}, "sd35-medium": {"qk_norm": "rms_norm", "dual_attention_layers": (0, 1)}}


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_sd3_transformer(device: gpucore.Device, variant: str) -> None:
    if variant == "sd3":  # SD3.5 Medium's blocks run every kernel SD3's do, and more
        host_variant_on_first_adapter(device, "SD3 without QK-norm and dual attention")
    reference = randomized(diffusers.SD3Transformer2DModel(**SD3_TINY, **VARIANTS[variant]), 9)
    ours = SD3Transformer2DModel(dict(reference.config), device=device)
    ours.load_state_dict(state_dict(reference))
    rng = np.random.default_rng(4)
    latents = rng.standard_normal((2, 4, 10, 6)).astype(np.float32)  # 5 x 3 patches, off-centre
    text = rng.standard_normal((2, 7, 32)).astype(np.float32)
    pooled = rng.standard_normal((2, 24)).astype(np.float32)
    t = np.array([981.0, 250.5], np.float32)
    inputs = [gpustd.asarray(a, device=device) for a in (latents, text, pooled)]
    for skip in ([], [1]) if variant == "sd3" else ([],):  # SD3.5's skip-layer guidance
        with torch.no_grad():
            expected = reference(torch.from_numpy(latents), torch.from_numpy(text),
                                 torch.from_numpy(pooled), torch.from_numpy(t),
                                 skip_layers=skip or None).sample.numpy()
        assert_close(ours(*inputs, t, skip_layers=skip).numpy(), expected, tol=TOL)


@pytest.mark.nodevice
def test_sd3_rejects_bad_config() -> None:
    with pytest.raises(ValueError, match="qk_norm"):
        SD3Transformer2DModel({**SD3_TINY, "qk_norm": "layer_norm"})
    with pytest.raises(ValueError, match="caption_projection_dim"):
        SD3Transformer2DModel({**SD3_TINY, "caption_projection_dim": 24})


@pytest.mark.nodevice
def test_defaults_are_diffusers() -> None:
    """A config.json that leaves a field out means diffusers' default, here as there."""
    import inspect

    from diffusion.models import flux, sd3

    for model, table in ((diffusers.SD3Transformer2DModel, sd3._DEFAULTS),
                         (diffusers.FluxTransformer2DModel, flux._DEFAULTS)):
        defaults = inspect.signature(model.__init__).parameters
        assert {k: defaults[k].default for k in table} == table, model.__name__
