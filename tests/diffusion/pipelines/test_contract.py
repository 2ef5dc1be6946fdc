"""The pipeline contract (diffusion.pipelines.contract): every family keeps it, refusals are
one line, and the CLI and the server use nothing else of a pipeline."""

from __future__ import annotations

import re
from dataclasses import replace
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from diffusion.pipelines.contract import Capabilities, Pipeline
from diffusion.pipelines.flow.flow_model import FlowModel
from diffusion.pipelines.request import GenerationRequest
from diffusion.pipelines.sd.memory import MemoryMode
from diffusion.upscalers.interpolation import HiresFix

pytestmark = pytest.mark.nodevice

ROOT = Path(__file__).resolve().parents[3]


def _flow(family: str, *, guidance_embeds: bool = False) -> FlowModel:
    """A flow model stand-in without weights."""
    config = {"guidance_embeds": guidance_embeds}
    weight = SimpleNamespace(device="the device", dtype="float16")
    vae = SimpleNamespace(decoder=SimpleNamespace(conv_in=SimpleNamespace(weight=weight)))
    return FlowModel(SimpleNamespace(vae_scale_factor=8, vae=vae,
                                     transformer=SimpleNamespace(config=config)), family=family)


@pytest.mark.parametrize(("family", "embeds", "guidance"), [
    ("flux-dev", True, "distilled"), ("flux-schnell", False, "none"), ("sd3", False, "cfg")])
def test_flow_models_keep_the_contract(family: str, embeds: bool, guidance: str) -> None:
    model = _flow(family, guidance_embeds=embeds)
    assert isinstance(model, Pipeline)
    assert model.placement.dtype == "float16"
    assert model.denoisers.networks == (model.transformer,)
    assert model.denoisers.called == "transformer"
    caps = model.capabilities
    assert caps.family == family and caps.guidance == guidance
    # FLUX.1 and SD 3/3.5 run ControlNet units (pipelines/flow/flow_control.py)
    # and the memory modes (pipelines/flow/flux1_memory.py)
    assert caps.control and not caps.refiner and caps.memory_modes
    _flow("flux-dev").set_memory_mode(MemoryMode())  # all off: nothing to set up


@pytest.mark.parametrize("units", [{"redux": object()}, {"control": (object(),)}])
def test_flow_memory_modes_take_redux_and_controlnets(units: dict[str, object]) -> None:
    """Under a memory mode (its plan stood in for) FLUX Redux and ControlNet units pass the
    check, as without one (the plan places their networks: flow_memory)."""
    model = _flow("flux-dev", guidance_embeds=True)
    request = GenerationRequest(prompt="x", sampler="Euler", **units)  # type: ignore[arg-type]
    model.check(request, 64, 64)
    model._memory = SimpleNamespace(mode=MemoryMode(lowvram=True))  # type: ignore[assignment]
    model.check(request, 64, 64)


def test_a_stand_in_missing_a_member_is_no_pipeline() -> None:
    assert not isinstance(SimpleNamespace(generate=lambda r: r, native_size=512), Pipeline)


SD = Capabilities(family="sd1", latent_space="sd1")
FLOW = _flow("flux-dev", guidance_embeds=True).capabilities


@pytest.mark.parametrize(("caps", "settings", "message"), [
    (FLOW, {"sampler": "DPM2"}, "sampler DPM2 is not defined for flow-matching models here; "
                                "choose one of Euler, Euler a, DPM++ 2M or 'diffusers'"),
    (FLOW, {"sampler": "Euler", "scheduler": "Karras"},
     "schedule type Karras is not defined for flow-matching models here; use Automatic or "
     "Simple"),
    (replace(FLOW, variation_seeds=False), {"subseed_strength": 0.3},
     "variation seeds: not supported for flow-matching models yet; leave it out"),
    (FLOW, {"sampler": "diffusers", "hires": HiresFix()},
     "the hires fix runs with the WebUI samplers (Euler, Euler a, DPM++ 2M) on flow-matching "
     "models, not 'diffusers'"),
    (replace(SD, inpainting_model=True), {},
     "this is an inpainting model (9-channel UNet): give init_image and mask"),
    (FLOW, {"sampler": "Euler", "init_image": np.zeros((16, 16, 3), np.uint8),
            "hires": HiresFix()}, "hires fix is a txt2img option; for img2img, raise the size "
                                  "instead"),
])
def test_refusals_are_one_line(caps: Capabilities, settings: dict, message: str) -> None:
    with pytest.raises(ValueError) as raised:
        caps.refuse(GenerationRequest(prompt="x", **settings))
    assert str(raised.value) == message


def test_references_beyond_what_a_family_reads_are_refused() -> None:
    """Edit models' reference pictures: the init image the first, `references` the others;
    a family that reads fewer says how many it takes, in one line."""
    from PIL import Image

    picture = Image.new("RGB", (16, 16))
    three = GenerationRequest(prompt="x", init_image=picture, references=(picture, picture))
    with pytest.raises(ValueError, match=r"^3 pictures: sd1 models read one init image; "):
        SD.refuse(three)
    with pytest.raises(ValueError, match=r"^3 reference pictures: sd1 models read at most 2; "
                                         r"give 2$"):
        replace(SD, references=2).refuse(three)
    for takes in (3, None):  # None: any number
        replace(SD, references=takes).refuse(three)
    SD.refuse(GenerationRequest(prompt="x", init_image=picture))  # img2img as ever
    with pytest.raises(ValueError, match="need the init image"):
        GenerationRequest(prompt="x", references=(picture,))


def test_what_a_family_takes_passes() -> None:
    for settings in ({"sampler": "DPM2"}, {"subseed_strength": 0.3},
                     {"sampler": "DPM++ 2M", "scheduler": "Karras"}):
        SD.refuse(GenerationRequest(prompt="x", **settings))
    FLOW.refuse(GenerationRequest(prompt="x", sampler="Euler a"))
    # an edit model's init image is a reference beside the noise: the hires fix follows
    replace(FLOW, hires_with_references=True).refuse(GenerationRequest(
        prompt="x", sampler="Euler", init_image=np.zeros((16, 16, 3), np.uint8),
        hires=HiresFix()))
    FLOW.refuse(GenerationRequest(prompt="x", sampler="Euler", subseed_strength=0.3,
                                  seed_resize_from=(64, 48)))  # as Forge runs FLUX


def test_unknown_guidance_is_refused() -> None:
    with pytest.raises(ValueError, match="guidance must be one of"):
        Capabilities(family="x", latent_space="x", guidance="strong")


# What only a family's own code may look at: its networks, and the flags that told families
# apart before the contract. `getattr(pipe, ...)` is how a caller asks what a pipeline is.
_INTERNALS = re.compile(r"\bpipe\.(unet|vae|transformer|text_encoders?|tokenizer|scheduler_config"
                        r"|is_sdxl|is_turbo|is_inpainting_model|distilled|_\w+)\b"
                        r"|getattr\((\w+\.)*pipe\b")


@pytest.mark.parametrize("folder", ["diffusion/cli", "diffusion/server"])
def test_callers_use_only_the_contract(folder: str) -> None:
    found = [f"{path.relative_to(ROOT)}:{n}: {line.strip()}"
             for path in sorted((ROOT / folder).rglob("*.py"))
             for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1)
             if _INTERNALS.search(line)]
    assert not found, "callers reach past the Pipeline contract:\n" + "\n".join(found)


def test_the_internals_pattern_sees_what_it_forbids() -> None:
    for line in ("w = pipe.unet.conv_in.weight", "getattr(worker.pipe, 'family')",
                 "pipe._guided(r)", "x = slot.pipe.vae"):
        assert _INTERNALS.search(line), line
    assert not _INTERNALS.search("pipe.placement.device")


def test_the_registry_walks_its_lines_in_order(monkeypatch: pytest.MonkeyPatch,
                                               tmp_path: Path) -> None:
    """load_pipeline's family registry: the first line whose detect claims a path loads it;
    the last line (SD's, told apart by reading keys) claims every path no other line does."""
    from diffusion.pipelines import families

    entry, family = families.family_of(tmp_path / "model.safetensors")
    assert entry is families.FAMILIES[-1] and family == "unet"
    mine = families.FamilyLoader(
        "mine", lambda path: "mine" if str(path).endswith(".mine") else None,
        load=lambda path, family, options: None,  # type: ignore[arg-type, return-value]
        defaults=lambda path, family: None)
    monkeypatch.setattr(families, "FAMILIES", (mine, *families.FAMILIES))
    assert families.family_of(tmp_path / "model.mine") == (mine, "mine")
    assert families.family_of(tmp_path / "model.safetensors")[0] is not mine
