"""diffusion.pipelines.control's logic on the host: a unit's checks, steps and scales, the base
check, the control map batch, and which residuals reach which rows.

`Control.residuals` runs here with numpy in place of gpustd's upload, slicing, joining and
capture, and with stand-in models whose residuals are a known function of every input they get
(x, timesteps, context, map, SDXL's added inputs, scale, union type); the expected values are
typed from the extension's rules (webui: step / steps within [start, end]; soft weights
weight * 0.825 ** (12 - i), T2I-Adapter's 0.25, 0.62, 0.825, 1; the unconditional rows left
alone when ControlNet is more important), not taken from the module. The device tests
(tests/diffusion/models/test_controlnet_units.py) run the real models.
"""

from __future__ import annotations

import math
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest

from diffusion.models.controlnet import ControlNetModel
from diffusion.models.flux_controlnet import FluxControlNetModel
from diffusion.models.ip_adapter import IPAdapter
from diffusion.models.qwen_image_controlnet import QwenImageControlNetModel
from diffusion.models.sd3_controlnet import SD3ControlNetModel
from diffusion.models.t2i_adapter import T2IAdapter
from diffusion.models.z_image_controlnet import ZImageControlNetModel
from diffusion.pipelines import control
from diffusion.pipelines.control import Control, ControlUnit, check_base, control_batch
from diffusion.pipelines.ip_adapter import IPAdapterUnit

pytestmark = pytest.mark.nodevice

MODES = ("Balanced", "My prompt is more important", "ControlNet is more important")


def bare(cls: type) -> Any:
    """An instance of a model class without weights (only its type is looked at)."""
    return cls.__new__(cls)


class FakeControlNet(ControlNetModel):
    """downs + 1 residuals (down ones, then mid), residual j (rows, j + 1, 2, 2) float32 and
    equal to gain * scale_j * (j + 1) * fake_value(...) of its row: a wrong row, step input,
    map, scale, type or model changes it. A list of scales must have one per residual, as
    ControlNetModel's."""

    union = uses_added_cond = False  # plain attributes here, set per stand-in

    def __init__(self, gain: float = 1.0, union: bool = False, title: str | None = None,
                 downs: int = 3):
        self.controlnet_down_blocks = [None] * downs
        self.gain = gain
        self.union = union
        self.title = title
        self.calls: list[dict] = []

    def __call__(self, x, timesteps, hidden, image, added, conditioning_scale, guess_mode,
                 union_mode):
        self.calls.append(dict(rows=len(x), scale=conditioning_scale, guess_mode=guess_mode,
                               union_mode=union_mode, added=added))
        count = len(self.controlnet_down_blocks) + 1
        if isinstance(conditioning_scale, tuple):
            assert len(conditioning_scale) == count, conditioning_scale
            scales = conditioning_scale
        else:
            scales = (conditioning_scale,) * count
        value = self.gain * fake_value(x, timesteps, hidden, image, added, union_mode)
        out = [shaped(scales[j] * (j + 1) * value, j).astype(np.float32) for j in range(count)]
        return out[:-1], out[-1]


def fake_value(x, timesteps, hidden, image, added=None, union_mode=None) -> np.ndarray:
    """The per-row number behind FakeControlNet's residuals, (rows,)."""
    row = (x.reshape(len(x), -1).sum(1) + np.asarray(timesteps) / 1000
           + 10 * hidden.reshape(len(hidden), -1).sum(1)
           + 100 * image.reshape(len(image), -1).mean(1))
    if added is not None:
        row = row + added["text_embeds"].sum(1) + np.asarray(added["time_ids"]).sum()
    return row + 1000 * (union_mode or 0)


def shaped(rows: np.ndarray, j: int, size: int = 2) -> np.ndarray:
    """Per-row numbers as residual j's shape (rows, j + 1, size, size)."""
    return np.broadcast_to(np.asarray(rows, np.float64)[:, None, None, None],
                           (len(rows), j + 1, size, size))


class FakeAdapter(T2IAdapter):
    """Features f_j (rows, j + 1, 3, 3) float32, each row (j + 1) * 100 * its map's mean."""

    def __init__(self, in_channels: int = 3, adapter_type: str = "full_adapter"):
        self.config = {"in_channels": in_channels, "adapter_type": adapter_type}
        weight = SimpleNamespace(device="adapter's device")
        self.adapter = SimpleNamespace(body=[SimpleNamespace(resnets=[SimpleNamespace(
            block1=SimpleNamespace(weight=weight))])])
        self.calls: list[np.ndarray] = []

    def __call__(self, image):
        self.calls.append(np.asarray(image))
        means = 100 * np.asarray(image).reshape(len(image), -1).mean(1)
        return [shaped((j + 1) * means, j, 3).astype(np.float32) for j in range(3)]


@pytest.fixture
def on_host(monkeypatch):
    """control's gpustd helpers replaced by numpy: uploads must name the device of what they
    join (a numpy array's is "cpu"), slices their axis, and captures copy their outputs
    (which outlive the call: they are summed with later units' and kept)."""
    devices: list[Any] = []

    def asarray(a, device=None):
        assert device is not None, "an upload without the device of the data it joins"
        devices.append(device)
        return np.asarray(a)

    def capture(fn, *, copy_outputs, max_signatures):
        assert copy_outputs is True
        return fn

    monkeypatch.setattr(control, "asarray", asarray)
    monkeypatch.setattr(control, "take_slice",
                        lambda t, start, stop, *, axis: np.take(t, np.arange(start, stop),
                                                                axis=axis))
    monkeypatch.setattr(control, "concatenate", lambda parts: np.concatenate(parts))
    monkeypatch.setattr(control, "capture", capture)
    return devices


# --- ControlUnit -------------------------------------------------------------------------------

@pytest.mark.parametrize("cls", [ControlNetModel, T2IAdapter, FluxControlNetModel,
                                 SD3ControlNetModel, ZImageControlNetModel,
                                 QwenImageControlNetModel])
def test_every_control_model_type_makes_a_unit(cls):
    unit = ControlUnit(bare(cls), None)
    assert (unit.weight, unit.guidance_start, unit.guidance_end) == (1.0, 0.0, 1.0)
    assert (unit.control_mode, unit.resize_mode, unit.hr_option, unit.schedule) == (
        "Balanced", "Crop and Resize", "Both", "webui")
    assert not unit.guess_mode and unit.union_mode is None and unit.label is None


def test_unit_options_are_checked_one_message_each():
    model = bare(ControlNetModel)
    assert ControlUnit(model, None, resize_mode=0).resize_mode == "Just Resize"
    assert ControlUnit(model, None, resize_mode="resize and fill").resize_mode == \
        "Resize and Fill"
    expected = {
        "control_mode": "control_mode 'Prompt': expected one of 'Balanced', 'My prompt is "
                        "more important', 'ControlNet is more important'",
        "hr_option": "hr_option 'Prompt': expected one of 'Both', 'Low res only', 'High res "
                     "only'",
        "schedule": "schedule 'Prompt': expected 'webui' or 'diffusers'",
    }
    for name, message in expected.items():
        with pytest.raises(ValueError) as error:
            ControlUnit(model, None, **{name: "Prompt"})
        assert str(error.value) == message
    for name in ("weight", "guidance_start", "guidance_end"):
        for bad in (math.nan, math.inf):
            with pytest.raises(ValueError) as error:
                ControlUnit(model, None, **{name: bad})
            assert str(error.value) == f"control unit {name} must be a finite number, got {bad!r}"
    for start, end in [(0.8, 0.2), (-0.1, 0.5), (0.2, 1.1)]:
        with pytest.raises(ValueError) as error:
            ControlUnit(model, None, guidance_start=start, guidance_end=end)
        assert str(error.value) == (f"guidance_start {start} and guidance_end {end} must "
                                    "satisfy 0 <= start <= end <= 1")
    for start, end in [(0.0, 0.0), (1.0, 1.0), (0.4, 0.4)]:
        ControlUnit(model, None, guidance_start=start, guidance_end=end)
    ControlUnit(model, None, weight=-2.0)
    with pytest.raises(TypeError) as error:
        ControlUnit(object(), None)
    assert str(error.value) == (
        "a control unit's model is a ControlNetModel or T2IAdapter (FLUX, SD3, Z-Image, "
        "Qwen-Image: a FluxControlNetModel, SD3ControlNetModel, ZImageControlNetModel, "
        "QwenImageControlNetModel), got object")


def test_steps_a_unit_acts_at():
    def steps(start, end, schedule, total=10):
        unit = ControlUnit(bare(ControlNetModel), None, guidance_start=start,
                           guidance_end=end, schedule=schedule)
        return [i for i in range(total) if unit.active(i, total)]

    assert steps(0.0, 1.0, "webui") == list(range(10))
    assert steps(0.0, 1.0, "diffusers") == list(range(10))
    assert steps(0.3, 0.6, "webui") == [3, 4, 5, 6]  # 0.3 and 0.6 themselves included
    assert steps(0.3, 0.6, "diffusers") == [3, 4, 5]  # (i + 1) / n <= end
    assert steps(0.5, 0.5, "webui") == [5]
    assert steps(0.5, 0.5, "diffusers") == []
    assert steps(0.25, 0.75, "webui", total=4) == [1, 2, 3]
    assert steps(0.25, 0.75, "diffusers", total=4) == [1, 2]
    assert steps(0.0, 0.0, "webui") == [0]


def test_scales_and_rows_per_mode():
    net, adapter = bare(ControlNetModel), bare(T2IAdapter)
    for model in (net, adapter):
        unit = ControlUnit(model, None, weight=0.7)
        assert unit.scales(13) == 0.7 and isinstance(unit.scales(13), float)
        assert not unit.cond_only
        guess = ControlUnit(model, None, weight=0.7, control_mode=MODES[1], guess_mode=True)
        assert guess.scales(13) == 0.7 and guess.cond_only
    soft = [0.7 * 0.825 ** (12 - i) for i in range(13)]
    for mode, cond_only in [(MODES[1], False), (MODES[2], True)]:
        unit = ControlUnit(net, None, weight=0.7, control_mode=mode)
        assert unit.cond_only is cond_only
        assert unit.scales(13) == pytest.approx(tuple(soft), rel=1e-15)
        assert unit.scales(10) == pytest.approx(tuple(soft[:10]), rel=1e-15)  # SDXL: 0.825**3
        adapter_unit = ControlUnit(adapter, None, weight=0.5, control_mode=mode)
        assert adapter_unit.scales(4) == (0.125, 0.31, 0.4125, 0.5)
        assert adapter_unit.scales(3) == (0.125, 0.31, 0.4125)


# --- check_base ----------------------------------------------------------------------------------

def sd_net(context: int = 32, sdxl: bool = False, union: bool = False, types: int = 0,
           title: str | None = None) -> Any:
    model = FakeControlNet(union=union, title=title)
    model.config = {"cross_attention_dim": context, **({"num_control_type": types}
                                                        if types else {})}
    model.uses_added_cond = sdxl
    return model


SD = SimpleNamespace(config={"cross_attention_dim": 32}, uses_added_cond=False)
XL = SimpleNamespace(config={"cross_attention_dim": 32}, uses_added_cond=True)


def refusal(units, unet) -> str:
    with pytest.raises(ValueError) as error:
        check_base(units, unet)
    return str(error.value)


def test_base_check_names_the_unit_and_both_bases():
    image = None
    check_base([ControlUnit(sd_net(), image)], SD)
    check_base([ControlUnit(sd_net(sdxl=True), image)], XL)
    assert refusal([ControlUnit(sd_net(), image), ControlUnit(sd_net(48, title="t"), image)],
                   SD) == ("control unit 1 (t): the FakeControlNet is made for SD 1.x/2.x (text "
                           "context 48), but the model is SD 1.x/2.x (text context 32); give "
                           "one made for this model")
    assert refusal([ControlUnit(sd_net(sdxl=True), image)], SD) == (
        "control unit 0 (FakeControlNet): the FakeControlNet is made for SDXL (text context "
        "32), but the model is SD 1.x/2.x (text context 32); give one made for this model")
    adapter_xl = FakeAdapter(adapter_type="full_adapter_xl")
    check_base([ControlUnit(adapter_xl, image)], XL)
    check_base([ControlUnit(FakeAdapter(), image)], SimpleNamespace(
        config={"cross_attention_dim": 1024}, uses_added_cond=False))  # any SD context
    assert refusal([ControlUnit(adapter_xl, image)], SD) == (
        "control unit 0 (FakeAdapter): the FakeAdapter is made for SDXL, but the model is "
        "SD 1.x/2.x (text context 32); give one made for this model")
    assert refusal([ControlUnit(FakeAdapter(), image)], XL).startswith(
        "control unit 0 (FakeAdapter): the FakeAdapter is made for SD 1.x/2.x, but the model "
        "is SDXL (text context 32)")
    ip_unit = bare(IPAdapterUnit)
    ip_unit.model = bare(IPAdapter)
    for cls, family in [(FluxControlNetModel, "FLUX.1"), (SD3ControlNetModel, "SD 3/3.5"),
                        (ZImageControlNetModel, "Z-Image"),
                        (QwenImageControlNetModel, "Qwen-Image")]:
        assert refusal([ip_unit, ControlUnit(bare(cls), image)], SD) == (
            f"control unit 1 ({cls.__name__}): the {cls.__name__} is made for {family}, but "
            "the model is SD 1.x/2.x (text context 32); give one made for this model")
    check_base([ip_unit], SD)


def test_union_controlnet_needs_its_type_in_range():
    union = sd_net(sdxl=True, union=True, types=8, title="xinsir union")
    for mode in (0, 7):
        check_base([ControlUnit(union, None, union_mode=mode)], XL)
    for mode in (None, 8, -1):
        assert refusal([ControlUnit(union, None, union_mode=mode)], XL) == (
            "control unit 0 (xinsir union) is a ControlNet Union: give its control type, "
            f"0 .. 7 (--control-union-mode, the unit's union_mode); got {mode}")
    # a Union made for another base: the base is what is wrong
    assert "is made for SDXL" in refusal([ControlUnit(union, None)], SD)
    untitled = sd_net(sdxl=True, union=True, types=2)
    assert refusal([ControlUnit(untitled, None, union_mode=2)], XL).startswith(
        "control unit 0 (FakeControlNet) is a ControlNet Union: give its control type, 0 .. 1")
    del untitled.title
    assert "control unit 0 (FakeControlNet) is" in refusal([ControlUnit(untitled, None)], XL)
    countless = sd_net(sdxl=True, union=True)  # no num_control_type: no type fits
    assert "0 .. -1" in refusal([ControlUnit(countless, None, union_mode=0)], XL)


# --- control_batch -------------------------------------------------------------------------------

def test_control_batch_rows_values_and_inpaint_maps():
    rng = np.random.default_rng(3)
    picture = rng.integers(0, 256, (5, 7, 3), dtype=np.uint8)
    got = control_batch(picture, np.array([0, 1, 1]))
    assert got.dtype == np.float32 and got.flags.c_contiguous and got.shape == (3, 3, 5, 7)
    want = picture.transpose(2, 0, 1).astype(np.float32) / 255
    for row in got:
        np.testing.assert_array_equal(row, want)
    maps = rng.uniform(0, 1, (2, 3, 5, 7))
    got = control_batch(maps, np.array([1, 0, 0, 1]))
    np.testing.assert_array_equal(got, maps[[1, 0, 0, 1]].astype(np.float32))
    floats = rng.uniform(0, 1, (5, 7, 3))
    np.testing.assert_array_equal(control_batch(floats, np.array([0]))[0],
                                  floats.transpose(2, 0, 1).astype(np.float32))
    inpaint = np.concatenate([picture, np.zeros((5, 7, 1), np.uint8)], axis=2)
    inpaint[1, 2, 3], inpaint[3, 4, 3], inpaint[0, 0, 3] = 128, 255, 127  # > one half: masked
    got = control_batch(inpaint, np.array([0]))[0]
    masked = np.zeros((5, 7), bool)
    masked[1, 2] = masked[3, 4] = True
    np.testing.assert_array_equal(got[:, masked], -1.0)
    np.testing.assert_array_equal(got[:, ~masked], want[:, ~masked])
    half = np.concatenate([floats, np.full((5, 7, 1), 0.5)], axis=2)  # one half: not masked
    np.testing.assert_array_equal(control_batch(half, np.array([0]))[0],
                                  floats.transpose(2, 0, 1).astype(np.float32))


def test_control_batch_refuses_bad_maps():
    shapes = "a control image is (H, W, 3) uint8 or float in [0, 1], (H, W, 4) with the " \
             "inpaint mask in alpha, or (B, 3, H, W); got "
    for bad, text in [(np.zeros((5, 7, 2)), "float64 (1, 2, 5, 7)"),
                      (np.zeros((2, 4, 5, 7)), "float64 (2, 4, 5, 7)"),
                      (np.zeros((5, 7)), "float64 (5, 7)"),
                      (np.full((5, 7, 3), np.nan), "float64 (1, 3, 5, 7)")]:
        with pytest.raises(ValueError) as error:
            control_batch(bad, np.array([0]))
        assert str(error.value) == shapes + text
    with pytest.raises(ValueError) as error:
        control_batch(np.zeros((4, 3, 5, 7)), np.array([0, 1, 1, 0]))
    assert str(error.value) == ("the control image batch holds 4 maps for a batch of 2 images; "
                                "give one map (every image's) or 2, one per image")


# --- Control -------------------------------------------------------------------------------------

def test_hires_passes_and_ip_adapter_units_are_sorted_out():
    def unit(option):
        return ControlUnit(bare(ControlNetModel), None, hr_option=option)

    both, low, high = unit("Both"), unit("Low res only"), unit("High res only")
    ip_unit = bare(IPAdapterUnit)
    ip_unit.hr_option = "Both"
    assert Control([both, low, high], total_steps=5).units == [both, low, high]
    assert Control([both, low, high], total_steps=5, hires_stage="first").units == [both, low]
    assert Control([both, low, high], total_steps=5, hires_stage="second").units == [both, high]
    mixed = Control([ip_unit, both], total_steps=5)
    assert mixed.units == [both] and mixed.image_prompts.units == [ip_unit]
    assert mixed.image_prompts.total_steps == 5
    assert Control([], total_steps=0).total_steps == 1
    assert Control([], total_steps=7.9).total_steps == 7


def run_units(units, *, steps=4, step=0, uncond_rows=1, batch=3, images=None, size=None,
              text_embeds=None, time_ids=None, seed=0, **control):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((batch, 2, 4, 4)).astype(np.float32)
    t = np.full(batch, 700.0, np.float32)
    hidden = rng.standard_normal((batch, 3, 5)).astype(np.float32)
    rows = {} if uncond_rows is None else {"uncond_rows": uncond_rows}
    got = Control(units, total_steps=steps, size=size, **control).residuals(
        x, t, hidden, step, images=images, text_embeds=text_embeds, time_ids=time_ids, **rows)
    return got, (x, t, hidden)


def assert_residuals(got, want_rows: list[np.ndarray], size: int = 2,
                     key: str | None = None) -> None:
    """Each residual j: float32, (rows, j + 1, size, size), its rows equal to want_rows[j]."""
    values = got[key] if key else [*got["down_block_additional_residuals"],
                                   got["mid_block_additional_residual"]]
    assert len(values) == len(want_rows)
    for j, (value, want) in enumerate(zip(values, want_rows)):
        assert value.dtype == np.float32 and value.shape == (len(want), j + 1, size, size)
        np.testing.assert_allclose(value, shaped(want, j, size), rtol=2e-6, atol=1e-4)


def test_controlnet_residuals_reach_their_rows_with_their_scales(on_host):
    rng = np.random.default_rng(1)
    maps = rng.uniform(0, 1, (2, 3, 8, 8)).astype(np.float32)
    balanced = ControlUnit(FakeControlNet(), maps, weight=0.7, guidance_end=0.5)
    strong = ControlUnit(FakeControlNet(gain=-2.0), maps[::-1], weight=0.5,
                         control_mode=MODES[2], guidance_start=0.5)
    soft = [0.5 * 0.825 ** (12 - j) for j in range(4)]
    image_rows = [0, 0, 1]  # row 0 unconditional (image 0), then the conditional 0, 1
    for step, active in [(0, [balanced]), (1, [balanced]), (2, [balanced, strong]),
                         (3, [strong])]:
        got, (x, t, hidden) = run_units([balanced, strong], step=step)
        want = [np.zeros(3) for _ in range(4)]
        if balanced in active:
            value = fake_value(x, t, hidden, maps[image_rows])
            want = [w + 0.7 * (j + 1) * value for j, w in enumerate(want)]
        if strong in active:
            cond = -2.0 * fake_value(x[1:], t[1:], hidden[1:], maps[::-1][image_rows[1:]])
            for j in range(4):
                want[j][1:] += soft[j] * (j + 1) * cond
        assert_residuals(got, want)
    assert strong.model.calls[-1]["rows"] == 2  # the unconditional row is not run
    assert strong.model.calls[-1]["guess_mode"] is False
    assert all(call["union_mode"] is None for call in strong.model.calls)
    assert set(on_host) == {"cpu"}


def test_controlnet_inputs_follow_the_rows(on_host):
    """SDXL's added inputs, the per-image rows, guess mode and the union type reach the model
    for exactly the rows it runs on."""
    rng = np.random.default_rng(2)
    maps = rng.uniform(0, 1, (2, 3, 8, 8))
    union = FakeControlNet(union=True)
    unit = ControlUnit(union, maps, weight=0.9, guess_mode=True, union_mode=3)
    text_embeds = rng.standard_normal((4, 6))
    time_ids = [[1.0, 2.0], [3.0, 4.0], [5.0, 6.0], [7.0, 8.0]]
    images = np.array([1, 0, 1, 1])
    got, (x, t, hidden) = run_units([unit], batch=4, uncond_rows=2, images=images,
                                    text_embeds=text_embeds, time_ids=time_ids)
    call = union.calls[0]
    assert call["rows"] == 2 and call["guess_mode"] is True and call["union_mode"] == 3
    assert call["scale"] == 0.9
    np.testing.assert_array_equal(call["added"]["text_embeds"], text_embeds[2:])
    assert call["added"]["time_ids"].dtype == np.float32
    np.testing.assert_array_equal(call["added"]["time_ids"], time_ids[2:])
    cond = fake_value(x[2:], t[2:], hidden[2:], maps[images[2:]], call["added"], 3)
    assert_residuals(got, [np.concatenate([[0, 0], 0.9 * (j + 1) * cond]) for j in range(4)])
    plain = ControlUnit(FakeControlNet(), maps, union_mode=3)
    run_units([plain])
    assert plain.model.calls[0]["union_mode"] is None  # not a Union: no type given


def test_rows_default_to_all_conditional(on_host):
    """Without uncond_rows every row is conditional, and a row's image is its index."""
    maps = np.random.default_rng(6).uniform(0, 1, (2, 3, 8, 8))
    strong = ControlUnit(FakeControlNet(), maps, control_mode=MODES[2])
    got, (x, t, hidden) = run_units([strong], batch=2, uncond_rows=None)
    soft = [0.825 ** (12 - j) for j in range(4)]
    value = fake_value(x, t, hidden, maps)
    assert_residuals(got, [soft[j] * (j + 1) * value for j in range(4)])


def test_units_keep_their_own_model_and_map(on_host):
    """Two units on the same rows: each runs its own ControlNet on its own map (captures and
    uploaded maps are kept per unit)."""
    rng = np.random.default_rng(7)
    first, second = rng.uniform(0, 1, (2, 8, 8, 3))
    units = [ControlUnit(FakeControlNet(), first, weight=0.5),
             ControlUnit(FakeControlNet(gain=3.0), second, weight=0.25)]
    for step in (0, 1):  # the second call reuses what the first made
        got, (x, t, hidden) = run_units(units, step=step, uncond_rows=0, batch=2)
        value = sum(w * g * fake_value(x, t, hidden, np.repeat(m.transpose(2, 0, 1)[None], 2, 0))
                    for w, g, m in [(0.5, 1.0, first), (0.25, 3.0, second)])
        assert_residuals(got, [(j + 1) * value for j in range(4)])


def test_no_acting_unit_gives_none(on_host):
    late = ControlUnit(FakeControlNet(), np.zeros((4, 4, 3)), guidance_start=0.75)
    assert run_units([late], step=1)[0] is None
    strong = ControlUnit(FakeControlNet(), np.zeros((4, 4, 3)), control_mode=MODES[2])
    assert run_units([strong], batch=2, uncond_rows=2)[0] is None  # no conditional row
    assert strong.model.calls == []
    balanced = ControlUnit(FakeControlNet(), np.zeros((4, 4, 3)))
    got, _ = run_units([strong, balanced], batch=2, uncond_rows=2)  # the next unit still acts
    assert len(balanced.model.calls) == 1 and got is not None
    assert run_units([])[0] is None


def test_adapter_features_once_per_generation(on_host):
    rng = np.random.default_rng(4)
    image = rng.uniform(0, 1, (6, 6, 3))
    for in_channels in (3, 1):
        adapter = FakeAdapter(in_channels)
        unit = ControlUnit(adapter, image, weight=0.5, control_mode=MODES[2])
        control = Control([unit], total_steps=3)
        x = np.zeros((3, 2, 4, 4), np.float32)
        t, hidden = np.zeros(3, np.float32), np.zeros((3, 3, 5), np.float32)
        first = control.residuals(x, t, hidden, 0, uncond_rows=1)
        again = control.residuals(x, t, hidden, 2, uncond_rows=1)
        feats = first["down_intrablock_additional_residuals"]
        assert again["down_intrablock_additional_residuals"] is feats
        assert len(adapter.calls) == 1 and adapter.calls[0].shape == (3, in_channels, 6, 6)
        mean = 100 * image.transpose(2, 0, 1)[:in_channels].astype(np.float32).mean()
        assert_residuals(first, [np.array([0, 1, 1]) * scale * (j + 1) * mean
                                 for j, scale in enumerate((0.125, 0.31, 0.4125))],
                         size=3, key="down_intrablock_additional_residuals")
        assert "down_block_additional_residuals" not in first
    assert "adapter's device" in on_host


def test_adapter_and_controlnet_units_add_up(on_host):
    image = np.random.default_rng(5).uniform(0, 1, (6, 6, 3))
    adapters = [ControlUnit(FakeAdapter(), image, weight=w) for w in (0.5, 0.25)]
    nets = [ControlUnit(FakeControlNet(), image, weight=w) for w in (0.5, 0.25)]
    got, (x, t, hidden) = run_units([*adapters, *nets], uncond_rows=0, batch=2)
    mean = 100 * image.astype(np.float32).mean()
    assert_residuals(got, [np.full(2, 0.75 * (j + 1) * mean) for j in range(3)], size=3,
                     key="down_intrablock_additional_residuals")
    value = fake_value(x, t, hidden, np.repeat(image.transpose(2, 0, 1)[None], 2, 0))
    assert_residuals(got, [0.75 * (j + 1) * value for j in range(4)])
    assert "ip_hidden_states" not in got


def test_ip_adapter_tokens_join_the_residuals(on_host, monkeypatch):
    asked: list[tuple] = []

    class Prompts:
        def __init__(self, units, *, total_steps):
            self.units = units

        def __bool__(self):
            return bool(self.units)

        def states(self, like, step, *, uncond_rows=0):
            asked.append((like.shape, step, uncond_rows))
            return ["tokens"]

    monkeypatch.setattr(control, "ImagePrompts", Prompts)
    ip_unit = bare(IPAdapterUnit)
    ip_unit.hr_option = "Both"
    got, _ = run_units([ip_unit], step=2, uncond_rows=1)
    assert got == {"ip_hidden_states": ["tokens"]}
    assert asked == [((3, 2, 4, 4), 2, 1)]


def test_uint8_maps_are_fitted_to_the_pass(on_host, monkeypatch):
    fitted: list[tuple] = []

    def fit_map(image, width, height, mode):
        fitted.append((image.shape, width, height, mode))
        return np.full((height, width, 3), 51, np.uint8)

    monkeypatch.setattr(control, "fit_map", fit_map)
    picture = np.zeros((6, 10, 3), np.uint8)
    unit = ControlUnit(FakeControlNet(), picture, resize_mode="Resize and Fill")
    got, (x, t, hidden) = run_units([unit], size=(12, 8), uncond_rows=0, batch=1)
    assert fitted == [((6, 10, 3), 12, 8, "Resize and Fill")]
    value = fake_value(x, t, hidden, np.full((1, 3, 8, 12), 0.2))
    assert_residuals(got, [(j + 1) * value for j in range(4)])
    floats = ControlUnit(FakeControlNet(), np.zeros((6, 10, 3)))
    run_units([floats], size=(12, 8))
    unsized = ControlUnit(FakeControlNet(), picture)
    run_units([unsized])
    assert len(fitted) == 1  # float maps, and passes of no given size, are used as they are


def test_hires_stages_choose_their_units(on_host):
    image = np.zeros((4, 4, 3))
    low = ControlUnit(FakeControlNet(), image, hr_option="Low res only")
    high = ControlUnit(FakeControlNet(gain=2.0), image, hr_option="High res only")
    for stage, runs in [("first", low), ("second", high), (None, None)]:
        low.model.calls.clear()
        high.model.calls.clear()
        run_units([low, high], hires_stage=stage)
        if runs is None:
            assert len(low.model.calls) == len(high.model.calls) == 1
        else:
            assert [len(u.model.calls) for u in (low, high)] == [int(runs is low),
                                                                 int(runs is high)]
