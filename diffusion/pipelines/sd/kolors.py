"""Kolors (Kwai, 2024): SDXL's UNet, VAE and micro-conditioning with ChatGLM3-6B reading the
prompt (diffusion.models.chatglm) in place of SDXL's two CLIP encoders; the UNet's
`encoder_hid_proj` takes ChatGLM's 4096-wide states to its 2048-wide context.

Its conditioning, as diffusers' `KolorsPipeline.encode_prompt`: each prompt is tokenized by
ChatGLM's tokenizer (256 tokens, padded on the left; diffusion.text.chatglm_tokenizer); the
hidden states are those before ChatGLM's last layer, every one of the 256 rows (the padding's
too); the pooled embedding is the last layer's output at the last token. The negative prompt is
encoded the same way, "" included (the folder's `force_zeros_for_empty_prompt`, False in
Kolors' own, is not read: diffusers' pipeline fails with it True). Micro-conditioning is SDXL's
(h, w, 0, 0, h, w).

The WebUI's samplers take the same conditioning at every step: the prompt is read as text
(its <lora:...> tags taken out), without the WebUI's emphasis, BREAK, prompt editing or AND
(the WebUI and Forge have no Kolors; ComfyUI reads it as diffusers does). The encoder runs
eagerly (no capture): one pass per distinct prompt of a generation.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import replace
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np

from gpustd import Tensor

from ...loaders.errors import WeightsError
from ...loaders.formats.diffusers_folder import component_config
from ...loaders.sd.kolors import kolors_family, load_kolors_folder
from ...models import AutoencoderKL, UNet2DConditionModel
from ...models.chatglm import ChatGLMModel
from ...text.chatglm_tokenizer import ChatGLMTokenizer
from ...text.prompts import extract_extra_networks
from ..contract import Capabilities, LoadOptions, SamplingDefaults
from .guided_unet import AddedContext
from .stable_diffusion import StableDiffusion, unet_capabilities
from .stable_diffusion_xl import StableDiffusionXL, TextEncoders, _upload, time_ids
from .unet_load import filled

__all__ = ["KOLORS_DEFAULTS", "Kolors", "kolors_capabilities", "kolors_capabilities_of",
           "kolors_context", "kolors_defaults", "load_kolors_model"]

KOLORS_DEFAULTS = SamplingDefaults(steps=50, cfg_scale=5.0, preset="kolors",
                                   why="Kolors' model card: 50 steps at guidance 5")


def kolors_context(tokenizer: ChatGLMTokenizer, encoder: ChatGLMModel, prompts: Sequence[str],
                   ids: np.ndarray, dtype: Any) -> AddedContext:
    """Kolors' conditioning of `prompts` (B,) with micro-conditioning `ids` (n,): hidden
    (B, 256, hidden_size) and pooled (B, hidden_size) in `dtype` on the encoder's device.
    diffusers: `KolorsPipeline.encode_prompt(prompts)`'s prompt_embeds and
    pooled_prompt_embeds, with `_get_add_time_ids`."""
    encoded: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    for text in dict.fromkeys(prompts):
        hidden, pooled = encoder.prompt_states(*tokenizer([text]))
        encoded[text] = np.asarray(hidden.numpy()[0], np.float32), pooled[0]
    device = encoder.embedding.word_embeddings.weight.device
    hidden_rows = np.stack([encoded[text][0] for text in prompts])
    pooled_rows = np.stack([encoded[text][1] for text in prompts])
    return AddedContext(_upload(hidden_rows, device, dtype), _upload(pooled_rows, device, dtype),
                        np.repeat(ids[None], len(prompts), 0))


class Kolors(StableDiffusionXL):
    """A Kolors model on the GPU: `StableDiffusionXL` with ChatGLM3 for its text encoders
    (module docstring). Build with `diffusion.load_pipeline(path)`; `family` is "kolors"."""

    def __init__(self, *, tokenizer: ChatGLMTokenizer, text_encoder: ChatGLMModel,
                 **kwargs: Any) -> None:
        StableDiffusion.__init__(self, tokenizer=tokenizer,  # type: ignore[arg-type]
                                 text_encoder=text_encoder, **kwargs)  # type: ignore[arg-type]
        # what the memory modes move as the text encoders' unit (memory._text_encoders)
        self.text_encoders = TextEncoders([], [text_encoder], force_zeros_for_empty_prompt=False)
        self._text_captures = ()

    def encode_prompt(self, prompts: Sequence[str], *, clip_skip: int = 0) -> Tensor:
        """Kolors' prompt embeddings (B, 256, hidden_size) of `prompts` (ChatGLM's states
        before the projection to the UNet's context)."""
        return self._context(prompts, 8, 8).hidden

    def _context(self, prompts: Sequence[str], width: int, height: int) -> AddedContext:
        return kolors_context(self.tokenizer, self.text_encoder,  # type: ignore[arg-type]
                              prompts, time_ids(width, height, refiner=False),
                              self.unet.conv_in.weight.dtype)

    @property
    def capabilities(self) -> Capabilities:
        return kolors_capabilities(self.family, inpainting=self.is_inpainting_model)

    def _embedding_lookup(self) -> None:
        """No textual inversion: Kolors' embeddings would be ChatGLM's."""
        return None

    def _contexts(self, r: Any, steps: int, *, webui: bool = True) -> Any:
        """Step -> (uncond, cond) AddedContexts, the same at every step (module docstring);
        uncond None without guidance (diffusers guides only above 1, the WebUI's samplers
        at any scale but 1); the prompt's <lora:...> tags are the LoRAs', not text."""
        guided = r.cfg_scale > 1.0 if not webui else r.cfg_scale != 1.0
        prompt = extract_extra_networks(r.prompt)[0]
        cond = self._context([prompt] * r.batch_size, r.width, r.height)
        uncond = self._context([r.negative_prompt] * r.batch_size, r.width,
                               r.height) if guided else None
        return (lambda step: (uncond, cond)), None


def kolors_capabilities(family: str, *, inpainting: bool = False) -> Capabilities:
    """SDXL's (unet_capabilities) but for what ChatGLM's conditioning does not take: the
    WebUI's prompt syntax, an SDXL refiner or SDXL's ControlNets and IP-Adapters (Kolors'
    own are not implemented)."""
    return replace(unet_capabilities(family, sdxl=True, inpainting=inpainting, turbo=False),
                   prompt_syntax=False, refiner=False, control=False, models="Kolors models")


def kolors_capabilities_of(path: str | os.PathLike[str], family: str) -> Capabilities:
    """kolors_capabilities of the folder at `path`, its UNet's config telling an inpainting
    model (9 input channels: Kolors-Inpainting's)."""
    try:
        config = component_config(path, "unet") or {}
    except WeightsError:
        config = {}
    return kolors_capabilities(family, inpainting=config.get("in_channels") == 9)


def kolors_defaults(path: str | os.PathLike[str], family: str) -> SamplingDefaults:
    """What a Kolors model samples with where its defaults.json says nothing."""
    return KOLORS_DEFAULTS


def load_kolors_model(path: str | os.PathLike[str], family: str, options: LoadOptions
                      ) -> Kolors:
    """The Kolors diffusers folder at `path` (diffusion.loaders.sd.kolors), or a Kolors UNet
    file with `options.base` a folder giving the rest, as `options` ask:
    ChatGLM in the weights' dtype with a float32 residual stream, the VAE float32 where a
    float16 model's config says force_upcast (SDXL's)."""
    if options.text_encoders:
        raise ValueError(f"{Path(path).name} is a Kolors model, whose folder carries its own "
                         "text encoder: leave out --text-encoder")
    folder, unet_file = Path(path), None
    if folder.is_file():  # a UNet file: the base folder gives ChatGLM, the VAE, the scheduler
        if options.base is None or kolors_family(options.base) != "kolors" or not Path(
                options.base).is_dir():
            raise ValueError(f"{folder.name} is a Kolors UNet file: give a Kolors diffusers "
                             "folder with --base (Kwai-Kolors/Kolors-diffusers) for its text "
                             "encoder, VAE and scheduler")
        folder, unet_file = Path(options.base), path
    elif options.base is not None:
        raise ValueError(f"{folder.name} is a Kolors folder, which carries all its parts: "
                         "leave out --base")
    weights = load_kolors_folder(folder, dtype=options.dtype, variant=options.variant,
                                 unet_file=unet_file)
    try:
        tokenizer = ChatGLMTokenizer(weights.tokenizer_dir)
    except (OSError, ValueError) as error:
        raise WeightsError(str(error)) from None
    dtype, device = options.dtype, options.device
    fill = partial(filled, to_host=options.offload)
    unet = fill(lambda: UNet2DConditionModel(weights.unet.config, dtype=dtype, device=device),
                weights.unet)
    upcast = weights.vae.config.get("force_upcast", True)
    vae_dtype = np.float32 if dtype == np.float16 and upcast else dtype
    vae = fill(lambda: AutoencoderKL(weights.vae.config, dtype=vae_dtype, device=device),
               weights.vae)
    encoder = fill(lambda: ChatGLMModel(weights.text_encoder.config, dtype=dtype,
                                        device=device), weights.text_encoder)
    scheduler = dict(weights.scheduler_config)
    if options.prediction_type is not None:
        scheduler["prediction_type"] = options.prediction_type
    return Kolors(tokenizer=tokenizer, text_encoder=encoder, unet=unet, vae=vae,
                  scheduler_config=scheduler,
                  name=Path(path).name.removesuffix(".safetensors"), defaults=options.defaults,
                  family=family)
