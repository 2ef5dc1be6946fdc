"""The sampler a WebUI API request runs when it names none (diffusion.server.api.
family_sampler): the WebUI's Euler where the family runs it; the family's own where it runs
only that (Sana Sprint, the HunyuanImage 2.1 refiner), "diffusers" where its defaults name a
sampler it refuses; a named sampler (sampler_name or sampler_index) never replaced. No GPU:
the families' Capabilities and defaults as their loaders give them."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

pytest.importorskip("fastapi", reason="the server extra is not installed")

from diffusion.pipelines.contract import Capabilities, SamplingDefaults
from diffusion.pipelines.flow.hunyuanimage_refiner_model import (
    REFINER_DEFAULTS,
    hunyuanimage_refiner_capabilities,
)
from diffusion.pipelines.flow.sana_model import SANA_DEFAULTS, sana_capabilities, sana_defaults
from diffusion.server.api.family_sampler import (
    family_sampler,
    sampler_unset,
    with_family_sampler,
)
from diffusion.server.api.generation import RequestError, resolve_sampler
from diffusion.server.api.schemas import Txt2ImgRequest


def test_families_that_refuse_euler_run_their_own() -> None:
    sprint = sana_capabilities("sana-sprint")
    assert family_sampler(sprint, sana_defaults("", "sana-sprint")) == "diffusers"
    refiner = hunyuanimage_refiner_capabilities("hunyuanimage-2.1-refiner")
    assert family_sampler(refiner, REFINER_DEFAULTS) == "diffusers"
    # a defaults.json naming a sampler the family refuses: its own scheduler still
    assert family_sampler(sprint, SamplingDefaults(sampler="Euler a")) == "diffusers"
    assert family_sampler(sprint, None) == "diffusers"
    # one that runs a few WebUI samplers, not Euler: its default where it runs it
    few = Capabilities(family="x", latent_space="x", samplers=("Heun", "DPM++ 2M"))
    assert family_sampler(few, SamplingDefaults(sampler="DPM++ 2M Karras")) == "DPM++ 2M Karras"


def test_families_that_run_euler_keep_the_webuis() -> None:
    # Sana's own default is "diffusers", but it runs Euler: the WebUI's, as steps and CFG
    assert SANA_DEFAULTS.sampler == "diffusers"
    assert family_sampler(sana_capabilities("sana"), SANA_DEFAULTS) is None
    every = Capabilities(family="sd1", latent_space="sd")
    assert family_sampler(every, SamplingDefaults(sampler="DDIM")) is None
    assert family_sampler(None, None) is None  # only loading can tell


def test_only_an_unset_sampler_is_replaced() -> None:
    def body(**fields: object) -> Txt2ImgRequest:
        return Txt2ImgRequest.model_validate(fields)

    assert sampler_unset(body()) and sampler_unset(body(sampler_name=" "))
    assert sampler_unset(body(sampler_name=None))
    assert not sampler_unset(body(sampler_name="Euler"))
    assert not sampler_unset(body(sampler_index="Euler"))  # the older field names one
    entry = SimpleNamespace(path="/models/sana-sprint")
    facts = SimpleNamespace(capabilities=sana_capabilities("sana-sprint"),
                            defaults=sana_defaults("", "sana-sprint"))
    worker = SimpleNamespace(facts=facts, model=entry, planned=entry)
    assert with_family_sampler(worker, entry, body()).sampler_name == "diffusers"
    assert with_family_sampler(worker, entry, body(sampler_name="Euler")).sampler_name == "Euler"
    assert with_family_sampler(worker, None, body()).sampler_name is None  # no model


def test_diffusers_is_a_sampler_name() -> None:
    assert resolve_sampler("Diffusers", None) == ("diffusers", "Automatic")
    with pytest.raises(RequestError, match=r"unknown sampler_name 'Eulr'.*'diffusers'") as error:
        resolve_sampler("Eulr", None)
    assert "\n" not in str(error.value)
