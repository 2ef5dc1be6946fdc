"""Bria FIBO, as diffusers' BriaFiboPipeline draws it: the prompt (FIBO's long structured JSON
caption, or any text) through SmolLM3; its last two hidden states side by side condition the
Bria FIBO transformer (FLUX.1's blocks), and each block also reads one of SmolLM3's hidden
states (the last as many as there are blocks, the last repeated where there are fewer); the
transformer predicts the flow of one token per latent pixel of Wan 2.2's VAE (48 channels,
16x). Classifier-free guidance with the negative prompt ("" when none: the single token
128000) in a second pass; FlowMatchEulerDiscreteScheduler over sigmas 1 .. 1/n shifted by the
number of latent pixels; Wan 2.2's VAE decodes the one frame. With the torch RNG a seed gives
diffusers' picture. FIBO's VLM that writes the JSON caption from a short prompt is not part of
diffusers' pipeline, nor of this one: give the caption itself.

    pipe = BriaFiboPipeline.from_pretrained("FIBO")
    images = pipe('{"short_description": "a red circle"}', height=1024, width=1024, seed=7)
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np

from gpucore import Device, default_device
from gpustd import Tensor, asarray, concatenate

from ...loaders.bria_fibo import load_bria_fibo_folder
from ...models.bria_fibo import BriaFiboTransformer2DModel, block_layers
from ...models.llm import LLMTextModel
from ...models.wan_vae import AutoencoderKLWan
from ...noise.rng import make_generator
from ...sampling.guidance import combine
from ...sampling.model_sampling import calculate_shift
from ...text.llm_tokenizer import LLMTokenizer
from ..finite import check_decoded
from .flow_memory import load_network
from .flow_replay import StepReplay, lent_steps
from .start import StepCallback, check_call, check_sides, flow_schedule, run_euler

__all__ = ["EMPTY_PROMPT_TOKEN", "MAX_SEQUENCE_LENGTH", "BriaFiboPipeline"]

EMPTY_PROMPT_TOKEN = 128000  # the pipeline's `bot_token_id`: an empty prompt is this alone
MAX_SEQUENCE_LENGTH = 3000  # the pipeline's longest prompt, in tokens
Prompt = tuple[Tensor, list[Tensor]]  # the transformer's text states and its per-block layers


class BriaFiboPipeline:
    """Bria FIBO txt2img on gpustd. Components as diffusers names them;
    `scheduler_config` is the folder's `scheduler/scheduler_config.json`."""

    vae_scale_factor = 16  # Wan 2.2's VAE, as the pipeline fixes it

    def __init__(self, *, transformer: BriaFiboTransformer2DModel, vae: AutoencoderKLWan,
                 text_encoder: LLMTextModel, tokenizer: LLMTokenizer,
                 scheduler_config: dict[str, Any], modules: Sequence[str] = ()) -> None:
        self.transformer, self.vae = transformer, vae
        self.text_encoder, self.tokenizer = text_encoder, tokenizer
        self.scheduler_config = dict(scheduler_config)
        self.modules = list(modules)
        # the transformer's step, replayed (flow_replay): each prompt unpadded, a signature
        # per caption length (the prompt's and the negative's, a batch's rows)
        self.step_replay = StepReplay(_transformer_step, max_signatures=4)

    @classmethod
    def from_pretrained(cls, path: str | Path, *, dtype: Any = np.float32,
                        device: Device | None = None, variant: str | None = None,
                        offload: bool = False) -> BriaFiboPipeline:
        """Load a Bria FIBO diffusers folder (`load_bria_fibo_folder`) onto `device` in
        `dtype`; `offload`: each network goes to host memory as soon as it is loaded."""
        weights = load_bria_fibo_folder(path, variant=variant)
        transformer, text_encoder = weights.transformer, weights.text_encoder
        assert transformer is not None and text_encoder is not None
        hidden = text_encoder.config["hidden_size"]
        wanted = (transformer.config.get("text_encoder_dim", 2048),
                  transformer.config.get("joint_attention_dim", 4096))
        if wanted != (hidden, 2 * hidden):
            raise ValueError(f"the text encoder's states are {hidden} wide, the transformer "
                             f"reads {wanted[0]} (and twice that, {wanted[1]}, for the last "
                             "two side by side): give the folder's own SmolLM3")
        place = {"dtype": dtype, "device": device or default_device()}
        load = partial(load_network, device=place["device"], offload_to_host=offload)
        encoder = load(lambda: LLMTextModel(text_encoder.config, **place), text_encoder)
        vae = load(lambda: AutoencoderKLWan(weights.vae.config, **place), weights.vae)
        if vae.spatial_factor != 16 or vae.config["z_dim"] != transformer.config.get(
                "in_channels", 48):
            raise ValueError(f"Bria FIBO decodes with Wan 2.2's VAE (16x, as many latent "
                             f"channels as the transformer's in_channels); this folder's vae/ "
                             f"is {vae.spatial_factor}x with {vae.config['z_dim']} channels: "
                             "give FIBO's own")
        return cls(
            transformer=load(lambda: BriaFiboTransformer2DModel(transformer.config, **place),
                             transformer),
            vae=vae, text_encoder=encoder, tokenizer=LLMTokenizer(weights.tokenizer_dir),
            scheduler_config=weights.scheduler_config)

    def encode_prompt(self, prompt: str, max_sequence_length: int = MAX_SEQUENCE_LENGTH
                      ) -> Prompt:
        """One prompt's states (1, L, 2 * hidden), SmolLM3's last two hidden states side by
        side, and the hidden states each transformer block reads (`block_layers`), in the
        transformer's dtype; "" is the token 128000 alone. diffusers:
        `BriaFiboPipeline.get_prompt_embeds` and `__call__`'s `prompt_layers`, one prompt
        unpadded (the pipeline's padding of a shorter prompt is masked out of attention)."""
        ids = (np.full((1, 1), EMPTY_PROMPT_TOKEN, np.int64) if prompt == ""
               else self.tokenizer([prompt], max_sequence_length, padding="longest")[0])
        count = len(self.text_encoder.layers)
        states = self.text_encoder.hidden_states_of(ids, None, list(range(count + 1)))
        dtype = self.transformer.x_embedder.weight.dtype
        model = self.transformer
        blocks = len(model.transformer_blocks) + len(model.single_transformer_blocks)
        # each state cast once: where the blocks outnumber them, the last is read repeatedly
        chosen = block_layers(range(len(states)), blocks)
        cast = {index: states[index].astype(dtype) for index in set(chosen)}
        return (concatenate([states[-1], states[-2]], axis=2).astype(dtype),
                [cast[index] for index in chosen])

    def decode(self, latents: np.ndarray) -> np.ndarray:
        """Pictures (B, H, W, 3) in [0, 1] from the sampler's latents (B, C, h, w): scaled
        back by the VAE's latents_std and latents_mean, Wan 2.2's VAE decoding them as one
        frame. VaeNonFiniteError where it gave NaN or infinity."""
        vae = self.vae
        z = vae.denormalize(asarray(latents[:, :, None], dtype=vae.post_quant_conv.weight.dtype,
                                    device=vae.device))
        with lent_steps(self):  # the VAE takes the step captures' scratch (flow_replay)
            video = vae.decode(z).numpy().astype(np.float32)[:, :, 0]
        check_decoded(video, vae)
        return np.clip(video / 2 + 0.5, 0.0, 1.0).transpose(0, 2, 3, 1)  # type: ignore[no-any-return]

    def __call__(self, prompt: str | Sequence[str], *, negative_prompt: str | Sequence[str] = "",
                 height: int = 1024, width: int = 1024, num_inference_steps: int = 30,
                 guidance_scale: float = 5.0, seed: int = 0, rng: str = "torch",
                 max_sequence_length: int = MAX_SEQUENCE_LENGTH,
                 latents: np.ndarray | None = None, callback: StepCallback | None = None,
                 output_type: str = "np") -> np.ndarray:
        """Pictures for `prompt` (one or a list): float images in [0, 1], (B, height, width,
        3) ("np"), or the final latents (B, 48, height / 16, width / 16) ("latent").
        Guidance applies when guidance_scale > 1 (`negative_prompt`, "" included, its own
        pass). `seed` and `rng` ("torch", as diffusers; "numpy") draw the starting noise
        unless `latents` is given; `callback(done, total, latents)` after every step (False
        stops). diffusers: `BriaFiboPipeline(prompt, negative_prompt=, height=, width=,
        num_inference_steps=, guidance_scale=, generator=torch.Generator().manual_seed(seed),
        output_type="np").images`."""
        prompts = check_call(prompt, rng=rng, output_type=output_type, steps=num_inference_steps)
        check_sides(height, width, self.vae_scale_factor, "Bria FIBO")
        if not 1 <= max_sequence_length <= MAX_SEQUENCE_LENGTH:
            raise ValueError(f"max_sequence_length must be 1 .. {MAX_SEQUENCE_LENGTH}, got "
                             f"{max_sequence_length}")
        batch, guided = len(prompts), guidance_scale > 1
        negatives = ([negative_prompt] * batch if isinstance(negative_prompt, str)
                     else list(negative_prompt))
        if guided and len(negatives) != batch:
            raise ValueError(f"{len(negatives)} negative prompts for {batch} prompts: give one, "
                             "or one for each prompt")
        # 1. conditioning: each prompt (and its negative) a pass of its own
        passes = [[self.encode_prompt(p, max_sequence_length) for p in prompts]]
        if guided:
            passes.append([self.encode_prompt(p, max_sequence_length) for p in negatives])
        x = self._sample(passes, guidance_scale, height // self.vae_scale_factor,
                         width // self.vae_scale_factor, num_inference_steps,
                         generator=make_generator(rng, seed), latents=latents,
                         callback=callback)
        return x if output_type == "latent" else self.decode(x)

    def _sample(self, passes: list[list[Prompt]], guidance_scale: float, h: int, w: int,
                steps: int, *, generator: Any, latents: np.ndarray | None,
                callback: StepCallback | None,
                references: tuple[np.ndarray, np.ndarray] | None = None) -> np.ndarray:
        """The final latents (B, C, h, w) of `passes` (the prompts' and, guided, the negative
        prompts'), Euler steps from noise over the shifted sigmas. `references`: FIBO Edit's
        picture tokens (L, C) float32 and their positions (L, 3), after the latents' in every
        pass, their flow dropped."""
        model = self.transformer
        weight = model.x_embedder.weight
        batch, guided = len(passes[0]), len(passes) > 1
        img_ids = np.zeros((h, w, 3), np.float32)
        img_ids[..., 1], img_ids[..., 2] = np.arange(h)[:, None], np.arange(w)[None, :]
        ids = img_ids.reshape(-1, 3)
        if references is not None:
            ids = np.concatenate([ids, references[1]])
        tables = {length: model.rotary(np.zeros((length, 3), np.float32), ids)
                  for length in {states.shape[1] for run in passes for states, _ in run}}
        step = self.step_replay.step(model)  # the timestep a float32 Tensor input

        def predict(tokens: Tensor, t: float, text: Prompt) -> np.ndarray:
            states, layers = text
            timestep = asarray(np.full(1, np.float32(t) / np.float32(1000), np.float32),
                               device=weight.device)
            out = step(tokens, states, layers, timestep, tables[states.shape[1]])
            return out.numpy().astype(np.float32)[:, :h * w]

        def flow(x: np.ndarray, t: float) -> np.ndarray:
            out = []
            for row in range(batch):  # latents (C, h, w) as tokens (h * w, C)
                tokens = x[row].reshape(x.shape[1], -1).T
                if references is not None:
                    tokens = np.concatenate([tokens, references[0]])
                tokens = asarray(tokens[None], dtype=weight.dtype, device=weight.device)
                preds = [predict(tokens, t, run[row]) for run in passes]
                out.append(preds[0] if not guided else combine(
                    preds[1], preds[0], None, np.float32(guidance_scale)))
            return np.concatenate(out).transpose(0, 2, 1).reshape(x.shape)

        # 2. the schedule: sigmas 1 .. 1/n, shifted by the number of latent pixels
        scheduler = flow_schedule(self.scheduler_config, steps,
                                  calculate_shift(h * w, self.scheduler_config))
        # 3. Euler steps along the flow from noise
        shape = (batch, int(model.config["in_channels"]), h, w)
        return run_euler(self.vae, scheduler, shape, flow, generator=generator,  # type: ignore[no-any-return]
                         latents=latents, image=None, mask=None, strength=1.0,
                         callback=callback, output_type="latent", device=weight.device,
                         scale_factor=self.vae_scale_factor)


def _transformer_step(transformer: BriaFiboTransformer2DModel, tokens: Tensor, states: Tensor,
                      layers: list[Tensor], timestep: Tensor, rotary: tuple[Tensor, Tensor]
                      ) -> Tensor:
    """The transformer's call of a step (StepReplay's captured function): the tokens (FIBO
    Edit's references after the latents'), the prompt's states and per-block layers, the
    sigmas (a float32 Tensor) and the rotary tables, all inputs."""
    return transformer(tokens, states, layers, timestep, rotary=rotary)
