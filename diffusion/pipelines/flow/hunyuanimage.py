"""HunyuanImage 2.1, as diffusers' HunyuanImagePipeline draws it: the prompt's Qwen2.5-VL
states and its quoted texts' ByT5 glyph states (models.hunyuanimage_prompt) condition the
HunyuanImage transformer; FlowMatchEulerDiscreteScheduler steps its output from noise over
sigmas 1 .. 1/n with the folder's constant shift; the 32x VAE decodes. The guidance is the
folder's AdaptiveProjectedMixGuidance (hunyuanimage_guidance: CFG, then APG with momentum),
its `ocr_guider` where a prompt quotes text, the negative pass against `negative_prompt` ("" by
default). The distilled checkpoint has no guider: it embeds `distilled_guidance_scale` (x 1000)
and, a meanflow model, reads the next step's timestep too. With the torch RNG, a seed gives
diffusers' picture (`generator=torch.Generator("cpu").manual_seed(seed)`).

    pipe = HunyuanImagePipeline.from_pretrained("HunyuanImage-2.1-Diffusers")
    images = pipe('a shop sign that says "OPEN"', height=2048, width=2048, seed=7)
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np

from gpucore import Device, default_device
from gpustd import Tensor, asarray

from ...loaders.hunyuanimage import load_hunyuanimage_folder, load_hunyuanimage_transformer
from ...models.hunyuanimage import HunyuanImageTransformer2DModel
from ...models.hunyuanimage_prompt import ByT5Tokenizer, glyph_states, qwen_states
from ...models.hunyuanimage_text import Gather, PromptText, RefinerInput
from ...models.hunyuanimage_vae import AutoencoderKLHunyuanImage
from ...models.llm import LLMTextModel
from ...models.step_cache import StepCache
from ...models.t5 import T5EncoderModel
from ...noise.rng import make_generator
from ...sampling.scheduler_loop import scheduler_loop
from ...text.llm_tokenizer import LLMTokenizer
from .flow_memory import load_network
from .flow_replay import MaskKey, StepReplay, lent_steps, mask_key, mask_of
from .hunyuanimage_guidance import MixGuidance
from .start import FlowStart, StepCallback, check_call, check_sides, decode, flow_schedule

__all__ = ["HunyuanImagePipeline"]

_OFF = MixGuidance(enabled=False)  # the distilled checkpoint's: one pass, as diffusers'


@dataclass
class _Prompts:
    """Encoded prompts: Qwen2.5-VL's states and mask, ByT5's and its mask."""

    states: np.ndarray
    mask: np.ndarray
    glyph: np.ndarray
    glyph_mask: np.ndarray


class HunyuanImagePipeline:
    """HunyuanImage 2.1 txt2img on gpustd. Components as diffusers names them;
    `scheduler_config` is the folder's scheduler_config.json, `guider` / `ocr_guider` its
    guiders (None: the distilled checkpoint's none)."""

    def __init__(self, *, transformer: HunyuanImageTransformer2DModel,
                 vae: AutoencoderKLHunyuanImage, text_encoder: LLMTextModel,
                 tokenizer: LLMTokenizer, text_encoder_2: T5EncoderModel,
                 tokenizer_2: ByT5Tokenizer, scheduler_config: dict[str, Any],
                 guider: MixGuidance | None = None,
                 ocr_guider: MixGuidance | None = None) -> None:
        self.transformer, self.vae = transformer, vae
        self.text_encoder, self.tokenizer = text_encoder, tokenizer
        self.text_encoder_2, self.tokenizer_2 = text_encoder_2, tokenizer_2
        self.scheduler_config = dict(scheduler_config)
        self.guider, self.ocr_guider = guider, ocr_guider
        self.modules: list[str] = []
        self.vae_scale_factor = vae.spatial_factor
        # the transformer's step, replayed in the plain memory mode (flow_replay): the
        # prompt's and the negative's texts (of their own lengths) at two sizes
        self.step_replay = StepReplay(_transformer_step, max_signatures=4)

    @classmethod
    def from_pretrained(cls, path: str | Path, *, dtype: Any = np.float32,
                        device: Device | None = None, variant: str | None = None,
                        transformer_file: str | os.PathLike[str] | None = None,
                        offload: bool = False) -> HunyuanImagePipeline:
        """Load a HunyuanImage 2.1 diffusers folder (`load_hunyuanimage_folder`) onto
        `device` in `dtype`; `transformer_file`: Tencent's single transformer file
        (`hunyuanimage2.1.safetensors`, the distilled one; `load_hunyuanimage_transformer`)
        in place of the folder's; `offload`: each network to host memory once loaded.
        ValueError in one line where the parts do not fit together."""
        skip = ("transformer",) if transformer_file is not None else ()
        weights = load_hunyuanimage_folder(path, variant=variant, skip=skip)
        transformer, text_encoder = weights.transformer, weights.text_encoder
        if transformer_file is not None:
            transformer = load_hunyuanimage_transformer(transformer_file)
        glyph = weights.text_encoder_2
        assert transformer is not None and text_encoder is not None and glyph is not None
        for name, have, wanted in (
                ("text encoder", text_encoder.config["hidden_size"],
                 transformer.config.get("text_embed_dim", 3584)),
                ("ByT5 glyph encoder", glyph.config["d_model"],
                 transformer.config.get("text_embed_2_dim") or glyph.config["d_model"])):
            if have != wanted:
                raise ValueError(f"the {name}'s states are {have} wide, the transformer reads "
                                 f"{wanted}: give the folder's own {name}")
        place = {"dtype": dtype, "device": device or default_device()}
        load = partial(load_network, device=place["device"], offload_to_host=offload)
        # the text encoders first: with `offload` they have left the GPU when the transformer
        # loads
        qwen = load(lambda: LLMTextModel(text_encoder.config, **place), text_encoder)
        byt5 = load(lambda: T5EncoderModel(glyph.config, **place), glyph)
        guiders = [None if config is None else MixGuidance.from_config(
            config, f"{Path(path) / name / 'guider_config.json'}")
            for name, config in (("guider", weights.guider), ("ocr_guider", weights.ocr_guider))]
        return cls(
            transformer=load(lambda: HunyuanImageTransformer2DModel(transformer.config, **place),
                             transformer),
            vae=load(lambda: AutoencoderKLHunyuanImage(weights.vae.config, **place),
                     weights.vae),
            text_encoder=qwen, tokenizer=LLMTokenizer(weights.tokenizer_dir),
            text_encoder_2=byt5, tokenizer_2=ByT5Tokenizer.from_dir(
                weights.tokenizer_2_dir or Path(path) / "tokenizer_2"),
            scheduler_config=weights.scheduler_config, guider=guiders[0], ocr_guider=guiders[1])

    @property
    def distilled(self) -> bool:
        """Whether the transformer embeds its guidance (the distilled checkpoint)."""
        return bool(self.transformer.config["guidance_embeds"])

    def encode_prompt(self, prompts: Sequence[str]) -> _Prompts:
        """Both encoders' states and masks of `prompts`. diffusers:
        `HunyuanImagePipeline.encode_prompt`."""
        states, mask = qwen_states(self.text_encoder, self.tokenizer, prompts)
        glyphs = [glyph_states(self.text_encoder_2, self.tokenizer_2, p) for p in prompts]
        return _Prompts(states, mask, np.concatenate([g[0] for g in glyphs]),
                        np.concatenate([g[1] for g in glyphs]))

    def guidance_for(self, prompts: _Prompts, guidance_scale: float | None) -> MixGuidance:
        """The guider of a run: the OCR guider where a prompt quotes text and the folder has
        one, else the plain one, else none (the distilled checkpoint); its CFG scale
        `guidance_scale` where given."""
        ocr = self.ocr_guider if prompts.glyph_mask.any() else None
        chosen = ocr or self.guider or _OFF
        return chosen if guidance_scale is None or chosen is _OFF else chosen.with_scale(
            guidance_scale)

    def velocity(self, prompts: Sequence[str], *, height: int, width: int, steps: int,
                 negative_prompt: str | Sequence[str] = "", guidance_scale: float | None = None,
                 distilled_guidance_scale: float = 3.25, cache: StepCache | None = None
                 ) -> tuple[Callable[[np.ndarray, float, int, float], np.ndarray],
                            tuple[int, ...]]:
        """The guided model as `flow(x, t, i, t_next)` for `prompts` at height x width over a
        run of `steps`: x (B, C, h, w) float32 latents, t the scheduler's timestep (0..1000),
        i the step, t_next the next step's timestep (0 after the last: meanflow's
        timestep_r); also the latents' shape. `cache`: the step cache, a branch each for the
        prompts' pass and the negative one."""
        batch = len(prompts)
        positive = self.encode_prompt(prompts)
        guider = self.guidance_for(positive, guidance_scale)
        negative = None
        if guider.takes_negative:
            negatives = ([negative_prompt] * batch if isinstance(negative_prompt, str)
                         else list(negative_prompt))
            if len(negatives) != batch:
                raise ValueError(f"{len(negatives)} negative prompts for {batch} prompts: give "
                                 "one, or one per prompt")
            negative = self.encode_prompt(negatives)
        dtype, device = self.transformer.dtype, self.transformer.device
        # a branch each for the prompts' calls and, where it runs, the negative pass's
        branches = [None if cache is None or (which and negative is None) else cache.branch()
                    for which in range(2)]
        momentum = guider.start_run()
        guidance = (np.full(batch, np.float32(distilled_guidance_scale) * 1000, np.float32)
                    if self.distilled else None)
        meanflow = bool(self.transformer.config["use_meanflow"])

        def prepared(p: _Prompts) -> PromptText:  # its projections and gathers, once
            return self.transformer.prepare_text(p.states, p.mask, p.glyph, p.glyph_mask)

        cond_text = prepared(positive)
        uncond_text = None if negative is None else prepared(negative)
        # replayed unless a step cache decides on the host or a memory mode moves the weights
        # (the eager call keeps the prepared texts' key masks)
        step = (self.step_replay.step(self.transformer)
                if cache is None and not self.step_replay.eager else None)

        def upload(values: np.ndarray | None) -> Tensor | None:
            return None if values is None else asarray(values, device=device)

        def predict(x: Any, t: np.ndarray, t_next: np.ndarray | None, text: PromptText,
                    which: int) -> np.ndarray:
            if step is not None:
                out = step(x, upload(t), upload(t_next), upload(guidance), *text_parts(text))
            else:
                out = self.transformer(x, t, text, None, t_next, guidance=guidance,
                                       cache=branches[which])
            return out.numpy().astype(np.float32)

        def flow(x: np.ndarray, t: float, i: int, t_next: float) -> np.ndarray:
            latents = asarray(x, dtype=dtype, device=device)
            timestep = np.full(len(x), np.float32(t), np.float32)
            r = np.full(len(x), np.float32(t_next), np.float32) if meanflow else None
            cond = predict(latents, timestep, r, cond_text, 0)
            uncond = (predict(latents, timestep, r, uncond_text, 1)
                      if uncond_text is not None and guider.cfg_at(i, steps) else None)
            return guider.combine(cond, uncond, step=i, steps=steps, state=momentum)

        channels = self.transformer.config["in_channels"]
        side = self.vae_scale_factor
        return flow, (batch, channels, height // side, width // side)

    def __call__(self, prompt: str | Sequence[str], *, height: int = 2048, width: int = 2048,
                 num_inference_steps: int = 50, negative_prompt: str | Sequence[str] = "",
                 guidance_scale: float | None = None, distilled_guidance_scale: float = 3.25,
                 seed: int = 0, rng: str = "torch", latents: np.ndarray | None = None,
                 callback: StepCallback | None = None, output_type: str = "np",
                 cache: StepCache | None = None) -> np.ndarray:
        """Pictures for `prompt` (one or a list): float images in [0, 1], (B, height, width,
        3) ("np"), or the final latents (B, 64, H/32, W/32) ("latent"). `guidance_scale`:
        the guider's CFG scale in place of the folder's (1: no negative pass; APG's own
        scale stays the folder's); `distilled_guidance_scale`: the distilled checkpoint's.
        `seed` and `rng` ("torch", as diffusers; "numpy") draw the starting noise unless
        `latents` is given; `callback(done, total, latents)` after every step (False stops).
        diffusers: `HunyuanImagePipeline(prompt, negative_prompt=, height=, width=,
        num_inference_steps=, distilled_guidance_scale=,
        generator=torch.Generator().manual_seed(seed), output_type="np").images`."""
        prompts = check_call(prompt, rng=rng, output_type=output_type, steps=num_inference_steps)
        check_sides(height, width, self.vae_scale_factor, "HunyuanImage 2.1")
        flow, shape = self.velocity(prompts, height=height, width=width,
                                    steps=num_inference_steps, negative_prompt=negative_prompt,
                                    guidance_scale=guidance_scale,
                                    distilled_guidance_scale=distilled_guidance_scale,
                                    cache=cache)
        scheduler = flow_schedule(self.scheduler_config, num_inference_steps, None)
        start = FlowStart(self.vae, scheduler, shape, generator=make_generator(rng, seed),
                          latents=latents, scale_factor=self.vae_scale_factor)
        timesteps = [float(t) for t in start.timesteps] + [0.0]
        x = scheduler_loop(start.latents, start.timesteps, scheduler,
                           lambda x, t, i: (flow(x, t, i, timesteps[i + 1]), None),
                           dtype=np.float32, callback=callback)
        if output_type == "latent":
            return x
        with lent_steps(self):  # the VAE takes the step captures' scratch (flow_replay)
            return decode(self.vae, x, self.vae.device)


TextKey = tuple[int, MaskKey | None, tuple[int, tuple[int, int] | None, MaskKey | None] | None]


def text_parts(text: PromptText) -> tuple[tuple[Tensor | None, ...], TextKey]:
    """A prepared prompt as a replayed step's arguments: its Tensors (the refiner's tokens,
    text vector and mask, the glyph prefix, the join's index), inputs; its host parts (the
    batch, the stream's real flags, the join's run and flags), a static key."""
    join = text.join
    return ((text.refiner.tokens, text.refiner.text, text.refiner.mask, text.prefix,
             None if join is None else join.index),
            (text.batch, mask_key(text.real),
             None if join is None else (join.count, join.run, mask_key(join.real))))


def _transformer_step(transformer: HunyuanImageTransformer2DModel, latents: Tensor,
                      timestep: Tensor, timestep_r: Tensor | None, guidance: Tensor | None,
                      tensors: tuple[Any, ...], key: TextKey) -> Tensor:
    """The transformer's call of a step (StepReplay's captured function): the latents, the
    timesteps (meanflow's next ones, the distilled guidance: float32 Tensors or None) and the
    prompt's `text_parts` inputs, its host parts static; the PromptText made anew in the call
    (its key mask a constant of the recording)."""
    tokens, vector, mask, prefix, index = tensors
    batch, real, join = key
    plan = None if join is None else Gather(join[0], join[1], index, mask_of(join[2]))
    text = PromptText(batch, RefinerInput(tokens, vector, mask), prefix, plan, mask_of(real))
    return transformer(latents, timestep, text, None, timestep_r, guidance=guidance)
