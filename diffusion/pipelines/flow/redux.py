"""FLUX Redux: image variations and prompt mixing, as diffusers' FluxPriorReduxPipeline feeds
FluxPipeline. SigLIP reads the picture (its last hidden state, one token per patch), the Redux
embedder carries those tokens into T5's space, and they are appended after the prompt's T5
tokens; the T5 tokens (prompt's and picture's) are then scaled by `prompt_embeds_scale` and
CLIP's pooled prompt by `pooled_prompt_embeds_scale`. The FLUX model draws from that text as
from any prompt's.

    redux = FluxRedux.from_pretrained("FLUX.1-Redux-dev")
    pipe = FluxPipeline.from_pretrained("FLUX.1-dev")
    pipe.prompt_prior = redux.prior(Image.open("cat.png"))
    images = pipe("", height=1024, width=1024)
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from gpucore import Device, default_device
from gpustd import Tensor, asarray, concatenate

from ...imaging import rgb_picture
from ...loaders.errors import WeightsError
from ...loaders.formats.diffusers_folder import read_json
from ...loaders.redux_file import embedder_weights, siglip_weights
from ...models.redux import ReduxImageEncoder, SiglipVisionModel

__all__ = ["FluxRedux", "PromptPrior", "ReduxReference", "siglip_pixels"]

PromptPrior = Callable[[Tensor, Tensor], tuple[Tensor, Tensor]]
"""prior(T5 states (B, L, D), pooled (B, P)) -> the states and pooled prompt a FLUX model
reads instead (FluxPipeline.prompt_prior)."""


def siglip_pixels(image: Any, processor: dict[str, Any]) -> np.ndarray:
    """A picture (PIL or HxWx3 uint8) as SigLIP reads it, (1, 3, H, W) float32: resized to the
    processor's size (Pillow's resample, bicubic by default; aspect not kept), scaled by
    `rescale_factor` and normalized by `image_mean` / `image_std`. `processor`: the folder's
    `feature_extractor/preprocessor_config.json`. transformers: `SiglipImageProcessor(
    **processor)(image).pixel_values` (its Pillow backend)."""
    from PIL import Image

    size = processor.get("size") or {}
    width, height = int(size.get("width", 384)), int(size.get("height", 384))
    picture = rgb_picture(image)
    if picture.size != (width, height):
        picture = picture.resize((width, height),
                                 Image.Resampling(int(processor.get("resample", 3))))
    pixels = np.asarray(picture, np.float32) * np.float32(processor.get("rescale_factor",
                                                                        1 / 255))
    mean = np.asarray(processor.get("image_mean", (0.5, 0.5, 0.5)), np.float32)
    std = np.asarray(processor.get("image_std", (0.5, 0.5, 0.5)), np.float32)
    return np.ascontiguousarray(((pixels - mean) / std).transpose(2, 0, 1)[None], np.float32)


class FluxRedux:
    """FLUX.1 Redux's parts: the SigLIP `image_encoder`, the Redux `image_embedder` and the
    picture preparation (`processor`), as a FluxPriorReduxPipeline folder holds them."""

    def __init__(self, *, image_encoder: SiglipVisionModel, image_embedder: ReduxImageEncoder,
                 processor: dict[str, Any]) -> None:
        self.image_encoder, self.image_embedder = image_encoder, image_embedder
        self.processor = dict(processor)

    @classmethod
    def from_pretrained(cls, path: str | os.PathLike[str], *, dtype: Any = np.float32,
                        device: Device | None = None, variant: str | None = None,
                        image_encoder: str | os.PathLike[str] | None = None) -> FluxRedux:
        """A FluxPriorReduxPipeline diffusers folder (`image_encoder/`: SiglipVisionModel,
        `image_embedder/`: ReduxImageEncoder, `feature_extractor/`), or BFL's
        `flux1-redux-dev.safetensors` (the embedder alone) with `image_encoder`: SigLIP as a
        transformers folder or one file (ComfyUI's `sigclip_vision_patch14_384.safetensors`;
        read at its own size, bicubic, normalized by 0.5 / 0.5), onto `device`. WeightsError
        naming what is missing otherwise."""
        root = Path(path)
        folder = root.is_dir()
        if folder and not (root / "image_embedder").is_dir():
            raise WeightsError(f"{root}: not a FLUX Redux folder (FluxPriorReduxPipeline: "
                               "image_encoder/, image_embedder/, feature_extractor/)")
        if not folder and image_encoder is None:
            raise WeightsError(f"{root}: a Redux file holds the embedder alone; give the "
                               "SigLIP image encoder too (sigclip_vision_patch14_384"
                               ".safetensors)")
        place = {"dtype": dtype, "device": device or default_device()}
        embedder = embedder_weights(root / "image_embedder" if folder else root, dtype=dtype,
                                    variant=variant)
        encoder = siglip_weights(root / "image_encoder" if image_encoder is None
                                 else image_encoder, dtype=dtype, variant=variant)
        embedder_model = ReduxImageEncoder(embedder.config, **place)
        embedder_model.load_state_dict(embedder)
        encoder_model = SiglipVisionModel(encoder.config, **place)
        encoder_model.load_state_dict(encoder)
        processor_file = root / "feature_extractor" / "preprocessor_config.json"
        size = encoder_model.image_size
        processor = read_json(processor_file) if folder and processor_file.is_file() else {
            "size": {"height": size, "width": size}}
        return cls(image_encoder=encoder_model, image_embedder=embedder_model,
                   processor=processor)

    def image_tokens(self, image: Any) -> Tensor:
        """The picture's tokens in T5's space (1, N, D). diffusers:
        `FluxPriorReduxPipeline.image_embedder(encode_image(image, device, 1)).image_embeds`."""
        pixels = siglip_pixels(image, self.processor)
        return self.image_embedder(self.image_encoder(pixels))

    def prior(self, image: Any, *, prompt_embeds_scale: float = 1.0,
              pooled_prompt_embeds_scale: float = 1.0) -> PromptPrior:
        """The prompt prior of `image`: the prompt's T5 states with the picture's tokens after
        them, times `prompt_embeds_scale`, and its pooled CLIP output times
        `pooled_prompt_embeds_scale`. diffusers: FluxPriorReduxPipeline's `prompt_embeds`,
        `pooled_prompt_embeds` for one picture and the prompt's embeds."""
        tokens = self.image_tokens(image).numpy().astype(np.float32)

        def prior(states: Tensor, pooled: Tensor) -> tuple[Tensor, Tensor]:
            device = states.device
            picture = asarray(np.repeat(tokens, states.shape[0], 0), dtype=states.dtype,
                              device=device)
            joined = concatenate([states, picture], axis=1)
            return (joined * float(prompt_embeds_scale),
                    pooled * float(pooled_prompt_embeds_scale))

        return prior


@dataclass(frozen=True)
class ReduxReference:
    """A generation's FLUX Redux reference (GenerationRequest.redux): the loaded `redux`, the
    `image` (PIL or HxWx3 uint8) and diffusers' two scales."""

    redux: FluxRedux
    image: Any
    prompt_embeds_scale: float = 1.0
    pooled_prompt_embeds_scale: float = 1.0

    def prior(self) -> PromptPrior:
        """The prompt prior a FLUX.1 pipeline runs with (FluxPipeline.prompt_prior)."""
        return self.redux.prior(self.image, prompt_embeds_scale=self.prompt_embeds_scale,
                                pooled_prompt_embeds_scale=self.pooled_prompt_embeds_scale)
