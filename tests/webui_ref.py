"""References the tests write out from the WebUI's and diffusers' own code, shared where
several tests need them: the WebUI's noise slerp (`modules/rng.py`); diffusers' First Block
Cache hook put on a transformer for one call and taken off again, and what a cached picture's
infotext must say."""

from __future__ import annotations

import contextlib
import re
from collections.abc import Iterator
from typing import Any


def webui_slerp(val: float, low: Any, high: Any) -> Any:
    """The WebUI's `modules/rng.slerp` on torch tensors, as it is written there."""
    import torch

    low_norm = low / torch.norm(low, dim=1, keepdim=True)
    high_norm = high / torch.norm(high, dim=1, keepdim=True)
    dot = (low_norm * high_norm).sum(1)
    if dot.mean() > 0.9995:
        return low * val + high * (1 - val)
    omega = torch.acos(dot)
    so = torch.sin(omega)
    return ((torch.sin((1.0 - val) * omega) / so).unsqueeze(1) * low
            + (torch.sin(val * omega) / so).unsqueeze(1) * high)


@contextlib.contextmanager
def first_block_cache(transformer: Any, threshold: float) -> Iterator[None]:
    """diffusers' First Block Cache (`apply_first_block_cache`) on `transformer` in the "cond"
    cache context within the block (pipelines that set no context of their own), removed after
    it so that the module's other tests run it plain."""
    from diffusers.hooks import FirstBlockCacheConfig, HookRegistry, apply_first_block_cache
    from diffusers.hooks import first_block_cache as diffusers_fbc
    from diffusers.hooks.hooks import CacheContext, _set_cache_context

    apply_first_block_cache(transformer, FirstBlockCacheConfig(threshold=threshold))
    _set_cache_context(transformer, CacheContext("cond"))
    try:
        yield
    finally:
        registry = HookRegistry.check_if_exists_or_initialize(transformer)
        for name in (diffusers_fbc._FBC_LEADER_BLOCK_HOOK, diffusers_fbc._FBC_BLOCK_HOOK):
            registry.remove_hook(name, recurse=True)


def assert_steps_skipped(text: str, threshold: float, steps: int) -> None:
    """The infotext `text` says First Block Cache at `threshold` computed some, not all, of
    `steps` steps."""
    computed = re.search(rf'Cache: "fbc {threshold:g}, (\d+)/{steps} steps computed"', text)
    assert computed is not None, text
    assert 1 <= int(computed.group(1)) < steps, text  # some steps skipped
