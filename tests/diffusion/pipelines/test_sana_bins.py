"""Sana's resolution binning against diffusers: the bin a size is drawn at (PixArt's four
tables), the resize back (PixArtImageProcessor.resize_and_crop_tensor), and SanaPipeline's
latents at a size that is not a bin (the tiny folder's transformer given sample_size 16, one
diffusers has bins for), through our pipeline and the model every door runs; the opt-out from
the CLI and from the server's override_settings."""

from __future__ import annotations

import copy
import json
import shutil
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import pytest

pytest.importorskip("diffusers", reason="diffusers is a test-only reference (extra: reference)")
import torch

import gpucore
from diffusion.pipelines.flow.sana_bins import binned_size, resize_and_crop
from diffusion.pipelines.request import GenerationRequest


def test_the_bins_and_the_resize_are_diffusers() -> None:
    """Every table's bin for random sizes (ties and extreme ratios among them); the bilinear
    resize that covers the size asked and its centre crop, on random pictures."""
    from diffusers.image_processor import PixArtImageProcessor as Processor
    from diffusers.pipelines.sana import pipeline_sana

    tables = {16: pipeline_sana.ASPECT_RATIO_512_BIN, 32: pipeline_sana.ASPECT_RATIO_1024_BIN,
              64: pipeline_sana.ASPECT_RATIO_2048_BIN, 128: pipeline_sana.ASPECT_RATIO_4096_BIN}
    rng = np.random.default_rng(0)
    for sample_size, table in tables.items():
        sizes = [*(rng.integers(1, 160, (200, 2)) * 32), (32, 4096), (4096, 32), (512, 512)]
        for height, width in sizes:
            assert binned_size(sample_size, int(height), int(width)) == \
                Processor.classify_height_width_bin(int(height), int(width), table)
    assert binned_size(8, 64, 96) is None  # diffusers raises: drawn as asked here
    for (big, small) in (((416, 608), (64, 96)), ((352, 704), (100, 40)), ((30, 50), (29, 51))):
        images = rng.standard_normal((2, 3, *big)).astype(np.float32) * 1.5
        expected = Processor.resize_and_crop_tensor(torch.from_numpy(images), small[1],
                                                    small[0]).numpy()
        got = resize_and_crop(images, *small)
        assert got.shape == expected.shape
        assert np.abs(got - expected).max() < 1e-5  # 4.3e-6 measured: float32 rounding


@pytest.fixture(scope="module")
def binned_sana(tiny_sana: tuple[Path, Any], tmp_path_factory: pytest.TempPathFactory
                ) -> tuple[Path, Any]:
    """The tiny Sana folder with transformer/config.json's sample_size 16 (Sana 1.0 has no
    position embeddings: the weights do not change), and diffusers' SanaPipeline of it."""
    import diffusers

    folder, reference = tiny_sana
    binned = tmp_path_factory.mktemp("sana-16") / "sana"
    shutil.copytree(folder, binned)
    config = binned / "transformer" / "config.json"
    config.write_text(json.dumps({**json.loads(config.read_text()), "sample_size": 16}))
    transformer = copy.deepcopy(reference.transformer)
    transformer.register_to_config(sample_size=16)
    return binned, diffusers.SanaPipeline(**{**reference.components,
                                             "transformer": transformer})


def test_sana_draws_at_diffusers_bin(first_device: gpucore.Device,
                                     binned_sana: tuple[Path, Any]) -> None:
    """64 x 96 asked: SanaPipeline's latents at its bin (416 x 608 pixels: 104 x 152 latents
    of the 4x tiny DC-AE) from the model the doors run (through our SanaPipeline), and at
    64 x 96 with use_resolution_binning=False. The pictures are compared latent by latent: decoding
    416 x 608 costs ~10 s a side here (the resize back is diffusers' above)."""
    from diffusion.pipelines.load import load_pipeline
    from diffusion.pipelines.observer import Observer

    folder, reference = binned_sana
    settings: dict[str, Any] = dict(num_inference_steps=1, guidance_scale=4.5, height=64,
                                    width=96, max_sequence_length=40)

    def diffusers_latents(binning: bool) -> np.ndarray:
        with torch.no_grad():
            return reference("a red circle", generator=torch.Generator().manual_seed(7),
                             output_type="latent", use_resolution_binning=binning,
                             **settings).images.numpy()

    expected = diffusers_latents(True)
    assert expected.shape == (1, 8, 104, 152)
    model = load_pipeline(folder, device=first_device)
    request = GenerationRequest(prompt="a red circle", width=96, height=64, steps=1,
                                sampler="diffusers", cfg_scale=4.5, rng="torch", seed=7)
    got = model.denoise(request, 7, 96, 64, Observer()).latents
    error = np.abs(got - expected)
    # 8.7e-4 and 3e-5 of the latents' largest and mean size measured: the tiny Sana 1.0
    # transformer's own error (test_sana_pipeline) through CFG 4.5
    assert got.shape == expected.shape and error.max() < 2e-3 * np.abs(expected).max()
    assert error.mean() < 1e-4 * np.abs(expected).mean()
    plain = model.denoise(replace(request, use_resolution_binning=False), 7, 96, 64,
                          Observer()).latents
    unbinned = diffusers_latents(False)
    assert plain.shape == unbinned.shape == (1, 8, 16, 24)
    assert np.abs(plain - unbinned).max() < 2e-3 * np.abs(unbinned).max()


def test_the_opt_out_reaches_the_request(tmp_path: Path) -> None:
    """--no-use-resolution-binning on the command line and override_settings'
    use_resolution_binning on the server turn it off (on by default, as diffusers'); a
    value not true or false is refused in one line."""
    pytest.importorskip("fastapi", reason="the server extra is not installed")
    from diffusion.cli.main import build_parser
    from diffusion.server.api.generation import RequestError, build_job
    from diffusion.server.api.schemas import Txt2ImgRequest

    parser = build_parser()
    assert parser.parse_args(["txt2img", "--model", "m"]).use_resolution_binning is True
    args = parser.parse_args(["txt2img", "--model", "m", "--no-use-resolution-binning"])
    assert args.use_resolution_binning is False

    def served(**override: Any) -> GenerationRequest:
        job, _ = build_job(Txt2ImgRequest(prompt="a", override_settings=override or None),
                           "txt2img", options={"CLIP_stop_at_last_layers": 1,
                                               "randn_source": "GPU"},
                           max_size=1024, outputs=tmp_path)
        return job.request

    assert served().use_resolution_binning is True
    assert served(use_resolution_binning=False).use_resolution_binning is False
    with pytest.raises(RequestError) as refused:
        served(use_resolution_binning="maybe")
    assert "use_resolution_binning must be True or False" in str(refused.value)
    assert "\n" not in str(refused.value)
