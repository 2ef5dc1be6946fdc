"""The ControlNet extension's reference_adain: AdaIN of a UNet's block outputs toward a
reference's (sd-webui-controlnet's scripts/hook.py, `hacked_group_norm_forward`).

    machine = ReferenceAdaIN(unet)
    with machine.installed():
        machine.write(lambda: unet(reference_xt, t, context), weight=1.0, style_fidelity=0.5)
        out = machine.read(lambda: unet(x, t, context), uncond_rows=1)

A UNet call in "write" mode (the reference's latents noised to the step's timestep) saves,
at each hooked block, the per-channel mean and variance over the picture of the block's
output (population variance); the next call ("read") renormalizes each such output x to
them: (x - mean(x)) / std(x) * std_saved + mean_saved, std = sqrt(max(var, 1e-6)), the
saved statistics the mean of the writes'. Its unconditional rows mix in the plain output:
style_fidelity * x + (1 - style_fidelity) * renormalized. Each read empties the banks.

The hooked blocks, as the original (LDM) UNet counts them, each with a rank: the middle
block (0); the input blocks after level 0's (each resnet with its attention, no
downsampler; the i-th of n ranks 2 (1 - i / n)); the first two thirds of the output blocks
(the i-th of n ranks 2 i / n). A block saves while the unit's weight is above its rank.
These are hook.py's lists for SD 1.x / 2.x (input 4, 5, 7, 8, 10, 11; output 0-7) and SDXL
(input 4, 5, 7, 8; output 0-5), and the same rule for other shapes.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import numpy as np

from gpustd import Tensor, concatenate, maximum, mean, sqrt, take_slice, var

from .reference_banks import ReferenceBanks

__all__ = ["ADAIN_EPS", "ReferenceAdaIN", "adain", "block_ranks"]

ADAIN_EPS = 1e-6  # hook.py's floor under the variances


def block_ranks(unet: Any) -> dict[tuple[str, int], float]:
    """{(kind, LDM index): rank} of the blocks reference_adain hooks on `unet` (a
    UNet2DConditionModel), as hook.py ranks them (see the module's docstring)."""
    index, inputs = 0, []
    for level, block in enumerate(unet.down_blocks):
        for _ in block.resnets:
            index += 1
            if level:
                inputs.append(index)
        if block.sampler() is not None:
            index += 1
    outputs = sum(len(block.resnets) for block in unet.up_blocks) * 2 // 3
    ranks = {("middle", 0): 0.0}
    ranks.update({("input", i): 2 * (1.0 - w / len(inputs)) for w, i in enumerate(inputs)})
    ranks.update({("output", w): 2 * w / outputs for w in range(outputs)})
    return ranks


def _moments(x: Tensor) -> tuple[Tensor, Tensor]:
    """(mean, variance) of x (B, C, h, w) over the picture, each (B, C, 1)."""
    flat = x.reshape(x.shape[0], x.shape[1], -1)
    return mean(flat, axis=2, keepdims=True), var(flat, axis=2, keepdims=True)


def adain(x: Tensor, means: list[Tensor], variances: list[Tensor], *, fidelity: float,
          uncond_rows: int) -> Tensor:
    """x (B, C, h, w) renormalized to the mean of `means` and of `variances` (each (B, C, 1),
    as `_moments` gives them); its first `uncond_rows` rows mix in x by `fidelity` (where it
    is above 1e-5). torch (hook.py): `var, mean = torch.var_mean(x, dim=(2, 3),
    keepdim=True, correction=0)`, `y = (x - mean) / std * std_acc + mean_acc`."""
    flat = x.reshape(x.shape[0], x.shape[1], -1)
    own_mean, own_var = _moments(x)
    saved_mean = sum(means[1:], means[0]) * np.float32(1.0 / len(means))
    saved_var = sum(variances[1:], variances[0]) * np.float32(1.0 / len(variances))
    eps = np.float32(ADAIN_EPS)
    out = ((flat - own_mean) / sqrt(maximum(own_var, eps)) * sqrt(maximum(saved_var, eps))
           + saved_mean)
    rows, batch = uncond_rows, x.shape[0]
    if rows and fidelity > 1e-5:
        mixed = (take_slice(flat, 0, rows) * np.float32(fidelity)
                 + take_slice(out, 0, rows) * np.float32(1.0 - fidelity))
        out = mixed if rows == batch else concatenate([mixed, take_slice(out, rows, batch)])
    return out.reshape(x.shape)


class _Block:
    """One hooked block's banks."""

    def __init__(self, rank: float) -> None:
        self.rank = rank
        self.means: list[Tensor] = []
        self.variances: list[Tensor] = []
        self.fidelities: list[float] = []

    def clear(self) -> None:
        self.means, self.variances, self.fidelities = [], [], []


class ReferenceAdaIN(ReferenceBanks):
    """reference_adain's banks on `unet`'s blocks (a UNet2DConditionModel: SD 1.x, 2.x,
    SDXL)."""

    def __init__(self, unet: Any) -> None:
        super().__init__()
        self.unet = unet
        self.blocks = {key: _Block(rank) for key, rank in block_ranks(unet).items()}

    @contextmanager
    def installed(self) -> Iterator[ReferenceAdaIN]:
        """The UNet's block outputs go through the banks inside the block."""
        self.unet.block_hook = self
        try:
            yield self
        finally:
            del self.unet.block_hook
            self.clear()

    def block_output(self, kind: str, index: int, h: Tensor) -> Tensor:
        block = self.blocks.get((kind, index))
        if block is None:
            return h
        if self.writing:
            if self.weight > block.rank:
                mean_of, var_of = _moments(h)
                block.means.append(mean_of)
                block.variances.append(var_of)
                block.fidelities.append(self.style_fidelity)
            return h
        if not block.means:
            return h
        fidelity = sum(block.fidelities) / len(block.fidelities)
        out = adain(h, block.means, block.variances, fidelity=fidelity,
                    uncond_rows=self.uncond_rows)
        block.clear()
        return out

    def clear(self) -> None:
        for block in self.blocks.values():
            block.clear()
