"""`create_app(...)`: the FastAPI app serving the WebUI's `/sdapi/v1` API and the web page.

The routes are diffusion.server.routers' (one APIRouter per area); what they share is one
`ServerState` (diffusion.server.state), handed to them as a dependency.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from contextlib import asynccontextmanager
from dataclasses import replace
from pathlib import Path
from typing import Any

from fastapi import FastAPI
from fastapi.staticfiles import StaticFiles

from ..loaders.control.catalog import ControlModelDir
from ..text.embeddings import EmbeddingDatabase
from .image_encoders import ImageEncoders
from .limits import BodyLimit, add_error_handlers
from .models_dir import ModelRegistry
from .modules_dir import AUTOMATIC_VAE, choose_vae
from .routers import routers
from .routers.page import STATIC
from .state import ServerState, parse_auth
from .worker import Worker

__all__ = ["create_app", "parse_auth"]


def _with_networks(loader: Callable[[Path], Any], embeddings: EmbeddingDatabase | None,
                   lora_dir: str | os.PathLike[str] | None,
                   memory: Any = None) -> Callable[[Path], Any]:
    """`loader`, then the pipeline gets the server's embeddings, LoRA folder and memory mode
    (a diffusion.pipelines.memory.MemoryMode: --medvram, --lowvram, --max-vram)."""
    def load(path: Path, **where: Any) -> Any:
        pipe = loader(path, **where)  # where: device=, one load per device with --devices
        if memory:
            pipe.set_memory_mode(memory)
        if embeddings is not None:
            pipe.embeddings = embeddings
        if lora_dir is not None:
            pipe.lora_dir = lora_dir
        return pipe
    return load


def create_app(*, model: str | os.PathLike[str] | None = None,
               models_dir: str | os.PathLike[str] | None = None,
               outputs: str | os.PathLike[str] = "outputs", queue_size: int = 16,
               max_size: int = 1024, api_auth: str | None = None,
               max_body_bytes: int = 50 * 2**20, loader: Callable[[Path], Any] | None = None,
               cmd_flags: dict[str, Any] | None = None,
               embeddings_dir: str | os.PathLike[str] | None = None,
               lora_dir: str | os.PathLike[str] | None = None,
               devices: list[Any] | None = None, dtype: Any = "auto",
               worker_adapters: list[str] | None = None, memory: Any = None,
               controlnet_dir: str | os.PathLike[str] | None = None,
               text_encoders: Sequence[str | os.PathLike[str]] = (),
               image_encoders: list[str | os.PathLike[str]] | None = None,
               sd_vae: str = AUTOMATIC_VAE) -> FastAPI:
    """The server app with its worker started and its first model loaded.

    `model` (or, without it, the bundled model, or else the first model in `models_dir`) is
    loaded before this returns; FileNotFoundError/WeightsError say what is wrong. `loader(path)`
    builds a StableDiffusion (default: `diffusion.load_pipeline` on the best adapter, weights
    in `dtype`: "auto" is float16 where the adapter has matrix units, else float32); a model
    with module files is built by `loader(path, modules=[...])`.
    `devices` (gpucore Devices): one worker per device, each with its own pipeline, taking
    jobs from the one queue; `loader(path, device=device)` is then called once per device.
    `worker_adapters` (GPUCORE_ADAPTER values, diffusion.server.processes.worker_adapters):
    one worker PROCESS per entry instead, each loading the model with `loader(path)`.
    `memory`: the MemoryMode every loaded pipeline runs in (/sdapi/v1/memory reports it).
    `controlnet_dir`: the ControlNet / T2I-Adapter / IP-Adapter models units may name;
    `image_encoders`: the CLIP image encoders IP-Adapter units read pictures with.
    `text_encoders`: the module files (Forge's `forge_additional_modules`) the models load
    with until a client chooses others (diffusion.pipelines.module_load: T5 / CLIP in place of
    a FLUX / SD3 model's own, the VAE and encoders a single file lacks, a VAE in place of any
    model's own; what a model has no place for is left out). The module files a client may
    choose are these and those in `models_dir` (/sdapi/v1/sd-modules).
    `sd_vae`: the WebUI's VAE choice the first model loads with (diffusion.server.modules_dir:
    "Automatic", "None" or a VAE file's name as /sdapi/v1/sd-vae lists it).
    """
    from .. import default_model_path, load_pipeline
    from ..pipelines.module_load import load_with_modules

    users = parse_auth(api_auth)
    if model is not None and not Path(model).exists():
        raise FileNotFoundError(f"model path {str(model)!r} does not exist; give a diffusers "
                                "folder (with model_index.json) or a .safetensors checkpoint")
    if model is None:
        try:
            model = default_model_path()
        except FileNotFoundError:
            model = None
    registry = ModelRegistry(models_dir=models_dir, extra=model, extra_modules=text_encoders)
    if not registry.entries:
        where = f" and {models_dir!s} holds no model" if models_dir else ""
        raise FileNotFoundError(
            f"no model to load: the bundled default model is missing{where}; pass --model "
            "PATH (a diffusers folder or a .safetensors checkpoint) or --models-dir DIR")
    embeddings = None if embeddings_dir is None else EmbeddingDatabase(embeddings_dir)
    controlnets = ControlModelDir(controlnet_dir)
    encoders = ImageEncoders(image_encoders)
    if lora_dir is not None and not Path(lora_dir).is_dir():
        raise FileNotFoundError(f"--lora-dir {str(lora_dir)!r} is not a folder")
    def load(path: Path, modules: Sequence[Path] = (), **where: Any) -> Any:
        if modules:  # Forge's VAE / text encoder files (diffusion.pipelines.module_load)
            return load_with_modules(path, modules, dtype=dtype, **where)
        return load_pipeline(path, dtype=dtype, **where)

    loading = _with_networks(loader or load, embeddings, lora_dir, memory)
    if worker_adapters:
        from .processes import ProcessWorker

        worker: Worker = ProcessWorker(loading, adapters=worker_adapters, queue_size=queue_size)
    else:
        worker = Worker(loading, queue_size=queue_size, devices=devices)
    # the first model, with --text-encoder's files (a request may ask for others) and the
    # VAE file `sd_vae` chooses (by default the one named like it, the WebUI's "Automatic")
    first = replace(registry.entries[0],
                    modules=tuple(Path(file).resolve() for file in text_encoders))
    first = replace(first, vae=choose_vae(sd_vae, registry, first))
    try:
        worker.submit_load(first).result()
    except BaseException:
        worker.stop()
        raise
    options: dict[str, Any] = {
        "sd_model_checkpoint": first.title, "sd_checkpoint_hash": first.sha256,
        "CLIP_stop_at_last_layers": 1, "randn_source": "GPU", "samples_save": True,
        "samples_format": "png", "outdir_samples": "",
        "outdir_txt2img_samples": str(Path(outputs) / "txt2img-images"),
        "outdir_img2img_samples": str(Path(outputs) / "img2img-images"),
        "show_progress_every_n_steps": 1, "live_previews_enable": True,
        # Forge's VAE / Text Encoder files (as paths, as Forge keeps them): --text-encoder's
        "forge_additional_modules": [str(path) for path in first.modules],
        "sd_vae": sd_vae,  # the WebUI's VAE choice (diffusion.server.modules_dir)
    }

    state = ServerState(worker=worker, registry=registry, options=options,
                        outputs=Path(outputs), queue_size=queue_size, max_size=max_size,
                        users=users, cmd_flags=dict(cmd_flags or {}), embeddings=embeddings,
                        lora_dir=lora_dir, controlnets=controlnets,
                        image_encoders=encoders, model=first)

    @asynccontextmanager
    async def lifespan(app: FastAPI):  # type: ignore[no-untyped-def]
        yield
        worker.stop()

    app = FastAPI(title="avx-gpu Stable Diffusion (WebUI-compatible API)", lifespan=lifespan)
    app.state.server = state
    app.state.worker, app.state.registry, app.state.options = worker, registry, options
    app.add_middleware(BodyLimit, max_bytes=max_body_bytes)
    add_error_handlers(app)
    for router in routers():
        app.include_router(router)
    if STATIC.is_dir():
        app.mount("/static", StaticFiles(directory=STATIC), name="static")
    return app
