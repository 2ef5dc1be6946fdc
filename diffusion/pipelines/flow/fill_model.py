"""`FillModel`: FLUX.1 Fill behind the `generate(request)` every door calls, the flow family's
`FlowModel` that inpaints and outpaints with the masked picture and the mask as the model's own
input, and the registry's detection, loader and defaults for it.

It takes inpaint requests only (an init image and a mask; white = repaint): outpainting is an
inpaint of a larger picture whose new border the mask covers. The WebUI's mask options apply
before the model sees the mask ("Mask blur", "Mask mode", "Inpaint area: Only masked", "Masked
content"), and the model's mask input is the resulting mask rounded to 0 and 1. The "diffusers"
sampler runs FluxFillPipeline's loop (denoising strength 1 draws from noise, as diffusers'
default); the WebUI samplers start from the init image at the denoising strength and lay the
kept part back after every step, as the WebUI does for inpainting models. Guidance is FLUX.1
dev's distilled scale (`distilled_cfg_scale`; Fill is trained for about 30); a CFG scale above
1 adds a negative-prompt pass, as for FLUX. No hires fix or step caches.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import numpy as np

from ...imaging import to_mask, to_unit_image
from ...loaders.errors import WeightsError
from ...loaders.flow.file import flow_file_family
from ...loaders.flow.folder import flow_family, is_fill_transformer
from ...loaders.flow.text_encoder_file import module_stem
from ...loaders.formats.gguf_file import tensor_file
from ...models.step_cache import StepCache
from ..contract import Capabilities, LoadOptions, SamplingDefaults
from ..request import GenerationRequest
from .flow_model import FlowModel

__all__ = ["FILL_DEFAULTS", "FillModel", "fill_capabilities", "fill_defaults", "fill_family",
           "load_fill_model"]

FILL_DEFAULTS = SamplingDefaults(
    steps=28, sampler="Euler", cfg_scale=1.0,
    why="Forge's FLUX preset; Fill's guidance is --distilled-cfg-scale (about 30)")


class FillModel(FlowModel):
    """A loaded FLUX.1 Fill pipeline (`family` "flux-fill", a `FluxFillPipeline` as
    `pipe`)."""

    @property
    def capabilities(self) -> Capabilities:
        """FLUX's (the WebUI samplers for flow models over the Simple schedule, distilled
        guidance, plain-text prompts with LoRA tags, the WebUI's mask options), First Block
        Cache (MagCache's and TeaCache's tables are FLUX.1 dev's, not Fill's); `check`
        refuses requests without a picture and a mask, and the hires fix."""
        return fill_capabilities(super().capabilities)

    def check(self, request: GenerationRequest, width: int, height: int) -> None:
        """FlowModel's checks; an init image and a mask, no hires fix."""
        super().check(request, width, height)
        if request.init_image is None or request.mask is None:
            raise ValueError("FLUX.1 Fill repaints a picture under a mask: give an init image "
                             "and a mask (white = repaint; the CLI's inpaint command)")
        if request.hires is not None:
            raise ValueError("the hires fix is not supported for FLUX.1 Fill models; leave it "
                             "out")

    def fill_tokens(self, request: GenerationRequest, width: int, height: int) -> np.ndarray:
        """The model's masked-picture and mask channels for the request's init image and mask
        at width x height (the masked picture's latents the VAE's mean)."""
        pixels = to_unit_image(request.init_image, width, height)
        mask = to_mask(request.mask, width, height)
        return self.pipe.fill_tokens(pixels, mask)  # type: ignore[no-any-return]

    def guided_flow(self, request: GenerationRequest, prompts: list[str], width: int,
                    height: int, cache: StepCache | None = None
                    ) -> tuple[Callable[[np.ndarray, float], np.ndarray], tuple[int, ...],
                               float | None]:
        """FlowModel's guided flow with the Fill channels in every pass (the negative
        prompt's too: `true_cfg`); `cache`: the generation's step cache (each prompt's flow a
        branch)."""
        return self.true_cfg(request, prompts, height=height, width=width, cache=cache,
                             condition=self.fill_tokens(request, width, height))

def is_fill_file(path: str | os.PathLike[str]) -> bool:
    """A FLUX.1 dev single file (`flow_file_family` "flux-dev") whose transformer is Fill's:
    BFL's `flux1-fill-dev.safetensors` or city96's `flux1-fill-dev-Q8_0.gguf`, its `img_in`
    384 wide against `final_layer`'s 64 (`is_fill_transformer`). Reads the header."""
    path = Path(path)
    if flow_file_family(path) != "flux-dev":  # a .safetensors or .gguf FLUX file
        return False
    try:
        file = tensor_file(path)
    except WeightsError:
        return False
    widths = {}
    for key in file.keys():
        name = key.removeprefix("model.diffusion_model.")
        if name in ("img_in.weight", "final_layer.linear.weight"):
            widths[name] = file.shape(key)
    if len(widths) < 2:
        return False
    return is_fill_transformer(widths["img_in.weight"][1],
                               widths["final_layer.linear.weight"][0])


def fill_capabilities(flux: Capabilities) -> Capabilities:
    """Fill's Capabilities from FLUX.1's (flow_capabilities): FillModel's, and the
    registry's before the weights load."""
    return replace(flux, step_cache=("fbc",), models="FLUX.1 Fill models")


def fill_family(path: str | os.PathLike[str]) -> str | None:
    """"flux-fill" for a FluxFillPipeline diffusers folder (or one whose transformer is
    Fill's) or a FLUX.1 Fill single file or GGUF (`is_fill_file`), None for anything else."""
    fill = flow_family(path) == "flux-fill" if Path(path).is_dir() else is_fill_file(path)
    return "flux-fill" if fill else None


def fill_defaults(path: str | os.PathLike[str], family: str) -> SamplingDefaults:
    """What a Fill model samples with where its defaults.json says nothing."""
    return FILL_DEFAULTS


def load_fill_model(path: str | os.PathLike[str], family: str, options: LoadOptions
                    ) -> FillModel:
    """A FluxFillPipeline diffusers folder or a Fill single file as a FillModel,
    `options.text_encoders` files in place of the folder's (or, for a file, what it lacks: the
    VAE `ae.safetensors`, clip_l, t5xxl), `options.defaults` (the folder's defaults.json) over
    `fill_defaults`."""
    from .fill import FluxFillPipeline

    if options.base is not None:
        raise ValueError("a base model (--base) is for UNet-only GGUFs; FLUX.1 Fill takes its "
                         "missing parts from --text-encoder files")
    path = Path(path)
    pipe = FluxFillPipeline.from_pretrained(path, dtype=options.dtype, device=options.device,
                                            variant=options.variant,
                                            text_encoder_files=list(options.text_encoders),
                                            offload=options.offload)
    name = module_stem(path)  # as Forge
    return FillModel(pipe, family=family, name=name, defaults=options.defaults or FILL_DEFAULTS,
                     modules=pipe.modules)
