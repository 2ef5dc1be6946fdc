"""FLUX Redux: a tiny FluxPriorReduxPipeline folder (SigLIP, the Redux embedder) made by
diffusers and transformers; txt2img with `--redux` through the command line draws the picture
of diffusers' two pipelines chained (FluxPriorReduxPipeline's prompt embeds into FluxPipeline)
with both scales; the reference picture visibly matters; a model that cannot take it, or a
missing picture, is refused in one line."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

pytest.importorskip("diffusers", reason="diffusers is a test-only reference (extra: reference)")
import diffusers
import torch
import transformers
from cli_support import png_pixels
from PIL import Image

import diffusion.cli.main as cli
import gpucore

pytestmark = pytest.mark.usefixtures("short_prompts")  # 16 T5 tokens (flow_fixtures.py)

PROMPT = "a red circle on a blue background"
WIDTH, HEIGHT = 24, 16
TOL = 0.01


@pytest.fixture(scope="module")
def redux(tiny_flux_dev: tuple[Path, Any], tmp_path_factory: pytest.TempPathFactory
          ) -> tuple[Path, Any]:
    """(the Redux folder, diffusers' FluxPriorReduxPipeline with the tiny FLUX's text
    encoders): SigLIP 24 wide reading 32x32 pictures in 8x8 patches (16 tokens), the embedder's
    weights scaled up (x3) so the picture's tokens visibly steer the picture."""
    from flow_tiny import T5_TINY
    from sd_tiny import randomized

    _, flux = tiny_flux_dev
    siglip = randomized(transformers.SiglipVisionModel(transformers.SiglipVisionConfig(
        hidden_size=24, intermediate_size=40, num_hidden_layers=2, num_attention_heads=2,
        image_size=32, patch_size=8)), 13)
    embedder = randomized(diffusers.pipelines.flux.modeling_flux.ReduxImageEncoder(
        redux_dim=24, txt_in_features=T5_TINY["d_model"]), 17, 3.0)
    pipe = diffusers.FluxPriorReduxPipeline(
        image_encoder=siglip, image_embedder=embedder,
        feature_extractor=transformers.SiglipImageProcessorPil(size={"height": 32, "width": 32}),
        text_encoder=flux.text_encoder, tokenizer=flux.tokenizer,
        text_encoder_2=flux.text_encoder_2, tokenizer_2=flux.tokenizer_2)
    root = tmp_path_factory.mktemp("tiny-redux")
    pipe.save_pretrained(root / "redux")
    return root / "redux", pipe


def _picture(kind: int) -> Image.Image:
    """Random pixels, not at SigLIP's size (resized as its processor does)."""
    pixels = np.random.default_rng(kind).integers(0, 256, (40, 36, 3), dtype=np.uint8)
    return Image.fromarray(pixels)


def _expected(flux: Any, prior: Any, picture: Image.Image, seed: int, scale: float = 1.0,
              pooled_scale: float = 1.0, **cfg: Any) -> np.ndarray:
    with torch.no_grad():
        embeds, pooled, _ = flux.encode_prompt(PROMPT, prompt_2=None, max_sequence_length=16)
    out = prior(picture, prompt_embeds=embeds, pooled_prompt_embeds=pooled,
                prompt_embeds_scale=scale, pooled_prompt_embeds_scale=pooled_scale)
    return flux(prompt_embeds=out.prompt_embeds, pooled_prompt_embeds=out.pooled_prompt_embeds,
                height=HEIGHT, width=WIDTH, num_inference_steps=2, guidance_scale=3.5,
                generator=torch.Generator().manual_seed(seed), output_type="np",
                max_sequence_length=16, **cfg).images[0]


def test_redux_txt2img_from_the_cli(first_device: gpucore.Device,
                                    tiny_flux_dev: tuple[Path, Any],
                                    redux: tuple[Path, Any], tmp_path: Path,
                                    capsys: pytest.CaptureFixture[str]) -> None:
    root, flux = tiny_flux_dev
    folder, prior = redux
    for kind in (1, 2):
        _picture(kind).save(tmp_path / f"ref{kind}.png")
    common = ("--model", str(root / "flux"), "--width", str(WIDTH), "--height", str(HEIGHT),
              "--steps", "2", "--sampler", "diffusers", "--rng", "torch", "--seed", "7",
              "--distilled-cfg-scale", "3.5", "--dtype", "float32", "--prompt", PROMPT)
    assert cli.main(["txt2img", *common, "--redux", str(folder), "--redux-image",
                     str(tmp_path / "ref1.png"), "--redux-prompt-scale", "0.8",
                     "--redux-pooled-scale", "1.5", "--out", str(tmp_path / "a.png")]) == 0
    ours = png_pixels(capsys.readouterr()[0].strip())
    expected = _expected(flux, prior, _picture(1), 7, 0.8, 1.5)
    assert np.abs(ours - expected).mean() < TOL
    # the reference picture matters, in diffusers' picture and ours
    other = _expected(flux, prior, _picture(2), 7, 0.8, 1.5)
    assert np.abs(other - expected).mean() > 3 * TOL
    assert cli.main(["txt2img", *common, "--redux", str(folder), "--redux-image",
                     str(tmp_path / "ref2.png"), "--redux-prompt-scale", "0.8",
                     "--redux-pooled-scale", "1.5", "--out", str(tmp_path / "b.png")]) == 0
    assert np.abs(png_pixels(capsys.readouterr()[0].strip()) - other).mean() < TOL
    # Redux without its picture is refused in one line, before anything loads
    assert cli.main(["txt2img", *common, "--redux", str(folder),
                     "--out", str(tmp_path / "c.png")]) != 0
    err = capsys.readouterr()[1]
    assert "--redux needs --redux-image" in err and "Traceback" not in err


@pytest.mark.nodevice
def test_redux_is_refused_for_other_families() -> None:
    """A family without Redux (SD's, by default) refuses a reference in one line."""
    from diffusion.pipelines.contract import Capabilities
    from diffusion.pipelines.request import GenerationRequest

    request = GenerationRequest(prompt="x", redux=object())
    with pytest.raises(ValueError, match="FLUX Redux reference"):
        Capabilities(family="sd1", latent_space="sd").refuse(request)


def test_redux_through_the_server(first_device: gpucore.Device,
                                  tiny_flux_dev: tuple[Path, Any],
                                  redux: tuple[Path, Any]) -> None:
    """txt2img's `redux` field (a Redux folder in the models folder, the picture, the scales)
    draws diffusers' chained picture (Euler over the Simple schedule at 2 steps with the CPU
    noise source is FluxPipeline's loop), and with a CFG scale above 1 its true CFG, whose
    negative prompt is read without the picture's tokens; a folder that is not Redux's is a
    4xx naming it."""
    pytest.importorskip("fastapi", reason="the server extra is not installed")
    import shutil

    from fastapi.testclient import TestClient
    from server_support import CachedLoader, png_b64

    from diffusion.server import create_app

    root, flux = tiny_flux_dev
    folder, prior = redux
    models = folder.parent
    if not (models / "flux").exists():
        shutil.copytree(root / "flux", models / "flux")
    app = create_app(model=models / "flux", models_dir=models, outputs=models / "out",
                     max_size=256, loader=CachedLoader())
    field = {"model": folder.name, "image": png_b64(_picture(1)), "prompt_embeds_scale": 0.8,
             "pooled_prompt_embeds_scale": 1.5}
    body = {"prompt": PROMPT, "width": WIDTH, "height": HEIGHT, "steps": 2, "seed": 7,
            "sampler_name": "Euler", "distilled_cfg_scale": 3.5, "redux": field,
            "override_settings": {"randn_source": "CPU"}}
    with TestClient(app) as client:
        response = client.post("/sdapi/v1/txt2img", json=body)
        assert response.status_code == 200, response.text
        ours = _b64_pixels(response.json()["images"][0])
        assert np.abs(ours - _expected(flux, prior, _picture(1), 7, 0.8, 1.5)).mean() < TOL
        guided = client.post("/sdapi/v1/txt2img", json={
            **body, "cfg_scale": 3, "negative_prompt": "a cat"})
        assert guided.status_code == 200, guided.text
        expected = _expected(flux, prior, _picture(1), 7, 0.8, 1.5, true_cfg_scale=3.0,
                             negative_prompt="a cat")
        assert np.abs(_b64_pixels(guided.json()["images"][0]) - expected).mean() < TOL
        assert np.abs(expected - ours).mean() > 3 * TOL  # the negative pass mattered
        wrong = client.post("/sdapi/v1/txt2img", json={**body, "redux": {**field,
                                                                          "model": "flux"}})
        assert 400 <= wrong.status_code < 500 and "not a FLUX Redux folder" in wrong.text


def _b64_pixels(text: str) -> np.ndarray:
    import base64
    import io

    with Image.open(io.BytesIO(base64.b64decode(text))) as image:
        return np.asarray(image.convert("RGB"), np.float32) / 255


def test_redux_files(first_device: gpucore.Device, tmp_path: Path,
                     capsys: pytest.CaptureFixture[str]) -> None:
    """BFL's flux1-redux-dev.safetensors (the embedder alone) with SigLIP as one file
    (ComfyUI's sigclip_vision_patch14_384: its config from the shapes, heads 72 wide): the
    picture's tokens equal transformers' SigLIP and diffusers' embedder's; a Redux file
    without its image encoder is refused in one line."""
    from safetensors.torch import save_file
    from sd_tiny import randomized

    from diffusion.pipelines.flow.redux import FluxRedux

    siglip = randomized(transformers.SiglipModel(transformers.SiglipConfig(
        vision_config=dict(hidden_size=144, intermediate_size=40, num_hidden_layers=2,
                           num_attention_heads=2, image_size=32, patch_size=8),
        text_config=dict(hidden_size=16, intermediate_size=20, num_hidden_layers=1,
                         num_attention_heads=2, vocab_size=50))), 13)
    embedder = randomized(diffusers.pipelines.flux.modeling_flux.ReduxImageEncoder(
        redux_dim=144, txt_in_features=32), 17)
    save_file({k: v.contiguous() for k, v in siglip.state_dict().items()},
              tmp_path / "sigclip_vision_patch14_384.safetensors")  # both towers, as Comfy's
    save_file(embedder.state_dict(), tmp_path / "flux1-redux-dev.safetensors")
    redux = FluxRedux.from_pretrained(
        tmp_path / "flux1-redux-dev.safetensors", device=first_device,
        image_encoder=tmp_path / "sigclip_vision_patch14_384.safetensors")
    processor = transformers.SiglipImageProcessorPil(size={"height": 32, "width": 32})
    with torch.no_grad():
        pixels = processor(_picture(1), return_tensors="pt").pixel_values
        expected = embedder(siglip.vision_model(pixel_values=pixels).last_hidden_state)
    np.testing.assert_allclose(redux.image_tokens(_picture(1)).numpy(),
                               expected.image_embeds.numpy(), atol=2e-4, rtol=1e-3)
    assert cli.main(["txt2img", "--redux", str(tmp_path / "flux1-redux-dev.safetensors"),
                     "--redux-image", str(tmp_path / "x.png"), "--prompt", "x"]) != 0
    err = capsys.readouterr()[1]
    assert "--redux-image-encoder" in err and "Traceback" not in err


def test_redux_under_the_memory_modes(first_device: gpucore.Device,
                                      tiny_flux_dev: tuple[Path, Any],
                                      redux: tuple[Path, Any]) -> None:
    """--lowvram gives the plain run's picture bitwise, Redux's SigLIP and embedder a unit of
    the plan while it runs, in host memory after it; the plain mode brings them back."""
    from diffusion.pipelines.flow.redux import FluxRedux, ReduxReference
    from diffusion.pipelines.load import load_pipeline
    from diffusion.pipelines.request import GenerationRequest
    from diffusion.pipelines.sd.memory import MemoryMode
    from gpustd.nn.offload import is_offloaded

    model = load_pipeline(tiny_flux_dev[0] / "flux", device=first_device, offload=True)
    parts = FluxRedux.from_pretrained(redux[0], device=first_device)
    request = GenerationRequest(prompt=PROMPT, width=WIDTH, height=HEIGHT, steps=2, seed=7,
                                sampler="diffusers", rng="torch", cfg_scale=1.0,
                                distilled_cfg_scale=3.5, redux=ReduxReference(parts, _picture(1)))
    try:
        model.set_memory_mode(MemoryMode(lowvram=True))
        low = model.generate(request).images[0]
        assert is_offloaded(parts.image_encoder) and is_offloaded(parts.image_embedder)
        assert "forward" not in vars(parts.image_encoder)
        model.set_memory_mode(MemoryMode())
        np.testing.assert_array_equal(low, model.generate(request).images[0])
    finally:
        model.set_memory_mode(MemoryMode())
