"""FLUX.2's memory modes (the WebUI's --medvram, --lowvram, --max-vram SIZE), for FLUX.2 dev's
32B transformer and Mistral Small 3.1 on a 24 GB card:

    model.set_memory_mode(MemoryMode(lowvram=True))     # or MemoryMode.parse(max_vram="20G")

- medvram: the text encoder, the transformer and the VAE are three units, one on the GPU at a
  time: the text encoder leaves when the transformer comes, the transformer when the VAE
  decodes.
- lowvram: as medvram, and the transformer's double- and single-stream blocks stream: each is
  uploaded right before it runs and leaves when the next one comes; its embedders,
  modulations and output layers stay. Blocks that made the trip keep their host copy, so
  streaming reads nothing back.
- max_vram: a budget in bytes. The same units as lowvram, but nothing leaves while the device
  holds less than the budget; past it the least recently used units go to host memory. The
  budget is the device's memory limit (gpustd.nn.residency): the activations are held to it
  too. A budget below the transformer's unstreamed weights plus the largest unit is refused
  at once, naming that minimum.

The text encoder is freed before the transformer loads when the pipeline is loaded with
`offload` (each network goes to host memory as soon as its weights are read: the CLI does so
whenever a memory mode is asked for), so the load peaks at one network, not all three.
No FLUX.2 network runs from a capture, so every mode runs the plain mode's kernels on the same
weights: the pictures are the plain run's, bitwise (diffusion.pipelines.sd.memory says the
same of the UNet's modes).
"""

from __future__ import annotations

from typing import Any

from gpustd.nn import Module, ModuleList
from gpustd.nn.offload import parameter_bytes, restore
from gpustd.nn.residency import Residency

from ..sd.memory import GIB, MemoryMode

__all__ = ["Flux2MemoryPlan", "flux2_blocks", "smallest_flux2_budget"]


def flux2_blocks(transformer: Any) -> list[Module]:
    """The transformer's streamed units: its double-stream, then single-stream blocks."""
    return [*transformer.transformer_blocks, *transformer.single_transformer_blocks]


def _fixed_parts(transformer: Any) -> list[Module]:
    """What stays on the GPU while the blocks stream: the embedders, modulations, output."""
    return [value for value in vars(transformer).values()
            if isinstance(value, Module) and not isinstance(value, ModuleList)]


def smallest_flux2_budget(pipe: Any) -> int:
    """The least --max-vram can be: the transformer's weights that never leave and the largest
    unit's (a block, the text encoder, the VAE), activations not counted."""
    blocks = flux2_blocks(pipe.transformer)
    fixed = parameter_bytes(pipe.transformer) - sum(parameter_bytes(b) for b in blocks)
    return fixed + max(parameter_bytes(u) for u in [*blocks, pipe.text_encoder, pipe.vae])


class Flux2MemoryPlan:
    """A FLUX.2 pipeline's memory `mode` in effect: its Residency over the text encoder
    (`hidden_states_of`), the transformer (whole, or its blocks) and the VAE (`decode`,
    `encode`). `release` switches it off (every unit back on the GPU)."""

    def __init__(self, pipe: Any, mode: MemoryMode) -> None:
        self.mode = mode
        device = pipe.transformer.x_embedder.weight.device
        if mode.max_vram is not None and mode.max_vram < (least := smallest_flux2_budget(pipe)):
            raise ValueError(
                f"--max-vram {mode.max_vram / GIB:.3f} GiB cannot hold the model's largest part "
                f"with what always stays on the GPU: it needs at least {least / GIB:.3f} GiB "
                f"({-(-least // (1 << 20))} MiB) before any activations; give more")
        budget = mode.max_vram if mode.max_vram is not None else 0
        self.residency = Residency(device, budget=budget, release=not mode.lowvram)
        self.residency.add(pipe.text_encoder, name="text encoder", method="hidden_states_of")
        if mode.streams_unet:
            for part in _fixed_parts(pipe.transformer):  # loaded offloaded: they stay now
                restore(part)
            for block in flux2_blocks(pipe.transformer):
                self.residency.add(block, name="transformer block")
        else:
            self.residency.add(pipe.transformer, name="transformer")
        self.residency.add(pipe.vae, name="VAE", method="decode")
        self.residency.stream(pipe.vae, "encode", unit=pipe.vae)
        self.residency.fit()  # within the budget from now on, not from the first unit used

    def release(self) -> None:
        """Every unit back on the GPU and the methods unwrapped (the mode switched off)."""
        self.residency.close()
