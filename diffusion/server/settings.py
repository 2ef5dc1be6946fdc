"""`ServerSettings`: what `serve` parses, in one frozen, picklable object.

`python -m diffusion serve` builds one; `create_app(settings)` serves it, the worker processes
load their pipelines by it (diffusion.server.jobs.loader, pickled into each process), and
every Ray replica gets the same object (diffusion.server.ray_app). Of the server it imports
only the catalog's VAE default, so the jobs and everything above them may take it.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from ..pipelines.sd.memory import MemoryMode
from .catalog.modules_dir import AUTOMATIC_VAE

__all__ = ["ServerSettings"]

PathText = str | os.PathLike[str]


@dataclass(frozen=True)
class ServerSettings:
    """The server's settings, as `serve`'s options name them (defaults: serve's own)."""

    # models: the first one and those a client may switch to; the files they load with
    model: PathText | None = None  # default: the bundled model, else models_dir's first
    models_dir: PathText | None = None
    text_encoders: tuple[PathText, ...] = ()  # --text-encoder (Forge's additional modules)
    # --base: diffusers folders giving a single-file transformer of their family (Z-Image,
    # Qwen-Image (2.1), FLUX.2, Kandinsky 5, Krea 2) its text encoder, tokenizer, VAE and scheduler,
    # before models_dir's
    bases: tuple[PathText, ...] = ()
    image_encoders: tuple[PathText, ...] = ()  # --image-encoder (IP-Adapter units')
    sd_vae: str = AUTOMATIC_VAE  # the first model's VAE choice (the WebUI's sd_vae)
    controlnet_dir: PathText | None = None
    # ADetailer's YOLO detection models (default: models_dir's adetailer, as the WebUI's)
    adetailer_dir: PathText | None = None
    embeddings_dir: PathText | None = None
    lora_dir: PathText | None = None
    # the WebUI's prompt styles, CSV files or globs (default: the styles.csv beside
    # models_dir, in the folder that holds it, as the WebUI keeps both in its data folder)
    styles_files: tuple[PathText, ...] = ()
    # registered by the process that serves (serve itself, each Ray replica)
    upscaler_dir: PathText | None = None
    # face restoration's files (default: models_dir's GFPGAN and Codeformer; facexlib's
    # detector and parser also in models_dir/facexlib), the WebUI's flags
    gfpgan_models_path: PathText | None = None
    codeformer_models_path: PathText | None = None
    # DeepDanbooru's model-resnet_custom_v3.pt (default: models_dir's torch_deepdanbooru)
    deepdanbooru_dir: PathText | None = None
    # the CLIP interrogator's transformers CLIPModel folder (default: models_dir's CLIP) and
    # the WebUI's term lists, interrogate/*.txt (default: models_dir's interrogate)
    clip_models_path: PathText | None = None
    interrogate_dir: PathText | None = None
    # its BLIP captioner: model_base_caption_capfilt_large.pth and bert's vocab.txt (default:
    # models_dir's BLIP)
    blip_dir: PathText | None = None
    # TAESD decoders for live previews (default: models_dir's VAE-approx, as the WebUI's)
    vae_approx_dir: PathText | None = None
    # devices: the weights' dtype ("auto": float16 where the adapter has matrix units), the
    # memory mode (--medvram, --lowvram, --max-vram), and one worker process per
    # GPUCORE_ADAPTER value (serve --devices; none: worker threads in this process)
    dtype: str = "auto"
    memory: MemoryMode | None = None
    int8: bool = False  # the denoisers' linear layers W8A8 (serve --int8; diffusion.pipelines.int8)
    # the denoisers' f16 GEMMs accumulate in f16 (serve --fp16-accumulation;
    # diffusion.pipelines.fp16_accumulation)
    fp16_accumulation: bool = False
    # every model's VAE in float32 (serve --no-half-vae; diffusion.pipelines.vae_float32)
    no_half_vae: bool = False
    worker_adapters: tuple[str, ...] = ()
    # a first picture drawn as each model loads, before it serves (serve's default;
    # diffusion.server.jobs.warmup): the first request is then as fast as the second
    warmup: bool = False
    # limits
    queue_size: int = 16
    max_size: int = 2048
    max_body_bytes: int = 50 * 2**20
    # HTTP: where to listen (localhost unless told otherwise), who may, where pictures go
    host: str = "127.0.0.1"
    port: int = 7860
    api_auth: str | None = None
    outputs: PathText = "outputs"
    cmd_flags: Mapping[str, Any] = field(default_factory=dict)  # /sdapi/v1/cmd-flags

    def __post_init__(self) -> None:
        # sequences as tuples, whatever a caller passed: the object stays immutable
        for name in ("text_encoders", "bases", "image_encoders", "worker_adapters",
                     "styles_files"):
            object.__setattr__(self, name, tuple(getattr(self, name) or ()))
        object.__setattr__(self, "cmd_flags", dict(self.cmd_flags or {}))

