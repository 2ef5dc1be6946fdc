"""T2I-Adapter single files: TencentARC's original layout (`t2iadapter_canny_sd15v2.pth`,
`t2iadapter_sketch_sd14v1.pth`, `t2iadapter_color_sd14v1.pth`, ... as the ControlNet extension
loads them) and diffusers-named files without their config.json, as diffusers' names and
config (diffusion.models.t2i_adapter).

TencentARC's full `Adapter` keeps `conv_in` and one flat list `body.K` of nums_rb resnet blocks
per level (K = level * nums_rb + block); the released adapters build it with sk=True,
use_conv=False and ksize=1, which is diffusers' `FullAdapter` (scripts/
convert_original_t2i_adapter.py): `body.K.block1/2` -> `adapter.body.level.resnets.block.*`,
the first block's `in_conv` (where the width changes) -> `adapter.body.level.in_conv`. Its
`Adapter_light` (the color adapter) keeps `body.level.{in_conv, body.block.*, out_conv}`:
diffusers' `LightAdapter`. Other layouts (sk=False's `skep`, use_conv's `down_opt.op`, the style
adapter's transformer) are refused by name.
"""

from __future__ import annotations

import re
from typing import Any

from ..errors import WeightsError
from ..weights import TensorRef

__all__ = ["t2i_adapter_from_file"]

_FULL = re.compile(r"body\.(\d+)\.(in_conv|block1|block2)\.(weight|bias)")
_LIGHT = re.compile(r"body\.(\d+)\.(?:(in_conv|out_conv)|body\.(\d+)\.(block1|block2))"
                    r"\.(weight|bias)")


def _shape(refs: dict[str, TensorRef], key: str, where: str) -> tuple[int, ...]:
    if key not in refs:
        raise WeightsError(f"{where}: no tensor {key!r}: not a T2I-Adapter this program reads")
    return tuple(refs[key].shape)


def _levels(refs: dict[str, TensorRef], key: str) -> int:
    """How many numbered children `key` (a prefix ending in ".") has."""
    return 1 + max(int(k[len(key):].split(".")[0]) for k in refs if k.startswith(key))


def _diffusers_config(refs: dict[str, TensorRef], where: str) -> dict[str, Any]:
    """The config of a file under diffusers' names (adapter.*), read from its shapes. A full
    adapter whose conv_in reads 16x16 patches of 1 or 3 channels (256 or 768) is an SDXL one
    (full_adapter_xl), as TencentARC's SDXL adapters are."""
    light = "adapter.conv_in.weight" not in refs
    levels = _levels(refs, "adapter.body.")
    blocks = _levels(refs, "adapter.body.0.resnets.")
    if light:
        channels = [_shape(refs, f"adapter.body.{i}.out_conv.weight", where)[0]
                    for i in range(levels - 1)]
        cin = _shape(refs, "adapter.body.0.in_conv.weight", where)[1]
        return {"adapter_type": "light_adapter", "in_channels": cin // 64,
                "channels": channels, "num_res_blocks": blocks, "downscale_factor": 8}
    channels = [_shape(refs, f"adapter.body.{i}.resnets.0.block1.weight", where)[0]
                for i in range(levels)]
    cin = _shape(refs, "adapter.conv_in.weight", where)[1]
    xl = cin in (256, 768)
    return {"adapter_type": "full_adapter_xl" if xl else "full_adapter",
            "in_channels": cin // (256 if xl else 64), "channels": channels,
            "num_res_blocks": blocks, "downscale_factor": 16 if xl else 8}


def _from_original(refs: dict[str, TensorRef], where: str) -> dict[str, TensorRef]:
    """TencentARC's names -> diffusers' (see the module docstring)."""
    odd = sorted(k for k in refs if re.search(r"\.(skep|down_opt)\.|^(style_embedding|"
                                              r"transformer_layes|ln_pre|proj)\b", k))
    if odd:
        raise WeightsError(f"{where}: a T2I-Adapter layout this program does not read ({odd[0]}"
                           "; it reads TencentARC's released full adapters, sk=True without "
                           "down convs, and the light color adapter; not the style adapter)")
    out: dict[str, TensorRef] = {}
    if "conv_in.weight" in refs:  # full
        first = _levels(refs, "body.")
        widths = [_shape(refs, f"body.{k}.block1.weight", where)[0] for k in range(first)]
        per_level = 1
        while per_level < first and widths[per_level] == widths[0] and \
                f"body.{per_level}.in_conv.weight" not in refs:
            per_level += 1
        for key, ref in refs.items():
            if key.startswith("conv_in."):
                out["adapter." + key] = ref
            elif m := _FULL.fullmatch(key):
                level, block = divmod(int(m[1]), per_level)
                if m[2] == "in_conv":
                    out[f"adapter.body.{level}.in_conv.{m[3]}"] = ref
                else:
                    out[f"adapter.body.{level}.resnets.{block}.{m[2]}.{m[3]}"] = ref
            else:
                raise WeightsError(f"{where}: unexpected tensor {key!r} in a T2I-Adapter")
        return out
    for key, ref in refs.items():
        m = _LIGHT.fullmatch(key)
        if m is None:
            raise WeightsError(f"{where}: unexpected tensor {key!r} in a T2I-Adapter")
        if m[2]:
            out[f"adapter.body.{m[1]}.{m[2]}.{m[5]}"] = ref
        else:
            out[f"adapter.body.{m[1]}.resnets.{m[3]}.{m[4]}.{m[5]}"] = ref
    return out


def t2i_adapter_from_file(refs: dict[str, TensorRef], where: str
                          ) -> tuple[dict[str, TensorRef], dict[str, Any]]:
    """(refs under diffusers' names, config) of a single T2I-Adapter file's tensors."""
    if not any(k.startswith("adapter.") for k in refs):
        refs = _from_original(refs, where)
    if not refs:
        raise WeightsError(f"{where}: no tensors: not a T2I-Adapter")
    return refs, _diffusers_config(refs, where)
