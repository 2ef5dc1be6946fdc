"""Krea 2, as diffusers' Krea2Pipeline draws it: the prompt in Qwen-Image's template, padded to
a fixed block in its middle, read by Qwen3-VL-4B's language model, whose hidden states at 12
layers are stacked per token (models.krea2_prompt); the Krea 2 transformer fuses them once a
prompt (`text`) and steps over [text, image] tokens; FlowMatchEulerDiscreteScheduler steps the
model output from noise over sigmas 1 .. 1/n, shifted by the picture's size (the few-step
distilled checkpoint: a fixed mu of 1.15); Qwen-Image's VAE decodes. CFG as Krea 2's: `pos +
g * (pos - neg)` for `guidance_scale` g > 0 (an empty negative prompt by default), the usual
CFG at scale 1 + g. With the torch RNG, a seed gives diffusers' picture
(`generator=torch.Generator("cpu").manual_seed(seed)`).

    pipe = Krea2Pipeline.from_pretrained("Krea-2")
    images = pipe("a fox in the snow", height=1024, width=1024, num_inference_steps=28,
                  guidance_scale=4.5, seed=7)
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np

from gpucore import Device, default_device
from gpustd import Tensor, asarray

from ...loaders.formats.diffusers_folder import component_config
from ...loaders.krea2 import load_krea2_file, load_krea2_folder
from ...models.krea2 import Krea2Transformer2DModel, pack_latents, unpack_latents
from ...models.krea2_prompt import encode
from ...models.llm import LLMTextModel
from ...models.qwen_image_vae import AutoencoderKLQwenImage
from ...models.step_cache import StepCache
from ...noise.rng import make_generator
from ...sampling.model_sampling import calculate_shift
from ...sampling.scheduler_loop import scheduler_loop
from ...text.llm_tokenizer import LLMTokenizer
from .flow_memory import load_network
from .flow_replay import StepReplay
from .prompt_passes import prompt_passes
from .qwen_image import QwenVaePasses
from .start import FlowStart, StepCallback, check_call, check_sides, flow_schedule

__all__ = ["DISTILLED_MU", "Krea2Pipeline"]

DISTILLED_MU = 1.15  # the few-step distilled checkpoint's fixed shift (Krea2Pipeline's)
# Krea2Pipeline's shift where the scheduler's config names none: 0.5 at 256 tokens, 1.15 at
# 6400 (FLUX's reaches 1.15 at 4096)
_SHIFT = {"base_image_seq_len": 256, "max_image_seq_len": 6400, "base_shift": 0.5,
          "max_shift": 1.15}


class Krea2Pipeline(QwenVaePasses):
    """Krea 2 txt2img on gpustd. Components as diffusers names them; `scheduler_config` is
    the folder's `scheduler/scheduler_config.json`; `select_layers` the text encoder's
    tapped hidden states and `distilled` the fixed shift, from model_index.json."""

    def __init__(self, *, transformer: Krea2Transformer2DModel, vae: AutoencoderKLQwenImage,
                 text_encoder: LLMTextModel, tokenizer: LLMTokenizer,
                 scheduler_config: dict[str, Any], select_layers: Sequence[int],
                 distilled: bool = False) -> None:
        self.transformer, self.vae = transformer, vae
        self.text_encoder, self.tokenizer = text_encoder, tokenizer
        self.scheduler_config = {**_SHIFT, **scheduler_config}
        self.select_layers, self.distilled = tuple(select_layers), distilled
        self.modules: list[str] = []
        self.vae_scale_factor = 2 ** len(vae.config["temperal_downsample"])
        # the transformer's step, replayed in the plain memory mode (flow_replay): each
        # prompt unpadded, a signature per text length (the prompt's and the negative's, at
        # two sizes: hires)
        self.step_replay = StepReplay(_transformer_step, max_signatures=4)

    @classmethod
    def from_pretrained(cls, path: str | Path, *, dtype: Any = np.float32,
                        device: Device | None = None, variant: str | None = None,
                        transformer_file: str | os.PathLike[str] | None = None,
                        offload: bool = False) -> Krea2Pipeline:
        """Load a Krea 2 diffusers folder (`load_krea2_folder`) onto `device` in `dtype`;
        `transformer_file`: a single-file transformer in Krea's original layout (bf16, fp8,
        scaled fp8, or a GGUF of one, kept quantized; `load_krea2_file`) in place of the
        folder's, whose config, where it has one, gives the rotary settings; `offload`: each
        network goes to host memory as soon as it is loaded (the text encoder before the
        transformer loads), for a memory mode to bring in as it runs (flow_memory).
        ValueError in one line where the folder's parts do not fit together."""
        skip = ("transformer",) if transformer_file is not None else ()
        weights = load_krea2_folder(path, variant=variant, skip=skip)
        transformer, text_encoder = weights.transformer, weights.text_encoder
        if transformer_file is not None:
            transformer = load_krea2_file(transformer_file,
                                          config=component_config(path, "transformer"))
        assert transformer is not None and text_encoder is not None
        taps = transformer.config.get("num_text_layers", 12)
        if len(weights.select_layers) != taps:
            raise ValueError(f"model_index.json taps {len(weights.select_layers)} text encoder "
                             f"layers, the transformer reads {taps} (num_text_layers): give "
                             "the folder's own transformer")
        hidden, wanted = text_encoder.config["hidden_size"], transformer.config.get(
            "text_hidden_dim", 2560)
        if hidden != wanted:
            raise ValueError(f"the text encoder's states are {hidden} wide, the transformer "
                             f"reads {wanted}: Krea 2 reads Qwen3-VL-4B's (2560); give the "
                             "text encoder that goes with the transformer")
        place = {"dtype": dtype, "device": device or default_device()}
        load = partial(load_network, device=place["device"], offload_to_host=offload)
        # the text encoder first: with `offload` it has left the GPU when the transformer loads
        encoder = load(lambda: LLMTextModel(text_encoder.config, **place), text_encoder)
        return cls(
            transformer=load(lambda: Krea2Transformer2DModel(transformer.config, **place),
                             transformer),
            vae=load(lambda: AutoencoderKLQwenImage(weights.vae.config, **place), weights.vae),
            text_encoder=encoder, tokenizer=LLMTokenizer(weights.tokenizer_dir),
            scheduler_config=weights.scheduler_config, select_layers=weights.select_layers,
            distilled=weights.distilled)

    def encode_prompt(self, prompt: str, max_sequence_length: int = 512) -> Tensor:
        """The transformer's text tokens of `prompt` (1, L, dim): Qwen3-VL's tapped states of
        its real tokens (models.krea2_prompt.encode, the template's padding left out: the
        transformer masks it) through the transformer's text fusion. diffusers:
        `Krea2Pipeline.encode_prompt`, then the transformer's `text_fusion` and `txt_in`."""
        states, _ = encode(self.text_encoder, self.tokenizer, prompt,
                           select_layers=self.select_layers,
                           max_sequence_length=max_sequence_length, padded=False)
        return self.transformer.text(states)

    def mu(self, tokens: int) -> float:
        """The schedule's shift for a picture of `tokens` patches."""
        return DISTILLED_MU if self.distilled else calculate_shift(tokens,
                                                                   self.scheduler_config)

    def velocity(self, prompts: Sequence[str], *, height: int, width: int,
                 guidance_scale: float = 4.5, negative_prompt: str | Sequence[str] = "",
                 max_sequence_length: int = 512, cache: StepCache | None = None
                 ) -> tuple[Callable[[np.ndarray, float], np.ndarray], tuple[int, ...], float]:
        """The model as `flow(x, t)` for `prompts` at height x width: x (B, C, h, w) float32
        latents, t the scheduler's timestep (0..1000), the model output (with Krea 2's CFG
        against `negative_prompt` when `guidance_scale` > 0); also the latents' shape and
        the schedule's `mu`. `cache`: the generation's step cache, of which each picture's
        prompt pass and negative pass take a branch (diffusers' separate calls)."""
        scale = self.vae_scale_factor * 2
        if height < scale or width < scale:
            raise ValueError(f"height and width must be at least {scale}, got {height}x{width}")
        batch = len(prompts)
        guided = guidance_scale > 0
        passes = prompt_passes(lambda p: self.encode_prompt(p, max_sequence_length),
                               prompts, negative_prompt, guided, cache)
        rows, columns = int(height) // scale, int(width) // scale
        dtype, device = self.transformer.dtype, self.transformer.device
        g = np.float32(guidance_scale)
        # replayed unless a step cache decides on the host (flow_replay)
        step = self.step_replay.step(self.transformer) if cache is None else None

        def predict(tokens: Tensor, t: np.floating[Any], text: Tensor, branch: Any) -> np.ndarray:
            if step is not None:
                out = step(tokens, asarray(np.full(1, t, np.float32), device=device), rows,
                           columns, text)
            else:
                out = self.transformer(tokens, t, rows, columns, text, cache=branch)
            return out.numpy().astype(np.float32)

        def flow(x: np.ndarray, t: float) -> np.ndarray:
            timestep = np.float32(t) / np.float32(1000)
            out = []
            for i in range(len(x)):
                tokens = asarray(pack_latents(x[i: i + 1]), dtype=dtype, device=device)
                k = i % batch  # picture i's prompt (several pictures a prompt: in turn)
                pred = predict(tokens, timestep, passes.texts[k], passes.branches[k][0])
                if guided:
                    negative = predict(tokens, timestep, passes.negatives[k],
                                       passes.branches[k][1])
                    pred = pred + g * (pred - negative)
                out.append(unpack_latents(pred, rows, columns))
            return np.concatenate(out)

        channels = self.transformer.config["in_channels"] // 4
        return flow, (batch, channels, 2 * rows, 2 * columns), self.mu(rows * columns)

    def __call__(self, prompt: str | Sequence[str], *, height: int = 1024, width: int = 1024,
                 num_inference_steps: int = 28, guidance_scale: float = 4.5,
                 negative_prompt: str | Sequence[str] = "", seed: int = 0, rng: str = "torch",
                 max_sequence_length: int = 512, latents: np.ndarray | None = None,
                 image: Any = None, mask_image: Any = None, strength: float = 0.6,
                 callback: StepCallback | None = None, output_type: str = "np",
                 cache: StepCache | None = None) -> np.ndarray:
        """Pictures for `prompt` (one or a list): float images in [0, 1], (B, height, width,
        3) ("np"), or the final latents (B, 16, H/8, W/8) ("latent"). `guidance_scale`:
        Krea 2's (0: no negative pass). `seed` and `rng` ("torch", as diffusers; "numpy")
        draw the starting noise unless `latents` is given. `image` (PIL or HxWx3 uint8; with
        `mask_image`, white = repaint) starts from that picture at `strength`, as the other
        flow pipelines' img2img and inpainting (Krea 2 has no pipeline of its own for them).
        `callback(done, total, latents)` after every step (False stops); `cache`: step
        caching. diffusers: `Krea2Pipeline(prompt, negative_prompt=, guidance_scale=,
        height=, width=, num_inference_steps=, max_sequence_length=,
        generator=torch.Generator().manual_seed(seed), output_type="np").images`."""
        prompts = check_call(prompt, rng=rng, output_type=output_type, steps=num_inference_steps)
        check_sides(height, width, self.vae_scale_factor * 2, "Krea 2")
        flow, shape, mu = self.velocity(prompts, height=height, width=width,
                                        guidance_scale=guidance_scale,
                                        negative_prompt=negative_prompt,
                                        max_sequence_length=max_sequence_length, cache=cache)
        scheduler = flow_schedule(self.scheduler_config, num_inference_steps, mu)
        # the start: noise (diffusers draws (B, C, h, w) and packs it: the same numbers), or
        # the init image noised to the first kept sigma; Euler steps along the flow, the
        # pictures out of the latent space
        start = FlowStart(self.vae, scheduler, shape, generator=make_generator(rng, seed),
                          latents=latents, image=image, mask=mask_image, strength=strength,
                          encode=self.encode_image, scale_factor=self.vae_scale_factor)
        x = scheduler_loop(start.latents, start.timesteps, scheduler,
                           lambda x, t, i: (flow(x, t), None), dtype=np.float32,
                           after_step=lambda i, x: start.blend(x, i), callback=callback)
        return x if output_type == "latent" else self.decode(x)


def _transformer_step(transformer: Krea2Transformer2DModel, tokens: Tensor, timestep: Tensor,
                      rows: int, columns: int, text: Tensor) -> Tensor:
    """The transformer's call of a step (StepReplay's captured function): the packed latents,
    the flow time (a float32 Tensor) and the prompt's text tokens inputs; the grid static."""
    return transformer(tokens, timestep, rows, columns, text)
