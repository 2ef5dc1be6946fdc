"""Every sampler by the names users pick it by: the WebUI 1.10 labels, ComfyUI's names, the
WebUI's aliases, and the WebUI's per-sampler options (its `samplers_k_diffusion` table in
`modules/sd_samplers_kdiffusion.py`, plus `sd_samplers_timesteps.py`, `sd_samplers_lcm.py`,
`sd_samplers_extra.py`).

    lookup("dpmpp_2m")           -> the SamplerInfo of "DPM++ 2M"
    resolve("DPM++ 2M Karras")   -> ("DPM++ 2M", "Karras")   (old combined names)
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, Literal

from . import (
    cfg_pp,
    ddpm,
    deis,
    dpm2,
    dpm_fast,
    dpmpp_2m,
    dpmpp_2m_sde,
    dpmpp_2s,
    dpmpp_3m_sde,
    dpmpp_sde,
    euler,
    heun,
    ipndm,
    lcm,
    lms,
    res_multistep,
    restart,
    sa_solver,
)
from ._common import Sampler

__all__ = ["SAMPLERS", "SCHEDULE_TYPES", "SamplerInfo", "lookup", "resolve"]

SCHEDULE_TYPES = ("Automatic", "Uniform", "Karras", "Exponential", "Polyexponential",
                  "SGM Uniform", "KL Optimal", "Align Your Steps", "Simple", "Normal", "DDIM",
                  "Beta")
"""Schedule type labels as the WebUI 1.10 writes them ("Automatic" = the sampler's default)."""

_SCHEDULE_NAMES = {label.lower(): label for label in SCHEDULE_TYPES} | {
    label.lower().replace(" ", "_"): label for label in SCHEDULE_TYPES}

_K_EXTRA = ("s_churn", "s_tmin", "s_tmax", "s_noise")


@dataclass(frozen=True)
class SamplerInfo:
    """One sampler: its names, its function (None for "timestep" samplers, which run through
    `diffusion.schedulers`), and the options the WebUI runs it with."""

    name: str
    """The WebUI's label (or, for samplers only ComfyUI has, a display name)."""
    function: Sampler | None
    comfy_name: str | None = None
    aliases: tuple[str, ...] = ()
    kind: Literal["k-diffusion", "timestep"] = "k-diffusion"
    default_schedule: str | None = "Uniform"
    """The schedule type "Automatic" resolves to (the WebUI's 'scheduler' option; none given
    means the model's own discrete sigmas, i.e. "Uniform")."""
    options: Mapping[str, Any] = field(default_factory=lambda: MappingProxyType({}))
    """Keyword options the WebUI always passes (e.g. solver_type="heun", or eta=1 where the
    WebUI's eta setting overrides k-diffusion's default of 0)."""
    extra_params: tuple[str, ...] = ()
    """User-settable options the WebUI forwards (its `sampler_extra_params`)."""
    discard_next_to_last_sigma: bool = False
    second_order: bool = False
    brownian_noise: bool = False
    """The WebUI feeds it a Brownian-tree noise sampler seeded by the image seeds."""
    uses_ensd: bool = False
    """Its result depends on the eta noise seed delta (ENSD) setting."""
    stochastic: bool = False
    """Draws noise with its WebUI options: a `noise` source is required."""
    needs_uncond: bool = False
    """CFG++: the model object must expose `uncond`, the unconditional x0 of its last call."""
    model_sigma_range: bool = False
    """Steps between the model's sigma_min/sigma_max (pass them as options), not the schedule."""
    in_webui: bool = True


def _info(name: str, function: Sampler | None, comfy: str | None = None,
          aliases: tuple[str, ...] = (), **fields: Any) -> SamplerInfo:
    if "options" in fields:
        fields["options"] = MappingProxyType(dict(fields["options"]))
    return SamplerInfo(name, function, comfy, aliases, **fields)


_EXTRA = {"in_webui": False}

SAMPLERS: tuple[SamplerInfo, ...] = (
    # the WebUI 1.10 k-diffusion samplers, in its order
    _info("DPM++ 2M", dpmpp_2m.sample_dpmpp_2m, "dpmpp_2m", ("k_dpmpp_2m",),
          default_schedule="Karras"),
    _info("DPM++ SDE", dpmpp_sde.sample_dpmpp_sde, "dpmpp_sde", ("k_dpmpp_sde", "dpmpp_sde_gpu"),
          default_schedule="Karras", second_order=True, brownian_noise=True, stochastic=True,
          extra_params=("s_noise",)),
    _info("DPM++ 2M SDE", dpmpp_2m_sde.sample_dpmpp_2m_sde, "dpmpp_2m_sde",
          ("k_dpmpp_2m_sde", "dpmpp_2m_sde_gpu"), default_schedule="Exponential",
          brownian_noise=True, stochastic=True, extra_params=("s_noise",)),
    _info("DPM++ 2M SDE Heun", dpmpp_2m_sde.sample_dpmpp_2m_sde, "dpmpp_2m_sde_heun",
          ("k_dpmpp_2m_sde_heun", "dpmpp_2m_sde_heun_gpu"), default_schedule="Exponential",
          brownian_noise=True, stochastic=True, options={"solver_type": "heun"},
          extra_params=("s_noise",)),
    _info("DPM++ 2S a", dpmpp_2s.sample_dpmpp_2s_ancestral, "dpmpp_2s_ancestral",
          ("k_dpmpp_2s_a",), default_schedule="Karras", uses_ensd=True, second_order=True,
          stochastic=True, extra_params=("s_noise",)),
    _info("DPM++ 3M SDE", dpmpp_3m_sde.sample_dpmpp_3m_sde, "dpmpp_3m_sde",
          ("k_dpmpp_3m_sde", "dpmpp_3m_sde_gpu"), default_schedule="Exponential",
          discard_next_to_last_sigma=True, brownian_noise=True, stochastic=True,
          extra_params=("s_noise",)),
    _info("Euler a", euler.sample_euler_ancestral, "euler_ancestral",
          ("k_euler_a", "k_euler_ancestral"), uses_ensd=True, stochastic=True),
    _info("Euler", euler.sample_euler, "euler", ("k_euler",), extra_params=_K_EXTRA),
    _info("LMS", lms.sample_lms, "lms", ("k_lms",)),
    _info("Heun", heun.sample_heun, "heun", ("k_heun",), second_order=True,
          extra_params=_K_EXTRA),
    _info("DPM2", dpm2.sample_dpm_2, "dpm_2", ("k_dpm_2",), default_schedule="Karras",
          discard_next_to_last_sigma=True, second_order=True, extra_params=_K_EXTRA),
    _info("DPM2 a", dpm2.sample_dpm_2_ancestral, "dpm_2_ancestral", ("k_dpm_2_a",),
          default_schedule="Karras", discard_next_to_last_sigma=True, uses_ensd=True,
          second_order=True, stochastic=True, extra_params=("s_noise",)),
    _info("DPM fast", dpm_fast.sample_dpm_fast, "dpm_fast", ("k_dpm_fast",), uses_ensd=True,
          stochastic=True, model_sigma_range=True, options={"eta": 1.0},
          extra_params=("s_noise",)),
    _info("DPM adaptive", dpm_fast.sample_dpm_adaptive, "dpm_adaptive", ("k_dpm_ad",),
          uses_ensd=True, stochastic=True, model_sigma_range=True, options={"eta": 1.0}),
    _info("Restart", restart.sample_restart, None, ("restart",), default_schedule="Karras",
          second_order=True, stochastic=True),
    # the WebUI's timestep samplers: diffusion.schedulers runs them
    _info("DDIM", None, "ddim", (), kind="timestep", default_schedule=None),
    _info("DDIM CFG++", None, None, ("ddim_cfgpp",), kind="timestep", default_schedule=None,
          needs_uncond=True),
    _info("PLMS", None, None, ("plms",), kind="timestep", default_schedule=None),
    _info("UniPC", None, "uni_pc", ("unipc",), kind="timestep", default_schedule=None),
    _info("LCM", lcm.sample_lcm, "lcm", ("k_lcm",), stochastic=True),
    # samplers ComfyUI has and the WebUI does not
    _info("Euler CFG++", cfg_pp.sample_euler_cfg_pp, "euler_cfg_pp", ("euler_cfgpp",),
          needs_uncond=True, **_EXTRA),
    _info("Euler a CFG++", cfg_pp.sample_euler_ancestral_cfg_pp, "euler_ancestral_cfg_pp",
          ("euler_a_cfg_pp", "euler_a_cfgpp"), needs_uncond=True, uses_ensd=True,
          stochastic=True, **_EXTRA),
    _info("DPM++ 2M CFG++", cfg_pp.sample_dpmpp_2m_cfg_pp, "dpmpp_2m_cfg_pp", (),
          needs_uncond=True, default_schedule="Karras", **_EXTRA),
    _info("DPM++ 2S a CFG++", cfg_pp.sample_dpmpp_2s_ancestral_cfg_pp,
          "dpmpp_2s_ancestral_cfg_pp", (), needs_uncond=True, default_schedule="Karras",
          uses_ensd=True, second_order=True, stochastic=True, **_EXTRA),
    _info("HeunPP2", heun.sample_heunpp2, "heunpp2", ("Heun++ 2", "Heun++"),
          second_order=True, extra_params=_K_EXTRA, **_EXTRA),
    _info("iPNDM", ipndm.sample_ipndm, "ipndm", (), **_EXTRA),
    _info("iPNDM-v", ipndm.sample_ipndm_v, "ipndm_v", ("iPNDM v",), **_EXTRA),
    _info("DEIS", deis.sample_deis, "deis", (), **_EXTRA),
    _info("Res Multistep", res_multistep.sample_res_multistep, "res_multistep", (), **_EXTRA),
    _info("Res Multistep CFG++", res_multistep.sample_res_multistep_cfg_pp,
          "res_multistep_cfg_pp", (), needs_uncond=True, **_EXTRA),
    _info("Res Multistep a", res_multistep.sample_res_multistep_ancestral,
          "res_multistep_ancestral", (), stochastic=True, uses_ensd=True, **_EXTRA),
    _info("Res Multistep a CFG++", res_multistep.sample_res_multistep_ancestral_cfg_pp,
          "res_multistep_ancestral_cfg_pp", (), stochastic=True, uses_ensd=True,
          needs_uncond=True, **_EXTRA),
    _info("SA-Solver", sa_solver.sample_sa_solver, "sa_solver", (), stochastic=True,
          **_EXTRA),
    _info("SA-Solver PECE", sa_solver.sample_sa_solver_pece, "sa_solver_pece", (),
          stochastic=True, **_EXTRA),
    _info("DDPM", ddpm.sample_ddpm, "ddpm", (), stochastic=True, uses_ensd=True, **_EXTRA),
)
"""WebUI samplers first (in the WebUI's order), then those only ComfyUI has."""


def _names(info: SamplerInfo) -> tuple[str, ...]:
    return (info.name, *((info.comfy_name,) if info.comfy_name else ()), *info.aliases)


_BY_NAME = {key.lower(): info for info in SAMPLERS for key in _names(info)}


def lookup(name: str) -> SamplerInfo:
    """The sampler called `name` (WebUI label, ComfyUI name or alias; case and surrounding
    spaces do not matter). ValueError listing the valid names when there is none."""
    info = _BY_NAME.get(name.strip().lower()) if isinstance(name, str) else None
    if info is None:
        listing = ", ".join(f"{i.name!r}" + (f" ({i.comfy_name})" if i.comfy_name else "")
                            for i in SAMPLERS)
        raise ValueError(f"unknown sampler {name!r}; valid names (ComfyUI's in parentheses): "
                         f"{listing}; an old combined name such as 'DPM++ 2M Karras' also names "
                         "its schedule type")
    return info


def resolve(name: str, schedule: str = "Automatic") -> tuple[str, str]:
    """(WebUI sampler label, schedule type label) for a sampler name that may carry an old-style
    schedule suffix ("DPM++ 2M Karras" -> ("DPM++ 2M", "Karras")); a name without one gets
    `schedule`. ValueError listing the valid names for an unknown sampler or schedule type."""
    text = name.strip() if isinstance(name, str) else name
    if isinstance(text, str) and text.lower() not in _BY_NAME:
        for label in sorted(SCHEDULE_TYPES, key=len, reverse=True):
            stem = text[: -len(label)].rstrip()
            if text.lower().endswith(" " + label.lower()) and stem.lower() in _BY_NAME:
                return lookup(stem).name, label
    schedule_label = _SCHEDULE_NAMES.get(schedule.strip().lower())
    if schedule_label is None:
        raise ValueError(f"unknown schedule type {schedule!r}; valid: {', '.join(SCHEDULE_TYPES)}")
    return lookup(text).name, schedule_label
