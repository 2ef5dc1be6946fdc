"""POST /sdapi/v1/txt2img and /sdapi/v1/img2img: a body -> a queued job -> the WebUI's answer."""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import Callable
from dataclasses import replace
from typing import Annotated, Any

import numpy as np
from fastapi import APIRouter, Depends, Request
from fastapi.exceptions import RequestValidationError
from pydantic import ValidationError

from ....pipelines.before_load import refuse_before_load, refuse_refiner, refuse_with
from ....pipelines.control_spec import numpy_seed
from ....pipelines.inpaint_plan import blur_sides, repainted
from ....pipelines.mask_blur import blur_mask
from ....pipelines.module_load import hires_modules
from ....pipelines.request import GenerationRequest
from ....text.styles import StylesError
from ...catalog.models_dir import ModelEntry
from ...catalog.modules_dir import AUTOMATIC_VAE
from ...images import decode_image
from ..adetailer_pass import ADetailerPass
from ..adetailer_units import adetailer_args, parse_adetailer
from ..controlnet_units import control_units, parse_units, script_args
from ..faces import face_restoration
from ..family_sampler import with_family_sampler
from ..generation import (
    RequestError,
    build_job,
    check_hires_modules,
    check_modules,
    check_vae,
    fit_to_model,
    named_checkpoint,
)
from ..limits import utf8_text
from ..redux_field import parse_redux
from ..response import build_response
from ..schemas import ImageResponse, Img2ImgRequest, Txt2ImgRequest
from ..scripts import run_script
from ..state import ServerState, State, submit, wait
from .interrogate import interrogate

__all__ = ["api"]

api = APIRouter()


def styled(state: ServerState, body: Txt2ImgRequest) -> Txt2ImgRequest:
    """`body` with its `styles` (--styles-file's, by name) applied to its prompt and negative
    prompt, and to the hires pass's own where it has them, as the WebUI applies them;
    RequestError naming the styles for an unknown one."""
    if not body.styles:
        return body
    update: dict[str, Any] = {}
    try:
        update["prompt"], update["negative_prompt"] = state.styles.apply(
            body.prompt, body.negative_prompt or "", body.styles)
        if body.hr_prompt or body.hr_negative_prompt:  # "": the first pass's, styled above
            hr_prompt, hr_negative = state.styles.apply(
                body.hr_prompt or body.prompt,
                body.hr_negative_prompt or body.negative_prompt or "", body.styles)
            update.update(hr_prompt=hr_prompt if body.hr_prompt else "",
                          hr_negative_prompt=hr_negative if body.hr_negative_prompt else "")
    except StylesError as exc:
        raise RequestError(str(exc)) from None
    return body.model_copy(update=update)


async def run_generation(state: ServerState, body: Txt2ImgRequest, kind: str,
                         client: Request | None = None) -> dict[str, Any]:
    """Check `body` (a bad one is refused before it is queued), queue it, wait for it (the
    `client`'s HTTP request: its going away takes the job from the queue)."""
    # 1. the model: the one /options chose, or override_settings' checkpoint and modules; a
    # family that runs only its own sampler runs it where the body names none
    wanted = _wanted_model(state, body)
    body = await asyncio.to_thread(with_family_sampler, state.worker, wanted, body)
    # 2. the body as a GenerationRequest (RequestError: 422 saying what to change), its
    # styles applied to its prompts
    job, facts = build_job(styled(state, body), kind, options=dict(state.options),
                           max_size=state.max_size, outputs=state.outputs)
    job = replace(job, faces=face_restoration(body, state.options, state.faces))
    # 3. ControlNet units (the extension's alwayson_scripts), checked here too
    units = script_args(body.alwayson_scripts)
    if units:
        init, mask = job.request.init_image, job.request.mask
        job = replace(job, control=parse_units(
            units, state.controlnets, encoders=state.image_encoders,
            fallback=None if init is None else np.asarray(init.convert("RGB")),
            inpainting=mask is not None,
            # inverted and blurred as the extension's prepare_mask does (the WebUI's mask
            # mode and blur)
            fallback_mask=None if mask is None else np.asarray(blur_mask(
                repainted(job.request), *blur_sides(job.request)))))
    # FLUX Redux's reference picture (diffusion.server.api.redux_field)
    redux = parse_redux((body.model_extra or {}).get("redux"), state.registry.models_dir)
    # ADetailer's units (its alwayson_scripts), their models checked here too
    detailers = parse_adetailer(adetailer_args(body.alwayson_scripts) or [], state.adetailer,
                                kind, state.max_size)
    if detailers:  # each picture's pass on the worker, before it is saved
        job = replace(job, passes=(ADetailerPass(detailers, state.adetailer),))
    # 4. a refiner named by the client: one of this server's models
    refiner = None
    if isinstance(job.request.refiner, str):
        refiner = state.registry.find(job.request.refiner)
        if refiner is None:
            raise RequestError(f"refiner_checkpoint {job.request.refiner!r} is not one of this "
                               f"server's models: {', '.join(state.registry.titles())}")
    # 5. the hires pass's modules (Forge's hr_additional_modules)
    labels, hires_files = ((), None) if job.request.hires is None else _hires_modules(
        state, body, wanted)
    # what run() takes along, not the state
    worker, cache, max_size = state.worker, state.control_cache, state.max_size

    # 6. on the worker, where the model is known: its size, the images fitted, the refiner,
    # the control models
    def run() -> Any:
        loaded = worker.model
        if wanted is not None and (loaded is None or loaded.identity != wanted.identity):
            raise RequestError(f"the model asked for ({wanted.title}, modules: "
                               f"{', '.join(p.name for p in wanted.modules) or 'none'}) could "
                               "not be loaded")
        if loaded is None:
            raise RequestError("no model is loaded: choose one with POST /sdapi/v1/options "
                               "(sd_model_checkpoint)")
        request = fit_to_model(job.request, worker.pipe.native_size, max_size)
        width, height = request.width or 0, request.height or 0  # fit_to_model set both
        if job.control:
            request = replace(request, control=control_units(
                job.control, cache, worker.pipe, width, height,
                numpy_seed(request.seed, request.subseed)))
        if redux is not None:
            request = replace(request, redux=redux.reference(worker.pipe))
        defaults = worker.pipe.defaults
        if ("cfg_scale" not in body.model_fields_set and defaults.cfg_scale is not None
                and worker.pipe.capabilities.guidance != "cfg"):
            # a family guided otherwise runs at its own CFG (FLUX: 1, Forge's preset)
            request = replace(request, cfg_scale=float(defaults.cfg_scale))
        if refiner is not None:  # the model loaded is its own refiner: no second copy
            request = replace(request, refiner=worker.pipe if loaded.loads_as(refiner.path)
                              else worker.second_model(refiner.path))
        if labels:
            request = replace(request, hires_modules=hires_modules(
                worker.pipe, loaded.path, labels, hires_files))
        return worker.generate(replace(job, request=request))

    # 7. what the model's family does not take, and a refiner that cannot take over from it,
    # refused before anything is queued (_refuse_early)
    if wanted is not None:
        await asyncio.to_thread(_refuse_early, state, wanted,
                                replace(job.request, redux=redux), job.control, refiner)
    # a switch first when the queue leaves another model (or other modules) loaded: this
    # request's override, or the options' model back after another request's override
    planned = state.worker.planned
    switch = None
    if wanted is not None and (planned is None or planned.identity != wanted.identity):
        switch = submit(state, None, exclusive_load=wanted)
    # the page's id_task (the WebUI's force_task_id), else one made as the WebUI makes one
    task = body.force_task_id or f"task({kind}-{secrets.token_hex(4)})"
    generation = submit(state, run, task=task)
    if switch is not None:
        try:
            await wait(switch)
        except BaseException:
            generation.cancel()  # run() refuses too, should it have started
            raise
    return build_response(body, await wait(generation, client), facts)


async def run_request(state: ServerState, body: Txt2ImgRequest, kind: str,
                      client: Request | None = None) -> dict[str, Any]:
    """A txt2img/img2img body's answer: its script's (script_name: every picture the script
    makes is one request on the queue) or its own."""
    if not body.script_name:
        return await run_generation(state, body, kind, client)

    def check(cell: Txt2ImgRequest) -> None:  # what run_generation refuses before queueing
        build_job(styled(state, cell), kind, options=dict(state.options),
                  max_size=state.max_size, outputs=state.outputs)
        face_restoration(cell, state.options, state.faces)
        _wanted_model(state, cell)

    async def generate(cell: Txt2ImgRequest) -> dict[str, Any]:
        return await run_generation(state, cell, kind, client)

    worker = state.worker  # what a job takes along, not the state (a worker process's own)

    async def queue(job: Callable[..., Any]) -> Any:  # other work on the GPU (an upscaler),
        # on the device of the worker that runs it (each of a thread server's GPUs its own)
        return await wait(submit(state, lambda: job(device=worker.device)), client)

    async def tags(image: str, model: str) -> str:  # Loopback's append_interrogation
        picture = decode_image(image, "init_images[0]").convert("RGB")
        return await interrogate(state, picture,
                                 "clip" if model == "CLIP" else "deepdanbooru", client)

    return await run_script(body, kind, generate, check, queue, tags)


def _refuse_early(state: ServerState, wanted: ModelEntry, request: GenerationRequest,
                  control: Any, refiner: ModelEntry | None) -> None:
    """ValueError in one line (a 422), the loaded pipeline's own, for what the family of
    `wanted` does not take: from the loaded pipeline's Capabilities (worker.facts) when it is
    the model loaded now and once the queued switches have run, else from its files (configs
    and headers: pipelines.before_load; a GGUF's take seconds, so this runs off the event
    loop); then for a `refiner` of another latent space (its files too), as check_refiner
    would on the worker after loading it."""
    worker = state.worker
    facts = worker.facts
    if facts is not None and all(model is not None and model.path == wanted.path
                                 for model in (worker.model, worker.planned)):
        ours = facts.capabilities
        refuse_with(ours, request, control)
    else:
        ours = refuse_before_load(wanted.path, request, control)
    if refiner is not None:
        refuse_refiner(ours, refiner.path, request, "refiner_checkpoint", str(request.refiner))


def _wanted_model(state: ServerState, body: Txt2ImgRequest) -> ModelEntry | None:
    """The model a request runs on: the options' (`state.model`), or the checkpoint and module
    files its override_settings name in place of the options' (for this request only, as the
    WebUI restores override settings after a request)."""
    overrides = body.override_settings or {}
    wanted = state.model
    if wanted is None:
        return None
    if "sd_model_checkpoint" in overrides:
        entry = named_checkpoint(state.registry, overrides["sd_model_checkpoint"],
                                 "override_settings.sd_model_checkpoint")
        if entry.path != wanted.path:
            wanted = replace(entry, modules=wanted.modules, vae=wanted.vae)
            if state.options.get("sd_vae", AUTOMATIC_VAE) in (AUTOMATIC_VAE, "auto"):
                # the VAE named like the checkpoint: this checkpoint's
                wanted = replace(wanted, vae=check_vae(AUTOMATIC_VAE, state.registry, wanted))
    if "forge_additional_modules" in overrides:
        wanted = replace(wanted, modules=check_modules(
            overrides["forge_additional_modules"], state.registry, wanted.modules))
    if "sd_vae" in overrides:
        wanted = replace(wanted, vae=check_vae(overrides["sd_vae"], state.registry, wanted,
                                               "override_settings.sd_vae"))
    return wanted


def _hires_modules(state: ServerState, body: Txt2ImgRequest, wanted: ModelEntry | None
                   ) -> tuple[tuple[str, ...], tuple[Any, ...] | None]:
    """Forge's hr_additional_modules of a request with the hires fix: (their infotext labels,
    the files; None: the first pass's). Its hr_checkpoint_name may name only the first pass's
    model: a hires pass on another checkpoint is not built here."""
    name = body.hr_checkpoint_name
    if name not in (None, "", "Use same checkpoint"):
        entry = named_checkpoint(state.registry, name, "hr_checkpoint_name")
        first = wanted or state.worker.model
        if first is None or entry.path != first.path:
            raise RequestError(
                f"hr_checkpoint_name {name!r}: a hires pass on another checkpoint than the "
                "first pass's is not supported here; leave it out or send \"Use same "
                "checkpoint\" (hr_additional_modules chooses the hires pass's VAE)")
    return check_hires_modules(body.hr_additional_modules, state.registry)


async def _parse(request: Request, model: type[Txt2ImgRequest]) -> Any:
    """The body read by pydantic's own JSON parser: a 50 MB prompt is parsed (and then refused)
    in a fraction of the time FastAPI's json.loads-then-validate takes. Decoded first, so that
    a body that is not UTF-8 is refused as the FastAPI-parsed routes' are (limits.NotUtf8)."""
    text = utf8_text(await request.body())
    try:
        return model.model_validate_json(text)
    except ValidationError as exc:
        raise RequestValidationError(exc.errors()) from None


async def _txt2img_body(request: Request) -> Txt2ImgRequest:
    return await _parse(request, Txt2ImgRequest)


async def _img2img_body(request: Request) -> Img2ImgRequest:
    return await _parse(request, Img2ImgRequest)


def _documented(model: type[Txt2ImgRequest]) -> dict[str, Any]:
    """The body's schema for /docs (read by a dependency, FastAPI does not see it)."""
    return {"requestBody": {"required": True, "content": {
        "application/json": {"schema": model.model_json_schema()}}}}


@api.post("/txt2img", response_model=ImageResponse, openapi_extra=_documented(Txt2ImgRequest))
async def txt2img(body: Annotated[Txt2ImgRequest, Depends(_txt2img_body)],
                  state: State, request: Request) -> dict[str, Any]:
    return await run_request(state, body, "txt2img", client=request)


@api.post("/img2img", response_model=ImageResponse, openapi_extra=_documented(Img2ImgRequest))
async def img2img(body: Annotated[Img2ImgRequest, Depends(_img2img_body)],
                  state: State, request: Request) -> dict[str, Any]:
    return await run_request(state, body, "img2img", client=request)
