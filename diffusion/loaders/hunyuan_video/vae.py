"""The HunyuanVideo VAE's weights (diffusers' AutoencoderKLHunyuanVideo names) from

- a diffusers folder (HunyuanVideo's, Kandinsky 5 Video's): its `vae/` (config.json and
  diffusion_pytorch_model[.fp16].safetensors), or that vae folder itself;
- the original release's `hunyuan-video-t2v-720p/vae/pytorch_model.pt`, whose names are
  diffusers' already (diffusers' conversion script renames nothing), some checkpoints under a
  `vae.` prefix, which is dropped. A file has no diffusers config: the config is the one
  given (a folder's vae/config.json), else diffusers' defaults, which are that release's.

    weights = load_hunyuan_video_vae("Kandinsky-5.0-T2V-Lite-sft-5s-Diffusers", dtype=f16)
    vae = AutoencoderKLHunyuanVideo(weights.config, dtype=f16, device=device)
    vae.load_state_dict(weights)
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ..errors import PICKLE_SUFFIXES, WeightsError
from ..formats.diffusers_folder import read_json, weight_refs
from ..formats.torch_file import open_weights_file
from ..weights import ComponentWeights, TensorRef, resolve_dtype

__all__ = ["load_hunyuan_video_vae", "load_named_vae"]

_MARK = "decoder.conv_in.conv.weight"  # a causal conv's kernel under its `.conv`
_PREFIX = "vae."


def _checked(refs: dict[str, TensorRef], source: str) -> dict[str, TensorRef]:
    if _MARK not in refs:
        raise WeightsError(f"{source}: no {_MARK!r} tensor: not a HunyuanVideo VAE; give a "
                           "diffusers folder with a vae/ of AutoencoderKLHunyuanVideo, or the "
                           "original vae/pytorch_model.pt")
    return refs


def load_named_vae(path: str | os.PathLike[str], *, class_name: str,
                   checked: Callable[[dict[str, TensorRef], str], dict[str, TensorRef]],
                   give: str, family: str, dtype: Any, config: dict[str, Any] | None,
                   variant: str | None) -> ComponentWeights:
    """Lazy weights of a VAE stored under diffusers' `class_name` names at `path` (a
    diffusers folder, its vae/; a safetensors or pickle file, a `vae.` prefix dropped, its
    config `config` else diffusers' defaults), `checked(refs, source)` before they return.
    WeightsError naming the path that holds none: `give` the file to give beside a folder,
    `family` the folders whose config names `class_name`. HunyuanVideo's VAE and 1.5's
    both load so."""
    path = Path(path)
    if path.is_file() and (path.suffix.lower() in PICKLE_SUFFIXES
                           or path.suffix == ".safetensors"):
        file = open_weights_file(path)
        keys = list(file.keys())
        prefixed = any(key.startswith(_PREFIX + "decoder.") for key in keys)
        refs = {key[len(_PREFIX):] if prefixed else key: TensorRef(file, key, file.shape(key))
                for key in keys if not prefixed or key.startswith(_PREFIX)}
        return ComponentWeights("vae", dict(config or {}), checked(refs, str(path)),
                                dtype=resolve_dtype(dtype))
    if not path.is_dir():
        raise WeightsError(f"{path}: no such folder or file; give a diffusers folder (its vae/) "
                           f"or {give}")
    folder = path / "vae" if (path / "vae" / "config.json").is_file() else path
    cfg = read_json(folder / "config.json")
    if cfg.get("_class_name", class_name) != class_name:
        raise WeightsError(f"{folder / 'config.json'}: a {cfg['_class_name']}, not an "
                           f"{class_name}; give a {family} folder")
    refs, source = weight_refs(folder, "diffusion_pytorch_model", variant)
    return ComponentWeights("vae", cfg, checked(refs, source), dtype=resolve_dtype(dtype))


def load_hunyuan_video_vae(path: str | os.PathLike[str], *, dtype: Any = None,
                           config: dict[str, Any] | None = None,
                           variant: str | None = None) -> ComponentWeights:
    """Lazy AutoencoderKLHunyuanVideo weights at `path` (module docstring), read as `dtype`
    (None: as stored), their `config` the folder's (for a file: `config`, else diffusers'
    defaults). WeightsError naming the file or folder where it holds no such VAE."""
    return load_named_vae(path, class_name="AutoencoderKLHunyuanVideo", checked=_checked,
                          give="the original vae/pytorch_model.pt",
                          family="HunyuanVideo or Kandinsky 5 video", dtype=dtype,
                          config=config, variant=variant)
