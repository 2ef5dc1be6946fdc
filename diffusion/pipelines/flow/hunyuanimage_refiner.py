"""HunyuanImage 2.1's refiner, as diffusers' HunyuanImageRefinerPipeline runs it on a picture
(the base model's, as Tencent runs the two): the picture through the refiner's VAE (a draw
from its posterior), its latents twice on the channels (two frames of one picture) as the
condition, a quarter of fresh noise mixed in; from pure noise beside that condition the
refiner's transformer, guidance-distilled (the scale x 1000 embedded, no negative pass), takes
FlowMatchEulerDiscreteScheduler's steps over sigmas 1 .. 1/n with the folder's shift (4 by
default); the second frame's channels decode. The prompt reaches it as Qwen2.5-VL's states
in the refiner's own template (36 tokens dropped, 256 kept). With the torch RNG, a seed gives
diffusers' picture (`generator=torch.Generator("cpu").manual_seed(seed)`; its draws in
diffusers' order: the posterior's, the start's, the condition's noise).

    pipe = HunyuanImageRefinerPipeline.from_pretrained("HunyuanImage-2.1-Refiner-Diffusers")
    refined = pipe("a cat", image=pictures, seed=7)  # pictures (B, H, W, 3) in [0, 1]
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np

from gpucore import Device, default_device
from gpustd import asarray

from ...loaders.hunyuanimage import load_hunyuanimage_refiner_folder
from ...models.hunyuanimage_prompt import qwen_states
from ...models.hunyuanimage_refiner import HunyuanImageRefinerTransformer
from ...models.hunyuanimage_refiner_vae import AutoencoderKLHunyuanImageRefiner
from ...models.llm import LLMTextModel
from ...noise.rng import make_generator
from ...sampling.scheduler_loop import scheduler_loop
from ...text.llm_tokenizer import LLMTokenizer
from .flow_memory import load_network
from .start import StepCallback, check_call, check_sides, flow_schedule

__all__ = ["REFINER_TEMPLATE", "HunyuanImageRefinerPipeline"]

# diffusers' `prompt_template_encode` of the refiner: Llama 3's headers, read as plain text
REFINER_TEMPLATE = (
    "<|start_header_id|>system<|end_header_id|>\n\nDescribe the image by detailing the color, "
    "shape, size, texture, quantity, text, spatial relationships of the objects and "
    "background:<|eot_id|><|start_header_id|>user<|end_header_id|>\n\n{}<|eot_id|>")
TEMPLATE_TOKENS, TEXT_TOKENS = 36, 256  # the template's tokens dropped; the prompt's kept
CONDITION_NOISE = 0.25  # diffusers' prepare_latents `strength`: noise in the condition


def _pictures(image: Any, height: int | None, width: int | None) -> np.ndarray:
    """`image` (B, H, W, 3) floats in [0, 1] or uint8 as (B, 3, 1, H, W) in [-1, 1]; the
    sides it must have where given (no resize here)."""
    pictures = np.asarray(image)
    if pictures.ndim == 3:
        pictures = pictures[None]
    if pictures.ndim != 4 or pictures.shape[-1] != 3:
        raise ValueError(f"the refiner's image must be (batch, height, width, 3) pictures, got "
                         f"shape {pictures.shape}")
    if pictures.dtype == np.uint8:
        pictures = pictures.astype(np.float32) / 255
    wanted = (height or pictures.shape[1], width or pictures.shape[2])
    if pictures.shape[1:3] != wanted:
        raise ValueError(f"the refiner's image is {pictures.shape[2]}x{pictures.shape[1]}, "
                         f"asked for {wanted[1]}x{wanted[0]}: resize the picture first")
    return (pictures.astype(np.float32) * 2 - 1).transpose(0, 3, 1, 2)[:, :, None]


class HunyuanImageRefinerPipeline:
    """HunyuanImage 2.1's refiner on gpustd. Components as diffusers names them;
    `scheduler_config` is the folder's scheduler_config.json."""

    def __init__(self, *, transformer: HunyuanImageRefinerTransformer,
                 vae: AutoencoderKLHunyuanImageRefiner, text_encoder: LLMTextModel,
                 tokenizer: LLMTokenizer, scheduler_config: dict[str, Any]) -> None:
        self.transformer, self.vae = transformer, vae
        self.text_encoder, self.tokenizer = text_encoder, tokenizer
        self.scheduler_config = dict(scheduler_config)
        self.modules: list[str] = []
        self.vae_scale_factor = int(vae.spatial_compression_ratio)

    @classmethod
    def from_pretrained(cls, path: str | Path, *, dtype: Any = np.float32,
                        device: Device | None = None, variant: str | None = None,
                        offload: bool = False) -> HunyuanImageRefinerPipeline:
        """Load a HunyuanImage 2.1 refiner diffusers folder
        (`load_hunyuanimage_refiner_folder`) onto `device` in `dtype`; `offload`: each
        network to host memory once loaded. ValueError in one line where the parts do not
        fit together."""
        weights = load_hunyuanimage_refiner_folder(path, variant=variant)
        transformer, text_encoder = weights.transformer, weights.text_encoder
        assert transformer is not None and text_encoder is not None
        cfg, latent = transformer.config, weights.vae.config.get("latent_channels", 32)
        if cfg.get("in_channels") != 4 * latent or cfg.get("out_channels") != 2 * latent:
            raise ValueError(f"the refiner's transformer reads {cfg.get('in_channels')} and "
                             f"gives {cfg.get('out_channels')} channels, its VAE has {latent}: "
                             "give the refiner folder's own transformer and VAE")
        if text_encoder.config["hidden_size"] != cfg.get("text_embed_dim", 3584):
            raise ValueError("the text encoder's states are not as wide as the refiner's "
                             "transformer reads: give the folder's own text encoder")
        place = {"dtype": dtype, "device": device or default_device()}
        load = partial(load_network, device=place["device"], offload_to_host=offload)
        qwen = load(lambda: LLMTextModel(text_encoder.config, **place), text_encoder)
        return cls(
            transformer=load(lambda: HunyuanImageRefinerTransformer(cfg, **place), transformer),
            vae=load(lambda: AutoencoderKLHunyuanImageRefiner(weights.vae.config, **place),
                     weights.vae),
            text_encoder=qwen, tokenizer=LLMTokenizer(weights.tokenizer_dir),
            scheduler_config=weights.scheduler_config)

    def encode_prompt(self, prompts: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
        """Qwen2.5-VL's states and mask of `prompts` in the refiner's template. diffusers:
        `HunyuanImageRefinerPipeline.encode_prompt`."""
        return qwen_states(self.text_encoder, self.tokenizer, prompts, template=REFINER_TEMPLATE,
                           template_tokens=TEMPLATE_TOKENS, text_tokens=TEXT_TOKENS)

    def condition(self, pictures: np.ndarray, generator: Any) -> np.ndarray:
        """(B, 3, 1, H, W) pictures in [-1, 1] -> the picture's latents in the transformer's
        layout, (B, 2 C, 1, h, w): a posterior draw, twice on the channels, scaled. diffusers:
        `_encode_vae_image` (`_reorder_image_tokens` of one frame)."""
        vae = self.vae
        batch, _, _, height, width = pictures.shape
        side, channels = self.vae_scale_factor, vae.config["latent_channels"]
        noise = generator.standard_normal((batch, channels, 1, height // side, width // side))
        placed = vae.decoder.conv_in.conv.bias  # its dtype and device (kernels: taps)
        z = vae.encode(asarray(pictures, dtype=placed.dtype, device=placed.device),
                       noise=np.asarray(noise, np.float32)).numpy().astype(np.float32)
        return np.concatenate([z, z], axis=1) * np.float32(vae.scaling_factor)

    def __call__(self, prompt: str | Sequence[str], *, image: Any, height: int | None = None,
                 width: int | None = None, num_inference_steps: int = 4,
                 distilled_guidance_scale: float = 3.25, seed: int = 0, rng: str = "torch",
                 callback: StepCallback | None = None, output_type: str = "np") -> np.ndarray:
        """The refined pictures of `image` ((B, H, W, 3) floats in [0, 1] or uint8, one a
        prompt) for `prompt` (one or a list): (B, H, W, 3) in [0, 1] ("np"), or the final
        latents in the VAE's space, (B, 32, 1, H/16, W/16) ("latent"); `height`, `width`:
        the picture's (it is not resized). `seed` and `rng` ("torch", as diffusers; "numpy")
        draw the noise; `callback(done, total, latents)` after every step (False stops).
        diffusers: `HunyuanImageRefinerPipeline(prompt, image=, height=, width=,
        num_inference_steps=, distilled_guidance_scale=,
        generator=torch.Generator().manual_seed(seed), output_type="np").images`."""
        prompts = check_call(prompt, rng=rng, output_type=output_type, steps=num_inference_steps)
        pictures = _pictures(image, height, width)
        if len(pictures) != len(prompts):
            raise ValueError(f"{len(pictures)} pictures for {len(prompts)} prompts: give one "
                             "picture a prompt")
        check_sides(pictures.shape[3], pictures.shape[4], self.vae_scale_factor,
                    "the HunyuanImage refiner")
        generator = make_generator(rng, seed)
        image_latents = self.condition(pictures, generator)
        shape = image_latents.shape
        latents = generator.standard_normal(shape).astype(np.float32)
        noise = generator.standard_normal(shape).astype(np.float32)
        cond = (CONDITION_NOISE * noise + (1 - CONDITION_NOISE) * image_latents).astype(
            np.float32)
        # the prompt's projections and gathers, once for every step
        text = self.transformer.prepare_text(*self.encode_prompt(prompts))
        dtype, device = self.transformer.dtype, self.transformer.device
        guidance = np.full(len(prompts), np.float32(distilled_guidance_scale) * 1000,
                           np.float32)

        def flow(x: np.ndarray, t: float, i: int) -> tuple[np.ndarray, None]:
            both = asarray(np.concatenate([x, cond], axis=1), dtype=dtype, device=device)
            out = self.transformer(both, np.full(len(x), np.float32(t), np.float32), text,
                                   None, guidance=guidance)
            return out.numpy().astype(np.float32), None

        scheduler = flow_schedule(self.scheduler_config, num_inference_steps, None)
        x = scheduler_loop(latents, scheduler.timesteps, scheduler, flow, dtype=np.float32,
                           callback=callback)
        z = self.vae_latents(x)
        if output_type == "latent":
            return z
        return self.decode(z)

    def vae_latents(self, x: np.ndarray) -> np.ndarray:
        """The VAE's latents (B, 32, 1, h, w) of the sampled latents `x` (B, 64, 1, h, w):
        the second frame's channels, out of the scaled space (`callback` gets `x`)."""
        return x[:, x.shape[1] // 2:] / np.float32(self.vae.scaling_factor)

    def decode(self, z: np.ndarray) -> np.ndarray:
        """VAE latents (B, 32, 1, h, w) -> pictures (B, 16h, 16w, 3) in [0, 1]."""
        vae = self.vae
        placed = vae.decoder.conv_in.conv.bias  # its dtype and device (kernels: taps)
        out = vae.decode(asarray(z, dtype=placed.dtype, device=placed.device)).numpy()
        return np.clip(out[:, :, 0].astype(np.float32) / 2 + 0.5, 0, 1).transpose(0, 2, 3, 1)
