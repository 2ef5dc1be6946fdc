"""FLUX.2's memory modes (the WebUI's --medvram, --lowvram, --max-vram SIZE), for FLUX.2 dev's
32B transformer and Mistral Small 3.1 on a 24 GB card: flow_memory's plan over FLUX.2's
networks. The text encoder (its `hidden_states_of`), the transformer (whole, or its double-
and single-stream blocks streamed; its embedders, modulations and output layers stay) and
the VAE are the units.
"""

from __future__ import annotations

from typing import Any

from .flow_memory import MemoryLayout, smallest_flow_budget

__all__ = ["flux2_layout", "smallest_flux2_budget"]


def flux2_layout(pipe: Any) -> MemoryLayout:
    """What FLUX.2's memory modes move (flow_memory)."""
    transformer = pipe.transformer
    return MemoryLayout(
        transformer=transformer,
        blocks=(transformer.transformer_blocks, transformer.single_transformer_blocks),
        text_encoders=(pipe.text_encoder,), text_calls=((pipe.text_encoder, "hidden_states_of"),),
        vae=pipe.vae)


def smallest_flux2_budget(pipe: Any) -> int:
    """The least --max-vram can be: the transformer's weights that never leave and the largest
    unit's (a block, the text encoder, the VAE), activations not counted."""
    return smallest_flow_budget(flux2_layout(pipe))
