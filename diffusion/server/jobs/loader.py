"""`PipelineLoader`: how a worker loads a model as the server's settings say.

A Worker calls `loader(path)` (with `device=` per device, `modules=[...]` for a model with
module files, `base=` for a single-file transformer's diffusers folder) on its thread; a
worker process gets the same loader pickled, so the settings travel with it and each process
loads its pipelines as the parent would.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ...text.embeddings import EmbeddingDatabase
from ..settings import ServerSettings

__all__ = ["PipelineLoader"]


@dataclass(frozen=True)
class PipelineLoader:
    """A pipeline for `path` in `settings.dtype` (diffusion.load_pipeline; with module files,
    diffusion.pipelines.module_load), or `build(path, **where)`'s when given (tests, a cache);
    then set to the settings' memory mode and LoRA folder, with the server's `embeddings`
    (one database, shared with the routes that list them); the settings' upscaler folder
    registered where it loads (a worker process too)."""

    settings: ServerSettings
    embeddings: EmbeddingDatabase | None = None
    build: Callable[..., Any] | None = None

    def __call__(self, path: Path, **where: Any) -> Any:
        if self.settings.upscaler_dir:
            # a worker process starts without the parent's registrations: hires fix and the
            # Extras API look the model upscalers up by name where the job runs
            from ...upscalers.models import register_upscaler_dir

            register_upscaler_dir(self.settings.upscaler_dir)
        ahead = None
        if self.settings.warmup:  # the kernels the last start used build while it loads
            import gpucore

            ahead = gpucore.Warmup(where.get("device") or gpucore.default_device(),
                                   f"serve {Path(path).resolve()} {self.settings.dtype}")
        pipe = (self.build or self._load)(path, **where)  # where: device=, modules=
        if self.settings.int8:
            from ...pipelines.int8 import use_int8

            print(use_int8(pipe), file=sys.stderr)
        if self.settings.fp16_accumulation:
            from ...pipelines.fp16_accumulation import use_fp16_accumulation

            print(use_fp16_accumulation(pipe), file=sys.stderr)
        if self.settings.no_half_vae:
            from ...pipelines.vae_float32 import use_float32_vae

            print(use_float32_vae(pipe), file=sys.stderr)
        if self.settings.memory:
            pipe.set_memory_mode(self.settings.memory)
        if self.embeddings is not None:
            pipe.embeddings = self.embeddings
        if self.settings.lora_dir is not None:
            pipe.lora_dir = self.settings.lora_dir
        if ahead is not None:
            from .warmup import warm_up

            warm_up(pipe)
            ahead.save()
        return pipe

    def _load(self, path: Path, modules: Sequence[Path] = (), **where: Any) -> Any:
        from ... import load_pipeline
        from ...pipelines.module_load import load_with_modules

        # with a memory mode, every family (the UNet and flow ones) loads each network
        # straight to host memory
        offload = bool(self.settings.memory)
        if modules:  # Forge's VAE / text encoder files (diffusion.pipelines.module_load)
            return load_with_modules(path, modules, dtype=self.settings.dtype,
                                     offload=offload, **where)
        # where: device=, base= (a single-file transformer's diffusers folder)
        return load_pipeline(path, dtype=self.settings.dtype, offload=offload, **where)
