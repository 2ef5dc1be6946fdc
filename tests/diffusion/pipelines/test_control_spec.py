"""ControlSpec: a unit as the ControlNet extension describes it, its checks (one message per
field, whatever the door), and its infotext text as the extension's serialize / parse."""

from __future__ import annotations

import math

import numpy as np
import pytest

from diffusion.infotext import format_infotext, parse_infotext
from diffusion.pipelines.control import ControlUnit
from diffusion.pipelines.control_spec import ControlSpec, control_mode, parse_unit, unit_label

# what the extension writes for a canny unit left at its defaults (its serialize())
EXTENSION_TEXT = ("Module: canny, Model: control_v11p_sd15_canny [d14c016b], Weight: 1.0, "
                  "Resize Mode: Crop and Resize, Processor Res: 512, Threshold A: 100.0, "
                  "Threshold B: 200.0, Guidance Start: 0.0, Guidance End: 1.0, "
                  "Pixel Perfect: False, Control Mode: Balanced")

pytestmark = pytest.mark.nodevice


def test_serialize_is_the_extensions() -> None:
    spec = ControlSpec(model="x.safetensors", module="canny")
    assert spec.serialize("control_v11p_sd15_canny [d14c016b]") == EXTENSION_TEXT
    other = ControlSpec(model="m [12345678]", module="invert", weight=0.5, resize_mode=2,
                        processor_res=768, threshold_a=7, guidance_start=0.1,
                        guidance_end=0.9, pixel_perfect=True, control_mode=1)
    text = other.serialize()
    assert text == ("Module: invert, Model: m [12345678], Weight: 0.5, Resize Mode: Resize and "
                    "Fill, Processor Res: 768, Threshold A: 0.5, Threshold B: 0.5, Guidance "
                    "Start: 0.1, Guidance End: 0.9, Pixel Perfect: True, Control Mode: My "
                    "prompt is more important")  # invert has no sliders: the hidden 0.5
    assert ControlSpec(**parse_unit(text)).serialize() == text


def test_infotext_round_trip() -> None:
    settings = dict(prompt="a lighthouse", steps=20, sampler="Euler a", cfg_scale=7, seed=1,
                    width=512, height=512, controlnet=[EXTENSION_TEXT, EXTENSION_TEXT])
    text = format_infotext(settings)
    assert f'ControlNet 0: "{EXTENSION_TEXT}", ControlNet 1: "{EXTENSION_TEXT}"' in text
    parsed = parse_infotext(text)
    assert parsed["ControlNet 1"] == EXTENSION_TEXT
    unit = parse_unit(parsed["ControlNet 0"])
    assert unit == {"module": "canny", "model": "control_v11p_sd15_canny [d14c016b]",
                    "weight": 1.0, "resize_mode": "Crop and Resize", "processor_res": 512,
                    "threshold_a": 100.0, "threshold_b": 200.0, "guidance_start": 0.0,
                    "guidance_end": 1.0, "pixel_perfect": False, "control_mode": "Balanced"}
    with pytest.raises(ValueError, match="cannot read"):
        parse_unit("Module canny")


@pytest.mark.parametrize("fields, named", [
    ({"module": "seg_ofade20k"}, "module"), ({"weight": math.nan}, "weight"),
    ({"weight": -0.1}, "weight"), ({"weight": "1"}, "weight"),
    ({"guidance_start": 0.9, "guidance_end": 0.1}, "guidance_start"),
    ({"guidance_end": 1.5}, "guidance_end"), ({"control_mode": 3}, "control_mode"),
    ({"resize_mode": "Fill"}, "resize_mode"), ({"processor_res": 1.5}, "processor_res"),
    ({"threshold_a": math.inf}, "threshold_a"), ({"pixel_perfect": 1}, "pixel_perfect"),
    ({"hr_option": "Both passes"}, "hr_option"), ({"model": ""}, "model"),
])
def test_bad_settings_are_named(fields: dict, named: str) -> None:
    with pytest.raises(ValueError, match=f"^{named}"):
        ControlSpec(**{"model": "m", **fields})


def test_modes_by_name_and_number() -> None:
    assert [control_mode(i) for i in range(3)] == [
        "Balanced", "My prompt is more important", "ControlNet is more important"]
    assert control_mode("controlnet is more important") == "ControlNet is more important"
    spec = ControlSpec(model="m", resize_mode="Inner Fit (Scale to Fit)", control_mode="2")
    assert (spec.resize_mode, spec.control_mode) == ("Crop and Resize",
                                                     "ControlNet is more important")


def test_out_of_range_thresholds_take_the_default() -> None:
    """The extension's bound check: -1 or a value off the slider means its default."""
    assert ControlSpec(model="m", module="canny", threshold_a=-1,
                       threshold_b=300).bounded() == (512, 100.0, 200.0)
    assert ControlSpec(model="m", module="canny", processor_res=32,
                       threshold_a=20).bounded() == (512, 20.0, 200.0)


def test_unit_label_of_a_python_unit() -> None:
    from diffusion.models.controlnet import ControlNetModel

    model = ControlNetModel.__new__(ControlNetModel)
    unit = ControlUnit(model, np.zeros((8, 8, 3), np.uint8), weight=0.7, guidance_end=0.5)
    assert unit_label(unit).startswith("Module: none, Model: ControlNetModel, Weight: 0.7, ")
    model.title = "mine [00000000]"
    assert "Model: mine [00000000]" in unit_label(unit)
    labelled = ControlUnit(model, None, label=EXTENSION_TEXT)
    assert unit_label(labelled) == EXTENSION_TEXT


def test_hr_option_picks_the_passes() -> None:
    """Without a hires fix every unit acts (the extension sets hr_option to Both); with one,
    "Low res only" units guide the first pass and "High res only" ones the second."""
    from diffusion.models.controlnet import ControlNetModel
    from diffusion.pipelines.control import HR_OPTIONS, Control

    model = ControlNetModel.__new__(ControlNetModel)
    units = [ControlUnit(model, None, hr_option=option) for option in HR_OPTIONS]
    picked = {stage: [u.hr_option for u in Control(units, total_steps=1,
                                                   hires_stage=stage).units]
              for stage in (None, "first", "second")}
    assert picked == {None: list(HR_OPTIONS), "first": ["Both", "Low res only"],
                      "second": ["Both", "High res only"]}


def test_inpaint_modules_give_the_extensions_input() -> None:
    """inpaint / inpaint_global_harmonious / inpaint_only: no preprocessing, the picture with
    the mask's first channel in alpha; an empty, all-black or all-white mask is no mask (the
    extension's have_mask), and the ControlNet then sees -1 where the mask is set."""
    from diffusion.pipelines.control import control_batch

    rng = np.random.default_rng(3)
    picture = rng.integers(0, 256, (9, 7, 3), dtype=np.uint8)
    mask = np.zeros((9, 7, 3), np.uint8)
    mask[2:6, 1:4, 0] = 255
    for module in ("inpaint", "inpaint_global_harmonious", "inpaint_only"):
        detected, used = ControlSpec(model="m", image=picture, mask=mask,
                                     module=module).detect(7, 9)
        np.testing.assert_array_equal(detected[:, :, :3], picture)
        np.testing.assert_array_equal(detected[:, :, 3], mask[:, :, 0])
        assert used.processor_res == 512
    for empty in (None, np.full((9, 7), 255, np.uint8), np.full((9, 7), 3, np.uint8)):
        detected, _ = ControlSpec(model="m", image=picture, mask=empty,
                                  module="inpaint").detect(7, 9)
        assert not detected[:, :, 3].any()
    hint = control_batch(np.concatenate([picture, mask[:, :, :1]], axis=2), np.arange(1))[0]
    inside = mask[:, :, 0] > 127
    assert (hint[:, inside] == -1).all()
    np.testing.assert_allclose(hint[:, ~inside], picture[~inside].T / 255, rtol=1e-6)
    with pytest.raises(ValueError, match="mask: 3x2, but the picture is 7x9"):
        ControlSpec(model="m", image=picture, mask=np.ones((2, 3), np.uint8) * 255,
                    module="inpaint").detect(7, 9)


class _Preprocess:
    """A stand-in for control_spec's `preprocess` that records how it was called and gives
    back a map of its own, so that the tests see what a spec hands its module."""

    def __init__(self) -> None:
        self.calls: list[dict] = []
        self.map = np.full((5, 6, 3), 77, np.uint8)

    def __call__(self, module: str, picture: np.ndarray, **settings: object) -> np.ndarray:
        self.calls.append({"module": module, "picture": picture, **settings})
        return self.map


def test_detect_hands_its_module_the_units_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    """The module gets the picture as HxWx3, the bound-checked thresholds and the processor
    resolution (pixel perfect: the short side scaled as the resize mode scales the picture,
    the extension's pixel_perfect_resolution, values worked out by hand); the spec it gives
    back has the settings used."""
    import diffusion.pipelines.control_spec as control_spec

    fake = _Preprocess()
    monkeypatch.setattr(control_spec, "preprocess", fake)
    gray = np.arange(30 * 45, dtype=np.uint32).reshape(30, 45).astype(np.uint8)  # H 30, W 45
    device = object()
    spec = ControlSpec(model="m", image=gray, module="canny", processor_res=640,
                       threshold_a=20, threshold_b=300)  # 300: off the slider, its 200
    detected, used = spec.detect(512, 768, device=device)
    assert detected is fake.map
    (call,) = fake.calls
    assert call.pop("device") is device
    picture = call.pop("picture")
    assert picture.shape == (30, 45, 3) and (picture == gray[:, :, None]).all()
    assert call == {"module": "canny", "threshold_a": 20.0, "threshold_b": 200.0,
                    "resolution": 640, "seed": None}
    assert (used.processor_res, used.threshold_a, used.threshold_b) == (640, 20.0, 200.0)
    assert used.model == "m" and used.module == "canny"
    # pixel perfect for 512 x 768: Crop and Resize scales by max(768/30, 512/45) = 25.6, the
    # short side 30 to 768; Resize and Fill by min() = 11.38, 30 to 341; Just Resize as Crop
    for mode, res in (("Crop and Resize", 768), ("Resize and Fill", 341), ("Just Resize", 768)):
        _, used = replace_spec(spec, pixel_perfect=True, resize_mode=mode).detect(512, 768)
        assert fake.calls[-1]["resolution"] == res and used.processor_res == res, mode
    # invert has neither a resolution nor sliders: the picture's own size, the hidden 0.5s
    _, used = replace_spec(spec, module="invert").detect(512, 768)
    assert fake.calls[-1]["resolution"] is None
    assert (fake.calls[-1]["threshold_a"], fake.calls[-1]["threshold_b"]) == (0.5, 0.5)
    assert (used.processor_res, used.threshold_a, used.threshold_b) == (640, 0.5, 0.5)
    with pytest.raises(ValueError, match=r"^image is missing: give the unit a picture$"):
        replace_spec(spec, image=None).detect(512, 768)


def replace_spec(spec: ControlSpec, **changes: object) -> ControlSpec:
    from dataclasses import replace

    return replace(spec, **changes)


def test_unit_carries_every_setting_to_the_control(monkeypatch: pytest.MonkeyPatch) -> None:
    """ControlSpec.unit: the ControlUnit has the spec's weight, guidance start and end, control
    mode, resize mode, hr option and union mode (not the defaults), the detected map and the
    infotext text of the settings used; model "None" gives the ControlMap of the map."""
    import diffusion.pipelines.control_spec as control_spec
    from diffusion.models.controlnet import ControlNetModel
    from diffusion.pipelines.control_map import ControlMap

    fake = _Preprocess()
    monkeypatch.setattr(control_spec, "preprocess", fake)
    picture = np.full((30, 45, 3), 9, np.uint8)
    model = ControlNetModel.__new__(ControlNetModel)
    device = object()
    spec = ControlSpec(model="m.safetensors", image=picture, module="canny", weight=0.35,
                       resize_mode="Just Resize", processor_res=640, threshold_a=20,
                       threshold_b=150, guidance_start=0.2, guidance_end=0.65,
                       control_mode=2, hr_option="Low res only", union_mode=3)
    unit = spec.unit(model, width=512, height=768, device=device)
    assert isinstance(unit, ControlUnit) and unit.model is model and unit.image is fake.map
    assert fake.calls[-1]["device"] is device
    assert (unit.weight, unit.guidance_start, unit.guidance_end, unit.control_mode,
            unit.resize_mode, unit.hr_option, unit.union_mode) == (
        0.35, 0.2, 0.65, "ControlNet is more important", "Just Resize", "Low res only", 3)
    assert unit.label == (
        "Module: canny, Model: m.safetensors, Weight: 0.35, Resize Mode: Just Resize, "
        "Processor Res: 640, Threshold A: 20.0, Threshold B: 150.0, Guidance Start: 0.2, "
        "Guidance End: 0.65, Pixel Perfect: False, Control Mode: ControlNet is more "
        "important, Union Mode: 3")
    model.title = "mine [00000000]"
    plain = ControlSpec(model="m.safetensors", image=picture, module="canny",
                        pixel_perfect=True).unit(model, width=512, height=768)
    assert isinstance(plain, ControlUnit)
    assert (plain.weight, plain.guidance_start, plain.guidance_end, plain.control_mode,
            plain.resize_mode, plain.hr_option, plain.union_mode) == (
        1.0, 0.0, 1.0, "Balanced", "Crop and Resize", "Both", None)
    assert plain.label == (
        "Module: canny, Model: mine [00000000], Weight: 1.0, Resize Mode: Crop and Resize, "
        "Processor Res: 768, Threshold A: 100.0, Threshold B: 200.0, Guidance Start: 0.0, "
        "Guidance End: 1.0, Pixel Perfect: True, Control Mode: Balanced")
    flux_map = ControlSpec(model="None", image=picture, module="canny", resize_mode=2,
                           hr_option="High res only", pixel_perfect=True).unit(
        None, width=512, height=768, device=device)
    assert isinstance(flux_map, ControlMap) and flux_map.image is fake.map
    assert fake.calls[-1]["device"] is device
    assert (flux_map.resize_mode, flux_map.hr_option) == ("Resize and Fill", "High res only")
    assert flux_map.label == (  # pixel perfect, Resize and Fill: 30 * min(768/30, 512/45)
        "Module: canny, Model: None, Weight: 1.0, Resize Mode: Resize and Fill, Processor "
        "Res: 341, Threshold A: 100.0, Threshold B: 200.0, Guidance Start: 0.0, Guidance "
        "End: 1.0, Pixel Perfect: True, Control Mode: Balanced")
    with pytest.raises(ValueError, match=r"^module 'ip-adapter_clip_h' does not go with model "
                                         r"mine \[00000000\]: an IP-Adapter module needs an "
                                         r"IP-Adapter model, not a ControlNetModel$"):
        ControlSpec(model="m", image=picture, module="ip-adapter_clip_h").unit(
            model, width=512, height=768)


def test_ip_adapter_unit_carries_the_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    """An IP-Adapter model with an IP-Adapter module: the IPAdapterUnit gets the picture as
    HxWx3, the spec's weight, guidance start and end, hr option and image encoder."""
    import diffusion.pipelines.control_spec as control_spec
    from diffusion.models.ip_adapter import IPAdapter

    made: list[tuple[tuple, dict]] = []
    monkeypatch.setattr(control_spec, "IPAdapterUnit",
                        lambda *args, **kwargs: made.append((args, kwargs)) or "unit")
    model = IPAdapter.__new__(IPAdapter)
    object.__setattr__(model, "title", "ip-adapter_sd15 [6a3f6166]")
    encoder = object()
    gray = np.full((6, 4), 200, np.uint8)
    spec = ControlSpec(model="ip.safetensors", image=gray, module="ip-adapter_clip_h",
                       weight=0.6, guidance_start=0.1, guidance_end=0.8,
                       hr_option="High res only")
    assert spec.unit(model, width=64, height=64, image_encoder=encoder) == "unit"
    ((args, kwargs),) = made
    assert args[0] is model and args[1].shape == (6, 4, 3) and (args[1] == 200).all()
    assert kwargs.pop("image_encoder") is encoder
    assert kwargs == {"weight": 0.6, "guidance_start": 0.1, "guidance_end": 0.8,
                      "hr_option": "High res only", "label": (
                          "Module: ip-adapter_clip_h, Model: ip-adapter_sd15 [6a3f6166], "
                          "Weight: 0.6, "
                          "Resize Mode: Crop and Resize, Processor Res: 512, Threshold A: "
                          "0.5, Threshold B: 0.5, Guidance Start: 0.1, Guidance End: 0.8, "
                          "Pixel Perfect: False, Control Mode: Balanced")}
    with pytest.raises(ValueError, match=r"^image is missing: give the unit a picture$"):
        replace_spec(spec, image=None).unit(model, width=64, height=64)
    with pytest.raises(ValueError, match=r"^module 'canny' does not go with model "
                                         r"ip-adapter_sd15 \[6a3f6166\]: an IP-Adapter "
                                         r"takes one of "
                                         r"ip-adapter-auto, ip-adapter_clip_h, "):
        replace_spec(spec, module="canny").unit(model, width=64, height=64)


@pytest.mark.parametrize("fields, message", [
    ({"weight": 2.5}, "weight must be a finite number in [0, 2], got 2.5"),
    ({"guidance_start": 1.5}, "guidance_start must be a finite number in [0, 1], got 1.5"),
    ({"guidance_end": -0.5}, "guidance_end must be a finite number in [0, 1], got -0.5"),
    ({"threshold_b": math.inf}, "threshold_b must be a finite number, got inf"),
    ({"union_mode": -1}, "union_mode must be a whole number from 0 (a Union ControlNet's "
                         "control type), got -1"),
    ({"union_mode": 1.0}, "union_mode must be a whole number from 0 (a Union ControlNet's "
                          "control type), got 1.0"),
    ({"union_mode": True}, "union_mode must be a whole number from 0 (a Union ControlNet's "
                           "control type), got True"),
    ({"hr_option": "both"}, "hr_option 'both': expected one of 'Both', 'Low res only', "
                            "'High res only'"),
    ({"control_mode": "3"}, "control_mode '3': expected one of 'Balanced', 'My prompt is "
                            "more important', 'ControlNet is more important' (or 0, 1, 2)"),
    ({"module": "cany"}, "module 'cany' is not a preprocessor here; the modules are none, "
                         "canny, invert, "),
])
def test_bad_settings_messages(fields: dict, message: str) -> None:
    with pytest.raises(ValueError) as caught:
        ControlSpec(**{"model": "m", **fields})
    assert str(caught.value).startswith(message)
    if "module" in fields:  # the extension's names after the list
        assert str(caught.value).endswith(
            " (or the extension's names hed, hed_safe, pidinet, pidinet_safe, lineart, "
            "invert (from white bg & black line), depth, normal_map)")


def test_edge_settings_are_taken() -> None:
    """The bounds themselves are allowed: weight 2, start == end, union mode 0; module
    aliases and control modes by number text become the names."""
    spec = ControlSpec(model="m", weight=2.0, guidance_start=0.5, guidance_end=0.5,
                       union_mode=0, module="invert (from white bg & black line)",
                       control_mode="0")
    assert (spec.weight, spec.guidance_start, spec.guidance_end, spec.union_mode, spec.module,
            spec.control_mode) == (2.0, 0.5, 0.5, 0, "invert", "Balanced")
    assert ControlSpec(model="m", control_mode="1").control_mode == "My prompt is more important"


def test_inpaint_mask_is_checked_at_once_only_for_inpaint_modules() -> None:
    picture = np.zeros((9, 7, 3), np.uint8)
    wrong = np.full((2, 3), 255, np.uint8)
    with pytest.raises(ValueError, match="mask: 3x2, but the picture is 7x9"):
        ControlSpec(model="m", image=picture, mask=wrong, module="inpaint")
    ControlSpec(model="m", image=picture, mask=wrong, module="canny")  # the mask is unused
    ControlSpec(model="m", image=None, mask=wrong, module="inpaint")  # the picture comes later
    ControlSpec(model="m", image=picture, mask=None, module="inpaint")
    _, used = ControlSpec(model="m", image=picture, module="inpaint", threshold_a=7,
                          processor_res=640).detect(7, 9)
    assert (used.processor_res, used.threshold_a, used.threshold_b) == (640, 0.5, 0.5)


def test_serialized_processor_res() -> None:
    """The extension's bound check (64..2048, else 512), except that pixel perfect writes
    the resolution detect worked out (a positive processor_res)."""
    def res(**fields: object) -> str:
        text = ControlSpec(model="m", module="canny", **fields).serialize()  # type: ignore[arg-type]
        return text.split("Processor Res: ")[1].split(",")[0]

    assert [res(processor_res=32), res(processor_res=32, pixel_perfect=True),
            res(processor_res=1, pixel_perfect=True), res(processor_res=0, pixel_perfect=True),
            res(processor_res=-1, pixel_perfect=True)] == ["512", "32", "1", "512", "512"]


def test_parse_unit_reads_every_field() -> None:
    text = ("Module: canny, Model: 123, Weight: 0.5, Resize Mode: 0, Processor Res: 640, "
            "Control Mode: Balanced, Union Mode: 3")
    assert parse_unit(text) == {"module": "canny", "model": "123", "weight": 0.5,
                                "resize_mode": "Just Resize", "processor_res": 640,
                                "control_mode": "Balanced", "union_mode": 3}
    assert parse_unit("Resize Mode: Inner Fit (Scale to Fit)") == {
        "resize_mode": "Crop and Resize"}
    assert parse_unit("Resize Mode: Resize and Fill") == {"resize_mode": "Resize and Fill"}
    assert parse_unit("Weight: 2") == {"weight": 2}
    assert parse_unit("Module: a: b") == {"module": "a: b"}
    for bad in ("Module: canny, Weight", "Module: canny, Mode: 1"):
        with pytest.raises(ValueError, match="cannot read"):
            parse_unit(bad)


def test_unit_label_of_python_units_writes_what_they_have() -> None:
    from diffusion.models.controlnet import ControlNetModel
    from diffusion.pipelines.control_map import ControlMap

    assert unit_label(ControlMap(None, resize_mode="Just Resize")) == (
        "Module: none, Model: None, Weight: 1.0, Resize Mode: Just Resize, Processor Res: "
        "512, Threshold A: 0.5, Threshold B: 0.5, Guidance Start: 0.0, Guidance End: 1.0, "
        "Pixel Perfect: False, Control Mode: Balanced")
    model = ControlNetModel.__new__(ControlNetModel)
    unit = ControlUnit(model, None, weight=2.5, guidance_start=0.25, guidance_end=0.75,
                       resize_mode="Resize and Fill", control_mode="My prompt is more important")
    assert unit_label(unit) == (
        "Module: none, Model: ControlNetModel, Weight: 2.0, Resize Mode: Resize and Fill, "
        "Processor Res: 512, Threshold A: 0.5, Threshold B: 0.5, Guidance Start: 0.25, "
        "Guidance End: 0.75, Pixel Perfect: False, Control Mode: My prompt is more important")
