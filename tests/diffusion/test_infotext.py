"""diffusion.infotext: WebUI infotext format and round trip, atomic PNG writes, numbering.

Needs no GPU and no model.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image

from diffusion import infotext
from diffusion.infotext import (
    format_infotext,
    next_sequence_number,
    parse_infotext,
    read_infotext,
    save_images,
    save_png,
)

pytestmark = pytest.mark.nodevice  # host logic: `pytest -m nodevice`

BASE: dict[str, Any] = dict(mode="txt2img", prompt="a lighthouse at dusk, oil painting",
                            negative_prompt="blurry", steps=20, sampler="Euler a", cfg_scale=7.0,
                            seed=42, width=512, height=768, batch_size=1, clip_skip=0,
                            model="sd15")


def image(h: int = 24, w: int = 40, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)


# -- format: exactly the WebUI's -------------------------------------------------------
def test_format_txt2img_exact() -> None:
    assert format_infotext(BASE) == (
        "a lighthouse at dusk, oil painting\n"
        "Negative prompt: blurry\n"
        "Steps: 20, Sampler: Euler a, CFG scale: 7, Seed: 42, Size: 512x768, Model: sd15")


def test_format_img2img_batch_clip_skip_exact() -> None:
    settings_ = {**BASE, "mode": "img2img", "negative_prompt": "", "cfg_scale": 7.5,
                 "sampler": "DPM++ 2M Karras", "batch_size": 4, "clip_skip": 1,
                 "strength": 0.75}
    assert format_infotext(settings_, batch_pos=2) == (
        "a lighthouse at dusk, oil painting\n"
        "Steps: 20, Sampler: DPM++ 2M Karras, CFG scale: 7.5, Seed: 42, Size: 512x768, "
        "Model: sd15, Batch size: 4, Batch pos: 2, Denoising strength: 0.75, Clip skip: 2")


def test_format_omits_unset_fields_and_quotes_separators() -> None:
    text = format_infotext({**BASE, "model": 'v1: "fine", tuned', "negative_prompt": "",
                            "clip_skip": 0})
    assert "Negative prompt" not in text and "Clip skip" not in text
    assert "Batch" not in text and "Denoising" not in text
    assert text.endswith('Model: "v1: \\"fine\\", tuned"')
    assert "Model" not in format_infotext({**BASE, "model": ""})


@pytest.mark.parametrize("value, shown", [(7.0, "7"), (7, "7"), (7.5, "7.5"), (1.25, "1.25"),
                                          (0.1 + 0.2, "0.30000000000000004")])
def test_cfg_scale_printed_like_webui(value: float, shown: str) -> None:
    assert f"CFG scale: {shown}," in format_infotext({**BASE, "cfg_scale": value})


# -- parse ----------------------------------------------------------------------------
def test_parse_webui_text_with_unknown_fields() -> None:
    text = ("girl with a beret, (detailed)\nNegative prompt: ugly, [blurry]\n"
            'Steps: 28, Sampler: DPM++ 2M, Schedule type: Karras, CFG scale: 6.5, Seed: 965400086, '
            'Size: 512x640, Model hash: 45dee52b, Model: anything, Clip skip: 2, '
            'Lora hashes: "a: 1, b: 2", Version: v1.9.4')
    assert parse_infotext(text) == {
        "prompt": "girl with a beret, (detailed)", "negative_prompt": "ugly, [blurry]",
        "steps": 28, "sampler": "DPM++ 2M", "scheduler": "Karras", "cfg_scale": 6.5,
        "seed": 965400086, "width": 512, "height": 640, "Model hash": "45dee52b",
        "model": "anything", "clip_skip": 1, "lora_hashes": "a: 1, b: 2", "Version": "v1.9.4"}


def test_old_combined_sampler_reads_as_the_new_pair() -> None:
    # WebUI < 1.9 wrote the schedule type into the sampler's name
    old = parse_infotext("a cat\nSteps: 20, Sampler: DPM++ 2M Karras, CFG scale: 7, Seed: 1")
    assert (old["sampler"], old["scheduler"]) == ("DPM++ 2M", "Karras")
    plain = parse_infotext("a cat\nSteps: 20, Sampler: Euler a, CFG scale: 7, Seed: 1")
    assert plain["sampler"] == "Euler a" and "scheduler" not in plain
    unknown = parse_infotext("a cat\nSteps: 20, Sampler: Some Plugin Karras, CFG scale: 7")
    assert unknown["sampler"] == "Some Plugin Karras" and "scheduler" not in unknown


def test_webui_seed_fields_per_image() -> None:
    """Image k of a WebUI-sampled batch carries its own seed (and variation seed), no Batch pos;
    Schedule type, Variation seed, ENSD are written where the WebUI writes them."""
    settings_ = {**BASE, "batch_size": 2, "seeds": [40, 41], "scheduler": "Karras",
                 "subseed": 7, "subseeds": [7, 8], "subseed_strength": 0.25, "ensd": 31337}
    text = format_infotext(settings_, batch_pos=1)
    last = text.splitlines()[-1]
    assert "Seed: 41," in last and "Variation seed: 8," in last and "Batch pos" not in last
    assert last.index("Sampler:") < last.index("Schedule type: Karras") < last.index("CFG scale")
    back = parse_infotext(text)
    assert (back["seed"], back["subseed"], back["subseed_strength"], back["ensd"],
            back["scheduler"]) == (41, 8, 0.25, 31337, "Karras")


def test_forge_hires_distilled_cfg() -> None:
    """FLUX dev's hires pass: Forge's "Hires Distilled CFG Scale" after the strength, before
    the Hires upscale fields; read back to hires_distilled_cfg."""
    hires = {"hires_upscaler": "Latent", "hires_denoise": 0.5, "hires_scale": 2.0}
    flux = {**BASE, "cfg_scale": 1.0, "distilled_cfg_scale": 3.5, **hires}
    text = format_infotext({**flux, "hires_distilled_cfg": 5.0})
    assert ("Distilled CFG Scale: 3.5, Seed: 42, Size: 512x768, Model: sd15, "
            "Denoising strength: 0.5, Hires Distilled CFG Scale: 5, Hires upscale: 2, "
            "Hires upscaler: Latent") in text
    back = parse_infotext(text)
    assert back["hires_distilled_cfg"] == 5.0 and back["distilled_cfg_scale"] == 3.5
    assert "Hires Distilled" not in format_infotext({**BASE, **hires})  # not FLUX dev


def test_parse_prompt_only_and_malformed_numbers() -> None:
    assert parse_infotext("just a prompt, no settings") == {
        "prompt": "just a prompt, no settings", "negative_prompt": ""}
    got = parse_infotext("p\nSteps: many, Sampler: Euler, Seed: 3, Size: big")
    assert got["Steps"] == "many" and got["Size"] == "big" and got["seed"] == 3


@pytest.mark.parametrize("extra", [
    {},
    {"negative_prompt": "", "cfg_scale": 3.25},
    {"mode": "img2img", "strength": 0.6, "batch_size": 3, "clip_skip": 2},
    {"prompt": "line one\n\nline three: (with colon), ok", "negative_prompt": "a\nb, c"},
    {"prompt": "", "negative_prompt": "only negative"},
    {"prompt": "猫, ünïcødé ✓", "model": "my model: v2, final", "sampler": "DPM++ 2M SDE"},
])
def test_round_trip(extra: dict[str, Any]) -> None:
    settings_ = {**BASE, **extra}
    pos = 1 if settings_["batch_size"] > 1 else None
    back = parse_infotext(format_infotext(settings_, batch_pos=pos))
    expected = {k: v for k, v in settings_.items() if k not in ("mode", "batch_size")}
    if settings_["batch_size"] > 1:
        expected.update(batch_size=settings_["batch_size"], batch_pos=pos)
    if not settings_["clip_skip"]:
        del expected["clip_skip"]  # the default is not written, as in the WebUI
    assert back == expected


_line = st.text(st.sampled_from("ab Z09,:()[]{}\"'\\é猫-"), max_size=12).map(str.strip)


@settings(max_examples=15, deadline=None)
@given(prompt=st.lists(_line, min_size=1, max_size=3).map("\n".join).map(str.strip),
       negative=st.lists(_line, max_size=2).map("\n".join).map(str.strip),
       seed=st.integers(0, 2**64), cfg=st.floats(0, 30, allow_nan=False).map(lambda x: round(x, 3)))
def test_round_trip_hypothesis(prompt: str, negative: str, seed: int, cfg: float) -> None:
    settings_ = {**BASE, "prompt": prompt, "negative_prompt": negative, "seed": seed,
                 "cfg_scale": cfg}
    back = parse_infotext(format_infotext(settings_))
    assert (back["prompt"], back["negative_prompt"], back["seed"], back["cfg_scale"]) == (
        prompt, negative, seed, cfg)


# -- PNG writing ------------------------------------------------------------------------
def test_save_png_carries_pixels_and_text(tmp_path: Path) -> None:
    pixels, text = image(), format_infotext({**BASE, "prompt": "猫 on a mat"})
    path = tmp_path / "a.png"
    assert save_png(pixels, path, infotext=text)
    with Image.open(path) as png:
        assert np.array_equal(np.asarray(png), pixels)
    assert read_infotext(path) == text
    assert os.listdir(tmp_path) == ["a.png"]  # no temporary file left
    umask = os.umask(0o022)
    os.umask(umask)
    # the permissions of any new file (a web server or another user may read the pictures),
    # not those of the private temporary file it was written as
    assert path.stat().st_mode & 0o777 == 0o666 & ~umask


def test_save_png_failure_leaves_no_partial_file(tmp_path: Path,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    old = tmp_path / "keep.png"
    save_png(image(seed=1), old, infotext="old")
    before = old.read_bytes()

    def broken_save(self: Image.Image, fp: Any, *args: Any, **kwargs: Any) -> None:
        fp.write(b"\x89PNG\r\n\x1a\n half a file")
        raise OSError("disk full")

    monkeypatch.setattr(Image.Image, "save", broken_save)
    for target in (old, tmp_path / "new.png"):
        with pytest.raises(OSError, match="disk full"):
            save_png(image(), target, infotext="new")
    assert sorted(os.listdir(tmp_path)) == ["keep.png"]
    assert old.read_bytes() == before


def test_save_png_no_overwrite_and_bad_input(tmp_path: Path) -> None:
    path = tmp_path / "00000-1.png"
    save_png(image(seed=1), path)
    before = path.read_bytes()
    assert save_png(image(seed=2), path, overwrite=False) is False
    assert path.read_bytes() == before and os.listdir(tmp_path) == [path.name]
    with pytest.raises(ValueError, match="uint8"):
        save_png(image().astype(np.float32), tmp_path / "f.png")
    with pytest.raises(ValueError, match="HxWx3"):
        save_png(np.zeros((4, 4), np.uint8), tmp_path / "g.png")


def test_next_sequence_number(tmp_path: Path) -> None:
    assert next_sequence_number(tmp_path / "missing") == 0
    assert next_sequence_number(tmp_path) == 0
    for name in ("00003-7.png", "00010-5.png", "notes.txt", "12abc.png", "²-1.png",
                 ".00099-1.png.tmp", "00004.png"):
        (tmp_path / name).write_bytes(b"")
    assert next_sequence_number(tmp_path) == 11


def test_save_images_numbers_like_webui(tmp_path: Path) -> None:
    out = tmp_path / "outputs"
    first = save_images([image()], BASE, out)
    assert first == [out / "00000-42.png"]
    batch = {**BASE, "batch_size": 3, "seed": 7}
    paths = save_images([image(seed=i) for i in range(3)], batch, out)
    assert [p.name for p in paths] == ["00001-7.png", "00002-7.png", "00003-7.png"]
    for pos, path in enumerate(paths):
        assert parse_infotext(read_infotext(path) or "")["batch_pos"] == pos


def test_save_images_skips_a_number_taken_meanwhile(tmp_path: Path,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "00000-42.png").write_bytes(b"someone else's")
    monkeypatch.setattr(infotext, "next_sequence_number", lambda _: 0)  # a stale listing
    (path,) = save_images([image()], BASE, tmp_path)
    assert path.name == "00001-42.png"
    assert (tmp_path / "00000-42.png").read_bytes() == b"someone else's"


def test_save_images_to_a_file(tmp_path: Path) -> None:
    assert save_images([image()], BASE, tmp_path / "x.png") == [tmp_path / "x.png"]
    paths = save_images([image(), image()], {**BASE, "batch_size": 2}, tmp_path / "y.PNG")
    assert [p.name for p in paths] == ["y-0.PNG", "y-1.PNG"]
    with pytest.raises(FileNotFoundError, match="does not exist"):
        save_images([image()], BASE, tmp_path / "no" / "z.png")


def test_hires_pass_fields_and_noise_multiplier_round_trip() -> None:
    """The hires pass's own sampler, schedule type and prompts (quoted where they hold a
    comma, colon or newline) and img2img's noise multiplier, as the WebUI writes them, read
    back to the same settings."""
    hires = {"hires_upscaler": "Latent", "hires_denoise": 0.5, "hires_scale": 2.0,
             "hires_sampler": "DPM++ 2M", "hires_scheduler": "Karras",
             "hires_prompt": "a cat, (fluffy:1.2)", "hires_negative_prompt": "dull\nflat"}
    text = format_infotext({**BASE, **hires})
    assert ('Denoising strength: 0.5, Hires sampler: DPM++ 2M, Hires schedule type: Karras, '
            'Hires prompt: "a cat, (fluffy:1.2)", Hires negative prompt: "dull\\nflat", '
            "Hires upscale: 2") in text
    back = parse_infotext(text)
    assert {key: back[key] for key in hires} == hires
    noisy = format_infotext({**BASE, "mode": "img2img", "strength": 0.7,
                             "noise_multiplier": 0.85})
    assert "Denoising strength: 0.7, Noise multiplier: 0.85" in noisy
    assert parse_infotext(noisy)["noise_multiplier"] == 0.85
    assert "Noise multiplier" not in format_infotext({**BASE, "noise_multiplier": 1.0})
