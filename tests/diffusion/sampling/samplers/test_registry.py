"""The sampler registry (diffusion.sampling.samplers.registry): every WebUI and ComfyUI name
resolves, old combined names split, unknown names list the valid ones, and a sampler module
registers itself (one file plus its import). Host logic only."""

from __future__ import annotations

import numpy as np
import pytest

from diffusion.sampling import samplers as ours
from diffusion.sampling.samplers import registry, schedules

pytestmark = pytest.mark.nodevice

WEBUI_NAMES = ["DPM++ 2M", "DPM++ SDE", "DPM++ 2M SDE", "DPM++ 2M SDE Heun", "DPM++ 2S a",
               "DPM++ 3M SDE", "Euler a", "Euler", "LMS", "Heun", "DPM2", "DPM2 a", "DPM fast",
               "DPM adaptive", "Restart", "DDIM", "DDIM CFG++", "PLMS", "UniPC", "LCM"]
COMFY_NAMES = ["euler", "euler_ancestral", "heun", "heunpp2", "dpm_2", "dpm_2_ancestral", "lms",
               "dpm_fast", "dpm_adaptive", "dpmpp_2s_ancestral", "dpmpp_sde", "dpmpp_2m",
               "dpmpp_2m_sde", "dpmpp_3m_sde", "ipndm", "ipndm_v", "deis", "res_multistep",
               "sa_solver", "lcm", "ddpm", "euler_cfg_pp", "euler_ancestral_cfg_pp",
               "dpmpp_2m_cfg_pp", "dpmpp_2s_ancestral_cfg_pp", "uni_pc", "ddim"]


def test_every_webui_and_comfyui_name_resolves():
    assert [info.name for info in ours.SAMPLERS if info.in_webui] == WEBUI_NAMES
    for name in WEBUI_NAMES:
        assert ours.lookup(name.lower()).name == name
    for name in COMFY_NAMES:
        assert ours.lookup(name).comfy_name == name
    assert ours.lookup(" k_euler_a ").name == "Euler a"
    assert ours.lookup("DDIM").kind == "timestep" and ours.lookup("DDIM").function is None


@pytest.mark.parametrize(("old", "pair"), [
    ("DPM++ 2M Karras", ("DPM++ 2M", "Karras")), ("DPM++ SDE Karras", ("DPM++ SDE", "Karras")),
    ("Euler a Karras", ("Euler a", "Karras")), ("LMS Karras", ("LMS", "Karras")),
    ("DPM2 a Karras", ("DPM2 a", "Karras")),
    ("DPM++ 2M SDE Exponential", ("DPM++ 2M SDE", "Exponential")),
    ("DPM++ 2M SDE Heun Karras", ("DPM++ 2M SDE Heun", "Karras")),
    ("DPM++ 2M SDE Heun", ("DPM++ 2M SDE Heun", "Automatic")),
    ("euler sgm uniform", ("Euler", "SGM Uniform")),
])
def test_old_combined_names_resolve_to_pairs(old, pair):
    assert ours.resolve(old) == pair


def test_unknown_names_list_the_valid_ones():
    with pytest.raises(ValueError, match=r"'DPM\+\+ 2M' \(dpmpp_2m\)"):
        ours.lookup("DPM++ 9M")
    with pytest.raises(ValueError, match="unknown sampler"):
        ours.resolve("Euler b Karras")
    with pytest.raises(ValueError, match="Align Your Steps"):
        ours.resolve("Euler", "Karras2")
    assert ours.resolve("euler", "karras") == ("Euler", "Karras")


def test_registry_carries_the_webui_options():
    assert ours.lookup("DPM++ 2M").default_schedule == "Karras"
    assert ours.lookup("Euler a").default_schedule == "Uniform"
    third = ours.lookup("DPM++ 3M SDE")
    assert (third.default_schedule, third.discard_next_to_last_sigma) == ("Exponential", True)
    assert ours.lookup("DPM2").discard_next_to_last_sigma
    assert ours.lookup("DPM++ 2M SDE Heun").options["solver_type"] == "heun"
    assert {i.name for i in ours.SAMPLERS if i.brownian_noise} == {
        "DPM++ SDE", "DPM++ 2M SDE", "DPM++ 2M SDE Heun", "DPM++ 3M SDE"}
    assert {i.name for i in ours.SAMPLERS if i.needs_uncond} >= {
        "Euler CFG++", "Euler a CFG++", "DPM++ 2M CFG++", "DPM++ 2S a CFG++", "DDIM CFG++"}


def test_schedule_types_have_one_source():
    assert ours.SCHEDULE_TYPES is schedules.SCHEDULE_TYPES
    assert ours.SCHEDULE_LABELS[:3] == ("Automatic", "Uniform", "Karras")
    assert ours.resolve("Euler", "sgm_uniform") == ("Euler", "SGM Uniform")
    assert ours.resolve("Euler", " SGMUniform ") == ("Euler", "SGM Uniform")


def _toy_sampler(model, x, sigmas, *, noise=None, callback=None):
    return np.asarray(x)


def test_a_sampler_registers_in_its_own_module(monkeypatch):
    """What a new sampler module does: decorate its function; the registry lists it after the
    WebUI's samplers and finds it by every name."""
    fresh = registry.Registry(registry.WEBUI_SAMPLERS)
    monkeypatch.setattr(registry, "SAMPLERS", fresh)
    returned = registry.register("Toy", "toy_comfy", ("Toy v1",), stochastic=True)(_toy_sampler)
    registry.register("Euler", "euler")(_toy_sampler)
    assert returned is _toy_sampler
    assert [i.name for i in fresh] == ["Euler", "Toy"]  # WebUI's first, whatever the order
    toy = registry.lookup(" toy V1 ")
    assert (toy.name, toy.comfy_name, toy.function, toy.stochastic) == (
        "Toy", "toy_comfy", _toy_sampler, True)
    assert not toy.in_webui and registry.lookup("euler").in_webui
    assert registry.resolve("toy_comfy Karras") == ("Toy", "Karras")


def test_a_name_taken_by_another_sampler_is_refused():
    fresh = registry.Registry()
    fresh.add(registry.SamplerInfo("A", _toy_sampler, "a_comfy", ("first",)))
    with pytest.raises(ValueError, match="'first' belongs to 'A'"):
        fresh.add(registry.SamplerInfo("B", _toy_sampler, aliases=("First",)))
    # the same label again (a reloaded module) replaces the entry and its names
    fresh.add(registry.SamplerInfo("A", _toy_sampler, "a_comfy", ("second",)))
    assert len(fresh) == 1 and fresh.find("second") is fresh[0] and fresh.find("first") is None
