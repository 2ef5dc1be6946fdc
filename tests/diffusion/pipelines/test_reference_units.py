"""reference_only units before any GPU work: the spec's unit and its refusals in one line (a
control model given, a flow family), the control modes' style fidelity, a hires fix's."""

from __future__ import annotations

import re
from types import SimpleNamespace

import numpy as np
import pytest

from diffusion.pipelines.control_spec import ControlSpec, unit_label
from diffusion.pipelines.flow.flow_control import FlowControl
from diffusion.pipelines.reference import ReferenceUnit, split_references

pytestmark = pytest.mark.nodevice
UNET = SimpleNamespace(down_blocks=(), mid_block=object(), up_blocks=())  # no attention
PICTURE = np.random.default_rng(0).integers(0, 256, (20, 30, 3), dtype=np.uint8)


def test_spec_gives_a_reference_unit() -> None:
    unit = ControlSpec(model="None", image=PICTURE, module="reference_only", threshold_a=0.3,
                       weight=0.7).unit(None, width=32, height=24)
    assert isinstance(unit, ReferenceUnit)
    assert (unit.fidelity, unit.weight) == (0.3, 0.7)
    assert unit_label(unit).startswith("Module: reference_only, Model: None, Weight: 0.7")
    assert ControlSpec(model="None", image=PICTURE, module="reference_only").unit(
        None, width=32, height=24).fidelity == 0.5  # the slider's default
    with pytest.raises(ValueError, match="takes no control model"):
        ControlSpec(model="tiny_canny", image=PICTURE, module="reference_only").unit(
            object(), width=32, height=24)


def test_control_modes_and_hires_set_the_fidelity() -> None:
    modes = [ReferenceUnit(PICTURE, style_fidelity=0.3, control_mode=mode).fidelity
             for mode in ("Balanced", "My prompt is more important",
                          "ControlNet is more important")]
    assert modes == [0.3, 0.0, 1.0]
    config = {"beta_schedule": "scaled_linear", "beta_start": 0.00085, "beta_end": 0.012,
              "num_train_timesteps": 1000}

    units = [ReferenceUnit(PICTURE, style_fidelity=0.3), ReferenceUnit(
        PICTURE, hr_option="Low res only"), "other"]
    for stage, fidelities in (("first", [0.3, 0.5]), ("second", [0.0])):
        injection, others = split_references(units, UNET, total_steps=4, size=(32, 24),
                                             encode=lambda p: p, scheduler_config=config,
                                             hires_stage=stage)
        assert others == ("other",) and injection is not None
        assert [u.fidelity for u in injection.units] == fidelities
    with pytest.raises(ValueError, match="--medvram"):
        split_references(units, UNET, total_steps=4, size=(32, 24), encode=lambda p: p,
                         scheduler_config=config, low_vram=True)


def test_flow_families_refuse_reference_units() -> None:
    with pytest.raises(ValueError, match="reference_only runs on the UNet models"):
        FlowControl([ReferenceUnit(PICTURE)], total_steps=4, family="flux-dev")


def test_flow_families_refuse_colorfix_units() -> None:
    from diffusion.pipelines.colorfix import ColorFix
    from diffusion.pipelines.control import ControlUnit
    from diffusion.pipelines.flow.flow_control import _MODELS

    kind = _MODELS["flux-dev"][0]
    unit = ControlUnit.__new__(ControlUnit)  # no weights: only the checks run
    unit.__dict__.update(model=kind.__new__(kind), control_mode="Balanced", guess_mode=False,
                         colorfix=ColorFix(8))
    with pytest.raises(ValueError, match="tile_colorfix runs on the UNet models"):
        FlowControl([unit], total_steps=4, family="flux-dev")


@pytest.mark.parametrize("module", ["reference_adain", "reference_adain+attn"])
def test_adain_modules_give_reference_units(module: str) -> None:
    from diffusion.preprocessors import module_list

    assert module in module_list()
    unit = ControlSpec(model="None", image=PICTURE, module=module, threshold_a=0.2,
                       weight=1.5).unit(None, width=32, height=24)
    assert isinstance(unit, ReferenceUnit) and unit.module == module
    assert (unit.fidelity, unit.weight) == (0.2, 1.5)
    assert unit_label(unit).startswith(f"Module: {module}, Model: None, Weight: 1.5")
    with pytest.raises(ValueError, match=re.escape(f"{module} runs on the UNet models")):
        FlowControl([unit], total_steps=4, family="flux-dev")
    with pytest.raises(ValueError, match="a reference unit's is one of reference_only, "):
        ReferenceUnit(PICTURE, module="reference_adain_typo")


def test_sdxl_cubes_the_style_fidelity() -> None:
    """hook.py: `current_style_fidelity ** 3.0` on SDXL, before the control modes' 1 and 0."""
    config = {"beta_schedule": "scaled_linear", "beta_start": 0.00085, "beta_end": 0.012,
              "num_train_timesteps": 1000}
    units = [ReferenceUnit(PICTURE, style_fidelity=0.3, module="reference_adain"),
             ReferenceUnit(PICTURE, control_mode="ControlNet is more important")]
    for sdxl, expected in ((False, [0.3, 1.0]), (True, [0.3**3, 1.0])):
        injection, _ = split_references(units, UNET, total_steps=4, size=(32, 24),
                                        encode=lambda p: p, scheduler_config=config, sdxl=sdxl)
        assert injection is not None
        assert [injection.fidelity(unit) for unit in injection.units] == pytest.approx(expected)
