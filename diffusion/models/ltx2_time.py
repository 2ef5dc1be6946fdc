"""LTX-2's time conditioning (diffusers' `LTX2AdaLayerNormSingle`, transformer_ltx2.py): a
timestep's 256 sinusoids through a two-layer MLP (the embedded timestep), then
linear(silu(embedded)) into k modulation vectors; and the runs of tokens that share one
timestep (per-token timesteps: image-to-video's given frame at 0), each embedded once."""

from __future__ import annotations

import itertools
from typing import Any

import numpy as np

from gpustd import Tensor, nn

from .dit_layers import TimestepEmbedding
from .layers import Place

__all__ = ["AdaLayerNormSingle", "timestep_runs"]


class _Embeddings(nn.Module):
    """`emb`: its timestep_embedder (linear_1, SiLU, linear_2). diffusers:
    `PixArtAlphaCombinedTimestepSizeEmbeddings(use_additional_conditions=False)`."""

    def __init__(self, dim: int, place: Place) -> None:
        self.timestep_embedder = TimestepEmbedding(256, dim, place)


class AdaLayerNormSingle(nn.Module):
    """(linear(silu(e)) (N, count * dim), e (N, dim)) of N timesteps, e their embedding.
    diffusers: `LTX2AdaLayerNormSingle(dim, num_mod_params=count)`."""

    def __init__(self, dim: int, count: int, place: Place) -> None:
        self.dtype = place["dtype"]
        self.emb = _Embeddings(dim, place)
        self.linear = nn.Linear(dim, count * dim, **place)

    def forward(self, timesteps: np.ndarray, device: Any) -> tuple[Tensor, Tensor]:
        """timesteps: (N,) host numbers, already scaled as the model wants (0..1000)."""
        sinusoids = nn.timestep_embedding(np.asarray(timesteps, np.float32).reshape(-1), 256,
                                          flip_sin_to_cos=True, downscale_freq_shift=0,
                                          dtype=self.dtype, device=device)
        embedded = self.emb.timestep_embedder(sinusoids)
        return self.linear(nn.silu(embedded)), embedded


def timestep_runs(steps: Any, batch: int, length: int, name: str
                  ) -> list[tuple[int, int, np.ndarray]]:
    """(start, stop, the batch's timesteps (B,)) of each run of tokens sharing them: steps
    (B,) or (B, 1) one run over all `length` tokens, (B, length) one per token (equal
    neighbours merged). A clear ValueError for any other shape."""
    values = np.asarray(steps, np.float32)
    if values.ndim == 0:
        values = np.full((batch,), values, np.float32)
    if values.ndim == 2 and values.shape[1] == 1:
        values = values[:, 0]
    if values.ndim == 1 and values.shape[0] == batch:
        return [(0, length, values)]
    if values.shape != (batch, length):
        raise ValueError(f"{name} must be (batch,) or (batch, {length} tokens), got shape "
                         f"{values.shape}")
    cuts = [0] + [i for i in range(1, length)
                  if not np.array_equal(values[:, i], values[:, i - 1])] + [length]
    return [(start, stop, values[:, start]) for start, stop in itertools.pairwise(cuts)]
