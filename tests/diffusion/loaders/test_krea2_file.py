"""Krea 2's single-file transformers (Krea's original layout, as ComfyUI loads them, bare or
under `model.diffusion_model.`) read under diffusers' names: the layout checked against
diffusers' own converter, every tensor equal to diffusers' (each block's flattened modulation
as its (6, dim) table), the config from the shapes; ComfyUI's scaled fp8 read as the values
it stands for; other files not claimed."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("diffusers", reason="diffusers is a test-only reference")
import torch
from diffusers.loaders.single_file_utils import convert_krea2_transformer_checkpoint_to_diffusers
from krea2_tiny import KREA2_TINY, original_layout, tiny_krea2_transformer
from safetensors.torch import save_file
from sd_tiny import state_dict

from diffusion.loaders import WeightsError
from diffusion.loaders.krea2 import krea2_family, load_krea2_file

pytestmark = pytest.mark.nodevice


@pytest.mark.parametrize(("prefix", "dtype"), [("", torch.float32),
                                               ("model.diffusion_model.", torch.bfloat16)])
def test_original_layout_reads_as_diffusers(tmp_path: Path, prefix: str,
                                            dtype: torch.dtype) -> None:
    reference = tiny_krea2_transformer()
    expected = state_dict(reference)
    tensors = original_layout(reference, prefix)
    # the test's layout is the one diffusers' single-file loader reads
    converted = convert_krea2_transformer_checkpoint_to_diffusers(dict(tensors))
    assert set(converted) == set(expected)
    for key, value in converted.items():
        np.testing.assert_array_equal(value.numpy(), expected[key], err_msg=key)
    file = tmp_path / "krea2.safetensors"
    save_file({k: v.to(dtype) for k, v in tensors.items()}, str(file))
    assert krea2_family(file) == "krea-2"
    weights = load_krea2_file(file)  # no config: every size from the shapes
    assert set(weights) == set(expected)
    for key, value in expected.items():
        stored = torch.from_numpy(value).to(dtype).float().numpy()  # bf16 read as float32
        np.testing.assert_array_equal(weights[key], stored, err_msg=key)
    for name, value in KREA2_TINY.items():
        got = weights.config[name]
        assert (tuple(got) if isinstance(value, tuple) else got) == value, name


def test_scaled_fp8_reads_as_its_values(tmp_path: Path) -> None:
    """ComfyUI's scaled fp8 (float8 matrices at absmax / 448, a float32 scale_weight each,
    the scaled_fp8 marker): each tensor the value it stands for."""
    from t5_files import scaled_fp8

    reference = tiny_krea2_transformer(4)
    stored, held = scaled_fp8(original_layout(reference), "model.diffusion_model.")
    file = tmp_path / "krea2_fp8_scaled.safetensors"
    save_file(stored, str(file))
    assert krea2_family(file) == "krea-2"
    weights = load_krea2_file(file)
    expected = load_krea2_file(_saved(tmp_path / "values.safetensors", held))
    assert weights.config == expected.config and set(weights) == set(expected)
    for key in expected:
        np.testing.assert_array_equal(weights[key], expected[key], err_msg=key)
    name = "transformer_blocks.0.attn.to_q.weight"
    assert not np.array_equal(weights[name], state_dict(reference)[name])  # float8 rounded


def _saved(path: Path, values: dict[str, np.ndarray]) -> Path:
    save_file({k: torch.from_numpy(v) for k, v in values.items()}, str(path))
    return path


def test_other_files_are_not_claimed(tmp_path: Path) -> None:
    file = tmp_path / "other.safetensors"
    save_file({"txtfusion.projector.weight": torch.zeros(1, 3)}, str(file))
    assert krea2_family(file) is None
    with pytest.raises(WeightsError, match="not a Krea 2 transformer file"):
        load_krea2_file(file)
    (tmp_path / "broken.safetensors").write_bytes(b"nonsense")
    assert krea2_family(tmp_path / "broken.safetensors") is None
