"""FLUX.1 Fill: a tiny FluxFillPipeline folder made by diffusers, detected as its own family
(and BFL's single file by its img_in width); inpaint through the command line draws diffusers'
picture (`--sampler diffusers --rng torch`); the mask visibly matters; a WebUI sampler keeps the
init image outside the mask; a request without a mask is refused in one line."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

pytest.importorskip("diffusers", reason="diffusers is a test-only reference (extra: reference)")
import diffusers
import torch
from cli_support import png_pixels
from PIL import Image

import diffusion.cli.main as cli
import gpucore
from diffusion.pipelines.families import family_of
from diffusion.pipelines.flow.fill import fill_condition

pytestmark = pytest.mark.usefixtures("short_prompts")  # 16 T5 tokens (flow_fixtures.py)

PROMPT = "a red circle on a blue background"
WIDTH, HEIGHT = 24, 16
TOL = 0.01


def _fill_transformer(latent_channels: int, scale_factor: int) -> Any:
    """FLUX.1 dev's tiny transformer widened as Fill's: the noise's and the masked picture's
    packed latents and the packed mask; the mask's input weights scaled up (x40) so the mask
    visibly steers the picture."""
    from flow_tiny import FLUX_TINY
    from sd_tiny import CLIP_TINY, randomized

    out = 4 * latent_channels
    transformer = randomized(diffusers.FluxTransformer2DModel(**{
        **FLUX_TINY, "in_channels": 2 * out + 4 * scale_factor ** 2, "out_channels": out,
        "pooled_projection_dim": CLIP_TINY["hidden_size"]}, guidance_embeds=True), 11)
    with torch.no_grad():
        transformer.x_embedder.weight[:, 2 * out:].mul_(40)
        transformer.x_embedder.weight[:, out:2 * out].mul_(3)
    return transformer


@pytest.fixture(scope="module")
def fill(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Any]:
    """(the folder, diffusers' FluxFillPipeline) of FLUX.1 dev's tiny parts (4-channel
    latents, a 2x VAE) with a Fill transformer."""
    from flow_tiny import tiny_flux_pipeline

    root = tmp_path_factory.mktemp("tiny-fill")
    parts = tiny_flux_pipeline(root, dev=True).components
    parts = {k: v for k, v in parts.items() if k not in ("image_encoder", "feature_extractor")}
    pipe = diffusers.FluxFillPipeline(**{**parts, "transformer": _fill_transformer(4, 2)})
    pipe.save_pretrained(root / "fill")
    return root / "fill", pipe


def _picture() -> Image.Image:
    pixels = np.random.default_rng(3).integers(0, 256, (HEIGHT, WIDTH, 3), dtype=np.uint8)
    return Image.fromarray(pixels)


def _mask(kind: int) -> Image.Image:
    """White = repaint: a block on the right (0) or the left side (1)."""
    mask = np.zeros((HEIGHT, WIDTH), np.uint8)
    if kind == 0:
        mask[4:12, 8:] = 255
    else:
        mask[:, :10] = 255
    return Image.fromarray(mask)


def _expected(pipe: Any, mask: Image.Image, seed: int) -> np.ndarray:
    return pipe(PROMPT, image=_picture(), mask_image=mask, height=HEIGHT, width=WIDTH,
                num_inference_steps=2, guidance_scale=30.0, max_sequence_length=16,
                generator=torch.Generator().manual_seed(seed), output_type="np").images[0]


@pytest.mark.nodevice
def test_fill_condition_packs_as_diffusers(fill: tuple[Path, Any]) -> None:
    """The masked picture's latents and the 8x8 (here 2x2) mask pixels, packed: diffusers'
    prepare_mask_latents, concatenated."""
    _, pipe = fill
    rng = np.random.default_rng(0)
    latents = rng.standard_normal((1, 4, 2 * 3, 2 * 4)).astype(np.float32)
    mask = (rng.random((1, 1, 12, 16)) > 0.5).astype(np.float32)
    with torch.no_grad():  # latents given in the VAE's space, moved into the transformer's
        expected_mask, expected_latents = pipe.prepare_mask_latents(
            torch.from_numpy(mask), torch.from_numpy(latents), 1, 4, 1, 12, 16,
            torch.float32, "cpu", None)
    expected = torch.cat([expected_latents, expected_mask], -1).numpy()
    config = pipe.vae.config
    moved = (latents - np.float32(config.shift_factor)) * np.float32(config.scaling_factor)
    np.testing.assert_allclose(fill_condition(moved, mask, 2), expected, atol=1e-6)


@pytest.mark.nodevice
def test_bfl_fill_file_is_detected(fill: tuple[Path, Any], tmp_path: Path) -> None:
    """BFL's flux1-fill-dev.safetensors (and city96's GGUF of it): FLUX.1 dev's keys, told by
    img_in's width (the noise's and masked picture's channels and the 256 of the packed 8x8
    mask)."""
    from flow_tiny import bfl_checkpoint
    from safetensors.torch import save_file

    from diffusion.loaders.formats.gguf_write import write_gguf

    transformer = _fill_transformer(16, 8)
    save_file(bfl_checkpoint(transformer, "model.diffusion_model."),
              tmp_path / "flux1-fill-dev.safetensors")
    save_file(bfl_checkpoint(fill[1].transformer, ""), tmp_path / "tiny.safetensors")
    assert family_of(tmp_path / "flux1-fill-dev.safetensors")[1] == "flux-fill"
    write_gguf(tmp_path / "flux1-fill-dev-Q8_0.gguf",  # city96's: the same names, quantized
               [(k, v.numpy()) for k, v in bfl_checkpoint(transformer, "", bf16=False).items()],
               "q8_0",
               architecture="flux")
    assert family_of(tmp_path / "flux1-fill-dev-Q8_0.gguf")[1] == "flux-fill"
    assert family_of(tmp_path / "tiny.safetensors")[1] == "flux-dev"  # 2x VAE: not Fill's


def test_fill_inpaint_from_the_cli(first_device: gpucore.Device, fill: tuple[Path, Any],
                                   tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    folder, reference = fill
    assert family_of(folder)[1] == "flux-fill"
    _picture().save(tmp_path / "init.png")
    for kind in (0, 1):
        _mask(kind).save(tmp_path / f"mask{kind}.png")
    common = ("--model", str(folder), "--init-image", str(tmp_path / "init.png"),
              "--width", str(WIDTH), "--height", str(HEIGHT), "--steps", "2", "--seed", "7",
              "--distilled-cfg-scale", "30", "--dtype", "float32", "--prompt", PROMPT,
              "--mask-blur", "0")
    diffusers_run = ("--sampler", "diffusers", "--rng", "torch", "--strength", "1")
    assert cli.main(["inpaint", *common, *diffusers_run, "--mask", str(tmp_path / "mask0.png"),
                     "--out", str(tmp_path / "a.png")]) == 0
    out, err = capsys.readouterr()
    assert "flux-fill" in err
    ours = png_pixels(out.strip())
    expected = _expected(reference, _mask(0), 7)
    assert np.abs(ours - expected).mean() < TOL
    # another mask changes the picture (diffusers' too), by ten times the tolerance
    other = _expected(reference, _mask(1), 7)
    assert np.abs(other - expected).mean() > 10 * TOL
    assert cli.main(["inpaint", *common, *diffusers_run, "--mask", str(tmp_path / "mask1.png"),
                     "--out", str(tmp_path / "b.png")]) == 0
    assert np.abs(png_pixels(capsys.readouterr()[0].strip()) - other).mean() < TOL
    # a WebUI sampler lays the init image back outside the mask, and repaints inside it
    assert cli.main(["inpaint", *common, "--sampler", "Euler", "--strength", "0.8",
                     "--mask", str(tmp_path / "mask0.png"),
                     "--out", str(tmp_path / "c.png")]) == 0
    webui = png_pixels(capsys.readouterr()[0].strip())
    kept = np.asarray(_mask(0)) == 0
    init = np.asarray(_picture(), np.float32) / 255
    assert np.abs(webui[kept] - init[kept]).max() < 1 / 255 + 1e-6
    assert np.abs(webui[~kept] - init[~kept]).mean() > 10 * TOL
    # img2img without a mask is refused in one line
    assert cli.main(["img2img", *common[:-2], "--out", str(tmp_path / "d.png")]) != 0
    err = capsys.readouterr()[1]
    assert "FLUX.1 Fill repaints a picture under a mask" in err and "Traceback" not in err


def test_fill_through_the_server(first_device: gpucore.Device, fill: tuple[Path, Any]) -> None:
    """img2img with a mask inpaints (the WebUI's mask fields apply: an inverted mask keeps
    the other part); without a mask it is refused (4xx) naming what to send."""
    pytest.importorskip("fastapi", reason="the server extra is not installed")
    from fastapi.testclient import TestClient
    from server_support import CachedLoader, png_b64

    from diffusion.server import create_app

    folder, _ = fill
    app = create_app(model=folder, models_dir=folder.parent, outputs=folder.parent / "out",
                     max_size=256, loader=CachedLoader())
    body = {"prompt": PROMPT, "init_images": [png_b64(_picture())], "width": WIDTH,
            "height": HEIGHT, "steps": 2, "seed": 5, "sampler_name": "Euler",
            "distilled_cfg_scale": 30, "denoising_strength": 1.0, "mask_blur": 0}
    init = np.asarray(_picture(), np.float32) / 255
    kept = np.asarray(_mask(0)) == 0
    with TestClient(app) as client:
        for invert, keep in ((0, kept), (1, ~kept)):
            response = client.post("/sdapi/v1/img2img", json={
                **body, "mask": png_b64(_mask(0)), "inpainting_mask_invert": invert})
            assert response.status_code == 200, response.text
            picture = _b64_pixels(response.json()["images"][0])
            assert np.abs(picture[keep] - init[keep]).max() < 1 / 255 + 1e-6
            assert np.abs(picture[~keep] - init[~keep]).mean() > 10 * TOL
        unmasked = client.post("/sdapi/v1/img2img", json=body)
        assert 400 <= unmasked.status_code < 500
        assert "FLUX.1 Fill repaints a picture under a mask" in unmasked.text


def _b64_pixels(text: str) -> np.ndarray:
    import base64
    import io

    with Image.open(io.BytesIO(base64.b64decode(text))) as image:
        return np.asarray(image.convert("RGB"), np.float32) / 255


def test_fill_first_block_cache(first_device: gpucore.Device, fill: tuple[Path, Any],
                                tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """`--cache fbc:T`: diffusers' FluxFillPipeline picture with its First Block Cache hook
    on the transformer (the Fill channels ride along the image tokens), some steps skipped,
    the infotext saying how many ran; MagCache (FLUX.1 dev's table) refused in one line."""
    from webui_ref import assert_steps_skipped, first_block_cache

    from diffusion.infotext import read_infotext

    folder, reference = fill
    threshold, steps = 1.5, 4  # a random tiny model moves far more than a trained one
    _picture().save(tmp_path / "init.png")
    _mask(0).save(tmp_path / "mask.png")
    common = ("inpaint", "--model", str(folder), "--init-image", str(tmp_path / "init.png"),
              "--mask", str(tmp_path / "mask.png"), "--width", str(WIDTH), "--height",
              str(HEIGHT), "--steps", str(steps), "--seed", "7", "--distilled-cfg-scale", "30",
              "--dtype", "float32", "--prompt", PROMPT, "--mask-blur", "0", "--sampler",
              "diffusers", "--rng", "torch", "--strength", "1")
    assert cli.main([*common, "--cache", f"fbc:{threshold}",
                     "--out", str(tmp_path / "cached.png")]) == 0
    out = capsys.readouterr()[0].strip()

    def expected() -> np.ndarray:
        return reference(PROMPT, image=_picture(), mask_image=_mask(0), height=HEIGHT,
                         width=WIDTH, num_inference_steps=steps, guidance_scale=30.0,
                         max_sequence_length=16, generator=torch.Generator().manual_seed(7),
                         output_type="np").images[0]

    with first_block_cache(reference.transformer, threshold):
        cached_reference = expected()
    cached = png_pixels(out)
    assert np.abs(cached - cached_reference).mean() < TOL
    assert_steps_skipped(read_infotext(out) or "", threshold, steps)
    assert np.abs(cached - expected()).mean() > 2 * TOL  # the cache visibly acted (~5 TOL)
    # a WebUI sampler takes the cache too (the guided flow's branch)
    from diffusion.pipelines.load import load_pipeline
    from diffusion.pipelines.request import GenerationRequest

    result = load_pipeline(folder, device=first_device).generate(GenerationRequest(
        prompt=PROMPT, init_image=_picture(), mask=_mask(0), width=WIDTH, height=HEIGHT,
        steps=steps, sampler="Euler", seed=7, distilled_cfg_scale=30.0, cfg_scale=1.0,
        strength=1.0, cache=f"fbc:{threshold}"))
    assert_steps_skipped(f'Cache: "{result.settings["cache"]}"', threshold, steps)
    assert cli.main([*common, "--cache", "magcache", "--out", str(tmp_path / "m.png")]) != 0
    err = capsys.readouterr()[1]
    assert "step cache magcache: not supported for FLUX.1 Fill models" in err
