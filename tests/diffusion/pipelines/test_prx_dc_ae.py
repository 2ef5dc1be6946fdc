"""PRX with a DC-AE (the -dc-ae folders: Sana's AutoencoderDC in place of FLUX.1's VAE): the
family told from the folder, diffusers' PRXPipeline picture (tiny, random, float32), a WebUI
sampler's img2img through the DC-AE, and what it refuses in one line."""

from __future__ import annotations

import types
from pathlib import Path
from typing import Any

import numpy as np
import pytest

pytest.importorskip("diffusers", reason="diffusers is a test-only reference (extra: reference)")
import torch
from cli_support import cli_error, cli_ok, png_pixels

import gpucore
from diffusion.pipelines.families import capabilities_of
from diffusion.pipelines.flow.prx import PRXPipeline

HEIGHT, WIDTH = 24, 40  # the tiny DC-AE's 4x: 6 x 10 latents, 3 x 5 patches
RED = "a red circle on a blue square"


@pytest.fixture(scope="module")
def tiny_prx_dc(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Any]:
    from prx_tiny import tiny_prx_pipeline

    root = tmp_path_factory.mktemp("tiny-prx-dc")
    return root / "prx-dc-ae", tiny_prx_pipeline(root, "prx-dc-ae", dc_ae=True)


def test_prx_dc_ae(first_device: gpucore.Device, tiny_prx_dc: tuple[Path, Any],
                   tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                   capsys: pytest.CaptureFixture[str]) -> None:
    """The picture at CFG 4 with a negative prompt is diffusers' (ftfy, which diffusers calls
    and this venv lacks, as the identity on plain prompts); Euler's img2img runs from the
    DC-AE's latents; --vae and the diffusers sampler's img2img are refused in one line."""
    import diffusers.pipelines.prx.pipeline_prx as module
    from PIL import Image

    monkeypatch.setattr(module, "ftfy", types.SimpleNamespace(fix_text=lambda t: t),
                        raising=False)
    folder, reference = tiny_prx_dc
    capabilities = capabilities_of(folder)
    assert capabilities is not None and capabilities.family == "prx-dc-ae"
    assert capabilities.latent_space == "sana"
    pipe = PRXPipeline.from_pretrained(folder, device=first_device)
    ours = pipe(RED, negative_prompt="blurry", height=HEIGHT, width=WIDTH,
                num_inference_steps=2, seed=7)[0]
    with torch.no_grad():
        expected = reference(RED, negative_prompt="blurry", height=HEIGHT, width=WIDTH,
                             num_inference_steps=2, generator=torch.Generator().manual_seed(7),
                             use_resolution_binning=False, output_type="np").images[0]
    # measured on lavapipe: 2.7e-5 max (the DC-AE's float32 rounding; FLUX.1's VAE: 8.5e-6)
    np.testing.assert_allclose(ours, expected, atol=1e-4)
    assert np.abs(ours - pipe(RED, height=HEIGHT, width=WIDTH, num_inference_steps=2,
                              seed=8)[0]).mean() > 0.01  # the seed matters
    common = ("--model", str(folder), "--width", str(WIDTH), "--height", str(HEIGHT),
              "--steps", "2", "--seed", "7", "--prompt", RED)
    Image.fromarray(np.random.default_rng(5).integers(0, 255, (HEIGHT, WIDTH, 3), np.uint8)
                    ).save(tmp_path / "p.png")
    out, _ = cli_ok(capsys, "img2img", *common, "--sampler", "Euler", "--init-image",
                    str(tmp_path / "p.png"), "--strength", "0.5",
                    "--out", str(tmp_path / "i.png"))
    assert png_pixels(out).shape == (HEIGHT, WIDTH, 3)
    assert "DC-AE" in cli_error(capsys, "img2img", *common, "--sampler", "diffusers",
                                "--init-image", str(tmp_path / "p.png"),
                                "--out", str(tmp_path / "x.png"))
    assert "DC-AE" in cli_error(capsys, "txt2img", *common, "--vae", str(tmp_path / "p.png"),
                                "--out", str(tmp_path / "x.png"))
    assert not (tmp_path / "x.png").exists()
