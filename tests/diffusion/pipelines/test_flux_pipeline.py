"""FLUX txt2img against diffusers' FluxPipeline on tiny random models: the same seed through
torch's CPU generator gives the same picture. Loads the folder diffusers saved."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pytest

pytest.importorskip("diffusers", reason="diffusers is a test-only reference (extra: reference)")
import torch
from flow_tiny import assert_holds_bf16_of, bfl_checkpoint, tiny_flux_pipeline
from safetensors.torch import save_file
from support import assert_close

import gpucore
from diffusion.loaders.errors import WeightsError
from diffusion.loaders.flow.folder import load_flow_folder
from diffusion.pipelines.flow.flux import FluxPipeline, pack_latents, unpack_latents

TOL = 2e-3  # the SD pipeline tests' picture tolerance, f32 through every step


@pytest.fixture(scope="module")
def flux_dev(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Any]:
    """(the saved folder's parent, diffusers' pipeline): built once for this module."""
    root = tmp_path_factory.mktemp("flux-dev")
    return root, tiny_flux_pipeline(root, dev=True)


def test_flux_dev_txt2img_matches_diffusers(first_device: gpucore.Device,
                                            flux_dev: tuple[Path, Any]) -> None:
    """dev: guidance embedding and the resolution-dependent shift; one adapter (the models'
    kernels run on every adapter in tests/diffusion/models)."""
    tmp_path, reference = flux_dev
    settings = dict(height=16, width=24, num_inference_steps=3, guidance_scale=3.5,
                    max_sequence_length=16)
    prompts = ["a red circle on a blue background", "a cat"]
    expected = reference(prompts, generator=torch.Generator().manual_seed(7), output_type="np",
                         **settings).images
    ours = FluxPipeline.from_pretrained(tmp_path / "flux", device=first_device)
    assert_close(ours(prompts, seed=7, **settings), expected, tol=TOL)


@pytest.mark.nodevice
def test_packing_round_trip() -> None:
    latents = np.random.default_rng(0).standard_normal((2, 4, 6, 8)).astype(np.float32)
    packed = pack_latents(latents)
    assert packed.shape == (2, 12, 16)
    np.testing.assert_array_equal(packed[0, 1, :4], latents[0, 0, 0:2, 2:4].reshape(-1))
    np.testing.assert_array_equal(unpack_latents(packed, 6, 8), latents)


@pytest.mark.nodevice
def test_flow_folder_errors(tmp_path: Path) -> None:
    (tmp_path / "model_index.json").write_text('{"_class_name": "StableDiffusionPipeline"}')
    with pytest.raises(WeightsError, match="not a flow-matching pipeline"):
        load_flow_folder(tmp_path)
    (tmp_path / "model_index.json").write_text(
        '{"_class_name": "FluxPipeline", "transformer": ["diffusers", "X"]}')
    with pytest.raises(WeightsError, match="no 'vae' component"):
        load_flow_folder(tmp_path)


def test_bfl_transformer_file_replaces_the_folders(first_device: gpucore.Device,
                                                   flux_dev: tuple[Path, Any],
                                                   tmp_path: Path) -> None:
    """flux1-dev.safetensors beside a folder without transformer weights: the pipeline's
    transformer holds the file's tensors (no picture drawn: the loading is what differs)."""
    shutil.copytree(flux_dev[0] / "flux", tmp_path / "flux")
    reference = flux_dev[1].transformer
    file = tmp_path / "flux1-dev.safetensors"
    save_file(bfl_checkpoint(reference, "model.diffusion_model."), str(file))
    (tmp_path / "flux" / "transformer" / "diffusion_pytorch_model.safetensors").unlink()
    ours = FluxPipeline.from_pretrained(tmp_path / "flux", transformer_file=file,
                                        device=first_device)
    assert_holds_bf16_of(ours.transformer, reference)
