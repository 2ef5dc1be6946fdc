"""Kandinsky 5 (Image Lite), as diffusers' Kandinsky5T2IPipeline draws it: the prompt in its
"prompt engineer" template read by Qwen2.5-VL's language model (its last hidden states, the
template's first 40 tokens dropped) and by CLIP (its pooled output); the Kandinsky 5
transformer (the states projected once a prompt: `text`) steps channels-last latents;
FlowMatchEulerDiscreteScheduler steps the model output from noise over its own schedule
(the config's constant shift); FLUX's 16-channel VAE decodes the latents divided by its
scaling factor (no shift, as the pipeline decodes). CFG as diffusers': `neg + g * (pos -
neg)` for `guidance_scale` g > 1 (an empty negative prompt by default). With the torch RNG, a
seed gives diffusers' picture (`generator=torch.Generator("cpu").manual_seed(seed)`); at any
size, where diffusers snaps the size to its nearest trained resolution (a warning).

    pipe = Kandinsky5Pipeline.from_pretrained("Kandinsky-5.0-T2I-Lite")
    images = pipe("a cat in a hat", height=1024, width=1024, num_inference_steps=50,
                  guidance_scale=3.5, seed=7)
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
from ...loaders.kandinsky5 import Kandinsky5Weights, load_kandinsky5_file, load_kandinsky5_folder
from ...loaders.sd.vae_file import load_vae
from ...loaders.vae_kind import require_vae
from ...models import AutoencoderKL
from ...models.clip import CLIPTextModel
from ...models.kandinsky5 import Kandinsky5Transformer3DModel
from ...models.kandinsky5_prompt import encode
from ...models.llm import LLMTextModel
from ...models.step_cache import StepCache
from ...noise.rng import make_generator
from ...sampling.scheduler_loop import scheduler_loop
from ...sampling.schedulers.flow_match_euler import FlowMatchEulerDiscreteScheduler
from ...text.llm_tokenizer import LLMTokenizer
from ...text.tokenizer import CLIPTokenizer
from .flow_memory import MemoryLayout, load_network
from .flow_replay import StepReplay, lent_steps
from .prompt_passes import prompt_passes
from .start import FlowStart, StepCallback, check_call, check_sides, encode_image

__all__ = ["Kandinsky5Pipeline", "kandinsky5_layout"]


def kandinsky5_layout(pipe: Any) -> MemoryLayout:
    """What the memory modes (flow_memory) move of a Kandinsky 5 pipeline's networks (the
    picture's, the video's): Qwen2.5-VL (its `hidden_states`) and CLIP (its pooled pass)
    together, the transformer (also brought in by `text`) and its text and visual blocks, the
    VAE."""
    transformer = pipe.transformer
    return MemoryLayout(transformer=transformer,
                        blocks=(transformer.text_transformer_blocks,
                                transformer.visual_transformer_blocks),
                        text_encoders=(pipe.text_encoder, pipe.text_encoder_2),
                        text_calls=((pipe.text_encoder, "hidden_states"),
                                    (pipe.text_encoder_2, "forward_pooled")),
                        vae=pipe.vae, transformer_calls=("text",))


class Kandinsky5Pipeline:
    """Kandinsky 5 txt2img on gpustd. Components as diffusers names them; `scheduler_config`
    is the folder's `scheduler/scheduler_config.json` (a constant shift)."""

    def __init__(self, *, transformer: Kandinsky5Transformer3DModel, vae: AutoencoderKL,
                 text_encoder: LLMTextModel, tokenizer: LLMTokenizer,
                 text_encoder_2: CLIPTextModel, tokenizer_2: CLIPTokenizer,
                 scheduler_config: dict[str, Any]) -> None:
        self.transformer, self.vae = transformer, vae
        self.text_encoder, self.tokenizer = text_encoder, tokenizer
        self.text_encoder_2, self.tokenizer_2 = text_encoder_2, tokenizer_2
        self.scheduler_config = dict(scheduler_config)
        self.modules: list[str] = []
        self.vae_scale_factor = 2 ** (len(vae.config["block_out_channels"]) - 1)
        # the transformer's step, replayed in the plain memory mode (flow_replay): a
        # signature per caption length, CFG's two at two sizes (hires)
        self.step_replay = StepReplay(_transformer_step, max_signatures=4)

    @classmethod
    def from_pretrained(cls, path: str | Path, *, dtype: Any = np.float32,
                        device: Device | None = None, variant: str | None = None,
                        transformer_file: str | os.PathLike[str] | None = None,
                        offload: bool = False) -> Kandinsky5Pipeline:
        """Load a Kandinsky 5 diffusers folder (`load_kandinsky5_folder`) onto `device` in
        `dtype`; `transformer_file`: a single-file transformer in kandinskylab's layout
        (`kandinsky5lite_t2i.safetensors`, ComfyUI's fp8 or scaled fp8, or a GGUF of one,
        kept quantized; `load_kandinsky5_file`) in place of the folder's, whose config, where
        it has one, gives what the shapes do not; `offload`: each network goes to host memory
        as soon as it is loaded (the text encoders before the transformer loads), for a memory
        mode to bring in as it runs (flow_memory)."""
        skip = ("transformer",) if transformer_file is not None else ()
        weights = load_kandinsky5_folder(path, variant=variant, skip=skip)
        transformer, qwen, clip = (weights.transformer, weights.text_encoder,
                                   weights.text_encoder_2)
        if transformer_file is not None:
            transformer = load_kandinsky5_file(transformer_file,
                                               config=component_config(path, "transformer"))
        assert transformer is not None and qwen is not None
        place = {"dtype": dtype, "device": device or default_device()}
        load = partial(load_network, device=place["device"], offload_to_host=offload)
        # the picture reader and the text encoders first: with `offload` they have left the
        # GPU when the transformer loads
        reader = cls._picture_reader(path, weights, load, place)
        text_encoder = load(lambda: LLMTextModel(qwen.config, **place), qwen)
        text_encoder_2 = load(lambda: CLIPTextModel(clip.config, **place), clip)
        return cls(
            transformer=load(lambda: Kandinsky5Transformer3DModel(transformer.config, **place),
                             transformer),
            vae=load(lambda: AutoencoderKL(weights.vae.config, **place), weights.vae),
            text_encoder=text_encoder, tokenizer=LLMTokenizer(weights.tokenizer_dir),
            text_encoder_2=text_encoder_2,
            tokenizer_2=CLIPTokenizer.from_pretrained(weights.tokenizer_2_dir),
            scheduler_config=weights.scheduler_config, **reader)

    @classmethod
    def _picture_reader(cls, path: str | Path, weights: Kandinsky5Weights,
                        load: Callable[..., Any], place: dict[str, Any]) -> dict[str, Any]:
        """What the pipeline reads a picture with besides its text encoders: nothing for
        text to image; ValueError in one line for the editing model's folder."""
        if weights.vision is not None:
            raise ValueError(f"{path} is Kandinsky 5's editing model (Kandinsky5I2IPipeline), "
                             "not text to image: load the folder itself "
                             "(Kandinsky5EditPipeline); a single-file transformer takes a "
                             "text-to-image folder as --base")
        return {}

    def use_vae_file(self, path: str | os.PathLike[str]) -> None:
        """Decode with FLUX's VAE in the file `path` (`ae.safetensors`; load_vae), in the
        place, dtype and config of the folder's. WeightsError in one line for another
        family's VAE."""
        require_vae(path, "2d", int(self.vae.config["latent_channels"]), model="Kandinsky 5",
                    usual="FLUX's ae.safetensors")
        weight = self.vae.decoder.conv_in.weight
        self.vae = load_vae(path, dtype=weight.dtype, device=weight.device,
                            config=self.vae.config)

    def encode_prompt(self, prompt: str, max_sequence_length: int = 512
                      ) -> tuple[Tensor, Tensor]:
        """(the transformer's text tokens (1, L, dim), CLIP's pooled vector (1, D2)) of
        `prompt`: models.kandinsky5_prompt.encode, the states projected once
        (`transformer.text`). diffusers: `Kandinsky5T2IPipeline.encode_prompt`."""
        states, pooled = encode(self.text_encoder, self.tokenizer, self.text_encoder_2,
                                self.tokenizer_2, prompt,
                                max_sequence_length=max_sequence_length)
        transformer = self.transformer
        return (transformer.text(states),
                asarray(pooled, dtype=transformer.dtype, device=transformer.device))

    def velocity(self, prompts: Sequence[str], *, height: int, width: int,
                 guidance_scale: float = 3.5, negative_prompt: str | Sequence[str] = "",
                 max_sequence_length: int = 512, cache: StepCache | None = None
                 ) -> tuple[Callable[[np.ndarray, float], np.ndarray], tuple[int, ...], None]:
        """The model as `flow(x, t)` for `prompts` at height x width: x (B, C, h, w) float32
        latents, t the scheduler's timestep (0..1000), the model output (with CFG against
        `negative_prompt` when `guidance_scale` > 1); also the latents' shape and mu (None:
        the schedule's shift is the config's constant). `cache`: the generation's step
        cache, of which each picture's prompt pass and negative pass take a branch."""
        return self._flow(prompts, lambda p: self.encode_prompt(p, max_sequence_length), None,
                          height=height, width=width, guidance_scale=guidance_scale,
                          negative_prompt=negative_prompt, cache=cache)

    def _flow(self, prompts: Sequence[str], encode: Callable[[str], tuple[Tensor, Tensor]],
              condition: np.ndarray | None, *, height: int, width: int, guidance_scale: float,
              negative_prompt: str | Sequence[str], cache: StepCache | None
              ) -> tuple[Callable[[np.ndarray, float], np.ndarray], tuple[int, ...], None]:
        """`velocity` with each prompt read by `encode`, and `condition` (h, w, channels)
        channels last, where given, after every picture's latents' channels (the editing
        model's picture and mask: diffusers' concatenation)."""
        scale = self.vae_scale_factor * 2
        if height < scale or width < scale:
            raise ValueError(f"height and width must be at least {scale}, got {height}x{width}")
        batch = len(prompts)
        guided = guidance_scale > 1
        passes = prompt_passes(encode, prompts, negative_prompt, guided, cache)
        dtype, device = self.transformer.dtype, self.transformer.device
        g = np.float32(guidance_scale)

        # replayed unless a step cache decides on the host (flow_replay)
        step = self.step_replay.step(self.transformer) if cache is None else None

        def predict(latents: Tensor, t: np.ndarray, text: tuple[Tensor, Tensor],
                    branch: Any) -> np.ndarray:
            if step is not None:
                out = step(latents, asarray(t, device=device), *text)
            else:
                out = self.transformer(latents, t, *text, cache=branch)
            return out.numpy().astype(np.float32)

        def flow(x: np.ndarray, t: float) -> np.ndarray:
            timestep = np.array([t], np.float32)
            out = []
            for i in range(len(x)):
                # channels last with one frame: (1, 1, h, w, C), as diffusers' latents
                last = x[i].transpose(1, 2, 0)
                if condition is not None:
                    last = np.concatenate([last, condition], -1)
                latents = asarray(last[None, None], dtype=dtype, device=device)
                k = i % batch  # picture i's prompt (several pictures a prompt: in turn)
                pred = predict(latents, timestep, passes.texts[k], passes.branches[k][0])
                if guided:
                    negative = predict(latents, timestep, passes.negatives[k],
                                       passes.branches[k][1])
                    pred = negative + g * (pred - negative)
                out.append(pred[0, 0].transpose(2, 0, 1))
            return np.stack(out)

        channels = self.transformer.config["in_visual_dim"]
        h, w = int(height) // self.vae_scale_factor, int(width) // self.vae_scale_factor
        return flow, (batch, channels, h, w), None

    def encode_image(self, pixels: np.ndarray, generator: Any) -> np.ndarray:
        """Latents of `pixels` (1, 3, H, W) in [-1, 1] in Kandinsky 5's space: FLUX's VAE
        posterior drawn from `generator`, times the scaling factor (the pipeline's decode
        divides by it alone, so no shift)."""
        shift = self.vae.shift_factor
        return encode_image(self.vae, pixels, generator) + np.float32(
            shift * self.vae.scaling_factor)

    def decode(self, latents: np.ndarray) -> np.ndarray:
        """Images (B, H, W, 3) in [0, 1] from latents (B, C, h, w): divided by the VAE's
        scaling factor and decoded, as Kandinsky5T2IPipeline decodes."""
        vae, weight = self.vae, self.vae.decoder.conv_in.weight
        z = asarray(latents / np.float32(vae.scaling_factor), dtype=weight.dtype,
                    device=weight.device)
        with lent_steps(self):  # the VAE takes the step captures' scratch (flow_replay)
            images = vae.decode(z).numpy().astype(np.float32)
        return np.clip(images / 2 + 0.5, 0.0, 1.0).transpose(0, 2, 3, 1)

    def _noise(self, shape: tuple[int, ...], generator: Any) -> np.ndarray:
        """The starting noise, drawn as diffusers draws it: (B, 1, h, w, C) channels last."""
        batch, channels, h, w = shape
        noise = generator.standard_normal((batch, 1, h, w, channels)).astype(np.float32)
        return np.ascontiguousarray(noise[:, 0].transpose(0, 3, 1, 2))

    def __call__(self, prompt: str | Sequence[str], *, height: int = 1024, width: int = 1024,
                 num_inference_steps: int = 50, guidance_scale: float = 3.5,
                 negative_prompt: str | Sequence[str] = "", seed: int = 0, rng: str = "torch",
                 max_sequence_length: int = 512, latents: np.ndarray | None = None,
                 image: Any = None, mask_image: Any = None, strength: float = 0.6,
                 callback: StepCallback | None = None, output_type: str = "np",
                 cache: StepCache | None = None) -> np.ndarray:
        """Pictures for `prompt` (one or a list): float images in [0, 1], (B, height, width,
        3) ("np"), or the final latents (B, C, H/8, W/8) ("latent"). `guidance_scale`:
        diffusers' (1 or less: no negative pass). `seed` and `rng` ("torch", as diffusers;
        "numpy") draw the starting noise unless `latents` is given. `image` (PIL or HxWx3
        uint8; with `mask_image`, white = repaint) starts from that picture at `strength`, as
        the other flow pipelines' img2img and inpainting. `callback(done, total, latents)`
        after every step (False stops); `cache`: step caching. diffusers:
        `Kandinsky5T2IPipeline(prompt, negative_prompt=, guidance_scale=, height=, width=,
        num_inference_steps=, generator=torch.Generator().manual_seed(seed),
        output_type="np").image` at one of its resolutions."""
        prompts = check_call(prompt, rng=rng, output_type=output_type, steps=num_inference_steps)
        check_sides(height, width, self.vae_scale_factor * 2, "Kandinsky 5")
        flow, shape, _ = self.velocity(prompts, height=height, width=width,
                                       guidance_scale=guidance_scale,
                                       negative_prompt=negative_prompt,
                                       max_sequence_length=max_sequence_length, cache=cache)
        # the schedule: the scheduler's own (linear in time, the config's constant shift)
        scheduler = FlowMatchEulerDiscreteScheduler.from_config(self.scheduler_config)
        scheduler.set_timesteps(num_inference_steps)
        scheduler.set_begin_index(0)
        generator = make_generator(rng, seed)
        if latents is None and image is None:
            latents = self._noise(shape, generator)
        start = FlowStart(self.vae, scheduler, shape, generator=generator, latents=latents,
                          image=image, mask=mask_image, strength=strength,
                          encode=self.encode_image, scale_factor=self.vae_scale_factor)
        x = scheduler_loop(start.latents, start.timesteps, scheduler,
                           lambda x, t, i: (flow(x, t), None), dtype=np.float32,
                           after_step=lambda i, x: start.blend(x, i), callback=callback)
        return x if output_type == "latent" else self.decode(x)


def _transformer_step(transformer: Kandinsky5Transformer3DModel, latents: Tensor,
                      timestep: Tensor, text: Tensor, pooled: Tensor) -> Tensor:
    """The transformer's call of a step (StepReplay's captured function): the channels-last
    latents, the timestep (a float32 Tensor on the 0..1000 scale), the prompt's text tokens and
    pooled vector, all inputs; the rotary tables of the sizes are kept constants."""
    return transformer(latents, timestep, text, pooled)
