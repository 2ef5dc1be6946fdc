"""`create_app(...)`: the FastAPI app serving the WebUI's `/sdapi/v1` API and the web page."""

from __future__ import annotations

import asyncio
import os
import secrets
from collections.abc import Callable
from concurrent.futures import Future
from contextlib import asynccontextmanager
from dataclasses import asdict, replace
from pathlib import Path
from typing import Annotated, Any

from fastapi import APIRouter, Body, Depends, FastAPI
from fastapi.exceptions import HTTPException
from fastapi.responses import FileResponse
from fastapi.security import HTTPBasic, HTTPBasicCredentials
from fastapi.staticfiles import StaticFiles

from ..loaders._safetensors import SafetensorsFile
from ..loaders.errors import WeightsError
from ..samplers import SAMPLERS, SamplerInfo, resolve, schedules
from ..samplers.schedules import SCHEDULE_TYPES
from ..text.embeddings import EmbeddingDatabase
from .extras import extras_router
from .generation import (
    RequestError,
    build_job,
    build_response,
    fit_to_model,
)
from .images import decode_image, png_info, webui_parameters
from .limits import BodyLimit, add_error_handlers
from .models_dir import ModelRegistry
from .schemas import (
    ImageResponse,
    Img2ImgRequest,
    PNGInfoRequest,
    PNGInfoResponse,
    ProgressResponse,
    SamplerItem,
    SchedulerItem,
    SDModelItem,
    Txt2ImgRequest,
)
from .worker import QueueFull, Worker

__all__ = ["create_app"]

STATIC = Path(__file__).parent / "static"
RETRY_AFTER_S = 5
_BASIC = HTTPBasic(auto_error=False)  # module level: annotations resolve in globals


def _parse_auth(api_auth: str | None) -> dict[str, str]:
    users: dict[str, str] = {}
    for pair in (api_auth or "").split(","):
        if pair.strip():
            user, sep, password = pair.strip().partition(":")
            if not sep or not user:
                raise ValueError(f"--api-auth wants USER:PASS[,USER:PASS...], got {pair!r}")
            users[user] = password
    return users


def _auth_dependency(users: dict[str, str]) -> Callable[..., None]:
    def check(credentials: Annotated[HTTPBasicCredentials | None, Depends(_BASIC)]
              ) -> None:
        if users and (credentials is None or not any(
                secrets.compare_digest(credentials.username.encode(), user.encode())
                and secrets.compare_digest(credentials.password.encode(), password.encode())
                for user, password in users.items())):
            raise HTTPException(401, "incorrect or missing username/password (HTTP Basic, "
                                     "as set with --api-auth)",
                                headers={"WWW-Authenticate": "Basic"})
    return check


async def _wait(future: Future) -> Any:
    """The job's result, waiting without holding a thread; a client that goes away cancels a
    job still in the queue."""
    return await asyncio.wrap_future(future)


def _with_networks(loader: Callable[[Path], Any], embeddings: EmbeddingDatabase | None,
                   lora_dir: str | os.PathLike[str] | None) -> Callable[[Path], Any]:
    """`loader`, then the pipeline gets the server's embeddings and LoRA folder."""
    def load(path: Path, **where: Any) -> Any:
        pipe = loader(path, **where)  # where: device=, one load per device with --devices
        if embeddings is not None:
            pipe.embeddings = embeddings
        if lora_dir is not None:
            pipe.lora_dir = lora_dir
        return pipe
    return load


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
            vectors = next(iter(file.tensors.values()))
        except (WeightsError, OSError, ValueError) as exc:
            skipped[file.name] = {**entry, "shape": None, "vectors": None, "reason": str(exc)}
            continue
        loaded[file.name] = {**entry, "shape": int(vectors.shape[-1]),
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


def create_app(*, model: str | os.PathLike[str] | None = None,
               models_dir: str | os.PathLike[str] | None = None,
               outputs: str | os.PathLike[str] = "outputs", queue_size: int = 16,
               max_size: int = 1024, api_auth: str | None = None,
               max_body_bytes: int = 50 * 2**20, loader: Callable[[Path], Any] | None = None,
               cmd_flags: dict[str, Any] | None = None,
               embeddings_dir: str | os.PathLike[str] | None = None,
               lora_dir: str | os.PathLike[str] | None = None,
               devices: list[Any] | None = None, dtype: Any = "auto") -> FastAPI:
    """The server app with its worker started and its first model loaded.

    `model` (or, without it, the bundled model, or else the first model in `models_dir`) is
    loaded before this returns; FileNotFoundError/WeightsError say what is wrong. `loader(path)`
    builds a StableDiffusion (default: `diffusion.load_pipeline` on the best adapter, weights
    in `dtype`: "auto" is float16 where the adapter has matrix units, else float32).
    `devices` (gpucore Devices): one worker per device, each with its own pipeline, taking
    jobs from the one queue; `loader(path, device=device)` is then called once per device.
    """
    from .. import default_model_path, load_pipeline

    users = _parse_auth(api_auth)
    if model is not None and not Path(model).exists():
        raise FileNotFoundError(f"model path {str(model)!r} does not exist; give a diffusers "
                                "folder (with model_index.json) or a .safetensors checkpoint")
    if model is None:
        try:
            model = default_model_path()
        except FileNotFoundError:
            model = None
    registry = ModelRegistry(models_dir=models_dir, extra=model)
    if not registry.entries:
        where = f" and {models_dir!s} holds no model" if models_dir else ""
        raise FileNotFoundError(
            f"no model to load: the bundled default model is missing{where}; pass --model "
            "PATH (a diffusers folder or a .safetensors checkpoint) or --models-dir DIR")
    embeddings = None if embeddings_dir is None else EmbeddingDatabase(embeddings_dir)
    if lora_dir is not None and not Path(lora_dir).is_dir():
        raise FileNotFoundError(f"--lora-dir {str(lora_dir)!r} is not a folder")
    def load(path: Path, **where: Any) -> Any:
        return load_pipeline(path, dtype=dtype, **where)

    worker = Worker(_with_networks(loader or load, embeddings, lora_dir), queue_size=queue_size,
                    devices=devices)
    first = registry.entries[0]
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
    }

    @asynccontextmanager
    async def lifespan(app: FastAPI):  # type: ignore[no-untyped-def]
        yield
        worker.stop()

    app = FastAPI(title="avx-gpu Stable Diffusion (WebUI-compatible API)", lifespan=lifespan)
    app.state.worker, app.state.registry, app.state.options = worker, registry, options
    app.add_middleware(BodyLimit, max_bytes=max_body_bytes)
    add_error_handlers(app)
    api = APIRouter(prefix="/sdapi/v1", dependencies=[Depends(_auth_dependency(users))])
    avx = APIRouter(prefix="/avx", dependencies=[Depends(_auth_dependency(users))])

    async def run_generation(request: Txt2ImgRequest, kind: str) -> dict[str, Any]:
        job, facts = build_job(request, kind, options=dict(options), max_size=max_size,
                               outputs=Path(outputs))
        refiner = None
        if (name := job.options.pop("_refiner", None)) is not None:
            refiner = registry.find(name)
            if refiner is None:
                raise RequestError(f"refiner_checkpoint {name!r} is not one of this server's "
                                   f"models: {', '.join(registry.titles())}")

        def run() -> Any:
            fitted = fit_to_model(job.options, worker.pipe.native_size)
            if refiner is not None:
                fitted["refiner"] = worker.second_model(refiner.path)
            return worker.generate(replace(job, options=fitted))
        try:
            future = worker.submit(run)
        except QueueFull:
            raise HTTPException(503, f"the queue is full ({queue_size} jobs waiting); retry "
                                     f"in a few seconds", headers={
                                         "Retry-After": str(RETRY_AFTER_S)}) from None
        return build_response(request, await _wait(future), facts)

    @api.post("/txt2img", response_model=ImageResponse)
    async def txt2img(request: Txt2ImgRequest) -> dict[str, Any]:
        return await run_generation(request, "txt2img")

    @api.post("/img2img", response_model=ImageResponse)
    async def img2img(request: Img2ImgRequest) -> dict[str, Any]:
        return await run_generation(request, "img2img")

    @api.get("/progress", response_model=ProgressResponse)
    async def progress(skip_current_image: bool = False) -> dict[str, Any]:
        return worker.progress(with_image=not skip_current_image)

    @api.post("/interrupt")
    async def interrupt() -> None:
        worker.interrupt()

    @api.post("/skip")
    async def skip() -> None:
        worker.skip()

    @api.get("/samplers", response_model=list[SamplerItem])
    async def samplers() -> list[dict[str, Any]]:
        return [sampler_item(info) for info in SAMPLERS]

    @api.get("/schedulers", response_model=list[SchedulerItem])
    async def schedulers() -> list[dict[str, Any]]:
        return [{"name": kind.name, "label": kind.label, "aliases": list(kind.aliases) or None,
                 "default_rho": -1 if kind.default_rho is None else kind.default_rho,
                 "need_inner_model": kind.name in ("uniform", "sgm_uniform", "simple",
                                                   "normal", "ddim", "beta")}
                for kind in SCHEDULE_TYPES]

    @api.get("/sd-models", response_model=list[SDModelItem])
    async def sd_models() -> list[dict[str, Any]]:
        return [entry.item() for entry in registry.entries]

    @api.post("/refresh-checkpoints")
    async def refresh_checkpoints() -> None:
        await asyncio.to_thread(registry.refresh)

    @api.get("/options")
    async def get_options() -> dict[str, Any]:
        return dict(options)

    @api.post("/options")
    async def set_options(body: Annotated[dict[str, Any], Body()]) -> None:
        updates: dict[str, Any] = {}
        if "CLIP_stop_at_last_layers" in body:
            value = body["CLIP_stop_at_last_layers"]
            if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= 12:
                raise RequestError("CLIP_stop_at_last_layers must be a whole number from 1 "
                                   f"to 12, got {value!r}")
            updates["CLIP_stop_at_last_layers"] = value
        if "randn_source" in body:
            if body["randn_source"] not in ("GPU", "CPU", "NV"):
                raise RequestError("randn_source must be 'GPU', 'CPU' or 'NV'")
            updates["randn_source"] = body["randn_source"]
        if "sd_model_checkpoint" in body:
            name = body["sd_model_checkpoint"]
            entry = registry.find(name) if isinstance(name, str) else None
            if entry is None:
                raise RequestError(f"sd_model_checkpoint {name!r} is not one of this server's "
                                   f"models: {', '.join(registry.titles())} (see "
                                   "/sdapi/v1/sd-models; POST /sdapi/v1/refresh-checkpoints "
                                   "after adding one to --models-dir)")
            try:
                future = worker.submit_load(entry)
            except QueueFull:
                raise HTTPException(503, "the queue is full; retry the model switch later",
                                    headers={"Retry-After": str(RETRY_AFTER_S)}) from None
            await _wait(future)
            updates.update(sd_model_checkpoint=entry.title, sd_checkpoint_hash=entry.sha256)
        options.update(updates)  # unknown or unsupported options are accepted and ignored

    @api.post("/png-info", response_model=PNGInfoResponse)
    async def png_info_route(request: PNGInfoRequest) -> dict[str, Any]:
        text, items = png_info(decode_image(request.image, "image"))
        return {"info": text, "items": items, "parameters": webui_parameters(text)}

    @api.get("/cmd-flags")
    async def cmd_flags_route() -> dict[str, Any]:
        flags = dict(cmd_flags or {})
        if flags.get("api_auth"):
            flags["api_auth"] = "***"
        return flags

    @api.get("/memory")
    async def memory() -> dict[str, Any]:
        return {"ram": _ram(), "cuda": {"error": "no CUDA: this server runs on WebGPU "
                                                 "(wgpu); GPU memory is not reported"}}

    @api.get("/loras")
    async def list_loras() -> list[dict[str, Any]]:
        return await asyncio.to_thread(lora_listing, lora_dir)

    for path, empty in (("sd-vae", []), ("prompt-styles", []),
                        ("hypernetworks", []), ("face-restorers", [])):
        api.add_api_route(f"/{path}", lambda empty=empty: empty, methods=["GET"])

    @api.get("/embeddings")
    async def list_embeddings() -> dict[str, Any]:
        return await asyncio.to_thread(embedding_listing, embeddings)

    @avx.get("/queue")
    async def queue_state() -> dict[str, Any]:
        return {"pending": worker.pending(), "running": worker.running,
                "queue_size": queue_size, "max_size": max_size,
                "model": worker.model.title if worker.model else None,
                "native_size": getattr(worker.pipe, "native_size", None)}

    @avx.get("/defaults")
    async def model_defaults() -> dict[str, Any]:
        # what the page starts from: the loaded model's defaults.json (pipe.defaults), null
        # where it says nothing; API requests that leave these out keep the WebUI's defaults
        pipe, model = worker.pipe, worker.model
        defaults = {"model": model.title if model else None, **asdict(pipe.defaults),
                    "scheduler": None}
        if defaults["sampler"] not in (None, "diffusers"):  # "DPM++ 2M Karras": the pair
            sampler, schedule = resolve(defaults["sampler"])
            defaults["sampler"] = sampler
            defaults["scheduler"] = schedules.lookup(schedule).name
        return defaults

    app.include_router(extras_router(worker, api.dependencies))  # /upscalers, /extra-*-image(s)
    app.include_router(api)
    app.include_router(avx)

    @app.get("/", include_in_schema=False)
    async def index() -> FileResponse:
        page = STATIC / "index.html"
        if not page.is_file():
            raise HTTPException(404, "the web page is not installed; the API is at /sdapi/v1 "
                                     "(see /docs)")
        return FileResponse(page)

    if STATIC.is_dir():
        app.mount("/static", StaticFiles(directory=STATIC), name="static")
    return app


def _ram() -> dict[str, int]:
    try:
        page = os.sysconf("SC_PAGE_SIZE")
        total = os.sysconf("SC_PHYS_PAGES") * page
        free = os.sysconf("SC_AVPHYS_PAGES") * page
    except (ValueError, OSError, AttributeError):
        return {}
    return {"free": free, "used": total - free, "total": total}
