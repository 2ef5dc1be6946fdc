"""Wan VAE files as ComfyUI users have them, written by the bench and the tests: a diffusers
AutoencoderKLWan state dict in Wan's original names (`wan_2.1_vae.safetensors`,
`wan2.2_vae.safetensors`), the inverse of diffusion.loaders.wan.vae_file's key map."""

from __future__ import annotations

from typing import Any

__all__ = ["vae_original_names"]

_VAE_RESIDUAL = {"norm1": "residual.0", "conv1": "residual.2", "norm2": "residual.3",
                 "conv2": "residual.6", "conv_shortcut": "shortcut"}
_VAE_TOP = {"quant_conv": "conv1", "post_quant_conv": "conv2", "conv_in": "conv1",
            "norm_out": "head.0", "conv_out": "head.2"}
_VAE_MIDDLE = {"resnets.0": "0", "attentions.0": "1", "resnets.1": "2"}


def _vae_residual(tail: str) -> str:
    layer, _, rest = tail.partition(".")
    return f"{_VAE_RESIDUAL.get(layer, layer)}.{rest}"


def _vae22_level(parts: list[str], num_res_blocks: int) -> str:
    """Wan 2.2's name of a residual down / up block's tensor: the level's own list holds its
    residual blocks, then its resample (the inverse of the conversion script's
    convert_vae_22)."""
    side, level, kind = parts[0], parts[2], parts[3]
    outer = "downsamples" if side == "encoder" else "upsamples"
    head = f"{side}.{outer}.{level}.{outer}"
    if kind == "resnets":
        return f"{head}.{parts[4]}." + _vae_residual(".".join(parts[5:]))
    resample = num_res_blocks + (side == "decoder")  # the decoder's levels: one block more
    return f"{head}.{resample}." + ".".join(parts[4:])


def vae_original_names(state: dict[str, Any], num_res_blocks: int, *, wan22: bool = False
                       ) -> dict[str, Any]:
    """A diffusers AutoencoderKLWan state dict in Wan's original VAE names: Wan 2.1's (the
    inverse of diffusers' convert_wan_vae_to_diffusers), or `wan22`: Wan 2.2's
    (wan2.2_vae.safetensors, its levels nested)."""
    out = {}
    for key, value in state.items():
        parts = key.split(".")
        if wan22 and parts[1] in ("down_blocks", "up_blocks"):
            name = _vae22_level(parts, num_res_blocks)
        elif parts[0] in _VAE_TOP:
            name = f"{_VAE_TOP[parts[0]]}.{parts[1]}"
        elif parts[1] in _VAE_TOP:
            name = f"{parts[0]}.{_VAE_TOP[parts[1]]}.{parts[2]}"
        elif parts[1] == "mid_block":
            index = _VAE_MIDDLE[".".join(parts[2:4])]
            tail = ".".join(parts[4:])
            name = f"{parts[0]}.middle.{index}." + (tail if index == "1" else
                                                     _vae_residual(tail))
        elif parts[1] == "down_blocks":
            name = f"encoder.downsamples.{parts[2]}." + _vae_residual(".".join(parts[3:]))
        else:  # decoder.up_blocks.L.resnets.J... / decoder.up_blocks.L.upsamplers.0...
            first = int(parts[2]) * (num_res_blocks + 2)
            if parts[3] == "resnets":
                name = f"decoder.upsamples.{first + int(parts[4])}." + _vae_residual(
                    ".".join(parts[5:]))
            else:
                name = f"decoder.upsamples.{first + num_res_blocks + 1}." + ".".join(parts[5:])
        out[name] = value
    assert len(out) == len(state)
    return out
