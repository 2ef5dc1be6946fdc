"""Step caching for Wan (`models.step_cache`): the setting as the CLI and the server give it,
and each branch's cache with TeaCache4Wan2.1's polynomial for a transformer (its retention
mode's, "teacache-ret", measuring the time embedding's projection)."""

from __future__ import annotations

from typing import Any

from gpustd import Tensor, nn

from ...models.step_cache import (
    CACHE_KINDS,
    TEACACHE_WAN_COEFFICIENTS,
    TEACACHE_WAN_RET_COEFFICIENTS,
    BranchCache,
    CacheSpec,
    StepCache,
)

__all__ = ["teacache_coefficients", "video_cache", "wan_branch"]

_TEACACHE_DEFAULT = 0.2  # TeaCache4Wan2.1's default (either mode), not FLUX's 0.4


def video_cache(text: str | None, name: str = "cache", steps: int = 1) -> StepCache | None:
    """A step cache for a Wan run of `steps` from `text` ("fbc:0.12", "fbc", "teacache:0.1",
    "teacache" (0.2), "teacache-ret:0.1" / "teacache-ret" (0.2): TeaCache's retention mode,
    None / "none": off); ValueError in one line for anything else (`name`: the setting's;
    MagCache's table is FLUX's)."""
    kind, colon, value = str(text).strip().lower().partition(":")
    if kind not in ("", "none", "off", "fbc", "teacache", "teacache-ret"):
        # refused here: CacheSpec's own message offers MagCache and FLUX's TeaCache default
        why = f"{kind}'s table is FLUX's" if kind in CACHE_KINDS else "none: off"
        raise ValueError(f"{name} {text}: Wan runs First Block Cache (fbc[:THRESHOLD], e.g. "
                         f"fbc:0.12) or TeaCache (teacache:0.2, or its retention mode "
                         f"teacache-ret:0.2); {why}")
    if kind == "teacache-ret":
        threshold = CacheSpec.parse(f"teacache:{value}").threshold if colon else None
        return StepCache(CacheSpec(kind, _TEACACHE_DEFAULT if threshold is None
                                   else threshold), steps)
    spec = CacheSpec.of(text)
    if spec is not None and kind == "teacache" and not colon:
        spec = CacheSpec("teacache", _TEACACHE_DEFAULT)
    return None if spec is None else StepCache(spec, steps)


def teacache_coefficients(config: dict[str, Any], height: int, width: int, *,
                          retention: bool = False) -> tuple[float, ...]:
    """TeaCache4Wan2.1's polynomial for a Wan 2.1 transformer `config` (`retention`: its
    `--use_ret_steps` table): text-to-video 14B (5120 wide) or 1.3B (narrower);
    image-to-video 14B's 480P table up to 832 x 480 pixels, its 720P table above."""
    tables = TEACACHE_WAN_RET_COEFFICIENTS if retention else TEACACHE_WAN_COEFFICIENTS
    if config["image_dim"] is not None:
        return tables["i2v-480P" if height * width <= 832 * 480 else "i2v-720P"]
    wide = config["num_attention_heads"] * config["attention_head_dim"] >= 5120
    return tables["t2v-14B" if wide else "t2v-1.3B"]


def wan_branch(cache: StepCache, model: Any, height: int, width: int) -> BranchCache:
    """A branch of `cache` for the Wan transformer `model` making height x width videos:
    TeaCache with its Wan polynomial (retention mode: the embedding's projection measured,
    the blocks' modulation `condition_embedder.time_proj(silu(temb))` as TeaCache4Wan2.1's
    e0), else the setting's own."""
    kind = cache.spec.kind
    if kind not in ("teacache", "teacache-ret"):
        return cache.branch()
    retention = kind == "teacache-ret"

    def projection(temb: Tensor) -> Tensor:
        return model.condition_embedder.time_proj(nn.silu(temb))  # type: ignore[no-any-return]

    return cache.branch(coefficients=teacache_coefficients(model.config, height, width,
                                                           retention=retention),
                        measure=projection if retention else None)
