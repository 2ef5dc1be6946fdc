"""The UNet families' loader (SD 1.x/2.x, SDXL base, refiner and Turbo): a diffusers folder, a
single file or a GGUF to a StableDiffusion / StableDiffusionXL on the GPU; its line in the
registry is `families.FAMILIES`'s last (what no other family claims is read as one of these,
the keys saying which)."""

from __future__ import annotations

import os
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np

from gpustd.nn import Module, StateDictError, deferred

from ...loaders import ComponentWeights, WeightsError, load_pipeline_weights
from ...loaders.component import load_component
from ...loaders.flow.module_file import module_roles, vae_latent_channels
from ...loaders.sd.gguf_pipeline import gguf_pipeline_weights, gguf_unet_facts
from ...models import AutoencoderKL, CLIPTextModel, UNet2DConditionModel
from ...text.tokenizer import CLIPTokenizer
from ..contract import Capabilities, LoadOptions, SamplingDefaults
from ..model_defaults import TURBO_DEFAULTS, is_turbo
from .stable_diffusion import StableDiffusion, unet_capabilities
from .stable_diffusion_xl import SDXL_FAMILIES, StableDiffusionXL, TextEncoders

__all__ = ["any_checkpoint", "filled", "load_unet_model", "unet_capabilities_of",
           "unet_defaults"]


def any_checkpoint(path: str | os.PathLike[str]) -> str:
    """The registry's last line claims every path: "unet" (which of SD 1.x/2.x, SDXL its keys
    or folder say once read)."""
    return "unet"


def unet_defaults(path: str | os.PathLike[str], family: str) -> SamplingDefaults | None:
    """What a UNet model samples with where its defaults.json says nothing: a Turbo model's
    settings, nothing for the others."""
    return TURBO_DEFAULTS if is_turbo(path) else None


def unet_capabilities_of(path: str | os.PathLike[str], family: str) -> Capabilities | None:
    """What the SD model at `path` will take once loaded, from its configs and tensor names
    (load_pipeline_weights reads headers only; a GGUF's header, gguf_unet_facts: its family
    and the UNet's input channels say SDXL and inpainting, as the loaded model's); None for a
    broken model (left for loading to name)."""
    try:
        if Path(path).suffix.lower() == ".gguf":
            family, unet, latents = gguf_unet_facts(path)
        else:
            weights = load_pipeline_weights(path)
            family, unet = weights.info.family, weights.unet.config
            latents = int(weights.vae.config["latent_channels"])
    except WeightsError:
        return None
    return unet_capabilities(family, sdxl=family in SDXL_FAMILIES, turbo=is_turbo(path),
                             inpainting=int(unet["in_channels"]) == 2 * latents + 1)


def filled(make: Callable[[], Module], weights: ComponentWeights, *,
           to_host: bool = False) -> Any:
    """The model `make()` builds with `weights` loaded; a tensor that does not fit becomes a
    WeightsError that names the file as well as the key. Weights from a GGUF file: built
    under gpustd.nn.deferred(), quantized matrices kept quantized (load_component).
    `to_host` (a memory mode will be set, LoadOptions.offload): built deferred and every
    tensor, float or quantized, put straight into host memory as it is read, never on the
    GPU (the mode's plan brings in what it keeps there, MemoryPlan)."""
    try:
        if to_host or any(weights.source(key)[0].suffix.lower() == ".gguf" for key in weights):
            with deferred():
                model = make()
            return load_component(model, weights, to_host=to_host)
        model = make()
        model.load_state_dict(weights)
    except StateDictError as exc:
        files = sorted({str(weights.source(key)[0]) for key in weights})
        raise WeightsError(f"{weights.name} weights in {', '.join(files)} do not fit the "
                           f"model their config describes: {exc}") from None
    return model


def load_unet_model(path: str | os.PathLike[str], detected: str, options: LoadOptions
                    ) -> StableDiffusion:
    """The SD 1.x/2.x or SDXL model at `path` as `options` ask (load_pipeline's docstring);
    `detected` is `any_checkpoint`'s "unet", the weights saying which family."""
    dtype, device, defaults = options.dtype, options.device, options.defaults
    prediction_type, variant = options.prediction_type, options.variant
    text_encoders, base = options.text_encoders, options.base
    if Path(path).suffix.lower() == ".gguf":  # not city96's FLUX / SD3.5 (those are flow)
        weights = gguf_pipeline_weights(path, dtype=dtype, prediction_type=prediction_type,
                                        base=base, modules=text_encoders)
    elif text_encoders:
        raise ValueError("text encoder files (--text-encoder) are for FLUX, SD3, Z-Image, "
                         "Qwen-Image, FLUX.2 and Wan models and UNet-only GGUFs; "
                         f"{Path(path).name} is none of them")
    elif base is not None:  # the families whose registry line has single_file_base
        raise ValueError("a base model (--base) is for UNet-only GGUFs and the single-file "
                         "transformers of Z-Image, Qwen-Image (Edit), FLUX.2 and Kandinsky 5; "
                         f"{Path(path).name} holds none of them")
    else:
        weights = load_pipeline_weights(path, dtype=dtype, prediction_type=prediction_type,
                                        variant=variant)
    place = {"dtype": dtype, "device": device}
    family = weights.info.family
    if family not in SDXL_FAMILIES:  # built on a thread while the weights load (~0.1 s of CPU)
        builder = ThreadPoolExecutor(1, thread_name_prefix="tokenizer")
        tokenizer = builder.submit(_tokenizer, weights.tokenizer_dir, family == "sd2")
        builder.shutdown(wait=False)  # the thread ends with the build
    fill = partial(filled, to_host=options.offload)  # a memory mode will be set: to host
    unet = fill(lambda: UNet2DConditionModel(weights.unet.config, **place), weights.unet)
    # AutoencoderKL.force_upcast, read before building the VAE so it is built once
    upcast = weights.vae.config.get("force_upcast", True)  # diffusers' default
    vae_dtype = np.float32 if family in SDXL_FAMILIES and dtype == np.float16 and upcast else dtype
    vae = fill(lambda: AutoencoderKL(weights.vae.config, dtype=vae_dtype, device=device),
                weights.vae)
    common: dict[str, Any] = dict(
        unet=unet, vae=vae, scheduler_config=weights.scheduler_config,
        name=Path(path).name.removesuffix(".safetensors").removesuffix(".gguf"),
        defaults=defaults, family=family, is_turbo=is_turbo(path))
    pipe: StableDiffusion
    if family in SDXL_FAMILIES:
        pipe = StableDiffusionXL(text_encoders=_sdxl_encoders(weights, place, fill), **common)
    else:
        text_weights = weights.text_encoder
        assert text_weights is not None  # only an SDXL refiner comes without this encoder
        text_encoder = fill(lambda: CLIPTextModel(text_weights.config, **place), text_weights)
        pipe = StableDiffusion(tokenizer=tokenizer.result(), text_encoder=text_encoder, **common)
    # a UNet-only GGUF's VAE module is named in the infotext, as --vae's (the last one wins)
    vaes = [m for m in text_encoders if "vae" in module_roles(m)
            and vae_latent_channels(m) == pipe.latent_channels]
    pipe.vae_path = vaes[-1] if vaes else None
    return pipe


def _tokenizer(folder: Path | None, pads_with_bang: bool) -> CLIPTokenizer:
    """A folder's tokenizer; for a single file the bundled vocabulary, padding with "!" where
    the model's own tokenizer does (SD 2.x, SDXL's OpenCLIP encoder)."""
    if folder is not None:
        return CLIPTokenizer.from_pretrained(folder)
    return CLIPTokenizer(pad_token="!" if pads_with_bang else "<|endoftext|>")


def _sdxl_encoders(weights: Any, place: dict[str, Any], fill: Callable[..., Any]
                   ) -> TextEncoders:
    """The text encoders of an SDXL base (CLIP-L, OpenCLIP-G) or refiner (OpenCLIP-G), each
    loaded by `fill` (`filled`, to host memory or not)."""
    refiner = weights.info.family == "sdxl-refiner"
    second = fill(lambda: CLIPTextModel(weights.text_encoder_2.config, with_projection=True,
                                           **place), weights.text_encoder_2)
    tokenizers = [_tokenizer(getattr(weights, "tokenizer_2_dir", None), True)]
    encoders = [second]
    if not refiner:
        encoders.insert(0, fill(lambda: CLIPTextModel(weights.text_encoder.config, **place),
                                 weights.text_encoder))
        tokenizers.insert(0, _tokenizer(weights.tokenizer_dir, False))
    zeros = weights.pipeline_config.get("force_zeros_for_empty_prompt", not refiner)
    return TextEncoders(tokenizers, encoders, refiner=refiner,
                        force_zeros_for_empty_prompt=bool(zeros))
