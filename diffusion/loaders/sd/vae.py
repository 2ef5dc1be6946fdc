"""A separate VAE (the WebUI's `--vae` / "SD VAE" setting): a diffusers `AutoencoderKL` folder,
or one `.safetensors` file in the original LDM layout (`vae-ft-mse-840000-ema-pruned.safetensors`,
`*.vae.safetensors`: `encoder.*`, `decoder.*`, `quant_conv.*`, `post_quant_conv.*`, bare or under
the `first_stage_model.` prefix of a whole checkpoint) or already under diffusers' names.

A single file carries no config. The WebUI loads it into the model it replaces, so its config is
that model's (SD1 and SD2 share one VAE architecture); the file's shapes must fit that config.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import WeightsError
from ..formats.diffusers_folder import read_json, weight_refs
from ..formats.torch_file import open_weights_file
from ..keymaps.expected_keys import vae_keys
from ..keymaps.ldm_configs import vae_config
from ..keymaps.ldm_keys import vae_file_refs
from ..weights import ComponentWeights, TensorFile, require_keys, resolve_dtype

__all__ = ["load_vae_weights"]

# config fields that fix the tensors' shapes: a file must agree with the replaced model on these
_ARCHITECTURE = ("in_channels", "out_channels", "latent_channels", "block_out_channels",
                 "layers_per_block")
# what the rest of the pipeline sees of a VAE (a folder VAE may differ elsewhere), with
# diffusers' AutoencoderKL defaults for a config.json that leaves them out
_INTERFACE = {"in_channels": 3, "out_channels": 3, "latent_channels": 4}


def load_vae_weights(path: str | os.PathLike[str], *, dtype: Any = None,
                     config: dict[str, Any] | None = None,
                     variant: str | None = None) -> ComponentWeights:
    """Lazy weights and config of the VAE at `path` (a folder or a `.safetensors` file).

    config: the config of the VAE being replaced (`pipe.vae.config`). A single file takes it
    (and its `scaling_factor`); without one the architecture is read from the tensor shapes and
    the scaling factor is SD's 0.18215. A folder keeps its own `config.json`, which must agree
    with `config` on the latent and image channels.
    Raises WeightsError naming the file: missing, a pickle naming a disallowed global, not a
    VAE, or shapes that do not fit. diffusers: `AutoencoderKL.from_pretrained(path)` /
    `.from_single_file(path)`.
    """
    path, dtype = Path(path), resolve_dtype(dtype)
    if path.is_dir():
        return _folder_weights(path, dtype=dtype, config=config, variant=variant)
    if not path.exists():
        raise WeightsError(f"{path}: VAE file not found; pass a .safetensors VAE file or a "
                           "diffusers VAE folder (config.json + "
                           "diffusion_pytorch_model.safetensors)")
    return _file_weights(open_weights_file(path), dtype=dtype, config=config)


def _folder_weights(folder: Path, *, dtype: np.dtype | None, config: dict[str, Any] | None,
                    variant: str | None) -> ComponentWeights:
    if (folder / "model_index.json").is_file() and (folder / "vae").is_dir():
        folder = folder / "vae"  # a whole pipeline folder: take its VAE, as diffusers' subfolder
    own = read_json(folder / "config.json")
    if config is not None:
        _check_fits({**_INTERFACE, **own}, config, tuple(_INTERFACE), folder / "config.json")
    refs, where = weight_refs(folder, "diffusion_pytorch_model", variant)
    return ComponentWeights("vae", own, require_keys("vae", refs, _expected(own, where), where),
                            dtype=dtype)


def _file_weights(file: TensorFile, *, dtype: np.dtype | None,
                  config: dict[str, Any] | None) -> ComponentWeights:
    refs = vae_file_refs(file)
    found = vae_config(refs, file, sample_size=512)
    if config is not None:
        _check_fits(found, config, _ARCHITECTURE, file.path)
        found = {**found, **config}
    where = str(file.path)
    return ComponentWeights("vae", found, require_keys("vae", refs, _expected(found, where), where),
                            dtype=dtype)


def _expected(config: dict[str, Any], where: str) -> list[str]:
    try:
        return vae_keys(config)
    except (KeyError, TypeError, ValueError) as error:
        raise WeightsError(f"{where}: bad or missing VAE config field {error}") from None


def _check_fits(found: dict[str, Any], wanted: dict[str, Any], fields: tuple[str, ...],
                where: object) -> None:
    """WeightsError naming `where` and each field in which the VAE differs from the model's."""
    def norm(value: Any) -> Any:
        return list(value) if isinstance(value, (list, tuple)) else value

    differ = [f"{name} {norm(found.get(name))} (the model's: {norm(wanted.get(name))})"
              for name in fields
              if name in wanted and norm(found.get(name)) != norm(wanted[name])]
    if differ:
        raise WeightsError(f"{where}: this VAE does not fit the model: {'; '.join(differ)}. "
                           "Use a VAE made for this model family (SD 1.x/2.x VAEs share one "
                           "architecture; SDXL and SD3 VAEs do not fit them)")
