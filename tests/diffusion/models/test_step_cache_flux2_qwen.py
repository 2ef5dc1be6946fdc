"""First Block Cache on the FLUX.2 klein and Qwen-Image transformers over whole short Euler
runs on tiny random models: Qwen-Image against diffusers' own hook (`apply_first_block_cache`
takes its blocks), FLUX.2 against diffusers' model driven by hand with the hook's rule (the
hook registers FLUX.2's blocks but cannot run them: its single blocks return one joint text +
image stream, which the hook subtracts the head block's image tokens from). The same calls
computed and skipped, the same flows to float32 error."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import pytest

pytest.importorskip("diffusers", reason="diffusers is a test-only reference (extra: reference)")
import torch
from diffusers.hooks import FirstBlockCacheConfig, apply_first_block_cache
from diffusers.hooks import first_block_cache as diffusers_fbc
from diffusers.hooks.hooks import CacheContext, _set_cache_context
from flux2_tiny import FLUX2_TINY, tiny_flux2_transformer
from qwenimage_tiny import QWENIMAGE_TINY, tiny_qwenimage_transformer
from sd_tiny import state_dict
from support import assert_close

import gpucore
import gpustd
from diffusion.models.flux2 import Flux2Transformer2DModel
from diffusion.models.qwen_image import QwenImageTransformer2DModel
from diffusion.models.step_cache import FirstBlockCache

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


def _run(ours: Callable[[FirstBlockCache | None], Call], theirs: Call, start: np.ndarray,
         threshold: float, expected_decisions: list[bool]) -> None:
    """Ours uncached and cached against `theirs` (which fills `expected_decisions`): the
    same decisions, some skipped, the same flows, and the skips visibly matter."""
    uncached = _euler(ours(None), start)
    expected = _euler(theirs, start)
    cache = FirstBlockCache(threshold)
    call, decisions = ours(cache), []

    def recorded(x: np.ndarray, sigma: float) -> np.ndarray:
        before = cache.computed
        out = call(x, sigma)
        decisions.append(cache.computed > before)
        return out

    got = _euler(recorded, start)
    assert decisions == expected_decisions
    assert 0 < sum(decisions) < len(decisions)  # some calls skipped, some computed
    for ours_flow, their_flow in zip(got, expected, strict=True):
        assert_close(ours_flow, their_flow, tol=TOL)
    assert max(float(np.abs(a - b).max()) for a, b in zip(got, uncached, strict=True)) > 0.02


def test_first_block_cache_qwen_image_equals_diffusers(first_device: gpucore.Device,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    """One picture of 5 x 7 patches and 11 text tokens, every block through the cache."""
    threshold = 1.3  # a random tiny model's residuals move far more than a trained one's
    reference = tiny_qwenimage_transformer()
    ours = QwenImageTransformer2DModel(dict(reference.config), device=first_device)
    ours.load_state_dict(state_dict(reference))
    rng = np.random.default_rng(4)
    rows, columns = 5, 7
    text = rng.standard_normal((1, 11, QWENIMAGE_TINY["joint_attention_dim"])).astype(np.float32)
    start = rng.standard_normal((1, rows * columns, QWENIMAGE_TINY["in_channels"])).astype(
        np.float32)

    def mine(cache: FirstBlockCache | None) -> Call:
        def call(x: np.ndarray, sigma: float) -> np.ndarray:
            return ours(gpustd.asarray(x, device=first_device),
                        gpustd.asarray(text, device=first_device), np.array([sigma], np.float32),
                        rows, columns, cache=cache).numpy()
        return call

    expected_decisions: list[bool] = []
    original = diffusers_fbc.FBCHeadBlockHook._should_compute_remaining_blocks

    def spy(self: Any, residual: Any) -> bool:
        expected_decisions.append(original(self, residual))
        return expected_decisions[-1]

    monkeypatch.setattr(diffusers_fbc.FBCHeadBlockHook, "_should_compute_remaining_blocks", spy)
    apply_first_block_cache(reference, FirstBlockCacheConfig(threshold=threshold))
    _set_cache_context(reference, CacheContext("cond"))

    def theirs(x: np.ndarray, sigma: float) -> np.ndarray:
        with torch.no_grad():
            return reference(torch.from_numpy(x), torch.from_numpy(text), None,
                             torch.tensor([sigma]), [(1, rows, columns)]).sample.numpy()

    _run(mine, theirs, start, threshold, expected_decisions)


def _flux2_by_hand(reference: Any, threshold: float) -> list[bool]:
    """First Block Cache's rule laid over diffusers' FLUX.2 blocks by hand: the first double
    block decides from the image tokens' residual, the other blocks pass their input on when
    skipping, and the last single block adds the image tokens' tail residual of the last
    computed call (what diffusers' hook does for FLUX.1)."""
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
    return decisions


def test_first_block_cache_flux2(first_device: gpucore.Device) -> None:
    """One picture of 4 x 5 patches and 7 text tokens."""
    threshold = 1.2
    reference = tiny_flux2_transformer(config={"num_layers": 2, "num_single_layers": 2})
    ours = Flux2Transformer2DModel(dict(reference.config), device=first_device)
    ours.load_state_dict(state_dict(reference))
    rng = np.random.default_rng(3)
    text = rng.standard_normal((1, 7, FLUX2_TINY["joint_attention_dim"])).astype(np.float32)
    rows, cols = np.meshgrid(np.arange(4), np.arange(5), indexing="ij")
    zeros = np.zeros(20)
    img_ids = np.stack([zeros, rows.ravel(), cols.ravel(), zeros], axis=1).astype(np.int64)
    txt_ids = np.stack([np.zeros(7)] * 3 + [np.arange(7)], axis=1).astype(np.int64)
    start = rng.standard_normal((1, 20, FLUX2_TINY["in_channels"])).astype(np.float32)

    def mine(cache: FirstBlockCache | None) -> Call:
        def call(x: np.ndarray, sigma: float) -> np.ndarray:
            return ours(gpustd.asarray(x, device=first_device),
                        gpustd.asarray(text, device=first_device), [sigma], img_ids, txt_ids,
                        cache=cache).numpy()
        return call

    expected_decisions = _flux2_by_hand(reference, threshold)

    def theirs(x: np.ndarray, sigma: float) -> np.ndarray:
        with torch.no_grad():
            return reference(torch.from_numpy(x), torch.from_numpy(text), torch.tensor([sigma]),
                             torch.from_numpy(img_ids), torch.from_numpy(txt_ids)).sample.numpy()

    _run(mine, theirs, start, threshold, expected_decisions)
