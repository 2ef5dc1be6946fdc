"""HiDream-I1 (Full, Dev, Fast) text-to-image, as diffusers' HiDreamImagePipeline draws it:
the prompt through four text encoders (models.hidream_prompt: the two CLIPs' pooled outputs,
T5-XXL's states, every Llama 3.1 layer's states; `prompt_2`/`prompt_3`/`prompt_4` for CLIP-G,
T5 and Llama, the prompt where not given) conditions the HiDream transformer, whose negated
output is the flow; classifier-free guidance `uncond + g (cond - uncond)` where
`guidance_scale` g > 1 (Full: 5; Dev and Fast are guidance-distilled and run without);
the folder's scheduler steps it (Full: UniPC on flow sigmas, flow_shift 3; a
FlowMatchEulerDiscreteScheduler folder: its shifted sigmas); FLUX's 16-channel VAE decodes.
With the torch RNG a seed gives diffusers' picture (`generator=torch.Generator("cpu")
.manual_seed(seed)`).

diffusers rescales every requested size to the area of 1024 x 1024 (its `default_sample_size`
128 latents a side) before drawing; here the picture is drawn at the size asked, as ComfyUI
draws HiDream (at 1024 x 1024, and any size of that area in multiples of 16, the two agree).

    pipe = HiDreamImagePipeline.from_pretrained("HiDream-I1-Full", llama="Llama-3.1-8B")
    images = pipe("a red circle", height=1024, width=1024, guidance_scale=5.0, seed=7)
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np

from gpucore import Device, default_device
from gpustd import asarray

from ...loaders.flow.text_encoder_file import module_stem
from ...loaders.formats.diffusers_folder import read_json
from ...loaders.hidream import load_hidream_folder, load_hidream_transformer
from ...loaders.sd.vae_file import load_vae
from ...loaders.vae_kind import require_vae
from ...models import AutoencoderKL, CLIPTextModel, T5EncoderModel
from ...models.hidream_prompt import (
    MAX_SEQUENCE_LENGTH,
    clip_pooled,
    llama_states,
    t5_states,
)
from ...models.llm import LLMTextModel
from ...models.step_cache import StepCache
from ...noise.rng import make_generator
from ...sampling.model_sampling import calculate_shift
from ...sampling.schedulers.flow_match_euler import FlowMatchEulerDiscreteScheduler
from ...sampling.schedulers.unipc_flow import FlowUniPCMultistepScheduler, is_flow_unipc
from ...text.llm_tokenizer import LLMTokenizer
from ...text.t5_tokenizer import T5Tokenizer
from ...text.tokenizer import CLIPTokenizer
from .flow_memory import load_network
from .start import StepCallback, check_call, check_sides, run_euler

__all__ = ["HiDreamImagePipeline", "hidream_scheduler"]

Flow = Callable[[np.ndarray, float], np.ndarray]
Texts = str | Sequence[str] | None


class _Renoised(FlowMatchEulerDiscreteScheduler):
    """diffusers' FlowMatchLCMScheduler (without its scale-wise upscaling): the flow-matching
    sigmas, each step the predicted x0 noised afresh to the next sigma (`stochastic_sampling`),
    the noise drawn from `source`."""

    source: Any = None

    def step(self, model_output: Any, timestep: float, sample: Any, *, noise: Any = None,
             generator: Any = None) -> np.ndarray:
        return super().step(model_output, timestep, sample, noise=noise,
                            generator=generator or self.source)


def hidream_scheduler(config: dict[str, Any], steps: int, mu: float,
                      generator: Any = None) -> Any:
    """The folder's scheduler set for `steps` steps as HiDreamImagePipeline sets it: UniPC on
    flow sigmas (`set_timesteps(steps)`), or FlowMatchEulerDiscreteScheduler or
    FlowMatchLCMScheduler (Dev's; `steps` and `mu`, which they read only where the config
    shifts by size), the latter's step noise from `generator` after the start's (diffusers
    draws it from torch's global generator). ValueError in one line for another scheduler."""
    if is_flow_unipc(config):
        unipc = FlowUniPCMultistepScheduler.from_config(config)
        unipc.set_timesteps(steps)
        return unipc
    name = config.get("_class_name")
    if name == "FlowMatchLCMScheduler":
        if config.get("scale_factors"):
            raise ValueError("FlowMatchLCMScheduler's scale-wise upscaling (scale_factors) is "
                             "not run here; choose Euler, Euler a or DPM++ 2M")
        lcm = _Renoised.from_config({**config, "stochastic_sampling": True})
        lcm.source = generator
        lcm.set_timesteps(steps, mu=mu)
        return lcm
    if name not in (None, "FlowMatchEulerDiscreteScheduler"):
        raise ValueError(f"HiDream's {name} (the folder's scheduler) is not run by the "
                         "diffusers sampler here; choose Euler, Euler a or DPM++ 2M")
    euler = FlowMatchEulerDiscreteScheduler.from_config(config)
    euler.set_timesteps(steps, mu=mu)
    return euler


def _texts(value: Texts, fallback: list[str]) -> list[str]:
    """A prompt_k (or negative_prompt_k) as diffusers reads it: the prompt where empty or
    None (`prompt_2 or prompt`), one text for every row."""
    if not value:
        return fallback
    texts = [value] if isinstance(value, str) else list(value)
    if len(texts) == 1:
        return texts * len(fallback)
    if len(texts) != len(fallback):
        raise ValueError(f"a prompt list must have 1 or {len(fallback)} texts, got "
                         f"{len(texts)}")
    return texts


class HiDreamImagePipeline:
    """HiDream-I1 txt2img on gpustd. Components as diffusers names them (text_encoder_3: T5,
    text_encoder_4: Llama); `clips`: CLIP-L's and CLIP-G's (each with its tokenizer);
    `scheduler_config` the folder's."""

    def __init__(self, *, transformer: Any, vae: AutoencoderKL,
                 clips: Sequence[tuple[CLIPTextModel, CLIPTokenizer]],
                 text_encoder_3: T5EncoderModel, tokenizer_3: T5Tokenizer,
                 text_encoder_4: LLMTextModel, tokenizer_4: LLMTokenizer,
                 scheduler_config: dict[str, Any], modules: Sequence[str] = ()) -> None:
        self.transformer, self.vae, self.clips = transformer, vae, list(clips)
        self.text_encoder_3, self.tokenizer_3 = text_encoder_3, tokenizer_3
        self.text_encoder_4, self.tokenizer_4 = text_encoder_4, tokenizer_4
        self.scheduler_config = dict(scheduler_config)
        if is_flow_unipc(scheduler_config):  # the WebUI samplers' schedule reads `shift`
            self.scheduler_config.setdefault("shift", scheduler_config.get("flow_shift", 1.0))
        self.modules = list(modules)
        self.vae_scale_factor = 2 ** (len(vae.config["block_out_channels"]) - 1)

    @classmethod
    def from_pretrained(cls, path: str | os.PathLike[str], *, dtype: Any = np.float32,
                        device: Device | None = None, variant: str | None = None,
                        llama: str | os.PathLike[str] | None = None,
                        transformer_file: str | os.PathLike[str] | None = None,
                        offload: bool = False) -> HiDreamImagePipeline:
        """Load a HiDream-I1 diffusers folder (`load_hidream_folder`) onto `device` in
        `dtype`; `llama`: a Llama-3.1-8B-Instruct folder (weights and tokenizer.json) in place
        of the folder's text_encoder_4/ and tokenizer_4/ (HiDream's own folders have none);
        `transformer_file`: the transformer as one file in the original layout (ComfyUI's
        hidream_i1_*.safetensors; `load_hidream_transformer`, the folder's config under its
        shapes) in place of the folder's, which may then be absent;
        `offload`: each network goes to host memory once loaded, for a memory mode to bring
        in as it runs (flow_memory)."""
        from ...models.hidream import HiDreamImageTransformer2DModel

        weights = load_hidream_folder(path, variant=variant, llama=llama,
                                      skip_transformer=transformer_file is not None)
        transformer = weights.transformer
        if transformer_file is not None:
            folder_config = Path(path) / "transformer" / "config.json"
            transformer = load_hidream_transformer(
                transformer_file,
                config=read_json(folder_config) if folder_config.is_file() else None)
        assert transformer is not None  # skipped only when a file replaces it
        place = {"dtype": dtype, "device": device or default_device()}
        load = partial(load_network, device=place["device"], offload_to_host=offload)

        def clip(part: Any) -> CLIPTextModel:
            return load(lambda: CLIPTextModel(part.config, with_projection=True, **place), part)

        clips = [(clip(part), CLIPTokenizer.from_pretrained(weights.tokenizer_dirs[name]))
                 for part, name in zip(weights.clips, ("tokenizer", "tokenizer_2"),
                                       strict=True)]
        t5 = load(lambda: T5EncoderModel(weights.t5.config, **place), weights.t5)
        text_encoder_4 = load(lambda: LLMTextModel(weights.llama.config, **place), weights.llama)
        return cls(
            transformer=load(lambda: HiDreamImageTransformer2DModel(transformer.config,
                                                                    **place), transformer),
            vae=load(lambda: AutoencoderKL(weights.vae.config, **place), weights.vae),
            clips=clips, text_encoder_3=t5,
            tokenizer_3=T5Tokenizer(weights.tokenizer_dirs["tokenizer_3"]),
            text_encoder_4=text_encoder_4,
            tokenizer_4=LLMTokenizer(weights.tokenizer_dirs["tokenizer_4"], pad_with_eos=True),
            scheduler_config=weights.scheduler_config,
            modules=[module_stem(Path(f)) for f in (transformer_file, llama) if f])

    def use_vae_file(self, path: str | os.PathLike[str]) -> None:
        """Decode with FLUX's VAE in the file `path` (`ae.safetensors`; loaders.sd.vae_file),
        in the place, dtype and config of the folder's. WeightsError in one line for another
        family's VAE."""
        require_vae(path, "2d", int(self.vae.config["latent_channels"]), model="HiDream-I1",
                    usual="FLUX's ae.safetensors")
        weight = self.vae.decoder.conv_in.weight
        self.vae = load_vae(path, dtype=weight.dtype, device=weight.device,
                            config=self.vae.config)

    def encode_prompt(self, prompts: Sequence[str], prompt_2: Texts = None,
                      prompt_3: Texts = None, prompt_4: Texts = None,
                      max_sequence_length: int = MAX_SEQUENCE_LENGTH
                      ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(T5 states (B, L, d), the Llama stack (layers, B, L, hidden), pooled (B, P))
        float32 of `prompts`, CLIP-G reading `prompt_2`, T5 `prompt_3` and Llama `prompt_4`
        where given. diffusers: `HiDreamImagePipeline.encode_prompt` without guidance."""
        prompts = list(prompts)
        (clip_l, tokenizer_l), (clip_g, tokenizer_g) = self.clips
        pooled = np.concatenate(
            [clip_pooled([(clip_l, tokenizer_l)], prompts, max_sequence_length),
             clip_pooled([(clip_g, tokenizer_g)], _texts(prompt_2, prompts),
                         max_sequence_length)], axis=-1)
        t5 = t5_states(self.text_encoder_3, self.tokenizer_3, _texts(prompt_3, prompts),
                       max_sequence_length)
        llama = llama_states(self.text_encoder_4, self.tokenizer_4, _texts(prompt_4, prompts),
                             max_sequence_length)
        return t5, llama, pooled

    def velocity(self, prompts: Sequence[str], *, height: int, width: int,
                 guidance_scale: float = 5.0, negative_prompt: Texts = "",
                 prompt_2: Texts = None, prompt_3: Texts = None, prompt_4: Texts = None,
                 negative_prompt_2: Texts = None, negative_prompt_3: Texts = None,
                 negative_prompt_4: Texts = None,
                 max_sequence_length: int = MAX_SEQUENCE_LENGTH,
                 cache: StepCache | None = None) -> tuple[Flow, tuple[int, ...], float]:
        """The guided transformer as `flow(x, t)` for `prompts` at height x width: x (B, C, h,
        w) float32 latents, t the scheduler's timestep (0..1000); guidance where
        guidance_scale > 1, against `negative_prompt` (its _2/_3/_4 for CLIP-G, T5 and Llama,
        the negative prompt where not given, as diffusers). Also the latents' shape and the
        `mu` diffusers computes (of the transformer's longest sequence). `cache`: the
        generation's step cache, of which this flow takes a branch (one: CFG's rows are one
        call and share it, as in diffusers' batch)."""
        scale = self.vae_scale_factor * 2
        check_sides(height, width, scale, "HiDream-I1")
        prompts = list(prompts)
        batch, guided = len(prompts), guidance_scale > 1
        # 1. conditioning: [negative, positive] rows with guidance (the Llama stack's rows
        # are its second axis)
        t5, llama, pooled = self.encode_prompt(prompts, prompt_2, prompt_3, prompt_4,
                                               max_sequence_length)
        if guided:
            negatives = _texts(negative_prompt, [""] * batch)
            neg = self.encode_prompt(negatives, _texts(negative_prompt_2, negatives),
                                     _texts(negative_prompt_3, negatives),
                                     _texts(negative_prompt_4, negatives), max_sequence_length)
            t5, pooled = np.concatenate([neg[0], t5]), np.concatenate([neg[2], pooled])
            llama = np.concatenate([neg[1], llama], axis=1)
        model = self.transformer
        dtype, device = model.dtype, model.device
        t5_gpu, pooled_gpu = asarray(t5, dtype=dtype, device=device), asarray(
            pooled, dtype=dtype, device=device)
        llama_gpu = [asarray(layer, dtype=dtype, device=device) for layer in llama]
        g = np.float32(guidance_scale)
        branch = None if cache is None else cache.branch()

        def flow(x: np.ndarray, t: float) -> np.ndarray:
            model_in = np.concatenate([x, x]) if guided else x
            times = np.full(len(model_in), t, np.float32)
            out = model(asarray(model_in, dtype=dtype, device=device), times, t5_gpu,
                        llama_gpu, pooled_gpu, cache=branch)
            pred = -out.numpy().astype(np.float32)
            if not guided:
                return pred
            uncond, text = pred[:batch], pred[batch:]
            return uncond + g * (text - uncond)

        h, w = 2 * (int(height) // scale), 2 * (int(width) // scale)
        config = model.config
        longest = config["max_resolution"][0] * config["max_resolution"][1] // (
            config["patch_size"] ** 2)
        return flow, (batch, config["in_channels"], h, w), calculate_shift(longest, {})

    def __call__(self, prompt: str | Sequence[str], *, height: int = 1024, width: int = 1024,
                 num_inference_steps: int = 50, guidance_scale: float = 5.0,
                 negative_prompt: Texts = "", seed: int = 0, rng: str = "torch",
                 max_sequence_length: int = MAX_SEQUENCE_LENGTH,
                 latents: np.ndarray | None = None, callback: StepCallback | None = None,
                 output_type: str = "np", cache: StepCache | None = None,
                 **prompts: Texts) -> np.ndarray:
        """Pictures for `prompt` (one or a list): float images in [0, 1], (B, height, width,
        3) ("np"), or the final latents (B, 16, H/8, W/8) ("latent"). `guidance_scale`:
        diffusers' (Full 5; 0 or 1: no negative pass), against `negative_prompt`; `prompts`:
        prompt_2 .. prompt_4 and negative_prompt_2 .. negative_prompt_4 (`velocity`).
        `seed` and `rng` ("torch", as diffusers; "numpy") draw the starting noise unless
        `latents` is given; `callback(done, total, latents)` after every step (False stops);
        `cache`: step caching (`velocity`). diffusers: `HiDreamImagePipeline(prompt,
        height=, width=, num_inference_steps=, guidance_scale=, negative_prompt=,
        generator=torch.Generator().manual_seed(seed), output_type="np").images` at a size
        of its 1024 x 1024 area."""
        names = {f"{kind}_{k}" for kind in ("prompt", "negative_prompt") for k in (2, 3, 4)}
        unknown = sorted(set(prompts) - names)
        if unknown:
            raise TypeError(f"unexpected keyword {unknown[0]!r}")
        texts = check_call(prompt, rng=rng, output_type=output_type, steps=num_inference_steps)
        flow, shape, mu = self.velocity(texts, height=height, width=width,
                                        guidance_scale=guidance_scale,
                                        negative_prompt=negative_prompt,
                                        max_sequence_length=max_sequence_length, cache=cache,
                                        **prompts)
        generator = make_generator(rng, seed)
        scheduler = hidream_scheduler(self.scheduler_config, num_inference_steps, mu, generator)
        return run_euler(self.vae, scheduler, shape, flow, generator=generator,
                         latents=latents, image=None, mask=None, strength=1.0,
                         callback=callback, output_type=output_type,
                         device=self.transformer.device)
