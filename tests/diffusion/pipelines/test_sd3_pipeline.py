"""SD3.5 txt2img with guidance against diffusers' StableDiffusion3Pipeline on tiny random
models: the same seed through torch's CPU generator gives the same picture."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("diffusers", reason="diffusers is a test-only reference (extra: reference)")
import torch
from flow_tiny import assert_holds_bf16_of, sai_checkpoint, tiny_sd3_pipeline
from safetensors.torch import save_file
from support import assert_close

import gpucore
from diffusion.pipelines.flow.sd3 import StableDiffusion3Pipeline

TOL = 2e-3  # the SD pipeline tests' picture tolerance, f32 through every step


@pytest.fixture(scope="module")
def sd35(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Any]:
    """(the saved folder's parent, diffusers' pipeline): built once for this module."""
    root = tmp_path_factory.mktemp("sd35")
    return root, tiny_sd3_pipeline(root)


def test_sd35_txt2img_matches_diffusers(first_device: gpucore.Device,
                                        sd35: tuple[Path, Any]) -> None:
    """One adapter: the MMDiT's kernels run on every adapter in tests/diffusion/models."""
    tmp_path, reference = sd35
    settings = dict(height=16, width=24, num_inference_steps=3, guidance_scale=4.5,
                    max_sequence_length=12)
    prompts = ["a red circle on a blue background", "a cat"]
    expected = reference(prompts, negative_prompt="a dog",
                         generator=torch.Generator().manual_seed(11), output_type="np",
                         **settings).images
    ours = StableDiffusion3Pipeline.from_pretrained(tmp_path / "sd3", device=first_device)
    assert_close(ours(prompts, negative_prompt="a dog", seed=11, **settings), expected, tol=TOL)


def test_single_file_transformer_replaces_the_folders(first_device: gpucore.Device,
                                                      sd35: tuple[Path, Any],
                                                      tmp_path: Path) -> None:
    """sd3.5_medium.safetensors beside a folder without transformer weights: the pipeline's
    transformer holds the file's tensors (no picture drawn: the loading is what differs)."""
    shutil.copytree(sd35[0] / "sd3", tmp_path / "sd3")
    reference = sd35[1].transformer
    file = tmp_path / "sd3.5_medium.safetensors"
    save_file({"model.diffusion_model." + k: v.to(torch.bfloat16).contiguous()
               for k, v in sai_checkpoint(reference).items()}, str(file))
    (tmp_path / "sd3" / "transformer" / "diffusion_pytorch_model.safetensors").unlink()
    ours = StableDiffusion3Pipeline.from_pretrained(tmp_path / "sd3", transformer_file=file,
                                                    device=first_device)
    assert_holds_bf16_of(ours.transformer, reference)
