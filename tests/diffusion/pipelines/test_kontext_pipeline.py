"""FLUX.1 Kontext: a tiny FluxKontextPipeline folder made by diffusers, detected as its own
family; img2img through the command line reads the init image as the reference picture and
draws diffusers' picture (`--sampler diffusers --rng torch`); the reference and the prompt
each change the picture; a strength without a mask is refused in one line; the server's
img2img takes `init_images` as the reference too; inpainting (a mask) draws diffusers'
FluxKontextInpaintPipeline picture, its reference the request's further reference picture;
the hires fix's second pass is diffusers' img2img of the upscaled picture with the same
reference."""

from __future__ import annotations

import base64
import io
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
from diffusion.pipelines.flow.kontext import PREFERRED_KONTEXT_RESOLUTIONS, reference_size

pytestmark = pytest.mark.usefixtures("short_prompts")  # 16 T5 tokens (flow_fixtures.py)

PROMPT = "a red circle on a blue background"
WIDTH, HEIGHT = 24, 16


@pytest.fixture(scope="module")
def kontext(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Any]:
    """(the folder, diffusers' FluxKontextPipeline) of FLUX.1 dev's tiny parts; the attention's
    query and key norms scaled up (sharper attention) so the reference's tokens visibly steer
    the noise's."""
    from flow_tiny import tiny_flux_pipeline

    root = tmp_path_factory.mktemp("tiny-kontext")
    flux = tiny_flux_pipeline(root, dev=True)
    pipe = diffusers.FluxKontextPipeline(**flux.components)
    with torch.no_grad():
        for block in (*pipe.transformer.transformer_blocks,
                      *pipe.transformer.single_transformer_blocks):
            block.attn.norm_q.weight.mul_(3)
            block.attn.norm_k.weight.mul_(3)
    pipe.save_pretrained(root / "kontext")
    return root / "kontext", pipe


def _picture(kind: int) -> Image.Image:
    """Two smooth pictures of other colours (1, 2), or random pixels (any other kind)."""
    y, x = np.mgrid[0:HEIGHT, 0:WIDTH] * 255 // np.array([HEIGHT, WIDTH])[:, None, None]
    if kind == 1:
        pixels = np.stack([x, y, 255 - x], -1)
    elif kind == 2:
        pixels = np.stack([255 - y, x, np.full_like(x, 128)], -1)
    else:
        pixels = np.random.default_rng(kind).integers(0, 256, (HEIGHT, WIDTH, 3))
    return Image.fromarray(pixels.astype(np.uint8))


def _expected(pipe: Any, image: Image.Image, prompt: str, seed: int, **cfg: Any
              ) -> np.ndarray:
    settings = {"num_inference_steps": 2, **cfg}
    return pipe(image=image, prompt=prompt, height=HEIGHT, width=WIDTH, guidance_scale=2.5,
                max_sequence_length=16, max_area=HEIGHT * WIDTH, _auto_resize=False,
                generator=torch.Generator().manual_seed(seed), output_type="np",
                **settings).images[0]


def _b64_pixels(text: str) -> np.ndarray:
    with Image.open(io.BytesIO(base64.b64decode(text))) as image:
        return np.asarray(image.convert("RGB"), np.float32) / 255


@pytest.mark.nodevice
def test_reference_sizes_follow_diffusers() -> None:
    """The preferred resolution of the nearest aspect ratio, or the picture's own size, in
    whole patches; too small a reference is refused in one line."""
    assert PREFERRED_KONTEXT_RESOLUTIONS == tuple(diffusers.pipelines.flux.pipeline_flux_kontext
                                                  .PREFERRED_KONTEXT_RESOLUTIONS)
    assert reference_size(1000, 1000, 16, auto_resize=True) == (1024, 1024)
    assert reference_size(1920, 1080, 16, auto_resize=True) == (1392, 752)
    assert reference_size(50, 37, 16, auto_resize=False) == (48, 32)
    with pytest.raises(ValueError, match="at least 16x16"):
        reference_size(20, 10, 16, auto_resize=False)


def test_kontext_img2img_from_the_cli(first_device: gpucore.Device, kontext: tuple[Path, Any],
                                      tmp_path: Path, capsys: pytest.CaptureFixture[str]
                                      ) -> None:
    folder, reference = kontext
    assert family_of(folder)[1] == "flux-kontext"
    ref = tmp_path / "ref.png"
    _picture(1).save(ref)
    common = ("--model", str(folder), "--init-image", str(ref), "--width", str(WIDTH),
              "--height", str(HEIGHT), "--steps", "2", "--sampler", "diffusers", "--rng",
              "torch", "--seed", "7", "--distilled-cfg-scale", "2.5", "--dtype", "float32")
    assert cli.main(["img2img", *common, "--prompt", PROMPT,
                     "--out", str(tmp_path / "a.png")]) == 0
    out, err = capsys.readouterr()
    assert "flux-kontext" in err
    ours = png_pixels(out.strip())
    expected = _expected(reference, _picture(1), PROMPT, 7)
    assert np.abs(ours - expected).mean() < 0.01
    # the reference and the prompt each change the picture (diffusers' too)
    assert np.abs(expected - _expected(reference, _picture(2), PROMPT, 7)).mean() > 0.02
    assert np.abs(expected - _expected(reference, _picture(1), "a cat", 7)).mean() > 0.02
    _picture(2).save(ref)
    assert cli.main(["img2img", *common, "--prompt", PROMPT,
                     "--out", str(tmp_path / "b.png")]) == 0
    other = png_pixels(capsys.readouterr()[0].strip())
    assert np.abs(other - ours).mean() > 0.02
    # a strength other than the default is refused in one line
    assert cli.main(["img2img", *common, "--prompt", PROMPT, "--strength", "0.5",
                     "--out", str(tmp_path / "c.png")]) != 0
    err = capsys.readouterr()[1]
    assert "not supported for FLUX.1 Kontext models without a mask" in err
    assert "Traceback" not in err


def test_kontext_through_the_server(first_device: gpucore.Device,
                                    kontext: tuple[Path, Any]) -> None:
    """img2img's init_images is the reference: Euler over the Simple schedule at 2 steps with
    the CPU noise source draws diffusers' picture, and with a CFG scale above 1 its true CFG
    (the negative prompt's pass sees the reference too); with a mask it inpaints (the
    original laid back outside it, as the WebUI)."""
    pytest.importorskip("fastapi", reason="the server extra is not installed")
    from fastapi.testclient import TestClient
    from server_support import CachedLoader, png_b64

    from diffusion.server import create_app

    folder, reference = kontext
    app = create_app(model=folder, models_dir=folder.parent, outputs=folder.parent / "out",
                     max_size=256, loader=CachedLoader())
    body = {"prompt": PROMPT, "init_images": [png_b64(_picture(3))], "width": WIDTH,
            "height": HEIGHT, "steps": 2, "seed": 5, "sampler_name": "Euler",
            "distilled_cfg_scale": 2.5, "override_settings": {"randn_source": "CPU"}}
    with TestClient(app) as client:
        response = client.post("/sdapi/v1/img2img", json=body)
        assert response.status_code == 200, response.text
        ours = _b64_pixels(response.json()["images"][0])
        assert np.abs(ours - _expected(reference, _picture(3), PROMPT, 5)).mean() < 0.01
        guided = client.post("/sdapi/v1/img2img", json={
            **body, "cfg_scale": 3, "negative_prompt": "a cat"})
        assert guided.status_code == 200, guided.text
        expected = _expected(reference, _picture(3), PROMPT, 5, true_cfg_scale=3.0,
                             negative_prompt="a cat")
        assert np.abs(_b64_pixels(guided.json()["images"][0]) - expected).mean() < 0.01
        assert np.abs(expected - ours).mean() > 0.02  # the negative pass mattered
        mask = np.zeros((HEIGHT, WIDTH), np.uint8)
        mask[:, 8:] = 255
        masked = client.post("/sdapi/v1/img2img", json={
            **body, "mask": png_b64(Image.fromarray(mask)), "denoising_strength": 0.6,
            "mask_blur": 0})
        assert masked.status_code == 200, masked.text
        painted = _b64_pixels(masked.json()["images"][0])
        init = np.asarray(_picture(3), np.float32) / 255
        assert np.abs(painted - init)[mask == 0].max() < 1e-6
        assert np.abs(painted - init)[mask > 0].mean() > 0.05


def test_kontext_first_block_cache(first_device: gpucore.Device, kontext: tuple[Path, Any],
                                   tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """`--cache fbc:T` with the reference picture: diffusers' FluxKontextPipeline picture with
    its First Block Cache hook on the transformer (the reference's tokens among the image
    stream the rule compares), some steps skipped, the infotext saying how many ran; TeaCache
    (whose tables are FLUX.1 dev's) refused in one line."""
    import re

    from webui_ref import assert_steps_skipped, first_block_cache

    from diffusion.infotext import read_infotext

    folder, reference = kontext
    threshold, steps = 1.5, 4  # a random tiny model moves far more than a trained one
    ref = tmp_path / "ref.png"
    _picture(1).save(ref)
    common = ("img2img", "--model", str(folder), "--init-image", str(ref), "--width",
              str(WIDTH), "--height", str(HEIGHT), "--steps", str(steps), "--sampler",
              "diffusers", "--rng", "torch", "--seed", "7", "--distilled-cfg-scale", "2.5",
              "--dtype", "float32", "--prompt", PROMPT)
    assert cli.main([*common, "--cache", f"fbc:{threshold}",
                     "--out", str(tmp_path / "cached.png")]) == 0
    out = capsys.readouterr()[0].strip()
    with first_block_cache(reference.transformer, threshold):
        expected = _expected(reference, _picture(1), PROMPT, 7, num_inference_steps=steps)
    cached = png_pixels(out)
    assert np.abs(cached - expected).mean() < 0.01
    assert_steps_skipped(read_infotext(out) or "", threshold, steps)
    plain = _expected(reference, _picture(1), PROMPT, 7, num_inference_steps=steps)
    assert np.abs(cached - plain).mean() > 0.01  # the cache visibly acted
    # a WebUI sampler takes the cache too (the guided flow's branch)
    from diffusion.pipelines.load import load_pipeline
    from diffusion.pipelines.request import GenerationRequest

    result = load_pipeline(folder, device=first_device).generate(GenerationRequest(
        prompt=PROMPT, init_image=_picture(1), width=WIDTH, height=HEIGHT, steps=steps,
        sampler="Euler", seed=7, distilled_cfg_scale=2.5, cfg_scale=1.0,
        cache=f"fbc:{threshold}"))
    assert re.fullmatch(rf"fbc {threshold:g}, [1-3]/{steps} steps computed",
                        result.settings["cache"]), result.settings["cache"]
    assert cli.main([*common, "--cache", "teacache", "--out", str(tmp_path / "t.png")]) != 0
    err = capsys.readouterr()[1]
    assert "step cache teacache: not supported for FLUX.1 Kontext models" in err


def test_kontext_inpaint_equals_diffusers(first_device: gpucore.Device,
                                          kontext: tuple[Path, Any]) -> None:
    """A mask: the init image is the picture inpainted at the request's strength, the further
    reference picture its reference. The "diffusers" sampler draws FluxKontextInpaintPipeline's
    picture (the init image's latent mean noised by the torch CPU generator's noise, the kept
    part put back after every step; measured 8.8e-4 mean abs, 2.0e-3 max of [0, 1] pixels:
    the uint8 rounding); without a reference the picture inpainted is its own, as in diffusers.
    The kept latents are the init image's exactly, the masked ones move, and the reference
    picture changes the result."""
    from diffusion.imaging import to_unit_image
    from diffusion.pipelines.load import load_pipeline
    from diffusion.pipelines.request import GenerationRequest

    folder, reference = kontext
    inpaint = diffusers.FluxKontextInpaintPipeline(**reference.components)
    init, ref, other = _picture(3), _picture(1), _picture(2)
    mask = np.zeros((HEIGHT, WIDTH), np.uint8)
    mask[:, 8:] = 255  # whole latents (8 pixels) and 2x2 patches: kept at the left
    model = load_pipeline(folder, device=first_device)
    settings: dict[str, Any] = dict(prompt=PROMPT, width=WIDTH, height=HEIGHT, steps=4, seed=7,
                                    sampler="diffusers", rng="torch", strength=0.6,
                                    distilled_cfg_scale=2.5, cfg_scale=1.0, init_image=init,
                                    mask=Image.fromarray(mask))

    def expected(image_reference: Any) -> np.ndarray:
        return inpaint(image=init, image_reference=image_reference,
                       mask_image=Image.fromarray(mask), prompt=PROMPT, strength=0.6,
                       height=HEIGHT, width=WIDTH, guidance_scale=2.5, max_sequence_length=16,
                       max_area=HEIGHT * WIDTH, _auto_resize=False, num_inference_steps=4,
                       generator=torch.Generator().manual_seed(7), output_type="np").images[0]

    ours = model.generate(GenerationRequest(**settings, references=(ref,))).images[0] / 255
    with_reference = expected(ref)
    assert np.abs(ours - with_reference).mean() < 2e-3
    alone = model.generate(GenerationRequest(**settings)).images[0] / 255
    assert np.abs(alone - expected(None)).mean() < 2e-3
    assert np.abs(with_reference - expected(other)).mean() > 0.02  # the reference matters
    assert np.abs(alone - ours).mean() > 0.02
    # the kept latents are the init image's mean, the masked ones repainted
    pipe = model.pipe
    latents = pipe(PROMPT, image=ref, init_image=init, mask_image=mask, strength=0.6,
                   height=HEIGHT, width=WIDTH, num_inference_steps=4, guidance_scale=2.5,
                   max_sequence_length=16, auto_resize=False, seed=7, output_type="latent")
    start = pipe.mean_latents(to_unit_image(init, WIDTH, HEIGHT))
    assert np.abs(latents - start)[..., :1].max() < 1e-5
    assert np.abs(latents - start)[..., 1:].mean() > 0.1
    # a WebUI sampler inpaints too, the reference steering the masked part
    euler = {**settings, "sampler": "Euler"}
    painted = [model.generate(GenerationRequest(**euler, references=(picture,))).images[0]
               for picture in (ref, other)]
    assert np.abs(painted[0].astype(float) - painted[1])[mask > 0].mean() > 2
    # the WebUI's mask blur, "Only masked" and latent noise on the shared path; the
    # "diffusers" sampler encodes the picture itself: latent noise refused in one line
    webui = model.generate(GenerationRequest(**euler, references=(ref,), mask_blur=2,
                                             inpaint_full_res=True, inpainting_fill=2))
    assert webui.images[0].shape == (HEIGHT, WIDTH, 3)
    assert webui.settings["inpaint_area"] == "Only masked"
    assert webui.settings["masked_content"] == "latent noise"
    assert webui.settings["strength"] == 0.6  # inpainting reads it: the infotext says it
    with pytest.raises(ValueError, match="latent noise"):
        model.generate(GenerationRequest(**settings, inpainting_fill=2))


def test_kontext_hires_fix_with_the_reference(first_device: gpucore.Device,
                                             kontext: tuple[Path, Any], tmp_path: Path,
                                             capsys: pytest.CaptureFixture[str]) -> None:
    """The hires fix on img2img: the first pass beside the reference, its latents upscaled
    ("Latent", 2x), then img2img at the hires strength with the same reference, the picture
    at the hires size. Against diffusers: FluxKontextPipeline's picture, its latents enlarged
    by torch's bilinear interpolation and noised to the stretched schedule's first kept sigma
    by the seed's noise at the new size, finished by FluxKontextInpaintPipeline with the whole
    picture masked (img2img at the strength) and the reference as `image_reference` (measured
    9e-4 mean abs of [0, 1] pixels: the uint8 rounding). The reference steers the hires pass:
    another one there alone moves diffusers' picture far past that bound; the command line's
    img2img takes the hires fix too."""
    from diffusers.pipelines.flux.pipeline_flux import calculate_shift

    from diffusion.pipelines.load import load_pipeline
    from diffusion.pipelines.request import GenerationRequest
    from diffusion.upscalers.interpolation import HiresFix

    folder, reference = kontext
    seed, steps, hires_steps, denoise = 7, 2, 2, 0.5
    model = load_pipeline(folder, device=first_device)

    def ours(picture: Image.Image) -> np.ndarray:
        result = model.generate(GenerationRequest(
            prompt=PROMPT, init_image=picture, width=WIDTH, height=HEIGHT, steps=steps,
            sampler="Euler", seed=seed, rng="torch", distilled_cfg_scale=2.5,
            hr_distilled_cfg=2.5, cfg_scale=1.0,
            hires=HiresFix(scale=2.0, upscaler="Latent", steps=hires_steps, denoise=denoise)))
        assert result.settings["hires_upscaler"] == "Latent"
        return result.images[0] / 255

    inpaint = diffusers.FluxKontextInpaintPipeline(**reference.components)

    def theirs(first: Image.Image, second: Image.Image) -> np.ndarray:
        """diffusers' hires fix: the first pass beside `first`, the second beside `second`."""
        packed = reference(image=first, prompt=PROMPT, height=HEIGHT, width=WIDTH,
                           guidance_scale=2.5, max_sequence_length=16,
                           max_area=HEIGHT * WIDTH, _auto_resize=False,
                           num_inference_steps=steps, output_type="latent",
                           generator=torch.Generator().manual_seed(seed)).images
        x = reference._unpack_latents(packed, HEIGHT, WIDTH, reference.vae_scale_factor)
        x = torch.nn.functional.interpolate(x, size=(2 * x.shape[2], 2 * x.shape[3]),
                                            mode="bilinear")
        total, config = int(hires_steps / denoise), reference.scheduler.config
        mu = calculate_shift(x.shape[2] * x.shape[3] // 4, config.base_image_seq_len,
                             config.max_image_seq_len, config.base_shift, config.max_shift)
        sigma = reference.scheduler.time_shift(mu, 1.0, torch.tensor(1 - (total - hires_steps)
                                                                     / total)).item()
        noise = torch.randn(x.shape, generator=torch.Generator().manual_seed(seed))
        size = (2 * WIDTH, 2 * HEIGHT)
        return inpaint(image=Image.new("RGB", size), image_reference=second,
                       mask_image=Image.new("L", size, 255), prompt=PROMPT, strength=denoise,
                       height=size[1], width=size[0], guidance_scale=2.5,
                       max_sequence_length=16, max_area=size[0] * size[1],
                       _auto_resize=False, num_inference_steps=total,
                       latents=sigma * noise + (1 - sigma) * x,
                       generator=torch.Generator().manual_seed(seed),
                       output_type="np").images[0]

    got = ours(_picture(1))
    assert got.shape == (2 * HEIGHT, 2 * WIDTH, 3) and np.isfinite(got).all()
    with torch.no_grad():
        expected = theirs(_picture(1), _picture(1))
        assert np.abs(got - expected).mean() < 2e-3
        assert np.abs(expected - theirs(_picture(1), _picture(2))).mean() > 0.02
    # another reference (both passes), through the command line
    _picture(2).save(tmp_path / "ref.png")
    assert cli.main(["img2img", "--model", str(folder), "--init-image",
                     str(tmp_path / "ref.png"), "--prompt", PROMPT, "--width", str(WIDTH),
                     "--height", str(HEIGHT), "--steps", str(steps), "--sampler", "Euler",
                     "--rng", "torch", "--seed", str(seed), "--distilled-cfg-scale", "2.5",
                     "--hr-distilled-cfg", "2.5", "--dtype", "float32", "--hr-scale", "2",
                     "--hr-steps", str(hires_steps), "--hr-denoise", str(denoise),
                     "--out", str(tmp_path / "hires.png")]) == 0
    other = png_pixels(capsys.readouterr()[0].strip())
    assert other.shape == got.shape and np.abs(got - other).mean() > 0.02
