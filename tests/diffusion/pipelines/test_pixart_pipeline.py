"""PixArt-Σ and PixArt-α against diffusers' PixArtSigmaPipeline and PixArtAlphaPipeline on
tiny random folders (PyTorch CPU float32): the pictures (CFG with a negative prompt; α 1024's
size embeddings), the resolution bins, and the folder's errors."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

pytest.importorskip("diffusers", reason="diffusers is a test-only reference (extra: reference)")
import torch

import gpucore
from diffusion.pipelines.flow.pixart import PixArtPipeline, pixart_binned_size

SIZE = {"height": 24, "width": 40}


def _diffusers(reference: Any, prompt: str, **settings: Any) -> np.ndarray:
    return reference(prompt, generator=torch.Generator().manual_seed(7), output_type="np",
                     use_resolution_binning=False, **SIZE, **settings).images[0]


def _assert_near(got: np.ndarray, expected: np.ndarray) -> None:
    """Within float32 rounding as the tiny models amplify it: measured 8e-5 to 1.1e-3 at the
    worst pixel from run to run (the GEMM kernels the autotuner picks round differently, and
    the tiny transformer's gains and CFG carry that to a few pixels), 1e-5 on average."""
    assert np.abs(got - expected).max() < 3e-3
    assert np.abs(got - expected).mean() < 5e-5


def test_pixart_sigma_is_diffusers(first_device: gpucore.Device,
                                   tiny_pixart: tuple[Path, Any]) -> None:
    """diffusers' picture after 3 DPM-Solver++ steps at CFG 4.5 with a negative prompt (T5's
    300 tokens, an upper-case prompt lowercased as diffusers does); the prompt and the
    negative prompt matter."""
    folder, reference = tiny_pixart
    settings: dict[str, Any] = dict(num_inference_steps=3, guidance_scale=4.5,
                                    negative_prompt="a photo of a cat")
    expected = _diffusers(reference, " A Red Circle", **settings)
    ours = PixArtPipeline.from_pretrained(folder, device=first_device)
    got = ours(" A Red Circle", seed=7, use_resolution_binning=False, **SIZE, **settings)[0]
    _assert_near(got, expected)
    plain = ours("a red circle", seed=7, use_resolution_binning=False, **SIZE,
                 **{**settings, "negative_prompt": ""})[0]
    other = ours("a blue cat", seed=7, use_resolution_binning=False, **SIZE, **settings)[0]
    assert np.abs(plain - got).mean() > 0.02 and np.abs(other - got).mean() > 0.02


def test_pixart_alpha_is_diffusers(first_device: gpucore.Device, tmp_path: Path) -> None:
    """PixArtAlphaPipeline's picture (sample size 128: the picture's size and ratio
    embedded; 120 tokens), two prompts at CFG 3."""
    from pixart_tiny import tiny_pixart_pipeline

    reference = tiny_pixart_pipeline(tmp_path, alpha=True, sample_size=128)
    settings: dict[str, Any] = dict(num_inference_steps=2, guidance_scale=3.0)
    prompts = ["a red circle", "the quick brown fox"]
    expected = reference(prompts, generator=torch.Generator().manual_seed(7),
                         output_type="np", use_resolution_binning=False, **SIZE,
                         **settings).images
    ours = PixArtPipeline.from_pretrained(tmp_path / "pixart", device=first_device)
    assert ours.alpha and ours.max_sequence_length == 120
    got = ours(prompts, seed=7, use_resolution_binning=False, **SIZE, **settings)
    _assert_near(got, expected)


def test_pixart_lcm_is_diffusers(first_device: gpucore.Device, tmp_path: Path) -> None:
    """A PixArt-LCM folder (PixArtAlphaPipeline with an LCMScheduler: its noise between the
    steps drawn from the seed's generator after the starting noise), 3 steps without CFG;
    the seed matters."""
    from pixart_tiny import tiny_pixart_pipeline

    reference = tiny_pixart_pipeline(tmp_path, alpha=True, lcm=True, sample_size=128)
    settings: dict[str, Any] = dict(num_inference_steps=3, guidance_scale=0.0)
    expected = _diffusers(reference, "a red circle", **settings)
    ours = PixArtPipeline.from_pretrained(tmp_path / "pixart", device=first_device)
    got = ours("a red circle", seed=7, use_resolution_binning=False, **SIZE, **settings)[0]
    _assert_near(got, expected)
    other = ours("a red circle", seed=8, use_resolution_binning=False, **SIZE, **settings)[0]
    assert np.abs(other - got).mean() > 0.02


@pytest.mark.nodevice
def test_bins_are_diffusers() -> None:
    """The 256 to 2048 tables' bins (diffusers' classify_height_width_bin) for sizes of
    every ratio; other sample sizes draw the size asked."""
    from diffusers.image_processor import PixArtImageProcessor
    from diffusers.pipelines.pixart_alpha import pipeline_pixart_alpha as alpha
    from diffusers.pipelines.pixart_alpha import pipeline_pixart_sigma as sigma

    tables = {32: alpha.ASPECT_RATIO_256_BIN, 64: alpha.ASPECT_RATIO_512_BIN,
              128: alpha.ASPECT_RATIO_1024_BIN, 256: sigma.ASPECT_RATIO_2048_BIN}
    rng = np.random.default_rng(3)
    for sample_size, table in tables.items():
        for height, width in rng.integers(64, 3000, (40, 2)):
            expected = PixArtImageProcessor.classify_height_width_bin(
                int(height), int(width), ratios=table)
            assert pixart_binned_size(sample_size, int(height), int(width)) == expected
    assert pixart_binned_size(8, 100, 200) is None


def test_pixart_bad_calls_get_one_line(first_device: gpucore.Device,
                                       tiny_pixart: tuple[Path, Any], tmp_path: Path) -> None:
    """A side that is not whole patches, a negative prompt per prompt miscounted, another
    pipeline's folder: one line each."""
    from diffusion.loaders.errors import WeightsError

    folder, _ = tiny_pixart
    ours = PixArtPipeline.from_pretrained(folder, device=first_device)
    with pytest.raises(ValueError, match="multiples of 4"):
        ours("a red circle", height=26, width=40, use_resolution_binning=False)
    with pytest.raises(ValueError, match="negative prompts"):
        ours(["a", "b"], negative_prompt=["c"], **SIZE)
    (tmp_path / "model_index.json").write_text('{"_class_name": "FluxPipeline"}')
    with pytest.raises(WeightsError, match="PixArtSigmaPipeline"):
        PixArtPipeline.from_pretrained(tmp_path, device=first_device)


@pytest.mark.nodevice
def test_lcm_folder_defaults(tmp_path: Path) -> None:
    """A PixArt-LCM folder samples with its card's 4 steps without CFG, another PixArt folder
    with diffusers' 20 steps at CFG 4.5."""
    from diffusion.pipelines.flow.pixart_model import LCM_DEFAULTS, PIXART_DEFAULTS, pixart_defaults

    (tmp_path / "scheduler").mkdir()
    config = tmp_path / "scheduler" / "scheduler_config.json"
    config.write_text('{"_class_name": "LCMScheduler"}')
    assert pixart_defaults(tmp_path, "pixart-alpha") == LCM_DEFAULTS
    config.write_text('{"_class_name": "DPMSolverMultistepScheduler"}')
    assert pixart_defaults(tmp_path, "pixart-alpha") == PIXART_DEFAULTS
    assert LCM_DEFAULTS.steps == 4 and LCM_DEFAULTS.cfg_scale == 1.0
