"""The generate sequence every family runs, written once: the request and its observer, what
the family does not take, the size and the InpaintPlan, the seed, the prompt's LoRAs, the
denoising, the decode, the results laid back into the picture, and the infotext's common
fields. What differs between families (how the latents are denoised and decoded, the
family's own checks and infotext fields) is a `Family`'s.

    return generate(self, request, settings, observer=observer, progress=progress,
                    on_step=on_step)      # a family's whole `generate`
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np

from gpucore import phase
from gpustd.nn import padding_mode

from ..lora import LORA_TAGS, LoraManager, lora_hashes, lora_uses
from ..models.int8 import marked as int8_marked
from ..sampling.kdiffusion import DIFFUSERS
from ..text.emphasis_mode import emphasis_mode
from ..text.prompts import BREAK, extract_extra_networks, parse_prompt_attention
from .contract import Capabilities, Denoisers, GenerationResult
from .finite import check_latents
from .fp16_accumulation import accumulates_fp16
from .hires_pass import hires_fix, hires_prompts
from .inpaint_plan import InpaintPlan
from .observer import Observer, Progress, StepCallback, from_callbacks
from .request import GenerationRequest, as_request
from .vae_float32 import reverting

__all__ = ["Denoised", "Family", "PromptLoras", "draw_seed", "generate"]


@dataclass
class Denoised:
    """What a family's denoising gives: the final latents (B, C, h, w), each picture's seed
    and the infotext fields the run adds (its schedule, sampler settings, ...)."""

    latents: np.ndarray
    seeds: list[int]
    fields: dict[str, Any] = field(default_factory=dict)


class Family(Protocol):
    """What a model family supplies to `generate`: the rest of the sequence is shared."""

    name: str
    lora_dir: str | os.PathLike[str] | None
    loras: PromptLoras  # the LoRAs its prompts' tags patch in
    diffusers_loras: bool  # whether the "diffusers" sampler runs with the prompt's LoRAs

    @property
    def capabilities(self) -> Capabilities: ...

    @property
    def native_size(self) -> int: ...

    @property
    def denoisers(self) -> Denoisers: ...

    def check(self, request: GenerationRequest, width: int, height: int) -> None:
        """ValueError for what only the loaded model can refuse in `request` (as planned)."""
        ...

    def denoise(self, request: GenerationRequest, seed: int, width: int, height: int,
                observer: Observer) -> Denoised:
        """The final latents of `request` at width x height from `seed`."""
        ...

    def decode(self, latents: np.ndarray, request: GenerationRequest) -> list[np.ndarray]:
        """The pictures (H, W, 3) uint8 of `latents`."""
        ...


class PromptLoras:
    """The LoRAs a prompt's `<lora:...>` tags patch in, exactly those (earlier ones removed),
    into what `targets()` gives (a LoraManager's model: the denoiser and text encoders by
    diffusers' names)."""

    def __init__(self, targets: Callable[[], Any]) -> None:
        self.targets = targets
        self.manager: LoraManager | None = None

    def activate(self, networks: Sequence[Any], lora_dir: str | os.PathLike[str] | None
                 ) -> str | None:
        """Patch in the LoRAs of the prompt's extra-network tags `networks`; the infotext's
        "Lora hashes", None for none."""
        wanted = [tag for tag in networks if tag.kind in LORA_TAGS]
        if wanted and lora_dir is None:
            raise ValueError(f"the prompt names <{wanted[0].kind}:{wanted[0].name}> but no LoRA "
                             "folder is set: pass --lora-dir DIR (model.lora_dir in Python)")
        if not wanted and self.manager is None:
            return None
        if self.manager is None:
            self.manager = LoraManager(self.targets())
        # (wanted with no folder was refused above)
        uses = lora_uses(wanted, lora_dir, load=self.manager.load) \
            if wanted and lora_dir is not None else []
        self.manager.set(uses)
        return lora_hashes(uses) or None


def draw_seed(seed: int | None) -> int:
    """`seed`, or a random one for None / -1."""
    return int(seed) if seed not in (None, -1) else int(np.random.default_rng().integers(2**32))


def generate(family: Family, request: GenerationRequest | str | None, settings: dict[str, Any],
             *, observer: Observer | None = None, progress: Progress | None = None,
             on_step: StepCallback | None = None) -> GenerationResult:
    """Run `request` (a GenerationRequest, or a prompt; `settings` replace its fields) on
    `family`: the pictures, their seeds and the settings that made them."""
    # 1. the request, and what the family does not take
    request = as_request(request, settings)
    observer = from_callbacks(observer, progress, on_step)
    family.capabilities.refuse(request)
    width = int(request.width or family.native_size)
    height = int(request.height or family.native_size)
    plan = InpaintPlan.make(request, width, height)  # blur, Only masked or fitted, content
    request = plan.request
    family.check(request, width, height)
    seed = draw_seed(request.seed)
    label = request.sampler_label[0]
    # 2. the WebUI's extra networks: the prompt's LoRAs in place before it is encoded
    loras = None
    if label != DIFFUSERS or family.diffusers_loras:
        networks = extract_extra_networks(request.prompt)[1]
        _check_hires_networks(request, networks)
        loras = family.loras.activate(networks, family.lora_dir)
    # 3. denoising (its observer may preview by the model's own decode), 4. decode, the
    # results laid back into the picture given
    observer.on_begin(lambda latents: family.decode(latents, request),
                      family.capabilities.latent_space)
    # (a float16 VAE whose pictures come out NaN is made float32 and decodes again, as the
    # WebUI reverts it: a hires pass decodes inside the denoising); the WebUI's Tiling: every
    # Conv2d pads circularly meanwhile; the WebUI's emphasis mode for every prompt encoded
    with padding_mode("circular" if request.tiling else "zeros"), \
            emphasis_mode(request.emphasis):
        with phase("denoise"):
            run = reverting(family, request,
                            lambda: family.denoise(request, seed, width, height, observer))
        check_latents(run.latents, family)  # NaN said, not decoded into a black picture
        with phase("decode"):
            images = reverting(family, request, lambda: family.decode(run.latents, request))
    images = plan.finish(images, overlay=label != DIFFUSERS)  # laid back, as the WebUI
    # 5. what made them (the infotext)
    made: dict[str, Any] = dict(
        mode=request.mode, prompt=request.prompt, negative_prompt=request.negative_prompt,
        steps=int(request.steps), sampler=label, cfg_scale=float(request.cfg_scale),
        seed=seed, width=width, height=height, batch_size=int(request.batch_size),
        model=family.name, rng=request.rng, **run.fields)
    if request.init_image is not None:
        made.update(plan.settings)
        # an edit model without a mask draws from noise beside its pictures: the strength
        # it refuses (all but the default) did nothing, and the infotext does not claim it
        if family.capabilities.references == 0 or request.mask is not None:
            made["strength"] = float(request.strength)
        if request.initial_noise_multiplier != 1.0:
            made["noise_multiplier"] = float(request.initial_noise_multiplier)
        if family.capabilities.references != 0:  # an edit model's reference pictures
            made["references"] = 1 + len(request.references)
    if request.hires is not None:
        made.update(hires_fix(request.hires, request.hires_modules,
                              prompts=(request.prompt, request.negative_prompt),
                              sampler=request.sampler_label))
    if loras:
        made["lora_hashes"] = loras
    if int8_marked(family):
        made["int8"] = int8_marked(family)
    if accumulates_fp16(family):
        made["fp16_accumulation"] = True
    if request.tiling:
        made["tiling"] = True
    if request.emphasis != "Original" and _weighs(request):
        made["emphasis"] = request.emphasis  # as the WebUI: where brackets say something
    return GenerationResult(images=images, seeds=run.seeds, settings=made)


def _weighs(request: GenerationRequest) -> bool:
    """Whether the prompt or the negative prompt holds emphasis (a weight other than 1), the
    prompts whose infotext the WebUI gives their emphasis mode."""
    return any(weight != 1.0 for text in (request.prompt, request.negative_prompt)
               for piece, weight in parse_prompt_attention(text) if (piece, weight) != BREAK)


def _check_hires_networks(request: GenerationRequest, networks: Sequence[Any]) -> None:
    """A hires prompt of its own names the first prompt's extra networks (LoRA tags): the
    LoRAs are patched in once, for both passes (the WebUI swaps them between the passes)."""
    if request.hires is None or not request.hires.prompt:
        return
    second = hires_prompts(request.hires, request.prompt, request.negative_prompt)[0]
    if extract_extra_networks(second)[1] != list(networks):
        raise ValueError("the hires prompt's <lora:...> tags differ from the prompt's: both "
                         "passes run with the same LoRAs here; give the hires prompt the "
                         "prompt's tags")
