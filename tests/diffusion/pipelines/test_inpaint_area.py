"""The WebUI's "Inpaint area: Only masked" (diffusion.pipelines.inpaint_area): its crop boxes
worked out by hand from the WebUI's rules, against diffusers' port of the WebUI's functions
(VaeImageProcessor.get_crop_region, its resize modes and apply_overlay), and the request it
makes. Host logic, no device; the end-to-end run on the bundled model is the last test."""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image, ImageFilter

from diffusion import GenerationRequest
from diffusion.imaging import fit_picture, overlay_original
from diffusion.infotext import format_infotext, parse_infotext
from diffusion.pipelines import inpaint_area
from diffusion.pipelines.inpaint_area import MaskedArea, crop_region, only_masked


def _mask(size: tuple[int, int], *boxes: tuple[int, int, int, int]) -> Image.Image:
    mask = Image.new("L", size)
    for box in boxes:
        mask.paste(255, box)
    return mask


# (picture size, white boxes, padding, processing width x height) -> the region, by hand:
# 1. the white pixels' bounding box grown by the padding (within the picture); 2. its short
# side grown by int(wanted - has), half before (floored), the rest after; 3. shifted back
# inside the picture, and cut at its edge where the picture is too small
@pytest.mark.nodevice
@pytest.mark.parametrize("size, boxes, padding, target, expected", [
    ((100, 80), [(40, 30, 50, 40)], 0, (64, 64), (40, 30, 50, 40)),  # square already
    ((100, 80), [(40, 30, 50, 40)], 0, (128, 64), (35, 30, 55, 40)),  # 10 wider: 5 + 5
    ((100, 80), [(40, 30, 50, 40)], 0, (64, 128), (40, 25, 50, 45)),  # 10 taller
    ((100, 80), [(40, 30, 50, 40)], 8, (64, 64), (32, 22, 58, 48)),  # 8 on every side
    ((100, 80), [(40, 30, 50, 40)], 0, (72, 64), (40, 30, 51, 40)),  # int(11.25 - 10) = 1
    ((100, 80), [(40, 30, 50, 40)], 0, (96, 64), (38, 30, 53, 40)),  # 5: 2 before, 3 after
    ((100, 80), [(90, 0, 100, 10)], 0, (128, 64), (80, 0, 100, 10)),  # shifted off the edge
    ((100, 80), [(0, 70, 4, 80)], 50, (64, 64), (0, 20, 60, 80)),  # padding cut at 2 edges
    ((100, 80), [(5, 5, 10, 10), (60, 40, 70, 45)], 0, (64, 64), (5, 0, 70, 65)),  # two
    ((40, 30), [(10, 10, 20, 20)], 0, (64, 16), (0, 10, 40, 20)),  # exactly the width
    ((40, 30), [(10, 10, 20, 20)], 0, (128, 16), (0, 10, 40, 20)),  # picture too narrow
])
def test_crop_regions_worked_out_by_hand(size: tuple[int, int], boxes: list[Any], padding: int,
                                         target: tuple[int, int], expected: tuple) -> None:
    area = MaskedArea.find(_mask(size, *boxes), padding, *target)
    assert area is not None and area.box == expected
    x1, y1, x2, y2 = expected
    assert area.paste_to == (x1, y1, x2 - x1, y2 - y1)


@pytest.mark.nodevice
def test_a_blurred_edge_counts_and_a_blank_mask_has_no_region() -> None:
    mask = Image.new("L", (30, 20))
    mask.putpixel((5, 7), 1)  # the faintest gray of a blurred edge is still masked
    assert crop_region(mask, 0) == (5, 7, 6, 8)
    assert crop_region(Image.new("L", (30, 20)), 4) is None
    assert MaskedArea.find(Image.new("L", (30, 20)), 0, 64, 64) is None


@pytest.mark.nodevice
def test_regions_and_resize_modes_match_diffusers_port_of_the_webui() -> None:
    """VaeImageProcessor.get_crop_region is the WebUI's get_crop_region + expand_crop_region
    (its column / row scans), _resize_and_crop / _resize_and_fill its resize modes 1 / 2:
    random masks, paddings, sizes and aspect ratios give the same boxes and pixels. The
    server's img2img resize_mode reaches the pipeline, which fits with this function
    (test_inpaint_plan); the server once used Pillow's ImageOps.fit for mode 1 and the
    stretched picture under the bands of mode 2."""
    pytest.importorskip("diffusers", reason="the reference extra is not installed")
    from diffusers.image_processor import VaeImageProcessor

    rng = np.random.default_rng(7)
    processor = VaeImageProcessor()
    for _ in range(60):
        size = tuple(int(v) for v in rng.integers(12, 90, 2))
        x1, y1 = (int(rng.integers(0, s - 1)) for s in size)
        x2, y2 = int(rng.integers(x1 + 1, size[0] + 1)), int(rng.integers(y1 + 1, size[1] + 1))
        mask = _mask(size, (x1, y1, x2, y2)).filter(ImageFilter.GaussianBlur(
            float(rng.choice([0, 1, 3]))))
        padding, width, height = int(rng.choice([0, 3, 32])), *(int(v) for v in 8 * rng.integers(
            2, 17, 2))
        area = MaskedArea.find(mask, padding, width, height)
        assert area is not None
        assert area.box == VaeImageProcessor.get_crop_region(mask, width, height, padding)
    picture = Image.fromarray(rng.integers(0, 256, (37, 53, 3), dtype=np.uint8))
    for width, height in ((64, 64), (48, 80), (80, 48), (106, 74), (53, 37)):
        for mode, theirs in ((0, "default"), (1, "crop"), (2, "fill")):
            ours = fit_picture(picture, width, height, mode)
            expected = processor.resize(picture, height=height, width=width, resize_mode=theirs)
            assert ours.size == (width, height)
            assert np.array_equal(np.asarray(ours), np.asarray(expected)), (mode, width, height)


@pytest.mark.nodevice
def test_the_drawn_part_is_pasted_back_through_the_mask() -> None:
    """overlay_original with paste_to against diffusers' apply_overlay with crop_coords (the
    WebUI's uncrop + apply_overlay): the result fitted back to the box (crop and resize),
    the original over it by the blurred mask as it is, not doubled; outside the box exactly
    the original."""
    pytest.importorskip("diffusers", reason="the reference extra is not installed")
    from diffusers.image_processor import VaeImageProcessor

    rng = np.random.default_rng(3)
    picture = Image.fromarray(rng.integers(0, 256, (60, 90, 3), dtype=np.uint8))
    mask = _mask((90, 60), (50, 10, 70, 25)).filter(ImageFilter.GaussianBlur(3))
    area = MaskedArea.find(mask, 4, 64, 48)
    assert area is not None
    results = [rng.integers(0, 256, (48, 64, 3), dtype=np.uint8) for _ in range(2)]
    got = overlay_original(results, picture, mask, paste_to=area.paste_to)
    for ours, result in zip(got, results, strict=True):
        want = np.asarray(VaeImageProcessor().apply_overlay(
            mask, picture, Image.fromarray(result), crop_coords=area.box))
        assert ours.shape == (60, 90, 3) and np.abs(ours.astype(int) - want).max() <= 1
    x1, y1, x2, y2 = area.box
    outside = np.ones((60, 90), bool)
    outside[y1:y2, x1:x2] = False
    assert np.array_equal(got[0][outside], np.asarray(picture)[outside])
    inside = np.asarray(mask) > 200  # mostly the result's
    assert inside.any() and np.abs(got[0][inside].astype(int) - np.asarray(
        picture)[inside]).mean() > 40


def _request(**settings: Any) -> GenerationRequest:
    picture = np.random.default_rng(0).integers(0, 256, (80, 100, 3), dtype=np.uint8)
    return GenerationRequest(prompt="a", init_image=picture, width=64, height=64,
                             **settings)


@pytest.mark.nodevice
def test_only_masked_crops_the_request() -> None:
    mask = _mask((100, 80), (60, 20, 70, 30))
    request = _request(mask=mask, inpaint_full_res=True, inpaint_full_res_padding=6)
    cropped, area = only_masked(request, 64, 64)
    assert area == MaskedArea((54, 14, 76, 36), 64, 64, 6)
    assert cropped.init_image.size == cropped.mask.size == (64, 64)
    assert not cropped.inpaint_full_res and cropped.mode == "inpaint"
    assert np.array_equal(np.asarray(cropped.init_image),
                          np.asarray(Image.fromarray(request.init_image).crop(area.box).resize(
                              (64, 64), Image.Resampling.LANCZOS)))
    assert area.settings == {"inpaint_area": "Only masked", "inpaint_full_res_padding": 6}
    # the whole picture: without the setting, or without a mask
    assert only_masked(replace(request, inpaint_full_res=False), 64, 64) == (
        replace(request, inpaint_full_res=False), None)
    plain = replace(request, mask=None)
    assert only_masked(plain, 64, 64) == (plain, None)


@pytest.mark.nodevice
def test_a_blank_mask_redraws_the_whole_picture_as_the_webui() -> None:
    """The WebUI: 'Unable to perform "Inpaint Only mask" because mask is blank, switch to
    img2img mode': here an all-white mask (the whole picture repainted, also for an inpainting
    UNet), with a warning saying so."""
    request = _request(mask=Image.new("L", (100, 80)), inpaint_full_res=True)
    with pytest.warns(UserWarning, match="the mask is blank"):
        whole, area = only_masked(request, 64, 64)
    assert area is None and whole.init_image is request.init_image
    assert np.asarray(whole.mask).min() == 255 and whole.mask.size == (100, 80)


@pytest.mark.nodevice
def test_control_maps_are_cropped_like_the_picture(monkeypatch: pytest.MonkeyPatch) -> None:
    """A ControlNet unit's map covering the picture: its part in the box, at width x height
    (an IP-Adapter's picture and float maps stay whole)."""

    @dataclass
    class Unit:  # a ControlUnit's map and resize mode, without a network
        image: Any
        resize_mode: str = "Just Resize"

    monkeypatch.setattr(inpaint_area, "ControlUnit", Unit)
    picture = np.zeros((80, 100, 3), np.uint8)
    picture[14:36, 54:76] = 200  # the box of the test above, drawn on the map
    request = _request(mask=_mask((100, 80), (60, 20, 70, 30)), inpaint_full_res=True,
                       inpaint_full_res_padding=6, control=(Unit(picture), "ip-adapter"))
    cropped, _ = only_masked(request, 64, 64)
    unit, other = cropped.control
    assert other == "ip-adapter" and unit.image.shape == (64, 64, 3)
    assert np.abs(unit.image.astype(int) - 200).max() <= 1  # all of it the box's


@pytest.mark.nodevice
def test_settings_are_checked_and_written_as_the_webui() -> None:
    for bad, needle in ((dict(inpaint_full_res=1), "inpaint_full_res must be True or False"),
                        (dict(inpaint_full_res_padding=-1), "inpaint_full_res_padding")):
        with pytest.raises(ValueError, match=needle):
            GenerationRequest(**bad)
    settings = dict(prompt="a", steps=2, sampler="Euler", cfg_scale=7, seed=1, width=64,
                    height=64, strength=0.75, inpaint_area="Only masked",
                    inpaint_full_res_padding=0)
    text = format_infotext(settings)
    assert "Denoising strength: 0.75, Inpaint area: Only masked, Masked area padding: 0" in text
    parsed = parse_infotext(text)
    assert (parsed["inpaint_area"], parsed["inpaint_full_res_padding"]) == ("Only masked", 0)
    del settings["inpaint_area"]
    assert "Inpaint area" not in format_infotext(settings)
    assert "Masked area padding" not in format_infotext(settings)


@pytest.mark.nodevice
def test_the_cli_takes_the_inpaint_area(tmp_path: Path) -> None:
    """--inpaint-full-res and its padding, on inpaint only, also from --from-infotext."""
    from diffusion.cli.from_infotext import apply_infotext
    from diffusion.cli.main import build_parser
    from diffusion.infotext import save_png

    parser = build_parser()
    args = parser.parse_args(["inpaint", "--init-image", "i.png", "--mask", "m.png",
                              "--inpaint-full-res", "--inpaint-full-res-padding", "32"])
    assert args.inpaint_full_res and args.inpaint_full_res_padding == 32
    args = parser.parse_args(["inpaint", "--init-image", "i.png", "--mask", "m.png"])
    assert not args.inpaint_full_res and args.inpaint_full_res_padding == 0
    assert not hasattr(parser.parse_args(["txt2img"]), "inpaint_full_res")
    save_png(np.zeros((8, 8, 3), np.uint8), tmp_path / "made.png", infotext=(
        "a\nSteps: 2, Sampler: Euler, CFG scale: 7, Seed: 1, Size: 64x64, Denoising strength: "
        "0.75, Inpaint area: Only masked, Masked area padding: 12"))
    args = parser.parse_args(["inpaint", "--init-image", "i.png", "--mask", "m.png",
                              "--from-infotext", str(tmp_path / "made.png")])
    apply_infotext(args, parser)
    assert args.inpaint_full_res and args.inpaint_full_res_padding == 12


def test_only_masked_on_the_bundled_model(first_device: Any, tmp_path: Path) -> None:
    """End to end (about 10 s on 2 cores with lavapipe: 64 px, 2 steps): a 96x80 picture with
    a blurred square masked, drawn at 64x64 around it; the picture keeps its size, is the
    input exactly outside the drawn box, and changed where the mask is white."""
    from diffusion import load_pipeline

    pipe = load_pipeline(device=first_device)
    rng = np.random.default_rng(1)
    picture = np.full((80, 96, 3), 255, np.uint8)
    picture[:, :48] = rng.integers(0, 256, (80, 48, 3), dtype=np.uint8)  # a noisy left half
    mask = _mask((96, 80), (60, 30, 76, 46)).filter(ImageFilter.GaussianBlur(2))
    result = pipe.generate(prompt="a small red circle at the center on a white background",
                           init_image=picture, mask=mask, strength=1.0, steps=2,
                           sampler="Euler", seed=3, width=64, height=64,
                           inpaint_full_res=True, inpaint_full_res_padding=4)
    image = result.images[0]
    area = MaskedArea.find(mask, 4, 64, 64)
    assert area is not None and image.shape == (80, 96, 3)
    x1, y1, x2, y2 = area.box
    outside = np.ones((80, 96), bool)
    outside[y1:y2, x1:x2] = False
    assert np.array_equal(image[outside], picture[outside])
    white = np.asarray(mask) == 255
    assert np.abs(image[white].astype(int) - picture[white]).mean() > 10
    assert result.settings["inpaint_area"] == "Only masked"
    assert (result.settings["width"], result.settings["height"]) == (64, 64)  # WebUI's Size
