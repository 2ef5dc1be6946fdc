"""diffusion.pipelines.control: which steps a unit acts at, its scales per control mode, and
the rows it reaches (the unconditional half left alone when ControlNet is more important)."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

pytest.importorskip("diffusers", reason="diffusers is a test-only reference (extra: reference)")
import torch
from sd_tiny import UNET_TINY, state_dict
from support import assert_close
from test_controlnet import tiny_controlnet

import gpucore
import gpustd
from diffusion.models.controlnet import ControlNetModel
from diffusion.pipelines.control import Control, ControlUnit

MODES = ("Balanced", "My prompt is more important", "ControlNet is more important")


@pytest.fixture(scope="module")
def pair(first_device: gpucore.Device) -> tuple:
    reference = tiny_controlnet(UNET_TINY, seed=14)
    ours = ControlNetModel(dict(reference.config), device=first_device)
    ours.load_state_dict(state_dict(reference))
    return reference, ours


@pytest.mark.nodevice
def test_start_end_rules() -> None:
    unit = ControlUnit.__new__(ControlUnit)
    unit.guidance_start, unit.guidance_end = 0.25, 0.6
    unit.schedule = "webui"  # the extension: step / steps within [start, end]
    assert [unit.active(i, 10) for i in range(10)] == [i in (3, 4, 5, 6) for i in range(10)]
    unit.schedule = "diffusers"  # controlnet_keep: i / n >= start and (i + 1) / n <= end
    assert [unit.active(i, 10) for i in range(10)] == [i in (3, 4, 5) for i in range(10)]


def test_control_modes_and_rows(first_device: gpucore.Device, pair: tuple) -> None:
    """Batch [uncond; cond] of 2: each mode's residuals against diffusers' ControlNet run
    with the same scales, zero on the unconditional row where the mode says so."""
    reference, ours = pair
    rng = np.random.default_rng(15)
    x = rng.standard_normal((2, 4, 8, 8)).astype(np.float32)
    hidden = rng.standard_normal((2, 6, 32)).astype(np.float32)
    image = rng.uniform(0, 1, (16, 16, 3)).astype(np.float32)
    t = np.full(2, 500.0, np.float32)
    with torch.no_grad():
        plain_down, plain_mid = reference(
            torch.from_numpy(x), torch.from_numpy(t), torch.from_numpy(hidden),
            torch.from_numpy(np.repeat(image.transpose(2, 0, 1)[None], 2, 0)),
            return_dict=False)
    plain = [d.numpy() for d in plain_down] + [plain_mid.numpy()]

    def up(a: np.ndarray) -> gpustd.Tensor:
        return gpustd.asarray(a, device=first_device)

    for mode in MODES:
        unit = ControlUnit(ours, image, weight=0.7, control_mode=mode)
        got = Control([unit], total_steps=4).residuals(up(x), up(t), up(hidden), 1,
                                                       uncond_rows=1)
        values = [d.numpy() for d in got["down_block_additional_residuals"]]
        values.append(got["mid_block_additional_residual"].numpy())
        scales = unit.scales(len(values))
        for i, (value, want) in enumerate(zip(values, plain)):
            scale = scales[i] if isinstance(scales, tuple) else scales
            want = want * scale
            if mode == MODES[2]:
                want[0] = 0
            assert_close(value, want, tol=1e-3)
    stopped = ControlUnit(ours, image, guidance_end=0.2)
    assert Control([stopped], total_steps=4).residuals(up(x), up(t), up(hidden), 1) is None


def test_one_map_per_image_follows_the_and_parts(first_device: gpucore.Device,
                                                 pair: tuple) -> None:
    """A unit with one map per image, a batch of 2 whose prompts have 2 and 1 AND parts:
    GuidedUNet's rows are uncond 0, 1 then cond 0, 0, 1 (sampling.part_rows), and each row's
    residuals are diffusers' ControlNet's on its image's map. 3 maps for 2 images: refused,
    saying what fits."""
    from diffusion.pipelines.sd.guided_unet import GuidedUNet

    reference, ours = pair
    rng = np.random.default_rng(16)
    maps = rng.uniform(0, 1, (2, 3, 16, 16)).astype(np.float32)
    x = rng.standard_normal((2, 4, 8, 8)).astype(np.float32)
    uncond, cond = (rng.standard_normal((rows, 6, 32)).astype(np.float32) for rows in (2, 3))
    seen: list[tuple[np.ndarray, dict]] = []

    class Seen(Control):
        def residuals(self, *args: Any, **kw: Any) -> Any:
            seen.append((kw["images"], out := super().residuals(*args, **kw)))
            return out

    def run(unit_maps: np.ndarray) -> None:
        control = Seen([ControlUnit(ours, unit_maps, weight=0.7)], total_steps=1)
        contexts = tuple(gpustd.asarray(c, device=first_device) for c in (uncond, cond))
        GuidedUNet(lambda x, *rest: x, lambda step: contexts, dtype=np.float32,
                   control=control, weights=((0.5, 0.5), (1.0,)))(x, 500.0, 0)

    run(maps)
    images, got = seen[0]
    assert images.tolist() == [0, 1, 0, 0, 1]
    with torch.no_grad():
        down, mid = reference(torch.from_numpy(x[images]), torch.full((5,), 500.0),
                              torch.from_numpy(np.concatenate([uncond, cond])),
                              torch.from_numpy(maps[images]), return_dict=False)
    for value, want in zip([*got["down_block_additional_residuals"],
                            got["mid_block_additional_residual"]], [*down, mid]):
        assert_close(value.numpy(), want.numpy() * 0.7, tol=1e-3)
    with pytest.raises(ValueError, match="holds 3 maps for a batch of 2 images; give one map "
                                         r"\(every image's\) or 2, one per image"):
        run(np.concatenate([maps, maps[:1]]))


@pytest.mark.nodevice
def test_bad_units_are_named() -> None:
    model = ControlNetModel.__new__(ControlNetModel)
    with pytest.raises(ValueError, match="control_mode"):
        ControlUnit(model, None, control_mode="Prompt")
    with pytest.raises(ValueError, match="weight must be a finite"):
        ControlUnit(model, None, weight=float("nan"))
    with pytest.raises(ValueError, match="guidance_start"):
        ControlUnit(model, None, guidance_start=0.8, guidance_end=0.2)
    with pytest.raises(TypeError, match="ControlNetModel or T2IAdapter"):
        ControlUnit(object(), None)


def test_a_controlnet_for_another_base_is_named(first_device: gpucore.Device,
                                                pair: tuple) -> None:
    """A ControlNet made for another text context (an SDXL one on SD 1.5) is refused naming
    the unit before the first step (it was a shape error inside the first ControlNet call)."""
    from types import SimpleNamespace

    from diffusion.pipelines.control import check_base

    reference, ours = pair
    unet = SimpleNamespace(config={"cross_attention_dim": 32}, uses_added_cond=False)
    other = ControlNetModel({**reference.config, "cross_attention_dim": 48},
                            device=first_device)
    image = np.zeros((16, 16, 3), np.uint8)
    check_base([ControlUnit(ours, image)], unet)
    with pytest.raises(ValueError, match=r"control unit 1 \(ControlNetModel\): the "
                                         r"ControlNetModel is made for SD 1.x/2.x \(text "
                                         r"context 48\), but the model is SD 1.x/2.x \(text "
                                         r"context 32\)"):
        check_base([ControlUnit(ours, image), ControlUnit(other, image)], unet)
    xl = SimpleNamespace(config={"cross_attention_dim": 32}, uses_added_cond=True)
    with pytest.raises(ValueError, match=r"made for SD 1.x/2.x .*, but the model is SDXL"):
        check_base([ControlUnit(ours, image)], xl)


def test_adapter_unit(first_device: gpucore.Device) -> None:
    """A T2I-Adapter unit: the adapter's features times the mode's scales (the extension's
    0.25, 0.62, 0.825, 1 when soft), unconditional row zero when ControlNet is more
    important; computed once and reused by later steps."""
    from test_controlnet_loading import tiny_adapter

    from diffusion.models.t2i_adapter import T2IAdapter

    reference = tiny_adapter("full_adapter")
    ours = T2IAdapter(dict(reference.config), device=first_device)
    ours.load_state_dict(state_dict(reference))
    image = np.random.default_rng(17).uniform(0, 1, (16, 16, 3)).astype(np.float32)
    with torch.no_grad():
        plain = [f.numpy() for f in reference(torch.from_numpy(
            np.repeat(image.transpose(2, 0, 1)[None], 2, 0)))]
    x = gpustd.asarray(np.zeros((2, 4, 8, 8), np.float32), device=first_device)
    t = gpustd.asarray(np.zeros(2, np.float32), device=first_device)
    hidden = gpustd.asarray(np.zeros((2, 6, 32), np.float32), device=first_device)
    for mode, scales in [(MODES[0], (0.5,) * 3), (MODES[2], (0.125, 0.31, 0.4125))]:
        control = Control([ControlUnit(ours, image, weight=0.5, control_mode=mode)],
                          total_steps=2)
        got = control.residuals(x, t, hidden, 0, uncond_rows=1)
        again = control.residuals(x, t, hidden, 1, uncond_rows=1)
        feats = got["down_intrablock_additional_residuals"]
        assert feats is again["down_intrablock_additional_residuals"]
        for value, want, scale in zip(feats, plain, scales):
            want = want * scale
            if mode == MODES[2]:
                want[0] = 0
            assert_close(value.numpy(), want, tol=1e-3)
