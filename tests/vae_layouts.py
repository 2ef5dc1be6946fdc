"""VAE files as the new families' users download them, written from diffusers VAEs: FLUX's
`ae.safetensors` (the LDM names, Z-Image's VAE), FLUX.2's `flux2-vae.safetensors` (the LDM
names with the quant convolutions inside encoder and decoder and the batch norm's
statistics) and Qwen-Image's `qwen_image_vae.safetensors` (Wan 2.1's original names: the
inverse of diffusers' convert_wan_vae_to_diffusers, for any depth)."""

from __future__ import annotations

import re
from typing import Any

from ldm_files import ldm_vae


def _state(vae: Any) -> dict[str, Any]:
    return {k: v.detach().clone().contiguous() for k, v in vae.state_dict().items()
            if not k.endswith("num_batches_tracked")}


def flux_ae(vae: Any) -> dict[str, Any]:
    """An AutoencoderKL's tensors under Black Forest Labs' (LDM's) bare names."""
    return {k.removeprefix("first_stage_model."): v for k, v in ldm_vae(_state(vae)).items()}


def flux2_ae(vae: Any) -> dict[str, Any]:
    """An AutoencoderKLFlux2's tensors as flux2-vae.safetensors holds them."""
    out = {}
    for key, value in flux_ae(vae).items():
        key = re.sub(r"^quant_conv\.", "encoder.quant_conv.", key)
        out[re.sub(r"^post_quant_conv\.", "decoder.post_quant_conv.", key)] = value
    return out


_ENDS = {"conv_in": "conv1", "norm_out": "head.0", "conv_out": "head.2"}
_RESNET = {"norm1": "residual.0", "conv1": "residual.2", "norm2": "residual.3",
           "conv2": "residual.6", "conv_shortcut": "shortcut"}


def _resnet(rest: str) -> str:
    head, _, tail = rest.partition(".")
    return f"{_RESNET.get(head, head)}.{tail}"


def wan_original(vae: Any, num_res_blocks: int) -> dict[str, Any]:
    """An AutoencoderKLQwenImage's tensors under Wan 2.1's original names."""
    per = num_res_blocks + 2  # a decoder level: its resnets and one upsampler
    out = {}
    for key, value in _state(vae).items():
        if m := re.fullmatch(r"(post_)?quant_conv\.(\w+)", key):
            key = f"conv{2 if m[1] else 1}.{m[2]}"
        elif m := re.fullmatch(r"(encoder|decoder)\.(conv_in|norm_out|conv_out)\.(\w+)", key):
            key = f"{m[1]}.{_ENDS[m[2]]}.{m[3]}"
        elif m := re.fullmatch(r"(encoder|decoder)\.mid_block\.resnets\.(\d)\.(.+)", key):
            key = f"{m[1]}.middle.{2 * int(m[2])}.{_resnet(m[3])}"
        elif m := re.fullmatch(r"(encoder|decoder)\.mid_block\.attentions\.0\.(.+)", key):
            key = f"{m[1]}.middle.1.{m[2]}"
        elif m := re.fullmatch(r"encoder\.down_blocks\.(\d+)\.(.+)", key):
            key = f"encoder.downsamples.{m[1]}.{_resnet(m[2])}"
        elif m := re.fullmatch(r"decoder\.up_blocks\.(\d+)\.resnets\.(\d+)\.(.+)", key):
            key = f"decoder.upsamples.{int(m[1]) * per + int(m[2])}.{_resnet(m[3])}"
        elif m := re.fullmatch(r"decoder\.up_blocks\.(\d+)\.upsamplers\.0\.(.+)", key):
            key = f"decoder.upsamples.{int(m[1]) * per + num_res_blocks + 1}.{m[2]}"
        else:
            raise AssertionError(key)
        out[key] = value
    return out
