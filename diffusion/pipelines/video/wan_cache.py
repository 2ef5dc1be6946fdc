"""Step caching for Wan (`models.step_cache`): the setting as the CLI and the server give it,
and TeaCache4Wan2.1's polynomial for a transformer."""

from __future__ import annotations

from typing import Any

from ...models.step_cache import TEACACHE_WAN_COEFFICIENTS, CacheSpec, StepCache

__all__ = ["teacache_coefficients", "video_cache"]


def video_cache(text: str | None, name: str = "cache", steps: int = 1) -> StepCache | None:
    """A step cache for a Wan run of `steps` from `text` ("fbc:0.12", "fbc", "teacache:0.1",
    "teacache" (0.2), None / "none": off); ValueError in one line for anything else (`name`:
    the setting's; MagCache's table is FLUX's)."""
    spec = CacheSpec.of(text)
    if spec is not None and str(text).strip().lower() == "teacache":
        spec = CacheSpec("teacache", 0.2)  # TeaCache4Wan2.1's default, not FLUX's 0.4
    if spec is not None and spec.kind not in ("fbc", "teacache"):
        raise ValueError(f"{name} {text}: Wan runs First Block Cache (fbc[:THRESHOLD], e.g. "
                         f"fbc:0.12) or TeaCache (teacache:0.2); {spec.kind}'s table is FLUX's")
    return None if spec is None else StepCache(spec, steps)


def teacache_coefficients(config: dict[str, Any], height: int, width: int
                          ) -> tuple[float, ...]:
    """TeaCache4Wan2.1's polynomial for a Wan 2.1 transformer `config`: text-to-video 14B (5120
    wide) or 1.3B (narrower); image-to-video 14B's 480P table up to 832 x 480 pixels, its 720P
    table above."""
    if config["image_dim"] is not None:
        return TEACACHE_WAN_COEFFICIENTS["i2v-480P" if height * width <= 832 * 480
                                         else "i2v-720P"]
    wide = config["num_attention_heads"] * config["attention_head_dim"] >= 5120
    return TEACACHE_WAN_COEFFICIENTS["t2v-14B" if wide else "t2v-1.3B"]
