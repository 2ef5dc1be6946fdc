"""GenerationRequest (diffusion.pipelines.request): one set of checks and messages for every
door (Python, the CLI, the server), the WebUI's limits, and requests that cannot be served
refused at once. Host logic only: no model, no device."""

from __future__ import annotations

import importlib.util
import time
from dataclasses import fields, replace
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from diffusion import GenerationRequest
from diffusion.pipelines.observer import Observer, from_callbacks
from diffusion.pipelines.request import LIMITS, MAX_PROMPT_CHARS, check_size, infotext_labels
from diffusion.upscalers.interpolation import HiresFix

pytestmark = pytest.mark.nodevice


def _message(**settings: Any) -> str:
    with pytest.raises(ValueError) as caught:
        GenerationRequest(**settings)
    return str(caught.value)


def test_defaults_are_a_valid_txt2img() -> None:
    request = GenerationRequest(prompt="a fox")
    assert request.mode == "txt2img" and request.uses_kdiffusion
    assert request.sampler_label == ("Euler a", "Automatic")
    assert replace(request, init_image=np.zeros((8, 8, 3), np.uint8)).mode == "img2img"


@pytest.mark.parametrize("settings, needle", [
    ({"width": 100}, "width must be a positive multiple of 8 (the VAE works on 8x8 pixel "
                     "blocks), got 100; try 96 or 104"),
    ({"height": 0}, "height must be a positive multiple of 8"),
    ({"steps": 0}, "steps must be a whole number from 1 to 1000, got 0"),
    ({"steps": 2.5}, "steps must be a whole number"),
    ({"cfg_scale": float("nan")}, "cfg_scale must be a finite number in [0, 100]"),
    ({"seed": -2}, "seed must be -1 (random) or a whole number >= 0"),
    ({"strength": 0.0}, "strength must be a finite number in (0, 1]"),
    ({"subseed_strength": 2}, "subseed_strength must be a finite number in [0, 1]"),
    ({"refiner_switch_at": 1.0}, "refiner_switch_at must be a fraction of the sampling between "
                                 "0 and 1 (exclusive), e.g. 0.8; got 1.0"),
    ({"rng": "cuda"}, "rng must be one of"),
    ({"sampler": "Euler z"}, "unknown sampler 'Euler z'"),
    ({"scheduler": "Karrass"}, "Karrass"),
    ({"scheduler": None}, "unknown schedule type None"),
    ({"sampler_options": {"eta": 0.5}}, "sampler_options must be a "
                                        "diffusion.sampling.kdiffusion.SamplerOptions or None"),
    ({"hires": 2}, "hires must be a diffusion.upscalers.interpolation.HiresFix or None, got int"),
    ({"seed_resize_from": 512}, "seed_resize_from must be a (width, height) pair or None"),
    ({"seed_resize_from": (512,)}, "seed_resize_from must be a (width, height) pair or None"),
    ({"mask": np.ones((8, 8))}, "inpainting needs an init image"),
    ({"init_image": np.zeros((8, 8, 3), np.uint8), "strength": 0.04},
     "strength 0.04 with 20 steps leaves no step to run"),
    ({"init_image": np.zeros((8, 8, 3), np.uint8), "mask": np.ones((8, 8)),
      "hires": HiresFix()}, "txt2img option; to inpaint, raise the size"),
    ({"hires": HiresFix(resize=(100, 64))}, "hires resize width must be a positive multiple"),
    ({"sampler": "DDIM", "hires": HiresFix(steps=1)},
     "hires steps 1 at hires denoising strength 0.7 leave DDIM no step to run in the hires"),
    ({"sampler": "UniPC", "steps": 1, "hires": HiresFix(denoise=0.3)},
     "steps (the hires pass's, hires steps 0) 1 at hires denoising strength 0.3 leave UniPC"),
    ({"sampler": "DDIM", "subseed_strength": 0.5}, "need a k-diffusion sampler; DDIM"),
    ({"seed_resize_from": (60, 64)}, "seed resize width must be a positive multiple of 8"),
])
def test_bad_settings_say_what_to_change(settings: dict[str, Any], needle: str) -> None:
    assert needle in _message(prompt="a", **settings)


def test_the_webui_limits() -> None:
    """The WebUI's API takes more than its slider's 150 steps; the models' 1000 timesteps end
    them here."""
    for steps in (151, 500, LIMITS["steps"][1]):
        assert GenerationRequest(prompt="a", steps=steps).steps == steps
    assert GenerationRequest(prompt="a", steps=np.int64(30)).steps == 30
    assert "from 1 to 1000" in _message(prompt="a", steps=1001)


def test_the_size_check_has_one_message(capsys: pytest.CaptureFixture[str], tmp_path: Path,
                                        monkeypatch: pytest.MonkeyPatch) -> None:
    """Python, the CLI and the server give the same words for a side that is not a multiple
    of 8."""
    pytest.importorskip("fastapi", reason="the server extra is not installed")
    import diffusion.cli.main as cli
    from diffusion.server.api.generation import RequestError, build_job
    from diffusion.server.api.schemas import Txt2ImgRequest

    with pytest.raises(ValueError) as direct:
        check_size("width", 100)
    expected = str(direct.value)
    assert _message(prompt="a", width=100) == expected
    with pytest.raises(RequestError) as served:
        build_job(Txt2ImgRequest(prompt="a", width=100), "txt2img",
                  options={"CLIP_stop_at_last_layers": 1, "randn_source": "GPU"},
                  max_size=1024, outputs=tmp_path)
    assert str(served.value) == expected
    monkeypatch.chdir(tmp_path)
    (tmp_path / "model").mkdir()
    assert cli.main(["txt2img", "--model", "model", "--prompt", "a", "--width", "100"]) == 2
    assert capsys.readouterr().err.strip().splitlines()[-1] == f"error: {expected}"


@pytest.mark.parametrize("size", [2 * 10**6, 50 * 10**6])
def test_a_huge_prompt_is_refused_by_its_length_at_once(size: int) -> None:
    prompt = "a" * size
    start = time.perf_counter()
    message = _message(prompt=prompt)
    assert time.perf_counter() - start < 0.1
    assert f"over the limit of {MAX_PROMPT_CHARS:,}" in message
    assert "negative_prompt" in _message(prompt="a", negative_prompt="b" * size)


def _served(tmp_path: Path, prompt: str, options: dict[str, Any],
            override: dict[str, Any]) -> GenerationRequest:
    """The request the server builds for a txt2img body of `prompt` with `override` as its
    override_settings, under /options' `options`."""
    from diffusion.server.api import generation
    from diffusion.server.api.schemas import Txt2ImgRequest

    job, _ = generation.build_job(
        Txt2ImgRequest(prompt=prompt, override_settings=override or None), "txt2img",
        options={"CLIP_stop_at_last_layers": 1, "randn_source": "GPU", **options},
        max_size=1024, outputs=tmp_path)
    return job.request


def test_the_emphasis_mode_reaches_the_request_and_the_infotext(tmp_path: Path) -> None:
    """The WebUI's "emphasis" option (override_settings over /options) becomes the request's
    emphasis, an unknown mode is refused naming the four; the infotext says a mode but
    Original, as the WebUI does, and reads it back."""
    pytest.importorskip("fastapi", reason="the server extra is not installed")
    from diffusion.infotext import format_infotext, parse_infotext
    from diffusion.server.api import generation

    def emphasis(options: dict[str, Any], **override: Any) -> str:
        return _served(tmp_path, "a (b:1.2)", options, override).emphasis

    assert emphasis({}) == "Original" and emphasis({"emphasis": "No norm"}) == "No norm"
    assert emphasis({"emphasis": "No norm"}, emphasis="Ignore") == "Ignore"
    with pytest.raises(generation.RequestError, match="emphasis must be one of 'Original'"):
        emphasis({}, emphasis="Strong")
    with pytest.raises(ValueError, match="emphasis must be one of"):
        GenerationRequest(prompt="a", emphasis="strong")
    settings = dict(prompt="a (b:1.2)", negative_prompt="", steps=4, sampler="Euler",
                    cfg_scale=7.0, seed=1, width=64, height=64, emphasis="No norm")
    text = format_infotext(settings)
    assert "Emphasis: No norm" in text and parse_infotext(text)["emphasis"] == "No norm"
    assert "Emphasis" not in format_infotext({**settings, "emphasis": None})


def test_the_hires_refiner_pass_option_reaches_the_request(tmp_path: Path) -> None:
    """The WebUI's "hires_fix_refiner_pass" (override_settings over /options) becomes the
    request's hires_refiner_pass; another value is refused naming the three; "Hires refiner"
    reads back; with the diffusers sampler the refiner and the hires fix are refused in one
    line (its hand-off is diffusers' denoising_end)."""
    pytest.importorskip("fastapi", reason="the server extra is not installed")
    from diffusion.infotext import format_infotext, parse_infotext
    from diffusion.server.api import generation
    from diffusion.upscalers.interpolation import HiresFix

    def which(options: dict[str, Any], **override: Any) -> str:
        return _served(tmp_path, "a", options, override).hires_refiner_pass

    assert which({}) == "second pass"
    assert which({"hires_fix_refiner_pass": "both passes"}) == "both passes"
    assert which({"hires_fix_refiner_pass": "both passes"},
                 hires_fix_refiner_pass="first pass") == "first pass"
    with pytest.raises(generation.RequestError, match=r"one of \['first pass', 'second pass'"):
        which({}, hires_fix_refiner_pass="third pass")
    settings = dict(prompt="a", negative_prompt="", steps=4, sampler="Euler", cfg_scale=7.0,
                    seed=1, width=64, height=64, refiner="r", refiner_switch_at=0.8,
                    hires_refiner_pass="first pass")
    assert parse_infotext(format_infotext(settings))["hires_refiner_pass"] == "first pass"
    with pytest.raises(ValueError, match="WebUI's samplers"):
        GenerationRequest(prompt="a", sampler="diffusers", hires=HiresFix(), refiner="r")


def test_every_infotext_field_has_a_label() -> None:
    """A new field says where the infotext writes it (or None, for prompt and images, and how
    the images are fitted, which the WebUI does not write either; nor whose seeds latent
    noise took, nor mask_round, whose "Mask rounding" its soft inpainting leaves out, nor
    FLUX Redux's reference picture, which a text field cannot hold any more than the init
    image, nor Sana's resolution binning, on by default as in diffusers)."""
    assert {f.name for f in fields(GenerationRequest)} - set(infotext_labels()) == {
        "prompt", "init_image", "mask", "resize_mode", "latent_noise_seed", "mask_round",
        "redux", "use_resolution_binning"}
    assert infotext_labels()["strength"] == "Denoising strength"


def test_callbacks_become_an_observer() -> None:
    seen: list[tuple[int, int]] = []
    observer = from_callbacks(None, lambda done, total: seen.append((done, total)),
                              lambda done, total, latents: done < 2)
    latents = np.zeros((1, 4, 2, 2))
    assert observer.step(1, 3, latents) and not observer.step(2, 3, latents)
    assert observer.step(1, 3, latents)  # the next pass starts afresh
    assert seen == [(1, 3), (2, 3), (1, 3)]
    assert Observer().step(1, 1, latents)
    with pytest.raises(ValueError, match="not both"):
        from_callbacks(Observer(), lambda done, total: None)


def test_a_setting_with_cli_and_api_metadata_needs_no_code_at_the_doors(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """refiner_switch_at is such a setting: the CLI's option and the server's body key come
    from its metadata (request.py's docstring: adding a setting)."""
    from dataclasses import dataclass as plain

    pytest.importorskip("fastapi", reason="the server extra is not installed")
    import diffusion.server.api.generation as generation
    from diffusion.cli.generate import build_request
    from diffusion.cli.main import build_parser
    from diffusion.pipelines.request import door_fields
    from diffusion.server.api.schemas import Txt2ImgRequest

    assert [f.name for f in door_fields("cli")] == ["refiner_switch_at", "hires_refiner_pass",
                                                    "distilled_cfg_scale", "hr_distilled_cfg",
                                                    "cache", "tiling", "emphasis",
                                                    "enable_temporal_reasoning",
                                                    "num_temporal_reasoning_steps", "num_frames",
                                                    "use_resolution_binning"]
    parser = build_parser()
    args = parser.parse_args(["txt2img", "--prompt", "a", "--refiner-switch-at", "0.6"])
    args.steps, args.cfg_scale, args.sampler = 20, 7.0, "Euler a"
    assert build_request(args).refiner_switch_at == 0.6
    assert parser.parse_args(["txt2img"]).refiner_switch_at == 0.8  # the field's default
    options = {"CLIP_stop_at_last_layers": 1, "randn_source": "GPU"}

    def served(**body: Any) -> GenerationRequest:
        job, _ = generation.build_job(Txt2ImgRequest(prompt="a", **body), "txt2img",
                                      options=options, max_size=1024, outputs=tmp_path)
        return job.request

    assert served(refiner_switch_at=0.6).refiner_switch_at == 0.6
    assert served().refiner_switch_at == 0.8
    # Forge's key for FLUX dev's guidance (no schema field: one of the body's extra keys)
    assert served(distilled_cfg_scale=2.5).distilled_cfg_scale == 2.5
    assert served().distilled_cfg_scale == 3.5
    assert served(hr_distilled_cfg=5).hr_distilled_cfg == 5  # and its hires pass's
    assert served().hr_distilled_cfg == 3.5
    with pytest.raises(generation.RequestError, match="refiner_switch_at must be"):
        served(refiner_switch_at=1.5)
    # the WebUI's schema field, once accepted and ignored
    assert served(tiling=True).tiling is True and served().tiling is False

    @plain
    class NewField:  # a field whose API key no schema field declares: the body's extra keys
        name: str
        metadata: dict[str, str]

    monkeypatch.setattr(generation, "door_fields", lambda door: [
        NewField("refiner_switch_at", {"api": "new_key"})])
    assert served(new_key=0.3).refiner_switch_at == 0.3


def test_empty_pictures_are_refused() -> None:
    """Pillow would resize a 0-pixel init image or mask to a black one and img2img would run
    on it."""
    from PIL import Image

    from diffusion.imaging import to_mask, to_unit_image

    for image in (np.zeros((0, 0, 3), np.uint8), Image.new("RGB", (0, 5))):
        with pytest.raises(ValueError, match="init image is empty"):
            to_unit_image(image, 64, 64)
    with pytest.raises(ValueError, match=r"mask is empty \(4x0 pixels\)"):
        to_mask(np.zeros((0, 4), np.uint8), 64, 64)
    assert to_unit_image(np.zeros((1, 1, 3), np.uint8), 8, 8).shape == (1, 3, 8, 8)


def test_the_servers_randn_source_picks_the_generator(tmp_path: Path) -> None:
    """The WebUI's "Random number generator source": CPU is torch's CPU noise, in any case as
    before; anything but its three values is refused, as POST /options refuses it."""
    pytest.importorskip("fastapi", reason="the server extra is not installed")
    from diffusion.server.api import generation
    from diffusion.server.api.schemas import Txt2ImgRequest

    def rng(options: str, **override: Any) -> str:
        job, _ = generation.build_job(
            Txt2ImgRequest(prompt="a", override_settings=override or None), "txt2img",
            options={"CLIP_stop_at_last_layers": 1, "randn_source": options}, max_size=1024,
            outputs=tmp_path)
        return job.request.rng

    assert rng("GPU") == rng("NV") == rng("CPU", randn_source="GPU") == "numpy"
    assert rng("CPU") == rng("GPU", randn_source="cpu") == "torch"
    with pytest.raises(generation.RequestError, match=r"randn_source must be .* got 'TPU'"):
        rng("GPU", randn_source="TPU")


def test_a_16_bit_picture_keeps_its_shades(tmp_path: Path) -> None:
    """A 16-bit grayscale PNG (a depth map) opens as Pillow's I;16, whose convert() clips
    every value over 255: without scaling, the picture came out almost all white."""
    import base64

    from PIL import Image

    from diffusion.imaging import eight_bit, to_unit_image

    ramp = (np.arange(48 * 40).reshape(48, 40) * 34).astype(np.uint16)  # 0 .. 65246
    Image.fromarray(ramp).save(tmp_path / "depth.png")
    with Image.open(tmp_path / "depth.png") as opened:
        assert opened.mode == "I;16"
        expected = (ramp >> 8).astype(np.uint8)
        assert np.array_equal(np.asarray(eight_bit(opened)), expected)
        pixels = to_unit_image(opened, 40, 48)  # the Python API's door
    assert np.allclose((pixels[0, 0] + 1) * 127.5, expected, atol=1e-3)
    if importlib.util.find_spec("fastapi") is not None:  # the server's door
        from diffusion.server.images import decode_image

        text = base64.b64encode((tmp_path / "depth.png").read_bytes()).decode()
        assert np.array_equal(np.asarray(decode_image(text, "image").convert("L")), expected)


def test_inpainting_lays_the_original_over_what_was_not_repainted() -> None:
    """overlay_original, against diffusers' apply_overlay (the WebUI's apply_overlay) fed the
    WebUI's mask_for_overlay, the blurred mask doubled: gray edges blend, black keeps the
    original, white (or mid-gray and up) keeps the result. Also from an init image of another
    size, fitted as the init image is."""
    pytest.importorskip("diffusers", reason="the reference extra is not installed")
    from diffusers.image_processor import VaeImageProcessor
    from PIL import Image, ImageFilter

    from diffusion.imaging import overlay_original

    rng = np.random.default_rng(3)
    init = Image.fromarray(rng.integers(0, 256, (40, 56, 3), dtype=np.uint8))
    results = [rng.integers(0, 256, (40, 56, 3), dtype=np.uint8) for _ in range(2)]
    square = np.zeros((40, 56), np.uint8)
    square[10:30, 12:40] = 255
    mask = Image.fromarray(square).filter(ImageFilter.GaussianBlur(4))
    got = overlay_original(results, init, mask)
    doubled = Image.fromarray(np.minimum(np.asarray(mask, np.int32) * 2, 255).astype(np.uint8))
    for ours, result in zip(got, results, strict=True):
        want = np.asarray(VaeImageProcessor().apply_overlay(doubled, init,
                                                            Image.fromarray(result)))
        assert np.abs(ours.astype(int) - want).max() <= 1
    outside = np.asarray(mask) == 0
    assert np.array_equal(got[0][outside], np.asarray(init)[outside])
    assert np.array_equal(got[1][np.asarray(mask) >= 128], results[1][np.asarray(mask) >= 128])
    small = overlay_original(results, init.resize((28, 20)), mask)[0]  # fitted with LANCZOS
    assert small.shape == (40, 56, 3)


def test_the_hires_pass_settings_of_its_own() -> None:
    """The WebUI's hr_prompt / hr_negative_prompt / hr_sampler_name / hr_scheduler: each the
    first pass's where not given; a combined old name carries its schedule type; a sampler of
    its own needs k-diffusion samplers on both passes; a family that runs none refuses them,
    as one without the noise multiplier refuses it; the CLI's options build them."""
    from diffusion.pipelines.contract import Capabilities
    from diffusion.pipelines.hires_pass import hires_fix

    def request(sampler: str = "Euler", **hires: Any) -> GenerationRequest:
        return GenerationRequest(prompt="a", negative_prompt="b", sampler=sampler,
                                 scheduler="Karras", hires=HiresFix(**hires))

    assert request().hires_sampler_label == ("Euler", "Karras")
    assert request(sampler="DPM++ 2M Karras").hires_sampler_label == ("DPM++ 2M", "Karras")
    assert request(sampler="DDIM").hires_sampler_label == ("DDIM", "Karras")
    assert request(sampler="dpm++ 2m sde exponential").hires_sampler_label == (
        "DPM++ 2M SDE", "Exponential")
    assert request(scheduler="Uniform").hires_sampler_label == ("Euler", "Uniform")
    fields = hires_fix(HiresFix(prompt="c", sampler="Heun"), prompts=("a", "b"),
                       sampler=("Euler", "Karras"))
    assert (fields["hires_prompt"], fields["hires_sampler"]) == ("c", "Heun")
    assert not {"hires_negative_prompt", "hires_scheduler"} & set(fields)
    assert "hires_prompt" not in hires_fix(HiresFix(prompt="a"), prompts=("a", "b"))
    assert "unknown sampler" in _message(hires=HiresFix(sampler="Euler z"))
    assert "over the limit" in _message(hires=HiresFix(prompt="x" * (MAX_PROMPT_CHARS + 1)))
    for first, second in (("DDIM", "Euler"), ("Euler", "PLMS"), ("diffusers", "Euler")):
        assert "k-diffusion samplers on both passes" in _message(
            sampler=first, hires=HiresFix(sampler=second))
    flow = Capabilities(family="flux-dev", latent_space="flux")
    with pytest.raises(ValueError, match="a hires prompt or sampler of its own"):
        flow.refuse(request(prompt="c"))
    with pytest.raises(ValueError, match="initial_noise_multiplier other than 1"):
        flow.refuse(GenerationRequest(init_image=np.zeros((8, 8, 3), np.uint8),
                                      initial_noise_multiplier=0.5))
    flow.refuse(request())  # nothing of its own: the same second pass as before
    flow.refuse(replace(request(), hires=HiresFix(prompt="a", sampler="Euler",
                                                  scheduler="Karras")))  # named again
    from diffusion.cli.generate import build_request
    from diffusion.cli.main import build_parser

    _the_doors_hires_and_noise_fields()
    args = build_parser().parse_args([
        "txt2img", "--prompt", "a", "--hr-scale", "2", "--hr-prompt", "c",
        "--hr-sampler", "DPM++ 2M", "--hr-scheduler", "Karras"])
    args.steps, args.cfg_scale, args.sampler = 20, 7.0, "Euler a"
    hires = build_request(args).hires
    assert hires is not None
    assert (hires.prompt, hires.negative_prompt, hires.sampler, hires.scheduler) == (
        "c", None, "DPM++ 2M", "Karras")


def _the_doors_hires_and_noise_fields() -> None:
    """The server's body: "Use same sampler" / "" / None for the first pass's; the noise
    multiplier from the field or override_settings (the WebUI's option)."""
    pytest.importorskip("fastapi", reason="the server extra is not installed")
    import base64
    import io

    from PIL import Image

    import diffusion.server.api.generation as generation
    from diffusion.server.api.schemas import Img2ImgRequest, Txt2ImgRequest

    options = {"CLIP_stop_at_last_layers": 1, "randn_source": "GPU"}

    def served(kind: type, **body: Any) -> GenerationRequest:
        job, _ = generation.build_job(kind(prompt="a", **body), "x", options=options,
                                      max_size=1024, outputs=Path("."))
        return job.request

    same = served(Txt2ImgRequest, enable_hr=True, hr_sampler_name="Use same sampler",
                  hr_scheduler="Use same scheduler", hr_prompt="", hr_negative_prompt=None)
    assert same.hires is not None and not same.hires.own_settings
    own = served(Txt2ImgRequest, enable_hr=True, hr_sampler_name="Heun", hr_prompt="c")
    assert own.hires is not None and (own.hires.sampler, own.hires.prompt) == ("Heun", "c")
    buffer = io.BytesIO()
    Image.new("RGB", (8, 8)).save(buffer, format="PNG")
    picture = [base64.b64encode(buffer.getvalue()).decode("ascii")]
    assert served(Img2ImgRequest, init_images=picture).initial_noise_multiplier == 1.0
    assert served(Img2ImgRequest, init_images=picture, initial_noise_multiplier=0.5,
                  override_settings={"initial_noise_multiplier": 0.9}
                  ).initial_noise_multiplier == 0.5
    assert served(Img2ImgRequest, init_images=picture,
                  override_settings={"initial_noise_multiplier": 0.9}
                  ).initial_noise_multiplier == 0.9
