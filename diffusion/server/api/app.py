"""`create_app(...)`: the FastAPI app serving the WebUI's `/sdapi/v1` API and the web page.

The routes are diffusion.server.api.routers' (one APIRouter per area); what they share is one
`ServerState` (diffusion.server.api.state), handed to them as a dependency.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from contextlib import asynccontextmanager
from dataclasses import replace
from pathlib import Path
from typing import Any

from fastapi import FastAPI
from fastapi.staticfiles import StaticFiles

from ...faces import FaceFolders, FaceRestorers
from ...interrogate import (
    CLIP_OPTIONS,
    DEEPBOORU_OPTIONS,
    BlipCaptioner,
    ClipInterrogator,
    DeepBooru,
)
from ...loaders.control.catalog import ControlModelDir
from ...text.embeddings import EmbeddingDatabase
from ...text.styles import StyleDatabase
from ..catalog.image_encoders import ImageEncoders
from ..catalog.models_dir import ModelRegistry
from ..catalog.modules_dir import choose_vae
from ..jobs.loader import PipelineLoader
from ..jobs.worker import Worker
from ..previews import Previews
from ..settings import ServerSettings
from .adetailer_units import ADetailerModels
from .faces import DEFAULT_OPTIONS
from .limits import BodyLimit, add_error_handlers
from .routers import routers
from .routers.page import STATIC
from .state import ServerState, parse_auth

__all__ = ["create_app", "parse_auth", "styles_files"]


def styles_files(settings: ServerSettings) -> tuple[str | os.PathLike[str], ...]:
    """--styles-file's files, or by default the styles.csv in the folder that holds
    --models-dir (the WebUI's data folder: models/ and styles.csv side by side), if there is
    one."""
    if settings.styles_files or settings.models_dir is None:
        return tuple(settings.styles_files)
    default = Path(settings.models_dir).resolve().parent / "styles.csv"
    return (default,) if default.is_file() else ()


def create_app(settings: ServerSettings | None = None, /, *,
               loader: Callable[..., Any] | None = None, devices: list[Any] | None = None,
               **fields: Any) -> FastAPI:
    """The server app of `settings` (or of ServerSettings(**fields); with both, `fields`
    replace those settings) with its worker started and its first model loaded.

    `settings.model` (or, without it, the bundled model, or else the first model in
    `models_dir`) is loaded before this returns; FileNotFoundError/WeightsError say what is
    wrong. Pipelines come from diffusion.server.jobs.loader.PipelineLoader (weights in
    `dtype`, the memory mode, LoRA folder and embeddings set), or from `loader(path)` when
    given (a model with module files: `loader(path, modules=[...])`).
    `devices` (gpucore Devices): one worker thread per device, each with its own pipeline,
    taking jobs from the one queue; the loader is then called once per device with
    `device=device`. `settings.worker_adapters` (GPUCORE_ADAPTER values,
    diffusion.server.jobs.processes.worker_adapters): one worker PROCESS per entry instead,
    each loading the model with the same loader, pickled.
    `controlnet_dir`: the ControlNet / T2I-Adapter / IP-Adapter models units may name;
    `image_encoders`: the CLIP image encoders IP-Adapter units read pictures with.
    `bases`: diffusers folders giving a single-file transformer of their family (Z-Image,
    Qwen-Image (2.1), FLUX.2, Kandinsky 5, Krea 2) the rest, before those in `models_dir`
    (diffusion.pipelines.bases).
    `text_encoders`: the module files (Forge's `forge_additional_modules`) the models load
    with until a client chooses others (diffusion.pipelines.module_load: T5 / CLIP in place of
    a FLUX / SD3 model's own, the VAE and encoders a single file lacks, a VAE in place of any
    model's own; what a model has no place for is left out). The module files a client may
    choose are these and those in `models_dir` (/sdapi/v1/sd-modules).
    `sd_vae`: the WebUI's VAE choice the first model loads with (catalog.modules_dir:
    "Automatic", "None" or a VAE file's name as /sdapi/v1/sd-vae lists it).
    """
    from ... import default_model_path

    settings = replace(settings or ServerSettings(), **fields)
    users = parse_auth(settings.api_auth)
    model = settings.model
    if model is not None and not Path(model).exists():
        raise FileNotFoundError(f"model path {str(model)!r} does not exist; give a diffusers "
                                "folder (with model_index.json) or a .safetensors checkpoint")
    if model is None:
        try:
            model = default_model_path()
        except FileNotFoundError:
            model = None
    models_dir, text_encoders = settings.models_dir, settings.text_encoders
    registry = ModelRegistry(models_dir=models_dir, extra=model, extra_modules=text_encoders,
                             bases=settings.bases)
    if not registry.entries:
        where = f" and {models_dir!s} holds no model" if models_dir else ""
        raise FileNotFoundError(
            f"no model to load: the bundled default model is missing{where}; pass --model "
            "PATH (a diffusers folder or a .safetensors checkpoint) or --models-dir DIR")
    if registry.entries[0].lacks is not None:  # a single-file transformer without its folder
        raise ValueError(registry.entries[0].lacks)
    embeddings = (None if settings.embeddings_dir is None
                  else EmbeddingDatabase(settings.embeddings_dir))
    controlnets = ControlModelDir(settings.controlnet_dir)
    adetailer_dir = settings.adetailer_dir
    if adetailer_dir is None and models_dir is not None:
        adetailer_dir = Path(models_dir) / "adetailer"
    encoders = ImageEncoders(list(settings.image_encoders))
    lora_dir = settings.lora_dir
    if lora_dir is not None and not Path(lora_dir).is_dir():
        raise FileNotFoundError(f"--lora-dir {str(lora_dir)!r} is not a folder")
    styles = StyleDatabase(styles_files(settings))
    loading = PipelineLoader(settings, embeddings, loader)
    approx_dir = settings.vae_approx_dir
    if approx_dir is None and models_dir is not None:
        approx_dir = Path(models_dir) / "VAE-approx"
    booru_dir = Path(settings.deepdanbooru_dir) if settings.deepdanbooru_dir else None
    if booru_dir is None and models_dir is not None:  # the WebUI's models/torch_deepdanbooru
        booru_dir = Path(models_dir) / "torch_deepdanbooru"
    clip_dir, terms_dir = settings.clip_models_path, settings.interrogate_dir
    blip_dir = settings.blip_dir
    if models_dir is not None:  # the CLIPModel folder, the term lists, BLIP's files
        clip_dir = clip_dir or Path(models_dir) / "CLIP"
        terms_dir = terms_dir or Path(models_dir) / "interrogate"
        blip_dir = blip_dir or Path(models_dir) / "BLIP"
    previews = Previews(approx_dir)
    if settings.worker_adapters:
        from ..jobs.processes import ProcessWorker

        worker: Worker = ProcessWorker(loading, adapters=settings.worker_adapters,
                                       queue_size=settings.queue_size, previews=previews)
    else:
        worker = Worker(loading, queue_size=settings.queue_size, devices=devices,
                        previews=previews)
    # the first model, with --text-encoder's files (a request may ask for others) and the
    # VAE file `sd_vae` chooses (by default the one named like it, the WebUI's "Automatic")
    first = replace(registry.entries[0],
                    modules=tuple(Path(file).resolve() for file in text_encoders))
    first = replace(first, vae=choose_vae(settings.sd_vae, registry, first))
    try:
        worker.submit_load(first).result()
    except BaseException:
        worker.stop()
        raise
    outputs = Path(settings.outputs)
    options: dict[str, Any] = {
        "sd_model_checkpoint": first.title, "sd_checkpoint_hash": first.sha256,
        "CLIP_stop_at_last_layers": 1, "emphasis": "Original",
        "hires_fix_refiner_pass": "second pass", "randn_source": "GPU",
        "samples_save": True,
        "samples_format": "png", "outdir_samples": "",
        "outdir_txt2img_samples": str(outputs / "txt2img-images"),
        "outdir_img2img_samples": str(outputs / "img2img-images"),
        "show_progress_every_n_steps": 1, "live_previews_enable": True,
        "show_progress_type": "Approx cheap", "live_preview_allow_lowvram_full": False,
        # Forge's VAE / Text Encoder files (as paths, as Forge keeps them): --text-encoder's
        "forge_additional_modules": [str(path) for path in first.modules],
        "sd_vae": settings.sd_vae,  # the WebUI's VAE choice (catalog.modules_dir)
        **DEFAULT_OPTIONS,  # face restoration's (diffusion.server.api.faces)
        **DEEPBOORU_OPTIONS,  # /sdapi/v1/interrogate's DeepDanbooru tags (diffusion.interrogate)
        **CLIP_OPTIONS,  # and its CLIP interrogator's
    }

    state = ServerState(worker=worker, registry=registry, options=options, outputs=outputs,
                        queue_size=settings.queue_size, max_size=settings.max_size,
                        users=users, cmd_flags=dict(settings.cmd_flags), embeddings=embeddings,
                        lora_dir=lora_dir, styles=styles, controlnets=controlnets,
                        image_encoders=encoders, model=first, previews=previews,
                        memory=settings.memory or None,
                        no_half_vae=settings.no_half_vae,
                        faces=FaceRestorers(FaceFolders.from_models_dir(
                            models_dir, gfpgan=settings.gfpgan_models_path,
                            codeformer=settings.codeformer_models_path)),
                        adetailer=ADetailerModels(None if adetailer_dir is None
                                                  else Path(adetailer_dir)),
                        deepbooru=DeepBooru(booru_dir),
                        clip_interrogator=ClipInterrogator(
                            None if clip_dir is None else Path(clip_dir),
                            None if terms_dir is None else Path(terms_dir),
                            blip=BlipCaptioner(None if blip_dir is None else Path(blip_dir))))

    @asynccontextmanager
    async def lifespan(app: FastAPI):  # type: ignore[no-untyped-def]
        yield
        worker.stop()

    app = FastAPI(title="avx-gpu Stable Diffusion (WebUI-compatible API)", lifespan=lifespan)
    app.state.server = state
    app.state.worker, app.state.registry, app.state.options = worker, registry, options
    app.add_middleware(BodyLimit, max_bytes=settings.max_body_bytes)
    add_error_handlers(app)
    for router in routers():
        app.include_router(router)
    if STATIC.is_dir():
        app.mount("/static", StaticFiles(directory=STATIC), name="static")
    return app
