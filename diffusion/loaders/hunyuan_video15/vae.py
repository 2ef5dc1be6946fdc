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
from pathlib import Path
from typing import Any

from ..errors import PICKLE_SUFFIXES, WeightsError
from ..formats.diffusers_folder import read_json, weight_refs
from ..formats.torch_file import open_weights_file
from ..weights import ComponentWeights, TensorRef, resolve_dtype

__all__ = ["load_hunyuan_video15_vae"]

_CLASS = "AutoencoderKLHunyuanVideo15"
_MARK = "decoder.mid_block.attentions.0.norm.gamma"  # an RMS norm: not HunyuanVideo 1.0's
_ORIGINAL = "decoder.mid.attn_1.norm.gamma"  # the Tencent release's name for it
_PREFIX = "vae."


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


def _file(path: Path, config: dict[str, Any] | None, dtype: Any) -> ComponentWeights:
    file = open_weights_file(path)
    keys = list(file.keys())
    prefixed = any(key.startswith(_PREFIX + "decoder.") for key in keys)
    refs = {key[len(_PREFIX):] if prefixed else key: TensorRef(file, key, file.shape(key))
            for key in keys if not prefixed or key.startswith(_PREFIX)}
    return ComponentWeights("vae", dict(config or {}), _checked(refs, str(path)),
                            dtype=resolve_dtype(dtype))


def load_hunyuan_video15_vae(path: str | os.PathLike[str], *, dtype: Any = None,
                             config: dict[str, Any] | None = None,
                             variant: str | None = None) -> ComponentWeights:
    """Lazy AutoencoderKLHunyuanVideo15 weights at `path` (module docstring), read as `dtype`
    (None: as stored), their `config` the folder's (for a file: `config`, else diffusers'
    defaults). WeightsError naming the file or folder where it holds no such VAE."""
    path = Path(path)
    if path.is_file() and (path.suffix.lower() in PICKLE_SUFFIXES
                           or path.suffix == ".safetensors"):
        return _file(path, config, dtype)
    if not path.is_dir():
        raise WeightsError(f"{path}: no such folder or file; give a diffusers folder (its vae/) "
                           f"or a single file of {_CLASS} tensors")
    folder = path / "vae" if (path / "vae" / "config.json").is_file() else path
    cfg = read_json(folder / "config.json")
    if cfg.get("_class_name", _CLASS) != _CLASS:
        raise WeightsError(f"{folder / 'config.json'}: a {cfg['_class_name']}, not an "
                           f"{_CLASS}; give a HunyuanVideo 1.5 folder")
    refs, source = weight_refs(folder, "diffusion_pytorch_model", variant)
    return ComponentWeights("vae", cfg, _checked(refs, source), dtype=resolve_dtype(dtype))
