"""An inpaint request made ready as the WebUI makes it (diffusion.pipelines.inpaint_plan): the
mask inverted ("Inpaint not masked") and blurred first, at the size given, then cut out
("Only masked") or fitted, then the masked
content, then the results laid back; the infotext fields written where the WebUI writes them;
the CLI's and the API's settings, with their defaults (the WebUI page's and its API's). The
expectations are the pieces' own (mask_blur, masked_content, inpaint_area and fit_picture are
tested against OpenCV, a float re-derivation and diffusers' port), composed by hand in the
WebUI's order. Host logic, no device; the end-to-end run on the bundled model is the last
test."""

from __future__ import annotations

import base64
import io
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from diffusion import GenerationRequest
from diffusion.imaging import fit_picture, latent_mask, overlay_original, to_unit_image
from diffusion.infotext import format_infotext, parse_infotext
from diffusion.noise.rng import make_generator
from diffusion.pipelines.inpaint_area import MaskedArea
from diffusion.pipelines.inpaint_plan import InpaintPlan
from diffusion.pipelines.mask_blur import blur_mask
from diffusion.pipelines.masked_content import fill

PICTURE = np.random.default_rng(4).integers(0, 256, (80, 96, 3), dtype=np.uint8)


def _mask(size: tuple[int, int] = (96, 80), box: tuple[int, int, int, int] = (40, 24, 64, 48),
           ) -> Image.Image:
    mask = Image.new("L", size)
    mask.paste(255, box)
    return mask


def _request(**settings: Any) -> GenerationRequest:
    return GenerationRequest(**{"prompt": "a", "init_image": PICTURE, "mask": _mask(),
                                "width": 48, "height": 40, **settings})


def _same(a: Any, b: Any) -> bool:
    return np.array_equal(np.asarray(a), np.asarray(b))


@pytest.mark.nodevice
@pytest.mark.nodevice
def test_an_init_images_transparency_is_flattened_over_white() -> None:
    """An RGBA init image (PIL or an HxWx4 array) reaches the model as the WebUI's
    `images.flatten(img, "#ffffff")` makes it, not with its transparent pixels' hidden
    colour."""
    rng = np.random.default_rng(4)
    rgba = rng.integers(0, 256, (24, 40, 4), dtype=np.uint8)
    rgba[:8, :, :3] = (255, 0, 255)  # a hidden magenta under ...
    rgba[:8, :, 3] = 0  # ... fully transparent rows
    picture = Image.fromarray(rgba, "RGBA")
    webui = Image.new("RGBA", picture.size, "#ffffff")  # modules/images.py's flatten
    webui.paste(picture, mask=picture)
    expected = np.asarray(webui.convert("RGB"), np.float32)[None].transpose(0, 3, 1, 2)
    for given in (picture, rgba):
        ours = (to_unit_image(given, 40, 24) + 1) * 127.5
        np.testing.assert_allclose(ours, expected, atol=1e-3)
    assert (expected[:, :, :8] == 255).all()  # the test's premise: white where transparent


def test_the_mask_is_blurred_at_its_size_then_fitted() -> None:
    """96x80 drawn at 48x40 (and at 64x40 by the crop and fill modes): the mask blurred by 4
    pixels of its own, then fitted as the picture is; blurring after the fit would blur twice
    as wide. The request left: blurred, fitted, nothing more to do."""
    blurred = blur_mask(_mask(), 4, 4)
    plan = InpaintPlan.make(_request(mask_blur=4), 48, 40)
    assert _same(plan.request.mask, fit_picture(blurred, 48, 40, 0))
    assert not _same(plan.request.mask, blur_mask(fit_picture(_mask(), 48, 40, 0), 4, 4))
    assert _same(plan.request.init_image, fit_picture(Image.fromarray(PICTURE), 48, 40, 0))
    assert plan.settings == {"mask_blur": 4}
    assert (plan.request.mask_blur, plan.request.resize_mode, plan.request.inpainting_fill,
            plan.request.mode) == (0, 0, 1, "inpaint")
    for mode in (1, 2):
        plan = InpaintPlan.make(_request(mask_blur=4, resize_mode=mode, width=64), 64, 40)
        assert _same(plan.request.mask, fit_picture(blurred, 64, 40, mode))
        assert _same(plan.request.init_image, fit_picture(Image.fromarray(PICTURE), 64, 40,
                                                          mode))


@pytest.mark.nodevice
def test_the_blur_is_written_only_as_one_number() -> None:
    """x = y > 0: "Mask blur: N"; x != y blurs each side by its own and writes nothing (the
    WebUI's mask_blur property is None then); 0: the mask as given."""
    plan = InpaintPlan.make(_request(mask_blur=(4, 2), width=96, height=80), 96, 80)
    assert _same(plan.request.mask, blur_mask(_mask(), 4, 2)) and plan.settings == {}
    plan = InpaintPlan.make(_request(width=96, height=80), 96, 80)
    assert _same(plan.request.mask, _mask()) and plan.settings == {}


@pytest.mark.nodevice
def test_inpaint_not_masked_inverts_the_mask_before_the_blur() -> None:
    """mask_invert (the WebUI's inpainting_mask_invert): the black part is repainted, the mask
    inverted before it is blurred, and "Mask mode: Inpaint not masked" written."""
    inverted = Image.eval(_mask(), lambda v: 255 - v)
    plan = InpaintPlan.make(_request(mask_blur=4, mask_invert=True, width=96, height=80),
                            96, 80)
    assert _same(plan.request.mask, blur_mask(inverted, 4, 4))
    assert not plan.request.mask_invert and _same(plan.laid_back.mask, plan.request.mask)
    assert plan.settings == {"mask_mode": "Inpaint not masked", "mask_blur": 4}


@pytest.mark.nodevice
def test_the_masked_content() -> None:
    """fill: the fitted picture filled through the fitted blurred mask, then nothing left to
    do; latent noise / nothing: the picture as it is, the content left for the latents;
    original: nothing written."""
    picture = fit_picture(Image.fromarray(PICTURE), 48, 40, 0)
    mask = fit_picture(blur_mask(_mask(), 4, 4), 48, 40, 0)
    plan = InpaintPlan.make(_request(mask_blur=4, inpainting_fill=0), 48, 40)
    assert _same(plan.request.init_image, fill(picture, mask))
    assert plan.settings == {"mask_blur": 4, "masked_content": "fill"}
    assert plan.request.inpainting_fill == 1
    for content, name in ((2, "latent noise"), (3, "latent nothing")):
        plan = InpaintPlan.make(_request(mask_blur=4, inpainting_fill=content), 48, 40)
        assert _same(plan.request.init_image, picture)
        assert plan.request.inpainting_fill == content
        assert plan.settings == {"mask_blur": 4, "masked_content": name}
    plan = InpaintPlan.make(_request(mask_blur=4, inpainting_fill=0, mask=None), 48, 40)
    assert plan.settings == {} and plan.request.inpainting_fill == 1  # img2img: no mask


@pytest.mark.nodevice
def test_only_masked_cuts_from_the_blurred_mask_and_fills_the_cut() -> None:
    """The area found around the blurred mask, the picture and blurred mask cut to it, the
    fill on the cut; the results pasted into the picture given through the blurred mask;
    the infotext fields in the WebUI's order."""
    blurred = blur_mask(_mask(), 4, 4)
    plan = InpaintPlan.make(_request(mask_blur=4, inpainting_fill=0, inpaint_full_res=True,
                                     inpaint_full_res_padding=4), 48, 40)
    area = MaskedArea.find(blurred, 4, 48, 40)
    assert area is not None and plan.area == area
    assert _same(plan.request.mask, area.crop(blurred))
    assert _same(plan.request.init_image, fill(area.crop(Image.fromarray(PICTURE)),
                                               area.crop(blurred)))
    assert list(plan.settings.items()) == [("mask_blur", 4), ("inpaint_area", "Only masked"),
                                           ("inpaint_full_res_padding", 4),
                                           ("masked_content", "fill")]
    results = [np.zeros((40, 48, 3), np.uint8)]
    pasted = plan.finish(results)
    assert _same(pasted[0], overlay_original(results, PICTURE, blurred,
                                             paste_to=area.paste_to)[0])


@pytest.mark.nodevice
def test_a_blank_mask_under_only_masked_fills_nothing() -> None:
    """The WebUI drops a blank mask there (img2img of the whole picture): no fill, no Masked
    content, no overlay; its blur is still written, as there."""
    request = _request(mask=Image.new("L", (96, 80)), mask_blur=4, inpainting_fill=0,
                       inpaint_full_res=True)
    with pytest.warns(UserWarning, match="the mask is blank"):
        plan = InpaintPlan.make(request, 48, 40)
    assert _same(plan.request.init_image, fit_picture(Image.fromarray(PICTURE), 48, 40, 0))
    assert plan.settings == {"mask_blur": 4} and plan.area is None
    results = [np.zeros((40, 48, 3), np.uint8)]
    assert plan.finish(results) is results


@pytest.mark.nodevice
def test_the_whole_picture_is_laid_back_by_its_fitted_mask() -> None:
    plan = InpaintPlan.make(_request(mask_blur=4, inpainting_fill=0), 48, 40)
    results = [np.full((40, 48, 3), 7, np.uint8)]
    want = overlay_original(results, fit_picture(Image.fromarray(PICTURE), 48, 40, 0),
                            fit_picture(blur_mask(_mask(), 4, 4), 48, 40, 0))
    assert _same(plan.finish(results)[0], want[0])  # the original, not the filled picture
    assert plan.finish(results, overlay=False) is results  # diffusers' own pictures
    plain = InpaintPlan.make(_request(mask=None), 48, 40)
    assert plain.finish(results) is results and plain.settings == {}


@pytest.mark.nodevice
def test_settings_are_checked() -> None:
    for bad, needle in ((dict(mask_blur=-1), "mask_blur"), (dict(mask_blur=(1, 2, 3)),
                                                            "mask_blur must be"),
                        (dict(mask_blur=1.5), "mask_blur"),
                        (dict(inpainting_fill=4), r"0 \(fill\), 1 \(original\)"),
                        (dict(inpainting_fill="fill"), "takes the number"),
                        (dict(resize_mode=4), r"resize_mode .*3 just resize \(latent "),
                        (dict(mask_round=1), "mask_round must be True or False"),
                        (dict(mask_invert=1), "mask_invert must be True or False"),
                        (dict(latent_noise_seed=-1), "latent_noise_seed")):
        with pytest.raises(ValueError, match=needle):
            GenerationRequest(**bad)


INFOTEXT = ("a\nSteps: 2, Sampler: Euler, CFG scale: 7, Seed: 1, Size: 48x40, Denoising "
            "strength: 0.75, Mask mode: Inpaint not masked, Mask blur: 4, Inpaint area: Only "
            "masked, Masked area padding: 4, Masked content: latent noise")


@pytest.mark.nodevice
def test_the_infotext_as_the_webui_writes_it() -> None:
    """The fields in the WebUI's order (its extra_generation_params: Mask mode, Mask blur,
    Inpaint area, Masked area padding, Masked content), read back."""
    settings = dict(prompt="a", steps=2, sampler="Euler", cfg_scale=7, seed=1, width=48,
                    height=40, strength=0.75, mask_mode="Inpaint not masked", mask_blur=4,
                    inpaint_area="Only masked", inpaint_full_res_padding=4,
                    masked_content="latent noise")
    assert format_infotext(settings) == INFOTEXT
    parsed = parse_infotext(INFOTEXT)
    assert (parsed["mask_mode"], parsed["mask_blur"], parsed["masked_content"]) == (
        "Inpaint not masked", 4, "latent noise")
    del settings["mask_mode"], settings["mask_blur"], settings["masked_content"]
    assert "Mask" not in format_infotext(settings).replace("Masked area", "")


@pytest.mark.nodevice
def test_the_cli(tmp_path: Path) -> None:
    """inpaint's --mask-blur and --inpainting-fill (the WebUI page's 4 and "original"), by
    name or number, and --mask-invert, also from --from-infotext; --no-mask-round (the WebUI's
    mask_round)."""
    from diffusion.cli.from_infotext import apply_infotext
    from diffusion.cli.generate import build_request
    from diffusion.cli.main import build_parser
    from diffusion.infotext import save_png

    parser = build_parser()
    Image.fromarray(PICTURE).save(tmp_path / "i.png")
    _mask().save(tmp_path / "m.png")
    files = ["--init-image", str(tmp_path / "i.png"), "--mask", str(tmp_path / "m.png")]
    args = parser.parse_args(["inpaint", *files])
    assert (args.mask_blur, args.inpainting_fill, args.mask_round, args.mask_invert) == (
        4, 1, True, False)
    args = parser.parse_args(["inpaint", *files, "--mask-blur", "0", "--inpainting-fill",
                              "Latent Nothing", "--no-mask-round", "--mask-invert", "--prompt",
                              "a"])
    args.steps, args.cfg_scale, args.sampler = 2, 7.0, "Euler"
    request = build_request(args)
    assert (request.mask_blur, request.inpainting_fill, request.mask_round,
            request.mask_invert) == (0, 3, False, True)
    assert parser.parse_args(["inpaint", *files, "--inpainting-fill", "0"]).inpainting_fill == 0
    with pytest.raises(Exception, match=r"--inpainting-fill: .*got 'noise'"):
        parser.parse_args(["inpaint", *files, "--inpainting-fill", "noise"])
    save_png(PICTURE, tmp_path / "made.png", infotext=INFOTEXT.replace("Mask blur: 4",
                                                                       "Mask blur: 8"))
    args = parser.parse_args(["inpaint", *files, "--from-infotext", str(tmp_path / "made.png")])
    apply_infotext(args, parser)
    assert (args.mask_blur, args.inpainting_fill, args.mask_invert) == (8, 2, True)


def _b64(image: Image.Image) -> str:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return base64.b64encode(buffer.getvalue()).decode("ascii")


@pytest.mark.nodevice
def test_the_apis_settings_and_defaults(tmp_path: Path) -> None:
    """The WebUI API's defaults (its StableDiffusionProcessingImg2Img's: mask_blur_x/y 4,
    inpainting_fill 0, mask_round True) reach the request; mask_blur sets both sides; a side
    of 0 or less is no blur, as there; resize_mode 3 (latent upscale) reaches the pipeline;
    the mask is read as its create_binary_mask reads it: an opaque RGBA picture by its gray
    levels, a sketch by its alpha over 128 (mask_round False: the alpha as it is), and
    inpainting_mask_invert left to the pipeline (which writes it into the infotext)."""
    pytest.importorskip("fastapi", reason="the server extra is not installed")
    from diffusion.server.api import generation
    from diffusion.server.api.schemas import Img2ImgRequest

    def served(**body: Any) -> GenerationRequest:
        body = {"init_images": [_b64(Image.fromarray(PICTURE))], "mask": _b64(_mask()), **body}
        job, _ = generation.build_job(
            Img2ImgRequest(prompt="a", **body), "img2img", max_size=1024, outputs=tmp_path,
            options={"CLIP_stop_at_last_layers": 1, "randn_source": "GPU"})
        return job.request

    request = served()
    assert (request.mask_blur, request.inpainting_fill, request.resize_mode,
            request.mask_round, request.mask_invert) == ((4, 4), 0, 0, True, False)
    assert served(mask_blur=8).mask_blur == (8, 8)
    assert served(mask_blur_x=3, mask_blur_y=-2).mask_blur == (3, 0)
    assert served(resize_mode=3).resize_mode == 3 and served(resize_mode=2).resize_mode == 2
    assert served(inpainting_fill=2).inpainting_fill == 2
    with pytest.raises(generation.RequestError, match=r"0 \(fill\), 1 \(original\)"):
        served(inpainting_fill=5)
    opaque = Image.merge("RGBA", (*_mask().convert("RGB").split(), Image.new("L", (96, 80),
                                                                               255)))
    assert _same(served(mask=_b64(opaque)).mask, _mask())
    sketch = Image.new("RGBA", (96, 80))
    sketch.putalpha(Image.eval(_mask(), lambda v: v // 2 + 60))  # 60 outside, 187 inside
    assert _same(served(mask=_b64(sketch)).mask, _mask())
    unrounded = served(mask=_b64(sketch), mask_round=False)
    assert unrounded.mask_round is False
    assert _same(unrounded.mask, Image.eval(_mask(), lambda v: v // 2 + 60))
    inverted = served(inpainting_mask_invert=1)
    assert inverted.mask_invert is True and _same(inverted.mask, _mask())


def test_masked_content_on_the_bundled_model(first_device: Any,
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    """End to end (about 8 s on 2 cores with lavapipe: 64 px, 1 of 3 steps): the four masked
    contents of one inpaint differ inside the mask and keep the picture where the blurred mask
    is black; latent noise / nothing reach the init latents through the latent mask of the
    blurred mask; the infotext fields are written."""
    import diffusion.pipelines.sd.prepare as prepare
    from diffusion import load_pipeline

    seen: list[tuple[int, np.ndarray, np.ndarray]] = []
    original = prepare.latent_content

    def spy(latents: np.ndarray, repaint: np.ndarray, content: int, **kw: Any) -> np.ndarray:
        seen.append((content, repaint, out := original(latents, repaint, content, **kw)))
        return out

    monkeypatch.setattr(prepare, "latent_content", spy)
    pipe = load_pipeline(device=first_device)
    picture = np.full((64, 64, 3), 255, np.uint8)
    picture[:, :32] = (200, 30, 30)
    mask = _mask((64, 64), (16, 16, 48, 48))
    blurred = np.asarray(blur_mask(mask, 4, 4))
    images = []
    for content in range(4):
        result = pipe.generate(prompt="a blue circle", init_image=picture, mask=mask,
                               strength=0.5, steps=3, sampler="Euler", seed=3, width=64,
                               height=64, mask_blur=4, inpainting_fill=content)
        images.append(result.images[0].astype(int))
        assert np.array_equal(images[-1][blurred == 0], picture[blurred == 0])
        assert result.settings.get("masked_content") == (None if content == 1 else [
            "fill", None, "latent noise", "latent nothing"][content])
        assert result.settings["mask_blur"] == 4
    inside = blurred == 255
    for i in range(4):
        for j in range(i):
            assert np.abs(images[i] - images[j])[inside].mean() > 2, (i, j)
    latent = latent_mask(Image.fromarray(blurred), (8, 8))
    assert [content for content, _, _ in seen] == [1, 1, 2, 3]  # fill: done on the picture
    assert all(np.array_equal(repaint, latent) for _, repaint, _ in seen)
    where = np.broadcast_to(latent == 1, seen[2][2].shape)
    noise = make_generator("numpy", 3).standard_normal(seen[2][2].shape[1:])[None]
    assert np.array_equal(seen[2][2][where], np.broadcast_to(noise, where.shape)[where])
    assert not seen[3][2][where].any()  # latent nothing: zeros there
