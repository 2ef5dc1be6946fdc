"""The models and what they are run with: /sdapi/v1/sd-models, sd-modules (Forge's), sd-vae,
refresh-checkpoints, unload- and reload-checkpoint, options, samplers, schedulers, loras,
embeddings (and the WebUI's lists we have nothing for); /avx/defaults."""

from __future__ import annotations

import asyncio
import os
from dataclasses import replace
from functools import partial
from pathlib import Path
from typing import Annotated, Any

from fastapi import APIRouter, Body, HTTPException

from ....faces import FaceRestorers
from ....interrogate import ClipInterrogator, DeepBooru, check_clip_options
from ....interrogate import check_options as check_deepbooru_options
from ....loaders.control.catalog import ControlModelCache
from ....loaders.errors import WeightsError
from ....loaders.formats.safetensors import SafetensorsFile
from ....pipelines.hires_pass import check_hires_refiner_pass
from ....preprocessors.annotators import forget_networks
from ....sampling.kdiffusion import DIFFUSERS
from ....sampling.samplers import SAMPLERS, SamplerInfo, resolve, schedules
from ....sampling.samplers.schedules import SCHEDULE_TYPES
from ....text.embeddings import EmbeddingDatabase
from ....text.emphasis_mode import check_emphasis
from ....upscalers.models import forget_upscalers
from ...catalog.modules_dir import AUTOMATIC_VAE
from ...jobs.worker import Worker
from ...previews import check_preview_options
from ..adetailer_units import ADetailerModels
from ..faces import face_options, face_restorers
from ..generation import (
    RequestError,
    check_modules,
    check_randn_source,
    check_vae,
    named_checkpoint,
)
from ..schemas import SamplerItem, SchedulerItem, SDModelItem
from ..state import State, submit, wait
from ..video_pipelines import forget_models
from .layers import forget_layers

__all__ = ["api", "avx", "embedding_listing", "lora_listing", "sampler_item"]

api = APIRouter()
avx = APIRouter()


def lora_listing(lora_dir: str | os.PathLike[str] | None) -> list[dict[str, Any]]:
    """GET /sdapi/v1/loras as the WebUI answers it: name, alias, path, metadata."""
    if lora_dir is None:
        return []
    items = []
    for path in sorted(Path(lora_dir).rglob("*.safetensors")):
        try:
            metadata = SafetensorsFile(path).metadata
        except (WeightsError, OSError, ValueError):
            metadata = {}
        items.append({"name": path.stem, "alias": metadata.get("ss_output_name", path.stem),
                      "path": str(path), "metadata": metadata})
    return items


def embedding_listing(embeddings: EmbeddingDatabase | None) -> dict[str, Any]:
    """GET /sdapi/v1/embeddings as the WebUI answers it: loaded ones with their vector count
    and width, skipped ones (unreadable files, pickles naming a disallowed global) with why."""
    loaded: dict[str, Any] = {}
    skipped: dict[str, Any] = {}
    if embeddings is None:
        return {"loaded": loaded, "skipped": skipped}
    embeddings.refresh()
    for file in embeddings.files:
        entry = {"step": None, "sd_checkpoint": None, "sd_checkpoint_name": None}
        try:
            tensors = file.tensors
        except (WeightsError, OSError, ValueError) as exc:
            skipped[file.name] = {**entry, "shape": None, "vectors": None, "reason": str(exc)}
            continue
        # an SDXL file: the two encoders' widths together (2048), as the WebUI gives them
        width = sum(int(v.shape[-1]) for v in tensors.values())
        vectors = next(iter(tensors.values()))
        loaded[file.name] = {**entry, "shape": width,
                             "vectors": int(vectors.reshape(-1, vectors.shape[-1]).shape[0])}
    return {"loaded": loaded, "skipped": skipped}


def sampler_item(info: SamplerInfo) -> dict[str, Any]:
    """A sampler as the WebUI's /sdapi/v1/samplers lists it: label, aliases and its options
    (the default schedule type by name, and the flags the WebUI sets)."""
    options: dict[str, Any] = {}
    if info.default_schedule not in (None, "Uniform"):
        options["scheduler"] = info.default_schedule.lower().replace(" ", "_")
    for flag in ("discard_next_to_last_sigma", "second_order", "brownian_noise", "uses_ensd"):
        if getattr(info, flag):
            options[flag] = True
    options.update({key: value for key, value in info.options.items() if key == "solver_type"})
    aliases = [a for a in (info.comfy_name, *info.aliases) if a and a != info.name]
    return {"name": info.name, "aliases": aliases, "options": options}


@api.get("/samplers", response_model=list[SamplerItem])
async def samplers(state: State) -> list[dict[str, Any]]:
    # the loaded model's family's (Capabilities.samplers), then "diffusers", the model
    # folder's own scheduler, where it runs only some (FLUX, Sana: the page's dropdown offers
    # what it takes; Sana Sprint runs only its own); every one where it runs all, as the WebUI
    facts = state.worker.facts
    runs = None if facts is None else facts.capabilities.samplers
    if runs is None:
        return [sampler_item(info) for info in SAMPLERS]
    return [*(sampler_item(info) for info in SAMPLERS if info.name in runs),
            {"name": DIFFUSERS, "aliases": [], "options": {}}]


@api.get("/schedulers", response_model=list[SchedulerItem])
async def schedulers() -> list[dict[str, Any]]:
    return [{"name": kind.name, "label": kind.label, "aliases": list(kind.aliases) or None,
             "default_rho": -1 if kind.default_rho is None else kind.default_rho,
             "need_inner_model": kind.name in ("uniform", "sgm_uniform", "simple", "normal",
                                               "ddim", "beta")}
            for kind in SCHEDULE_TYPES]


@api.get("/sd-models", response_model=list[SDModelItem])
async def sd_models(state: State) -> list[dict[str, Any]]:
    return [entry.item() for entry in state.registry.entries]


@api.get("/sd-modules")
async def sd_modules(state: State) -> list[dict[str, str]]:
    """Forge's VAE / Text Encoder files: {model_name: the file name, filename: its path}."""
    return [module.item() for module in state.registry.modules]


@api.get("/sd-vae")
async def sd_vaes(state: State) -> list[dict[str, str]]:
    """The WebUI's VAE list, the names `sd_vae` takes: {model_name: the file name, filename:
    its path} of the module files holding a VAE."""
    return [module.item() for module in state.registry.vaes()]


@api.post("/refresh-checkpoints")
async def refresh_checkpoints(state: State) -> None:
    await asyncio.to_thread(state.registry.refresh)  # the module files too


def _unload(worker: Worker, controls: ControlModelCache,
            kept: tuple[FaceRestorers | ADetailerModels | DeepBooru | ClipInterrogator, ...]
            ) -> None:
    """What unload-checkpoint frees, on the worker (in every worker process: there, as the
    job's references become that process's, diffusion.process_shared): the control models
    and IP-Adapters' image encoders, `kept`'s networks (the face restorers', ADetailer's
    detection models, the interrogators' DeepDanbooru, CLIP and BLIP), the ControlNet
    preprocessors' networks, the model upscalers', the live previews' TAESD and VAEApprox
    decoders, the Wan models the video jobs keep and /avx/layers' Qwen-Image-Layered, then
    the pictures' pipelines, their memory given back to the driver (Worker.unload). Each
    loads again when next used."""
    controls.clear()
    for cache in kept:
        cache.forget()
    forget_networks()
    forget_upscalers()
    if worker.previews is not None:
        worker.previews.forget()
    forget_models()
    forget_layers()
    worker.unload()


@api.post("/unload-checkpoint")
async def unload_checkpoint(state: State) -> dict[str, Any]:
    # frees the GPU for another program (text-generation-webui's sd_api_pictures calls it to
    # share one with an LLM); the model stays chosen: the next picture, or reload-checkpoint,
    # loads it again. The WebUI answers {} to both.
    kept = (state.faces, state.adetailer, state.deepbooru, state.clip_interrogator)
    await wait(submit(state, partial(_unload, state.worker, state.control_cache, kept),
                      exclusive=True))
    return {}


@api.post("/reload-checkpoint")
async def reload_checkpoint(state: State) -> dict[str, Any]:
    await wait(submit(state, state.worker.reload, exclusive=True))
    return {}


@api.post("/refresh-vae")
async def refresh_vae(state: State) -> None:
    await asyncio.to_thread(state.registry.refresh)


@api.get("/options")
async def get_options(state: State) -> dict[str, Any]:
    return dict(state.options)


@api.post("/options")
async def set_options(state: State, body: Annotated[dict[str, Any], Body()]) -> None:
    updates: dict[str, Any] = {}
    if "CLIP_stop_at_last_layers" in body:
        value = body["CLIP_stop_at_last_layers"]
        if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= 12:
            raise RequestError("CLIP_stop_at_last_layers must be a whole number from 1 to 12, "
                               f"got {value!r}")
        updates["CLIP_stop_at_last_layers"] = value
    try:
        if "emphasis" in body:
            updates["emphasis"] = check_emphasis(body["emphasis"])
        if "hires_fix_refiner_pass" in body:
            updates["hires_fix_refiner_pass"] = check_hires_refiner_pass(
                body["hires_fix_refiner_pass"])
    except ValueError as error:
        raise RequestError(str(error)) from None
    try:
        updates.update(check_preview_options(body))
    except ValueError as error:
        raise RequestError(str(error)) from None
    if "randn_source" in body:
        check_randn_source(body["randn_source"], "randn_source")
        updates["randn_source"] = body["randn_source"]
    updates.update(face_options(body))
    try:
        updates.update(check_deepbooru_options(body))
        updates.update(check_clip_options(body))
    except ValueError as error:
        raise RequestError(str(error)) from None
    before = state.model
    chosen = before
    if "sd_model_checkpoint" in body:
        entry = named_checkpoint(state.registry, body["sd_model_checkpoint"],
                                 "sd_model_checkpoint")
        chosen = replace(entry, modules=before.modules if before is not None else ())
    if "forge_additional_modules" in body and chosen is not None:
        chosen = replace(chosen, modules=check_modules(
            body["forge_additional_modules"], state.registry, chosen.modules))
    # the WebUI's VAE: the body's, else the options' again where the checkpoint changed
    # ("Automatic" follows it; a named file stays)
    vae = body.get("sd_vae", state.options.get("sd_vae", AUTOMATIC_VAE))
    if chosen is not None and ("sd_vae" in body or before is None
                               or chosen.path != before.path):
        chosen = replace(chosen, vae=check_vae(vae, state.registry, chosen))
        updates["sd_vae"] = vae
    if chosen is not None and chosen != before:
        state.model = chosen  # first: requests queued from now on want it
        try:
            await wait(submit(state, None, exclusive_load=chosen))
        except BaseException:
            if state.model is chosen:
                state.model = before
            raise
        updates.update(sd_model_checkpoint=chosen.title, sd_checkpoint_hash=chosen.sha256,
                       forge_additional_modules=[str(path) for path in chosen.modules])
    state.options.update(updates)  # unknown or unsupported options are accepted and ignored
    state.previews.configure(state.options)


@api.get("/loras")
async def list_loras(state: State) -> list[dict[str, Any]]:
    return await asyncio.to_thread(lora_listing, state.lora_dir)


@api.get("/embeddings")
async def list_embeddings(state: State) -> dict[str, Any]:
    return await asyncio.to_thread(embedding_listing, state.embeddings)


@api.get("/prompt-styles")
async def list_prompt_styles(state: State) -> list[dict[str, Any]]:
    return state.styles.listing()  # --styles-file's, as the WebUI's styles.csv has them


@api.get("/hypernetworks")
async def list_hypernetworks() -> list[Any]:
    return []


@api.get("/face-restorers")
async def list_face_restorers(state: State) -> list[dict[str, Any]]:
    return await asyncio.to_thread(face_restorers, state.faces)


@avx.get("/defaults")
async def model_defaults(state: State) -> dict[str, Any]:
    # what the page starts from: the loaded model's defaults.json (pipe.defaults), null where
    # it says nothing; API requests that leave these out keep the WebUI's defaults (save the
    # sampler of a family that refuses Euler: api.family_sampler). With them
    # what the page shows for it: Distilled CFG Scale, and how many pictures it reads
    # (Capabilities.references: the init image the first; 0 none, null any number)
    facts, model = state.worker.facts, state.worker.model
    if facts is None:
        raise HTTPException(409, "no model is loaded: choose one with POST /sdapi/v1/options "
                                 "(sd_model_checkpoint)")
    capabilities = facts.capabilities
    defaults = {"model": model.title if model else None, **facts.defaults.settings(),
                "scheduler": None, "family": facts.family,
                "distilled_cfg": capabilities.guidance == "distilled",
                "references": capabilities.references}
    if defaults["sampler"] not in (None, "diffusers"):  # "DPM++ 2M Karras": the pair
        sampler, schedule = resolve(defaults["sampler"])
        defaults["sampler"] = sampler
        defaults["scheduler"] = schedules.lookup(schedule).name
    return defaults
