"""LTX-2's latent upsampler weights (diffusers' LTX2LatentUpsamplerModel names) from

- a diffusers folder: an LTX-2 folder's `latent_upsampler/` (config.json and
  diffusion_pytorch_model[.variant].safetensors), that folder itself, or an
  LTX2LatentUpsamplePipeline folder's;
- Lightricks' single file (`ltx-2-spatial-upscaler-x2-1.0.safetensors`), whose tensors have
  diffusers' names already; its config is read off the shapes (the channels, the blocks, which
  upsampler conv).

The rational resampler's blur kernel (a fixed binomial buffer the model rebuilds) is dropped.

    weights = load_ltx2_upsampler("LTX-2")
    model = LTX2LatentUpsamplerModel(weights.config, device=device)
    model.load_state_dict(weights)
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from ..errors import WeightsError
from ..formats.diffusers_folder import read_json, weight_refs
from ..formats.safetensors import SafetensorsFile
from ..weights import ComponentWeights, TensorRef, resolve_dtype

__all__ = ["load_ltx2_upsampler"]

_MARK = "initial_conv.weight"
_BLUR = "upsampler.blur_down.kernel"
_SUBFOLDERS = ("latent_upsampler", "spatial_upsampler")


def _checked(refs: dict[str, TensorRef], source: str) -> dict[str, TensorRef]:
    if _MARK not in refs or "final_conv.weight" not in refs:
        raise WeightsError(f"{source}: no {_MARK!r} tensor: not an LTX-2 latent upsampler; "
                           "give an LTX-2 folder's latent_upsampler/ or "
                           "ltx-2-spatial-upscaler-x2-1.0.safetensors")
    return {key: ref for key, ref in refs.items() if key != _BLUR}


def _config_of(refs: dict[str, TensorRef]) -> dict[str, Any]:
    """A single file's config, from its tensors' shapes."""
    mid, channels = refs[_MARK].shape[:2]
    blocks = len({key.split(".")[1] for key in refs if key.startswith("res_blocks.")})
    return {"in_channels": channels, "mid_channels": mid, "num_blocks_per_stage": blocks,
            "dims": len(refs[_MARK].shape) - 2, "spatial_upsample": True,
            "temporal_upsample": False, "rational_spatial_scale": 2.0,
            "use_rational_resampler": "upsampler.conv.weight" in refs}


def load_ltx2_upsampler(path: str | os.PathLike[str], *, dtype: Any = None,
                        variant: str | None = None) -> ComponentWeights:
    """Lazy LTX2LatentUpsamplerModel weights at `path` (module docstring), read as `dtype`
    (None: as stored). WeightsError naming the file or folder where it holds none."""
    path = Path(path)
    if path.is_file() and path.suffix == ".safetensors":
        file = SafetensorsFile(path)
        refs = _checked({key: TensorRef(file, key, file.shape(key)) for key in file.keys()},
                        str(path))
        return ComponentWeights("latent_upsampler", _config_of(refs), refs,
                                dtype=resolve_dtype(dtype))
    if not path.is_dir():
        raise WeightsError(f"{path}: no such folder or .safetensors file; give an LTX-2 "
                           "folder (its latent_upsampler/) or "
                           "ltx-2-spatial-upscaler-x2-1.0.safetensors")
    folder = next((path / name for name in _SUBFOLDERS
                   if (path / name / "config.json").is_file()), path)
    if not (folder / "config.json").is_file():
        raise WeightsError(f"{path}: no latent_upsampler/ here; give an LTX-2 folder that has "
                           "one, or ltx-2-spatial-upscaler-x2-1.0.safetensors")
    cfg = read_json(folder / "config.json")
    refs, source = weight_refs(folder, "diffusion_pytorch_model", variant)
    return ComponentWeights("latent_upsampler", cfg, _checked(refs, source),
                            dtype=resolve_dtype(dtype))
