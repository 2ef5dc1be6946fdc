"""The ControlNet extension's reference_only: attention injection into a UNet's self-attention
(Lvmin Zhang's "AttentionInjection", sd-webui-controlnet's scripts/hook.py).

    machine = ReferenceAttention(unet)
    with machine.installed():
        machine.write(lambda: unet(reference_xt, t, context), weight=1.0, style_fidelity=0.5)
        out = machine.read(lambda: unet(x, t, context), uncond_rows=1)

A UNet call in "write" mode (the reference picture's latents noised to the step's timestep:
`noised_reference`) saves each self-attention layer's input (norm1's output) in a bank; the
next call ("read") lets each such layer attend to its own tokens and the saved ones,
[own, saved] as keys and values. A layer saves only while the unit's weight is above its
rank: the layers sorted by width, widest first (stably, in the UNet's down-mid-up order),
the i-th of n ranks i / n. In the call's unconditional rows the output mixes in the plain
self-attention: style_fidelity * plain + (1 - style_fidelity) * injected, the fidelity the
mean of the writes'. Each read empties the banks, as hook.py's does.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import numpy as np

from gpustd import Tensor, concatenate, take_slice

from .layers import Attention
from .reference_banks import ReferenceBanks
from .unet_blocks import BasicTransformerBlock

__all__ = ["ReferenceAttention", "noised_reference"]



def noised_reference(latents: np.ndarray, timestep: float, alphas_cumprod: np.ndarray,
                     noise: np.ndarray) -> np.ndarray:
    """The reference latents (B, C, h, w) noised to `timestep` (rounded): sqrt(a) latents +
    sqrt(1 - a) noise, a = alphas_cumprod[t], the UNet's input at that timestep. hook.py:
    `sd_ldm.q_sample(latent, round(t))`."""
    a = float(alphas_cumprod[int(np.round(timestep))])
    return (np.sqrt(a) * latents + np.sqrt(1.0 - a) * noise).astype(np.float32)


class _Layer:
    """One self-attention layer's bank."""

    def __init__(self, machine: ReferenceAttention, rank: float) -> None:
        self.machine, self.rank = machine, rank
        self.bank: list[Tensor] = []
        self.fidelities: list[float] = []

    def self_attention(self, attention: Attention, normed: Tensor, x: Tensor) -> None:
        machine = self.machine
        if machine.writing:
            if machine.weight > self.rank:
                self.bank.append(normed)
                self.fidelities.append(machine.style_fidelity)
            attention(normed, add_to=x)
            return
        if not self.bank:
            attention(normed, add_to=x)
            return
        fidelity = sum(self.fidelities) / len(self.fidelities)
        out = attention.attend(normed, concatenate([normed, *self.bank], axis=1))
        rows, batch = machine.uncond_rows, normed.shape[0]
        if rows and fidelity > 1e-5:
            plain = attention.attend(take_slice(normed, 0, rows))
            mixed = (plain * np.float32(fidelity)
                     + take_slice(out, 0, rows) * np.float32(1.0 - fidelity))
            out = mixed if rows == batch else concatenate([mixed, take_slice(out, rows, batch)])
        self.bank, self.fidelities = [], []
        attention.to_out[0](out, add_to=x)


class ReferenceAttention(ReferenceBanks):
    """reference_only's attention banks on `unet`'s self-attention layers (a UNet2DCondition
    Model: SD 1.x, 2.x, SDXL)."""

    def __init__(self, unet: Any) -> None:
        super().__init__()
        blocks = [block for group in [*unet.down_blocks, unet.mid_block, *unet.up_blocks]
                  for attention in getattr(group, "attentions", ())
                  for block in attention.transformer_blocks]
        widest = sorted(blocks, key=lambda block: -block.norm1.weight.shape[0])
        self._layers = [(block, _Layer(self, index / len(widest)))
                        for index, block in enumerate(widest)]
        self.unet = unet

    @contextmanager
    def installed(self) -> Iterator[ReferenceAttention]:
        """The layers' self-attention goes through the banks inside the block."""
        blocks: list[BasicTransformerBlock] = []
        try:
            for block, layer in self._layers:
                block.reference = layer
                blocks.append(block)
            yield self
        finally:
            for block in blocks:
                del block.reference
            self.clear()

    def clear(self) -> None:
        for _, layer in self._layers:
            layer.bank, layer.fidelities = [], []
