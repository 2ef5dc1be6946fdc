"""BFL single-file FLUX transformers (flux1-dev layout, bf16, ComfyUI's prefix) load to the
same tensors and config as diffusers' FluxTransformer2DModel. Host logic only."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("diffusers", reason="diffusers is a test-only reference (extra: reference)")
import diffusers
import torch
from flow_tiny import FLUX_TINY, bfl_checkpoint
from safetensors.torch import save_file
from sd_tiny import randomized

from diffusion.loaders.errors import WeightsError
from diffusion.loaders.flow.flux_file import load_flux_file

pytestmark = pytest.mark.nodevice


@pytest.mark.parametrize(("guidance", "prefix"), [(True, "model.diffusion_model."),
                                                  (False, "")], ids=["dev-comfy", "schnell"])
def test_bfl_file_loads_diffusers_tensors(tmp_path: Path, guidance: bool, prefix: str) -> None:
    reference = randomized(diffusers.FluxTransformer2DModel(
        **{**FLUX_TINY, "num_layers": 2, "num_single_layers": 2}, guidance_embeds=guidance), 8)
    reference = reference.to(torch.bfloat16).to(torch.float32)  # what a bf16 file holds
    path = tmp_path / "flux1.safetensors"
    save_file(bfl_checkpoint(reference, prefix), str(path))
    weights = load_flux_file(path, config={"axes_dims_rope": FLUX_TINY["axes_dims_rope"]})
    expected = {k: v.numpy() for k, v in reference.state_dict().items()}
    assert sorted(weights) == sorted(expected)
    for key, value in expected.items():
        assert weights.shape(key) == value.shape, key
        np.testing.assert_array_equal(weights[key], value, err_msg=key)
    for field, value in reference.config.items():
        if not field.startswith("_"):
            wanted = tuple(value) if isinstance(value, list) else value
            assert weights.config[field] == wanted, field


def test_not_a_flux_file(tmp_path: Path) -> None:
    path = tmp_path / "other.safetensors"
    save_file({"unet.weight": torch.zeros(2)}, str(path))
    with pytest.raises(WeightsError, match="not a BFL FLUX"):
        load_flux_file(path)
