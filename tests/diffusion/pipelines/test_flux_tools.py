"""FLUX.1 Canny/Depth dev (Flux Tools: the control map's latents concatenated to the packed
latents' channels) against diffusers' FluxControlPipeline on a tiny random transformer whose
input is twice its output; the map's VAE draw and the noise from one torch CPU generator."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

pytest.importorskip("diffusers", reason="diffusers is a test-only reference (extra: reference)")
import diffusers
import torch
from flow_tiny import FLUX_TINY
from PIL import Image
from sd_tiny import CLIP_TINY, randomized
from support import assert_close

import gpucore
from diffusion.loaders.flow.folder import flow_family
from diffusion.pipelines.flow.flux import FluxPipeline

TOL = 2e-3  # the SD pipeline tests' picture tolerance


def _tools_pipeline(root: Path, reference: Any) -> Any:
    """The tiny FLUX.1 dev pipeline with a Tools transformer (in 32 = 16 latent + 16 control
    channels, out 16), the map's input weights scaled up so that it visibly matters; saved
    to root."""
    transformer = randomized(diffusers.FluxTransformer2DModel(
        **{**FLUX_TINY, "in_channels": 32, "pooled_projection_dim": CLIP_TINY["hidden_size"]},
        out_channels=16, guidance_embeds=True), 17)
    with torch.no_grad():  # the control half of the input scaled until the map shows
        transformer.x_embedder.weight[:, 16:] *= 12
    parts = {name: reference.components[name] for name in (
        "scheduler", "vae", "text_encoder", "tokenizer", "text_encoder_2", "tokenizer_2")}
    pipe = diffusers.FluxControlPipeline(**parts, transformer=transformer)
    pipe.save_pretrained(root / "flux-tools")
    return pipe


def test_flux_tools_match_diffusers(first_device: gpucore.Device,
                                    tiny_flux_dev: tuple[Path, Any], tmp_path: Path) -> None:
    reference = _tools_pipeline(tmp_path, tiny_flux_dev[1])
    reference.set_progress_bar_config(disable=True)
    rng = np.random.default_rng(4)
    control = rng.integers(0, 256, (16, 24, 3), dtype=np.uint8)
    settings = dict(height=16, width=24, num_inference_steps=2, guidance_scale=10.0,
                    max_sequence_length=16)

    def run_reference(image: np.ndarray) -> np.ndarray:
        return reference("a red circle", control_image=Image.fromarray(image),
                         generator=torch.Generator().manual_seed(5), output_type="np",
                         **settings).images

    expected = run_reference(control)
    ours = FluxPipeline.from_pretrained(tmp_path / "flux-tools", device=first_device)
    assert ours.control_channels == 16
    got = ours("a red circle", control_image=control, seed=5, **settings)
    assert_close(got, expected, tol=TOL)
    other = run_reference(255 - control)
    assert np.abs(expected - other).mean() > 20 * TOL  # the map matters
    with pytest.raises(ValueError, match="needs its control image"):
        ours("a red circle", seed=5, **settings)
    assert flow_family(tmp_path / "flux-tools") == "flux-dev"  # loads as FLUX.1 dev


WIDTH, HEIGHT = 48, 32  # whole 2x2 patches of latents, not square


def _cli(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, Any]:
    """The CLI's exit code and its picture in [0, 1] (its stderr where it failed)."""
    import diffusion.cli.main as cli

    code = cli.main(list(argv))
    out, err = capsys.readouterr()
    if code:
        return code, err
    with Image.open(out.strip()) as image:
        return code, np.asarray(image.convert("RGB"), np.float64) / 255


def test_flux_tools_map_from_the_cli_and_the_server(
        first_device: gpucore.Device, tiny_flux_dev: tuple[Path, Any], tmp_path: Path,
        capsys: pytest.CaptureFixture[str], short_prompts: None) -> None:
    """--control-image without --controlnet is a Canny/Depth dev model's map: the CLI gives
    FluxControlPipeline's picture, the inverted map another; a server unit without a model
    gives the CLI's picture; a map for a model that takes none, and none for one that needs
    it, are one line (the server: a 4xx)."""
    reference = _tools_pipeline(tmp_path, tiny_flux_dev[1])
    reference.set_progress_bar_config(disable=True)
    control = np.random.default_rng(8).integers(0, 256, (HEIGHT, WIDTH, 3), dtype=np.uint8)
    Image.fromarray(control).save(tmp_path / "map.png")
    Image.fromarray(255 - control).save(tmp_path / "inverted.png")
    expected = reference("a red circle", control_image=Image.fromarray(control),
                         generator=torch.Generator().manual_seed(5), output_type="np",
                         height=HEIGHT, width=WIDTH, num_inference_steps=2,
                         guidance_scale=10.0, max_sequence_length=16).images[0]
    tools = str(tmp_path / "flux-tools")

    def cli(model: str, *more: str, sampler: str = "diffusers") -> tuple[int, Any]:
        return _cli(capsys, "txt2img", "--model", model, "--prompt", "a red circle",
                    "--width", str(WIDTH), "--height", str(HEIGHT), "--steps", "2",
                    "--sampler", sampler, "--seed", "5",
                    "--distilled-cfg-scale", "10", "--dtype", "float32",
                    "--out", str(tmp_path / "out.png"),
                    *(("--rng", "torch") if sampler == "diffusers" else ()), *more)

    code, ours = cli(tools, "--control-image", str(tmp_path / "map.png"))
    assert code == 0, ours
    assert np.abs(ours - expected).mean() <= 0.01
    code, inverted = cli(tools, "--controlnet", "None", "--control-image",
                         str(tmp_path / "inverted.png"))
    assert code == 0, inverted
    assert np.abs(ours - inverted).mean() > 0.03  # the map matters
    code, err = cli(tools)
    assert code != 0 and "Traceback" not in err and "needs its control map" in err
    code, err = cli(str(tiny_flux_dev[0] / "flux"), "--control-image",
                    str(tmp_path / "map.png"))
    assert code != 0 and "Traceback" not in err and "take none in their input" in err
    # the server: a ControlNet unit without a model, with a WebUI sampler
    pytest.importorskip("fastapi", reason="the server extra is not installed")
    from fastapi.testclient import TestClient
    from server_support import CachedLoader, info, pixels, png_b64

    from diffusion.server import create_app

    code, euler = cli(tools, "--control-image", str(tmp_path / "map.png"), sampler="Euler")
    assert code == 0, euler
    body = {"width": WIDTH, "height": HEIGHT, "steps": 2, "seed": 5, "sampler_name": "Euler",
            "prompt": "a red circle", "distilled_cfg_scale": 10}
    unit = {"enabled": True, "image": png_b64(Image.fromarray(control))}
    loader = CachedLoader()
    for model, units, status in ((tools, [unit], 200), (tools, [], 4),
                                 (str(tiny_flux_dev[0] / "flux"), [{**unit, "model": "None"}],
                                  4)):
        app = create_app(model=Path(model), outputs=tmp_path / "outputs", max_size=256,
                         loader=loader)
        with TestClient(app) as client:
            response = client.post("/sdapi/v1/txt2img", json={
                **body, "alwayson_scripts": {"controlnet": {"args": units}}})
        if status == 200:
            assert response.status_code == 200, response.text
            assert np.abs(pixels(response.json()["images"][0]) / 255 - euler).max() <= 1 / 255
            assert 'ControlNet 0: "Module: none, Model: None' in info(response)["infotexts"][0]
        else:
            assert response.status_code // 100 == 4, response.text
            assert "control map" in response.text
