"""LTX-2's audio VAE and vocoder weights (diffusers' names) from a diffusers folder: its
`audio_vae/` (config.json, AutoencoderKLLTX2Audio) and `vocoder/` (LTX2Vocoder, or LTX-2.3's
LTX2VocoderWithBWE), each diffusion_pytorch_model[.variant].safetensors, or either component
folder itself.

    weights = load_ltx2_audio_vae("LTX-2")  # the pipeline folder, or LTX-2/audio_vae
    vae = AutoencoderKLLTX2Audio(weights.config, device=device); vae.load_state_dict(weights)
    vocoder = ltx2_vocoder(load_ltx2_vocoder("LTX-2"), device=device)
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from ..errors import WeightsError
from ..formats.diffusers_folder import read_json, weight_refs
from ..weights import ComponentWeights, resolve_dtype

__all__ = ["VOCODER_CLASSES", "load_ltx2_audio_vae", "load_ltx2_vocoder"]

VOCODER_CLASSES = ("LTX2Vocoder", "LTX2VocoderWithBWE")
# a tensor each component has whatever its config: a causal conv's kernel under `.conv`;
# the vocoder's input conv (under `vocoder.` in LTX2VocoderWithBWE)
_MARKS = {"audio_vae": ("decoder.conv_in.conv.weight",),
          "vocoder": ("conv_in.weight", "vocoder.conv_in.weight")}


def _component(path: Path, name: str, classes: tuple[str, ...], *, dtype: Any,
               variant: str | None) -> ComponentWeights:
    if not path.is_dir():
        raise WeightsError(f"{path}: no such folder; give an LTX-2 diffusers folder (its "
                           f"{name}/) or its {name} folder")
    folder = path / name if (path / name / "config.json").is_file() else path
    cfg = read_json(folder / "config.json")
    kind = cfg.get("_class_name", classes[0])
    if kind not in classes:
        raise WeightsError(f"{folder / 'config.json'}: a {kind}, not {' or '.join(classes)}; "
                           f"give an LTX-2 folder's {name}/")
    refs, source = weight_refs(folder, "diffusion_pytorch_model", variant)
    if not any(mark in refs for mark in _MARKS[name]):
        raise WeightsError(f"{source}: no {_MARKS[name][0]!r} tensor: not an LTX-2 {name}; "
                           f"give an LTX-2 folder's {name}/")
    return ComponentWeights(name, cfg, refs, dtype=resolve_dtype(dtype))


def load_ltx2_audio_vae(path: str | os.PathLike[str], *, dtype: Any = None,
                        variant: str | None = None) -> ComponentWeights:
    """Lazy AutoencoderKLLTX2Audio weights of the folder `path` (module docstring), read as
    `dtype` (None: as stored), `config` its audio_vae/config.json. WeightsError naming the
    folder or file where it holds no such VAE."""
    return _component(Path(path), "audio_vae", ("AutoencoderKLLTX2Audio",), dtype=dtype,
                      variant=variant)


def load_ltx2_vocoder(path: str | os.PathLike[str], *, dtype: Any = None,
                      variant: str | None = None) -> ComponentWeights:
    """Lazy LTX2Vocoder / LTX2VocoderWithBWE weights of the folder `path` (module docstring),
    `config` its vocoder/config.json (`_class_name` says which)."""
    return _component(Path(path), "vocoder", VOCODER_CLASSES, dtype=dtype, variant=variant)
