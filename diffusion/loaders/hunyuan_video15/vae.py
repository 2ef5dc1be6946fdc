"""The HunyuanVideo 1.5 VAE's weights (diffusers' AutoencoderKLHunyuanVideo15 names) from

- a diffusers folder: its `vae/` (config.json and diffusion_pytorch_model[.fp16]
  .safetensors), or that vae folder itself;
- a single file holding diffusers' names, some under a `vae.` prefix, which is dropped. A
  file has no diffusers config: the config is the one given (a folder's vae/config.json),
  else diffusers' defaults, which are the released model's.

The original Tencent release names its tensors otherwise (`encoder.down.0.block.0...`,
`decoder.mid.block_1...`, `mid.attn_1.q`), not only under another prefix: such a file or
folder is refused with a WeightsError saying so (diffusers' conversion script renames it).

    weights = load_hunyuan_video15_vae("HunyuanVideo-1.5-Diffusers-480p_t2v", dtype=f16)
    vae = AutoencoderKLHunyuanVideo15(weights.config, dtype=f16, device=device)
    vae.load_state_dict(weights)
"""

from __future__ import annotations

import os
from typing import Any

from ..errors import WeightsError
from ..hunyuan_video.vae import load_named_vae
from ..weights import ComponentWeights, TensorRef

__all__ = ["load_hunyuan_video15_vae"]

_CLASS = "AutoencoderKLHunyuanVideo15"
_MARK = "decoder.mid_block.attentions.0.norm.gamma"  # an RMS norm: not HunyuanVideo 1.0's
_ORIGINAL = "decoder.mid.attn_1.norm.gamma"  # the Tencent release's name for it


def _checked(refs: dict[str, TensorRef], source: str) -> dict[str, TensorRef]:
    if _MARK in refs:
        return refs
    if _ORIGINAL in refs:
        raise WeightsError(f"{source}: the original Tencent HunyuanVideo 1.5 VAE layout "
                           "(encoder.down.N.block.M, mid.attn_1), whose names differ from "
                           "diffusers' beyond a prefix; give a diffusers folder's vae/ (or "
                           "convert the file with diffusers' HunyuanVideo 1.5 script)")
    raise WeightsError(f"{source}: no {_MARK!r} tensor: not a HunyuanVideo 1.5 VAE; give a "
                       f"diffusers folder with a vae/ of {_CLASS}")


def load_hunyuan_video15_vae(path: str | os.PathLike[str], *, dtype: Any = None,
                             config: dict[str, Any] | None = None,
                             variant: str | None = None) -> ComponentWeights:
    """Lazy AutoencoderKLHunyuanVideo15 weights at `path` (module docstring), read as `dtype`
    (None: as stored), their `config` the folder's (for a file: `config`, else diffusers'
    defaults). WeightsError naming the file or folder where it holds no such VAE."""
    return load_named_vae(path, class_name=_CLASS, checked=_checked,
                          give=f"a single file of {_CLASS} tensors", family="HunyuanVideo 1.5",
                          dtype=dtype, config=config, variant=variant)
