"""A model loaded with module files: Forge's `forge_additional_modules` (the VAE / Text Encoder
list), what the server's `--text-encoder` files and per-request module choices load with.

    pipe = load_with_modules("FLUX.1-dev", ["ae.safetensors", "t5xxl_fp16.safetensors"],
                             dtype="float16")

Each file's parts (diffusion.loaders.flow.module_file) go where the model takes them, as Forge's
loader puts them: text encoders into a FLUX / SD3 model (`load_pipeline(text_encoders=)`), an
LLM text encoder of the kind the model reads prompts with into a Z-Image (Qwen3), FLUX.2 klein
(Qwen3), FLUX.2 dev (Mistral) or Qwen-Image (Qwen2.5-VL) model, folder or single file; a
VAE in place of any model's own (a FLUX / SD3 single file takes it as one of what it lacks, as
a UNet-only SD GGUF takes its VAE and CLIP text encoder; a folder or an SD model gets
`load_vae` with its VAE's config). What a model has no place for
is left out, as the server's `--text-encoder` files always were for other models: text
encoders given to an SD 1.x / 2.x / SDXL model (Forge maps only the CLIPs a model has, and no
SD model has a T5), a VAE of other latent channels (FLUX's 16-channel `ae.safetensors` beside
an SD 1.5 model). So one module list serves every model a server switches between.

Forge's `hr_additional_modules` (the hires fix's own "VAE / Text Encoder" list) reaches the
pipeline as `HiresModules` (`hires_modules(pipe, path, labels, files)`).
"""

from __future__ import annotations

import os
import weakref
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from gpustd.nn.offload import restore

from ..loaders.errors import WeightsError
from ..loaders.flow.module_file import LLM_ROLES, module_roles, vae_latent_channels
from ..loaders.flow.text_encoder_file import module_stem
from ..loaders.sd.gguf_pipeline import is_unet_gguf
from ..loaders.vae_kind import VaeKind, vae_kind
from .families import family_of
from .flow.flow_model import FlowModel
from .load import load_pipeline
from .sd.stable_diffusion import StableDiffusion
from .vae_float32 import float32_copy

__all__ = ["HiresModules", "hires_modules", "load_with_modules"]

# the LLM text encoder (module_file.LLM_ROLES) and the kind of VAE (loaders.vae_kind) of the
# families whose single files run with a base folder (FamilyLoader.single_file_base)
_PARTS_OF = {"z-image": ("qwen3", "2d"), "flux2-klein": ("qwen3", "flux2"),
             "flux2-dev": ("mistral", "flux2"), "qwen-image": ("qwen2_5_vl", "causal3d"),
             "qwen-image-edit": ("qwen2_5_vl", "causal3d"),
             "qwen-image-edit-plus": ("qwen2_5_vl", "causal3d")}


def load_with_modules(path: str | os.PathLike[str], modules: Sequence[str | os.PathLike[str]],
                      *, dtype: Any = np.float32, device: Any = None,
                      base: str | os.PathLike[str] | None = None, offload: bool = False) -> Any:
    """`load_pipeline(path, dtype=, device=, base=, offload=)` with `modules` (module
    docstring) in place of the model's parts. WeightsError (a ValueError) naming a file that is
    no module, or a VAE whose shapes do not fit the model's."""
    files = [Path(m) for m in modules]
    roles = {file: module_roles(file) for file in files}
    vaes = [f for f in files if "vae" in roles[f]]
    llms = [f for f in files if set(roles[f]) & set(LLM_ROLES)]
    encoders = [f for f in files if set(roles[f]) - {"vae", *LLM_ROLES}]
    where: dict[str, Any] = {"dtype": dtype, "offload": offload}
    if device is not None:
        where["device"] = device
    if base is not None:  # a single-file transformer's diffusers folder (pipelines.bases)
        where["base"] = base
    if is_unet_gguf(path):  # its VAE and CLIP text encoder are among the modules
        return load_pipeline(path, text_encoders=files, **where)
    entry, family = family_of(path)
    flow = entry.module_parts  # text encoders (and a file's VAE) as modules
    if flow and Path(path).is_file():  # a single file takes its VAE with its text encoders
        return load_pipeline(path, text_encoders=[f for f in files if f not in llms], **where)
    if family in _PARTS_OF:  # its own readers, as the CLI's --text-encoder and --vae
        llm, kind = _PARTS_OF[family]
        pipe = load_pipeline(path, text_encoders=[f for f in llms if llm in roles[f]][-1:],
                             **where)  # the last one named wins, as below
        assert isinstance(pipe, FlowModel)  # beyond the contract: its VAE's config
        config = pipe.vae.config  # Qwen-Image's causal 3D VAE says z_dim
        wanted = VaeKind(kind, int(config.get("latent_channels") or config["z_dim"]))
        for vae in [f for f in vaes if vae_kind(f) == wanted][-1:]:
            pipe.use_vae(vae)  # the infotext names it as a module
        return pipe
    pipe = load_pipeline(path, text_encoders=encoders if flow else (), **where)
    # beyond the contract: one of load_pipeline's own families, whose VAE this replaces
    assert isinstance(pipe, (StableDiffusion, FlowModel))
    channels = int(pipe.vae.config["latent_channels"])
    vaes = [f for f in vaes if vae_latent_channels(f) == channels]
    for vae in vaes[-1:]:  # the last one named wins, as in Forge's state dict replacement
        _replace_vae(pipe, vae, to_host=offload and isinstance(pipe, StableDiffusion))
        if isinstance(pipe, FlowModel):  # as `flow` says: the infotext's modules
            pipe.modules.append(module_stem(vae))
    return pipe


def _replace_vae(pipe: Any, file: Path, *, to_host: bool = False) -> None:
    """`pipe`'s VAE replaced by the one in `file` (`_load_like`; `to_host`: in host memory,
    as a UNet model loaded for a memory mode keeps its own)."""
    loaded = _load_like(pipe.vae, file, **({"to_host": True} if to_host else {}))
    if hasattr(pipe, "pipe"):  # a FlowModel: its diffusers-style pipeline holds the VAE
        pipe.pipe.vae = loaded
    else:
        pipe.vae = loaded
    pipe.vae_path = file


def _load_like(vae: Any, path: str | os.PathLike[str], **to_host: Any) -> Any:
    """The VAE in `path` (a VAE file, a model folder or an SD checkpoint) with `vae`'s config,
    in the dtype and on the device `vae` is (an SDXL VAE kept float32 under float16 weights
    stays so, as the CLI's --vae does); `to_host=True`: in host memory (load_vae)."""
    from ..loaders.sd.vae_file import load_vae

    weight = vae.decoder.conv_in.weight
    return load_vae(path, dtype=weight.dtype, device=weight.device, config=vae.config,
                    **to_host)


# per pipeline, the last hires VAE loaded for it (path, VAE): hires requests that name the
# same file read it once, as a server's worker keeps its refiner (Worker.second_model)
_hires_vaes: weakref.WeakKeyDictionary[Any, tuple[Path, Any]] = weakref.WeakKeyDictionary()


def _kept_vae(pipe: Any, path: Path) -> Any:
    """The VAE in `path` loaded like `pipe`'s own (`_load_like`), kept for `pipe`'s next hires
    pass; another path replaces it (the first one freed before the next is read)."""
    kept = _hires_vaes.get(pipe)
    if kept is None or kept[0] != path:
        _hires_vaes.pop(pipe, None)
        # under a UNet model's memory mode, straight to host memory: the plan brings it in
        # (MemoryPlan's hires VAE unit)
        planned = isinstance(pipe, StableDiffusion) and pipe.memory is not None
        kept = (path, _load_like(pipe.vae, path, **({"to_host": True} if planned else {})))
        _hires_vaes[pipe] = kept
    if isinstance(pipe, StableDiffusion) and pipe.memory is None:
        restore(kept[1])  # loaded for a mode since switched off (no-op when on the GPU)
    return kept[1]


@dataclass
class HiresModules:
    """Forge's `hr_additional_modules` as a hires fix's second pass takes them
    (`GenerationRequest.hires_modules`): `labels`, written to the infotext as Forge writes
    them ("Hires Module 1: ae"; "Built-in" for no module, "Use same choices" for the first
    pass's), and `vae`: the VAE (a loaded AutoencoderKL) the second pass encodes its upscaled
    pictures with and decodes its result with; None: the first pass's. `vae` is read when
    the pass runs, so a float16 one that overflowed is made float32 in place
    (`use_float32_vae`) and the run made again, as the model's is."""

    labels: tuple[str, ...]
    vae: Any = None
    # the pipeline that keeps `vae` for its next hires passes (`_kept_vae`); None: a VAE
    # given as it is
    owner: Any = field(default=None, repr=False, compare=False)

    @property
    def vae_path(self) -> Path | None:
        """The file `vae` was read from (the owner keeps it), for the messages; None where
        it was given as it is."""
        kept = None if self.owner is None else _hires_vaes.get(self.owner)
        return kept[0] if kept is not None and kept[1] is self.vae else None

    def use_float32_vae(self) -> bool:
        """`vae` made float32 from its own weights (diffusion.pipelines.vae_float32, whose
        `reverting` calls this as it does the model's `use_float32_vae`): the owner keeps the
        copy for the file's next hires passes, as the model's VAE stays float32, and a memory
        mode no longer manages the float16 one; False where there is no VAE of its own or it
        runs float32 already."""
        half = self.vae
        vae = None if half is None else float32_copy(half)
        if vae is half:
            return False
        owner = self.owner
        if owner is not None:
            kept = _hires_vaes.get(owner)
            if kept is not None and kept[1] is half:
                _hires_vaes[owner] = (kept[0], vae)
            if isinstance(owner, StableDiffusion) and owner.memory is not None:
                owner.memory.residency.remove(half)  # a unit since it came (_use_vae)
        self.vae = vae
        return True


def hires_modules(pipe: Any, path: str | os.PathLike[str], labels: Sequence[str],
                  modules: Sequence[str | os.PathLike[str]] | None) -> HiresModules:
    """What `pipe` (the model at `path`) runs its hires pass with when Forge's
    `hr_additional_modules` are `modules` (None: the first pass's; []: none, "Built-in").

    Forge reloads the model with them for the hires pass but keeps the conditioning the first
    pass's text encoders made (its `calculate_hr_conds` runs before the first pass unless a
    hires checkpoint is chosen), so of the modules only the VAE acts: the last one that fits
    the model (as `load_with_modules` picks it), else the model's own, read again from `path`
    where the first pass ran with a VAE file. WeightsError (a ValueError) when that is needed
    and `path` holds none that reads apart (a FLUX / SD3 file that took its VAE from the
    modules)."""
    labels = tuple(labels)
    if modules is None:
        return HiresModules(labels)
    own = pipe.vae
    if _PARTS_OF.get(pipe.family, ("", "2d"))[1] != "2d":  # FLUX.2's, Qwen-Image's VAE
        if any("vae" in module_roles(f) for f in modules):
            raise WeightsError(f"hr_additional_modules: {pipe.family} models keep their own "
                               "VAE in the hires pass (a VAE file there is for the 2D VAEs "
                               "of SD, FLUX.1, SD3 and Z-Image); leave the VAE out, or send "
                               "[\"Use same choices\"]")
        return HiresModules(labels)
    channels = int(own.config["latent_channels"])
    vaes = [Path(f) for f in modules
            if "vae" in module_roles(f) and vae_latent_channels(f) == channels]
    first = None if pipe.vae_path is None else Path(pipe.vae_path)
    wanted = vaes[-1] if vaes else None
    if wanted == first:
        return HiresModules(labels)  # the first pass's VAE already
    if wanted is not None:
        return HiresModules(labels, _kept_vae(pipe, wanted), owner=pipe)
    try:
        return HiresModules(labels, _kept_vae(pipe, Path(path)), owner=pipe)
    except WeightsError as exc:
        raise WeightsError(f"hr_additional_modules: the hires pass would run with the model's "
                           f"own VAE, but none could be read from {Path(path).name} ({exc}); "
                           "name a VAE file, or send [\"Use same choices\"]") from None
