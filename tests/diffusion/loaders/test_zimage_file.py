"""Z-Image's single-file transformers (the original layout, as ComfyUI loads them) read under
diffusers' names: every tensor equal to diffusers' own, the config from the shapes; other
files are not claimed."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("diffusers", reason="diffusers is a test-only reference")
from safetensors.torch import save_file
from sd_tiny import state_dict
from zimage_tiny import ZIMAGE_TINY, original_layout, tiny_zimage_transformer

from diffusion.loaders import WeightsError
from diffusion.loaders.z_image import load_zimage_file, zimage_family

pytestmark = pytest.mark.nodevice


@pytest.mark.parametrize("prefix", ["model.diffusion_model.", ""])
def test_original_layout_reads_as_diffusers(tmp_path: Path, prefix: str) -> None:
    reference = tiny_zimage_transformer()
    file = tmp_path / "z_image.safetensors"
    save_file(original_layout(reference, prefix), str(file))
    assert zimage_family(file) == "z-image"
    weights = load_zimage_file(file, config={"axes_dims": ZIMAGE_TINY["axes_dims"]})
    expected = state_dict(reference)
    assert set(weights) == set(expected)
    for key, value in expected.items():
        np.testing.assert_array_equal(weights[key], value, err_msg=key)
    for name in ("dim", "n_layers", "n_refiner_layers", "n_heads", "cap_feat_dim",
                 "in_channels"):
        assert weights.config[name] == ZIMAGE_TINY[name], name
    assert tuple(weights.config["axes_dims"]) == ZIMAGE_TINY["axes_dims"]


def test_other_files_are_not_claimed(tmp_path: Path) -> None:
    import torch

    file = tmp_path / "other.safetensors"
    save_file({"layers.0.weight": torch.zeros(2)}, str(file))
    assert zimage_family(file) is None
    with pytest.raises(WeightsError, match="not a Z-Image transformer file"):
        load_zimage_file(file)
    (tmp_path / "broken.safetensors").write_bytes(b"nonsense")
    assert zimage_family(tmp_path / "broken.safetensors") is None
