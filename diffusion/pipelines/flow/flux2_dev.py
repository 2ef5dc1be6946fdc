"""FLUX.2 dev, as diffusers' Flux2Pipeline draws it: the prompt after FLUX.2's system message
in Mistral Small 3.1's chat template, padded to 512 tokens, and Mistral's hidden states after
layers 10, 20 and 30 side by side condition the FLUX.2 transformer, whose guidance embedding
takes `guidance_scale` (guidance-distilled: one pass, no negative prompt); klein's schedule
(sigmas 1 .. 1/n shifted by the empirical mu), latents and 32-channel VAE. With the torch RNG,
a seed gives diffusers' picture (`generator=torch.Generator("cpu").manual_seed(seed)`).

    pipe = Flux2Pipeline.from_pretrained("FLUX.2-dev")
    images = pipe("a red circle", height=1024, width=1024, num_inference_steps=50, seed=7)
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from gpustd import Tensor, concatenate

from ...text.llm_tokenizer import mistral_chat_prompt
from .flux2 import Flux2KleinPipeline

__all__ = ["DEV_TEXT_LAYERS", "SYSTEM_MESSAGE", "Flux2Pipeline"]

DEV_TEXT_LAYERS = (10, 20, 30)  # Mistral's hidden states FLUX.2 dev reads, side by side
# Black Forest Labs' system message for FLUX.2 dev's prompts (diffusers:
# pipelines/flux2/system_messages.py SYSTEM_MESSAGE)
SYSTEM_MESSAGE = ("You are an AI that reasons about image descriptions. You give structured "
                  "responses focusing on object relationships, object\nattribution and actions "
                  "without speculation.")


class Flux2Pipeline(Flux2KleinPipeline):
    """FLUX.2 dev txt2img on gpustd: Flux2KleinPipeline's loop with Mistral Small 3.1's
    prompt and the embedded guidance scale (`guidance_scale`, diffusers' default 4)."""

    text_layers = DEV_TEXT_LAYERS

    def encode_prompt(self, prompts: Sequence[str], max_sequence_length: int = 512) -> Tensor:
        """(B, max_sequence_length, 3 * hidden): for each token of the templated, padded
        prompt ("[IMG]" taken out as diffusers does), Mistral's hidden states after layers
        10, 20 and 30 side by side. diffusers:
        `Flux2Pipeline._get_mistral_3_small_prompt_embeds`."""
        chats = [mistral_chat_prompt(p.replace("[IMG]", ""), SYSTEM_MESSAGE) for p in prompts]
        ids, mask = self.tokenizer(chats, max_sequence_length, padding="max_length",
                                   add_special_tokens=False)
        stacked = concatenate(self.text_encoder.hidden_states_of(ids, mask, self.text_layers),
                              axis=2)
        dtype = self.transformer.x_embedder.weight.dtype
        return stacked if stacked.dtype == dtype else stacked.astype(dtype)

    def guided(self, guidance_scale: float) -> bool:
        """Never a negative pass: the guidance is embedded (`embedded_guidance`)."""
        return False

    def embedded_guidance(self, guidance_scale: float, batch: int) -> np.ndarray | None:
        """`guidance_scale` for each of `batch` latents, the guidance embedding's input."""
        return np.full(batch, guidance_scale, np.float32)
