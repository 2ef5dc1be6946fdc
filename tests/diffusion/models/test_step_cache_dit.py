"""First Block Cache on the Z-Image and Chroma transformers over whole short Euler runs on
tiny random models: Z-Image against diffusers' own hook (`apply_first_block_cache`, which
takes its `layers`; the hook asks each block for a `hidden_states` argument, which
ZImageTransformerBlock names `x`, so the test points it there), Chroma against diffusers'
model driven by hand with the hook's rule (the hook cannot take Chroma's blocks: they are
not in its block registry, and its single blocks return one joint text + image stream where
the rule needs the image tokens apart). The same calls computed and skipped, the same flows
to float32 error."""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest

pytest.importorskip("diffusers", reason="diffusers is a test-only reference (extra: reference)")
import diffusers
import torch
from diffusers.hooks import FirstBlockCacheConfig, apply_first_block_cache
from diffusers.hooks import first_block_cache as diffusers_fbc
from diffusers.hooks._helpers import TransformerBlockRegistry
from diffusers.hooks.hooks import CacheContext, _set_cache_context
from flow_tiny import CHROMA_TINY
from sd_tiny import randomized, state_dict
from support import assert_close
from zimage_tiny import ZIMAGE_TINY, tiny_zimage_transformer

import gpucore
import gpustd
from diffusion.models import ChromaTransformer2DModel
from diffusion.models.step_cache import FirstBlockCache
from diffusion.models.z_image import ZImageTransformer2DModel
from diffusion.pipelines.flow.flux import image_ids

TOL = 1e-3
STEPS = 10

Call = Callable[[np.ndarray, float], np.ndarray]


def _euler(call: Call, x: np.ndarray) -> list[np.ndarray]:
    """STEPS Euler steps from sigma 1 to 0; the flow of every call, in order."""
    sigmas = np.linspace(1.0, 0.0, STEPS + 1).astype(np.float32)
    flows = []
    for i in range(STEPS):
        flows.append(call(x, float(sigmas[i])))
        x = x + (sigmas[i + 1] - sigmas[i]) * flows[-1]
    return flows


def _counted(cache: FirstBlockCache, call: Call) -> tuple[Call, list[bool]]:
    """`call` recording, per call, whether the cache computed the blocks."""
    decisions: list[bool] = []

    def recorded(x: np.ndarray, sigma: float) -> np.ndarray:
        before = cache.computed
        out = call(x, sigma)
        decisions.append(cache.computed > before)
        return out

    return recorded, decisions


def _check(got: list[np.ndarray], expected: list[np.ndarray], uncached: list[np.ndarray],
           decisions: list[bool], expected_decisions: list[bool]) -> None:
    assert decisions == expected_decisions
    assert 0 < sum(decisions) < len(decisions)  # some calls skipped, some computed
    for ours_flow, their_flow in zip(got, expected, strict=True):
        assert_close(ours_flow, their_flow, tol=TOL)
    # the skips visibly change the flows (else the comparison would prove nothing)
    assert max(float(np.abs(a - b).max()) for a, b in zip(got, uncached, strict=True)) > 0.02


def test_first_block_cache_zimage_equals_diffusers(first_device: gpucore.Device,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    """One picture of 6 x 10 latents and a 9-token caption: the refiners always run, the
    joint `layers` through the cache (diffusers' hook takes `layers`, not the refiners)."""
    threshold = 1.4  # a random tiny model's residuals move far more than a trained one's
    reference = tiny_zimage_transformer()
    ours = ZImageTransformer2DModel(dict(reference.config), device=first_device)
    ours.load_state_dict(state_dict(reference))
    rng = np.random.default_rng(5)
    caption = rng.standard_normal((9, ZIMAGE_TINY["cap_feat_dim"])).astype(np.float32)
    start = rng.standard_normal((1, ZIMAGE_TINY["in_channels"], 6, 10)).astype(np.float32)

    def theirs(x: np.ndarray, sigma: float) -> np.ndarray:
        with torch.no_grad():
            out = reference([torch.from_numpy(x[0, :, None])],
                            torch.tensor([1.0 - sigma]), [torch.from_numpy(caption)]).sample
        return out[0][:, 0].numpy()[None]

    def mine(cache: FirstBlockCache | None) -> Call:
        def call(x: np.ndarray, sigma: float) -> np.ndarray:
            return ours(gpustd.asarray(x, device=first_device),
                        np.array([1.0 - sigma], np.float32),
                        [gpustd.asarray(caption, device=first_device)], cache=cache).numpy()
        return call

    uncached = _euler(mine(None), start)
    expected_decisions: list[bool] = []
    original = diffusers_fbc.FBCHeadBlockHook._should_compute_remaining_blocks

    def spy(self: Any, residual: Any) -> bool:
        expected_decisions.append(original(self, residual))
        return expected_decisions[-1]

    monkeypatch.setattr(diffusers_fbc.FBCHeadBlockHook, "_should_compute_remaining_blocks", spy)
    block = type(reference.layers[0])
    arguments = list(inspect.signature(block.forward).parameters)[1:]
    indices = {name: i for i, name in enumerate(arguments)}
    monkeypatch.setattr(TransformerBlockRegistry.get(block), "_cached_parameter_indices",
                        {**indices, "hidden_states": indices["x"]})
    apply_first_block_cache(reference, FirstBlockCacheConfig(threshold=threshold))
    _set_cache_context(reference, CacheContext("cond"))
    expected = _euler(theirs, start)
    cache = FirstBlockCache(threshold)
    recorded, decisions = _counted(cache, mine(cache))
    _check(_euler(recorded, start), expected, uncached, decisions, expected_decisions)


def test_first_block_cache_zimage_batch_decides_once(first_device: gpucore.Device) -> None:
    """Two pictures (CFG's rows) in one call: one decision over both pictures' tokens, and
    each picture's output is its own uncached one where the call computes."""
    reference = tiny_zimage_transformer()
    ours = ZImageTransformer2DModel(dict(reference.config), device=first_device)
    ours.load_state_dict(state_dict(reference))
    rng = np.random.default_rng(6)
    captions = [gpustd.asarray(rng.standard_normal((n, ZIMAGE_TINY["cap_feat_dim"]))
                               .astype(np.float32), device=first_device) for n in (9, 40)]
    latents = gpustd.asarray(rng.standard_normal((2, ZIMAGE_TINY["in_channels"], 6, 10))
                             .astype(np.float32), device=first_device)
    t = np.array([0.2, 0.2], np.float32)
    plain = ours(latents, t, captions).numpy()
    cache = FirstBlockCache(0.5)
    first = ours(latents, t, captions, cache=cache).numpy()
    again = ours(latents, t, captions, cache=cache).numpy()  # same input: no change, a skip
    assert (cache.calls, cache.computed) == (2, 1)
    assert_close(first, plain, tol=TOL)
    assert_close(again, plain, tol=TOL)  # the cached residual of the same input


def _chroma_by_hand(reference: Any, threshold: float) -> tuple[Call, list[bool]]:
    """diffusers' Chroma model with First Block Cache's rule laid over its blocks by hand:
    the first double block decides from the image tokens' residual, the other blocks pass
    their input on when skipping, and the last single block adds the image tokens' tail
    residual of the last computed call (what diffusers' hook does for FLUX)."""
    state: dict[str, Any] = {}
    decisions: list[bool] = []
    first, *doubles = reference.transformer_blocks
    *singles, last = reference.single_transformer_blocks

    def head(original: Callable[..., Any]) -> Callable[..., Any]:
        def forward(*args: Any, **kwargs: Any) -> Any:
            text, image = original(*args, **kwargs)
            residual = image - kwargs["hidden_states"]
            previous = state.get("residual")
            state["compute"] = previous is None or float(
                (residual - previous).abs().mean() / previous.abs().mean()) > threshold
            decisions.append(state["compute"])
            if state["compute"]:
                state.update(residual=residual, head=image)
            state["length"] = text.shape[1]
            return text, image
        return forward

    def middle(original: Callable[..., Any], pair: bool) -> Callable[..., Any]:
        def forward(*args: Any, **kwargs: Any) -> Any:
            if state["compute"]:
                return original(*args, **kwargs)
            if pair:
                return kwargs["encoder_hidden_states"], kwargs["hidden_states"]
            return kwargs["hidden_states"]
        return forward

    def tail(original: Callable[..., Any]) -> Callable[..., Any]:
        def forward(*args: Any, **kwargs: Any) -> Any:
            length = state["length"]
            if state["compute"]:
                out = original(*args, **kwargs)
                state["tail"] = out[:, length:] - state["head"]
                return out
            x = kwargs["hidden_states"]
            return torch.cat([x[:, :length], x[:, length:] + state["tail"]], dim=1)
        return forward

    first.forward = head(first.forward)
    for block in doubles:
        block.forward = middle(block.forward, True)
    for block in singles:
        block.forward = middle(block.forward, False)
    last.forward = tail(last.forward)
    return reference, decisions


def test_first_block_cache_chroma(first_device: gpucore.Device) -> None:
    threshold = 0.8
    reference = randomized(diffusers.ChromaTransformer2DModel(**CHROMA_TINY), 7)
    ours = ChromaTransformer2DModel(dict(reference.config), device=first_device)
    ours.load_state_dict(state_dict(reference))
    rng = np.random.default_rng(3)
    text = 3 * rng.standard_normal((1, 7, 32)).astype(np.float32)
    img_ids, txt_ids = image_ids(4, 5), np.zeros((7, 3), np.float32)
    start = rng.standard_normal((1, 20, 16)).astype(np.float32)  # 4 x 5 patches

    def mine(cache: FirstBlockCache | None) -> Call:
        def call(x: np.ndarray, sigma: float) -> np.ndarray:
            return ours(gpustd.asarray(x, device=first_device),
                        gpustd.asarray(text, device=first_device), [sigma], img_ids, txt_ids,
                        cache=cache).numpy()
        return call

    uncached = _euler(mine(None), start)
    model, expected_decisions = _chroma_by_hand(reference, threshold)

    def theirs(x: np.ndarray, sigma: float) -> np.ndarray:
        with torch.no_grad():
            return model(torch.from_numpy(x), torch.from_numpy(text), torch.tensor([sigma]),
                         torch.from_numpy(img_ids), torch.from_numpy(txt_ids)).sample.numpy()

    expected = _euler(theirs, start)
    cache = FirstBlockCache(threshold)
    recorded, decisions = _counted(cache, mine(cache))
    _check(_euler(recorded, start), expected, uncached, decisions, expected_decisions)
