"""First Block Cache on the Z-Image Omni transformer over a whole short Euler run on a tiny
random model, against diffusers' own hook (`apply_first_block_cache`, which takes the main
`layers` and not the noise, context or SigLIP refiners; its blocks' `hidden_states` pointed at
their `x`, as for Z-Image) on diffusers' ZImageTransformer2DModel in its omni mode: the same
calls computed and skipped, the same flows to float32 error."""

from __future__ import annotations

import inspect

import numpy as np
import pytest

pytest.importorskip("diffusers", reason="diffusers is a test-only reference (extra: reference)")
import torch
from diffusers.hooks import FirstBlockCacheConfig, apply_first_block_cache
from diffusers.hooks._helpers import TransformerBlockRegistry
from diffusers.hooks.hooks import CacheContext, _set_cache_context
from first_block_cache_ref import Call, cache_run, diffusers_decisions, largest_change
from sd_tiny import ported
from support import assert_close
from zimage_tiny import ZIMAGE_OMNI_TINY, tiny_zimage_omni_transformer

import gpucore
import gpustd
from diffusion.models.step_cache import FirstBlockCache
from diffusion.models.z_image_omni import ZImageOmniTransformer2DModel

TOL = 1e-4  # float32 over ten steps: measured 4e-5 at most, of flows up to 8
CHANNELS, CAP = ZIMAGE_OMNI_TINY["in_channels"], ZIMAGE_OMNI_TINY["cap_feat_dim"]


def test_first_block_cache_omni_equals_diffusers(first_device: gpucore.Device,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    """CFG's two rows in one call (a prompt and a negative prompt, their caption pieces of
    different lengths that pad alike, so diffusers' batch adds no padding) beside one
    condition picture (4 x 6 latents, a 3 x 4 SigLIP grid), targets of 6 x 8 latents: one
    decision a call over both rows' whole sequences, as diffusers' batch makes it."""
    threshold = 0.9  # a random tiny model's residuals move far more than a trained one's
    reference = tiny_zimage_omni_transformer()
    ours = ported(ZImageOmniTransformer2DModel, reference, first_device)
    rng = np.random.default_rng(11)
    condition = rng.standard_normal((1, CHANNELS, 4, 6)).astype(np.float32)
    siglip = rng.standard_normal((3, 4, ZIMAGE_OMNI_TINY["siglip_feat_dim"])).astype(np.float32)
    captions = [[rng.standard_normal((n, CAP)).astype(np.float32) for n in lengths]
                for lengths in ((5, 12, 4), (9, 3, 7))]
    start = rng.standard_normal((2, CHANNELS, 6, 8)).astype(np.float32)

    def theirs(x: np.ndarray, sigma: float) -> np.ndarray:
        with torch.no_grad():
            out = reference(
                x=[[torch.from_numpy(condition[0][:, None]), torch.from_numpy(row[:, None])]
                   for row in x],
                t=torch.full((2,), 1.0 - sigma), cap_feats=[
                    [torch.from_numpy(p) for p in c] for c in captions],
                siglip_feats=[[torch.from_numpy(siglip), None]] * 2,
                image_noise_mask=[[0, 1]] * 2, return_dict=False)[0]
        return torch.stack(out).squeeze(2).numpy()

    pieces = [[gpustd.asarray(p, device=first_device) for p in c] for c in captions]
    conditions = [gpustd.asarray(condition, device=first_device)]
    features = [gpustd.asarray(siglip, device=first_device)]

    def mine(cache: FirstBlockCache | None) -> Call:
        def call(x: np.ndarray, sigma: float) -> np.ndarray:
            return ours(gpustd.asarray(x, device=first_device),
                        np.full(2, 1.0 - sigma, np.float32), pieces, conditions, features,
                        cache=cache).numpy()
        return call

    expected_decisions = diffusers_decisions(monkeypatch)
    block = type(reference.layers[0])
    arguments = list(inspect.signature(block.forward).parameters)[1:]
    indices = {name: i for i, name in enumerate(arguments)}
    monkeypatch.setattr(TransformerBlockRegistry.get(block), "_cached_parameter_indices",
                        {**indices, "hidden_states": indices["x"]})
    apply_first_block_cache(reference, FirstBlockCacheConfig(threshold=threshold))
    _set_cache_context(reference, CacheContext("cond"))
    run = cache_run(mine, theirs, start, threshold)
    assert run.decisions == expected_decisions
    assert 0 < sum(run.decisions) < len(run.decisions)  # some calls skipped, some computed
    for ours_flow, their_flow in zip(run.got, run.expected, strict=True):
        assert_close(ours_flow, their_flow, tol=TOL)
    assert largest_change(run.got, run.uncached) > 0.02  # the skips visibly change the flows
