"""The LLM text encoder's rotary frequencies (llm.py): a config's rotary base and scaling
for each layer type, and the inverse frequencies that scaling gives. transformers:
`ROPE_INIT_FUNCTIONS` ("default", "linear", "llama3", "yarn"; Qwen's "mrope" is the default
rotation for text alone)."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

__all__ = ["RopeScaling", "interleaved_partial", "rope_parameters", "rotary_dim",
           "scaled_frequencies"]


@dataclass(frozen=True)
class RopeScaling:
    """How a rope type changes the frequencies: "default" not at all, "linear" divides them
    by `factor`; "llama3" (Llama 3.1) divides wavelengths past original / low_freq_factor by
    it, keeps those under original / high_freq_factor and blends between; "yarn" blends
    each frequency and itself divided by `factor` along a ramp over the dimensions between
    `beta_fast` and `beta_slow` rotations in the original context, and scales cos and sin by
    `attention`."""

    kind: str = "default"
    factor: float = 1.0
    low_freq_factor: float = 1.0
    high_freq_factor: float = 1.0
    original: float = 0.0  # original_max_position_embeddings
    beta_fast: float = 32.0
    beta_slow: float = 1.0
    truncate: bool = True
    attention: float = 1.0  # cos and sin times this (YaRN's attention factor)


def _yarn(params: dict[str, Any], cfg: dict[str, Any]) -> RopeScaling:
    """YaRN's scaling; its attention factor as transformers infers it where the config has
    none (0.1 ln(factor) + 1, or the ratio of that with `mscale` and `mscale_all_dim`)."""
    if float(params.get("partial_rotary_factor", 1.0)) != 1.0:
        raise ValueError("a partial rotary embedding (partial_rotary_factor) is not supported "
                         "by this text encoder")
    if not params.get("original_max_position_embeddings"):
        raise ValueError("a 'yarn' rope needs original_max_position_embeddings in the config's "
                         "rope_parameters (the context the model was trained at)")
    original = float(params["original_max_position_embeddings"])
    factor = float(params.get("factor") or cfg["max_position_embeddings"] / original)

    def mscale(scale: float = 1.0) -> float:
        return 1.0 if factor <= 1 else 0.1 * scale * math.log(factor) + 1.0

    attention = params.get("attention_factor")
    if attention is None:
        both = params.get("mscale") and params.get("mscale_all_dim")
        attention = (mscale(params["mscale"]) / mscale(params["mscale_all_dim"]) if both
                     else mscale())
    return RopeScaling("yarn", factor, original=original,
                       beta_fast=float(params.get("beta_fast") or 32),
                       beta_slow=float(params.get("beta_slow") or 1),
                       truncate=bool(params.get("truncate", True)), attention=float(attention))


def rope_parameters(cfg: dict[str, Any], layer_type: str) -> tuple[float, RopeScaling]:
    """(rotary base, scaling) of a layer type's rotary embedding: transformers 5 nests them in
    `rope_parameters` (Gemma 3 one entry per layer type), older configs give `rope_theta` /
    `rope_local_base_freq` and `rope_scaling` (Gemma 3: the global layers'); another scaled
    rope type (dynamic, longrope, ...) is refused in one line."""
    params = cfg.get("rope_parameters") or {}
    if isinstance(params.get(layer_type), dict):
        params = params[layer_type]
    elif not params and layer_type == "full_attention":
        params = cfg.get("rope_scaling") or {}
    if not params and layer_type == "sliding_attention" and cfg.get("rope_local_base_freq"):
        params = {"rope_theta": cfg["rope_local_base_freq"]}
    kind = params.get("rope_type", params.get("type", "default"))
    if kind not in ("default", "mrope", "linear", "llama3", "yarn"):
        raise ValueError(f"rope type {kind!r} is not supported by this text encoder; it "
                         "implements the 'default', 'linear', 'llama3' and 'yarn' rotary "
                         "embeddings")
    theta = float(params.get("rope_theta", cfg["rope_theta"]))
    if kind == "llama3":
        return theta, RopeScaling("llama3", float(params["factor"]),
                                  float(params["low_freq_factor"]),
                                  float(params["high_freq_factor"]), float(params.get(
                                      "original_max_position_embeddings",
                                      cfg["max_position_embeddings"])))
    if kind == "yarn":
        return theta, _yarn(params, cfg)
    if kind == "linear":
        return theta, RopeScaling("linear", float(params.get("factor", 1.0)))
    return theta, RopeScaling()


def scaled_frequencies(theta: float, dim: int, scaling: RopeScaling) -> np.ndarray:
    """The inverse frequencies (dim / 2,) float32 of base `theta` over a head of `dim`, under
    `scaling`, in float32 as transformers computes them (`_compute_default_rope_parameters`,
    `_compute_llama3_parameters`, `_compute_yarn_parameters`)."""
    powers = np.float32(theta) ** (np.arange(0, dim, 2).astype(np.float32) / np.float32(dim))
    inv_freq = (np.float32(1.0) / powers).astype(np.float32)
    if scaling.kind == "yarn":
        return _yarn_frequencies(powers, dim, theta, scaling)
    if scaling.kind != "llama3":
        return (inv_freq / np.float32(scaling.factor)).astype(np.float32)
    factor, low, high, original = (np.float32(v) for v in (
        scaling.factor, scaling.low_freq_factor, scaling.high_freq_factor, scaling.original))
    wavelength = np.float32(2 * math.pi) / inv_freq
    scaled = np.where(wavelength > original / low, inv_freq / factor, inv_freq)
    smooth = (original / wavelength - low) / (high - low)
    blended = (1 - smooth) * scaled / factor + smooth * scaled
    between = (wavelength >= original / high) & (wavelength <= original / low)
    return np.where(between, blended, scaled).astype(np.float32)


def _yarn_frequencies(powers: np.ndarray, dim: int, theta: float,
                      scaling: RopeScaling) -> np.ndarray:
    """YaRN's blend: 1 / powers where a dimension turns more than beta_fast times in the
    original context, 1 / (factor * powers) where it turns fewer than beta_slow times, a
    linear ramp between."""
    def correction(rotations: float) -> float:
        return dim * math.log(scaling.original / (rotations * 2 * math.pi)) / (
            2 * math.log(theta))

    low, high = correction(scaling.beta_fast), correction(scaling.beta_slow)
    if scaling.truncate:
        low, high = math.floor(low), math.ceil(high)
    low, high = max(low, 0), min(high, dim - 1)
    if low == high:
        high += 0.001  # as transformers, against a division by zero
    ramp = np.clip((np.arange(dim // 2, dtype=np.float32) - np.float32(low))
                   / np.float32(high - low), 0, 1).astype(np.float32)
    extrapolated = 1 - ramp
    return ((np.float32(1.0) / (np.float32(scaling.factor) * powers)) * (1 - extrapolated)
            + (np.float32(1.0) / powers) * extrapolated).astype(np.float32)


def rotary_dim(cfg: dict[str, Any]) -> int:
    """The head dimensions a GLM rotates: head_dim times its partial_rotary_factor (in
    rope_parameters or the config itself; 0.5, GlmConfig's, where neither has it)."""
    params = cfg.get("rope_parameters") or {}
    factor = params.get("partial_rotary_factor", cfg.get("partial_rotary_factor", 0.5))
    dim = int(cfg["head_dim"] * float(factor))
    if dim <= 0 or dim % 2:
        raise ValueError(f"partial_rotary_factor {factor} of head_dim {cfg['head_dim']} must "
                         "leave an even, positive number of rotated dimensions")
    return dim


def interleaved_partial(angle: np.ndarray, dim: int) -> np.ndarray:
    """A GLM's angles (L, r / 2) as a table over a whole head (L, dim): each angle for its
    pair (2i, 2i + 1), then 0 (cos 1, sin 0: the dimensions passed through unturned).
    transformers: `apply_rotary_pos_emb`'s `cos[..., :r / 2].repeat_interleave(2)` on
    q[..., :r], the rest concatenated back."""
    table = np.zeros((angle.shape[0], dim), np.float32)
    table[:, :2 * angle.shape[1]] = np.repeat(angle, 2, axis=1)
    return table
