"""FLUX.1 and SD3/3.5 as the single files people share, without a diffusers folder: BFL's
`flux1-dev.safetensors` / `flux1-schnell.safetensors` (the transformer alone), ComfyUI's
all-in-one checkpoints (`model.diffusion_model.*`, `first_stage_model.*` and
`text_encoders.<clip_l|clip_g|t5xxl>.transformer.*`), Stability's `sd3.5_large.safetensors` /
`sd3.5_medium.safetensors` (transformer and VAE) and `sd3_medium_incl_clips[_t5xxlfp8]`.

What the file lacks comes from `modules`, Forge's "VAE / Text Encoder" list (`--text-encoder`):
`ae.safetensors` (BFL's VAE: LDM names, bare), `clip_l`, `clip_g`, `t5xxl_fp16` / `_fp8_e4m3fn`
/ `_fp8_e4m3fn_scaled`, city96's `t5-v1_1-xxl-encoder-Q8_0.gguf`
(diffusion.loaders.keymaps.t5_gguf).
Every config is read from the tensor shapes (heads 64 channels wide, as in every CLIP-L/G;
T5's from its relative-position table); FLUX's and SD3's VAE scaling and shift, and the
schedulers, are those of the models' diffusers folders. The tokenizers are the bundled ones.
FLUX.1 Kontext's files hold dev's keys: `is_kontext_file` tells them by name or metadata.

    weights, modules = load_flow_file("flux1-dev.safetensors", [
        "ae.safetensors", "clip_l.safetensors", "t5xxl_fp16.safetensors"])
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from ..errors import WeightsError
from ..formats.gguf_file import tensor_file
from ..formats.safetensors import SafetensorsFile
from ..keymaps.chroma_keys import is_chroma_file
from ..keymaps.ldm_configs import vae_config
from ..keymaps.ldm_keys import VAE_PREFIX, ldm_vae_refs, vae_file_refs
from ..keymaps.t5_gguf import t5_gguf_refs
from ..keymaps.t5_keys import T5_MARK, t5_config, t5_encoder_refs
from ..weights import ComponentWeights, TensorRef
from .flux_file import is_flux_file, load_flux_file
from .folder import FlowWeights, flow_family
from .sd3_file import is_sd3_file, load_sd3_file
from .text_encoder_file import (
    CLIP_MARK,
    CLIP_MARKS,
    CLIP_PARTS,
    module_stem,
    tensors_under,
)

__all__ = ["FLOW_SCHEDULERS", "flow_file_family", "flow_model_family", "is_kontext_file",
           "load_flow_file"]

# the scheduler/scheduler_config.json of the models' diffusers folders
FLOW_SCHEDULERS: dict[str, dict[str, Any]] = {
    "flux-dev": {"_class_name": "FlowMatchEulerDiscreteScheduler", "num_train_timesteps": 1000,
                 "shift": 3.0, "use_dynamic_shifting": True, "base_shift": 0.5,
                 "max_shift": 1.15, "base_image_seq_len": 256, "max_image_seq_len": 4096},
    "flux-schnell": {"_class_name": "FlowMatchEulerDiscreteScheduler",
                     "num_train_timesteps": 1000, "shift": 1.0, "use_dynamic_shifting": False},
    "sd3": {"_class_name": "FlowMatchEulerDiscreteScheduler", "num_train_timesteps": 1000,
            "shift": 3.0},
}
# the 16-channel VAEs' latent statistics (their folders' vae/config.json)
_VAE_SCALING = {"flux": (0.3611, 0.1159), "sd3": (1.5305, 0.0609)}
_ENCODER_PREFIX = "text_encoders.{}.transformer."
# the metadata that names a model (safetensors' modelspec, GGUF's general.*): where "kontext"
# says a FLUX.1 dev file is Kontext's (a workflow or prompt stored beside is not looked at)
_NAME_KEYS = ("modelspec.title", "modelspec.architecture", "modelspec.description",
              "general.name", "general.basename", "general.finetune")


def flow_file_family(path: str | os.PathLike[str]) -> str | None:
    """"flux-dev", "flux-schnell" or "sd3" for a `.safetensors` file holding a FLUX (BFL
    layout) or SD3 (Stability layout) transformer, or a FLUX `.gguf` (city96's), None for
    anything else. Reads the header."""
    path = Path(path)
    if path.suffix.lower() not in (".safetensors", ".gguf") or not path.is_file():
        return None
    try:
        file: Any = tensor_file(path)  # its checks read a GGUFFile like a SafetensorsFile
    except WeightsError:
        return None  # loading names the bad file
    if is_flux_file(file) and not is_chroma_file(file):  # Chroma's blocks are FLUX's
        guided = any(k.removeprefix("model.diffusion_model.").startswith("guidance_in.")
                     for k in file.keys())
        return "flux-dev" if guided else "flux-schnell"
    return "sd3" if is_sd3_file(file) else None


def is_kontext_file(path: str | os.PathLike[str]) -> bool:
    """A FLUX.1 dev single file (`flow_file_family` "flux-dev") that is FLUX.1 Kontext's:
    its tensors are dev's to the name, so the file name (`flux1-kontext-dev.safetensors`,
    `flux1-kontext-dev-Q8_0.gguf`) or the metadata naming the model (safetensors'
    `modelspec.title` / `.architecture`, GGUF's `general.name`) must say "kontext"."""
    path = Path(path)
    if flow_file_family(path) != "flux-dev":
        return False
    if "kontext" in path.name.lower():
        return True
    try:
        metadata = tensor_file(path).metadata
    except WeightsError:
        return False
    return any("kontext" in str(metadata.get(key, "")).lower() for key in _NAME_KEYS)


def flow_model_family(path: str | os.PathLike[str]) -> str | None:
    """The flow family of a diffusers folder (`flow_family`) or a single file
    (`flow_file_family`); None for any other model."""
    return flow_family(path) if Path(path).is_dir() else flow_file_family(path)


def _clip_config(refs: dict[str, TensorRef], role: str) -> dict[str, Any]:
    """transformers' CLIPTextConfig of CLIP-L (quick_gelu) or OpenCLIP-G (gelu)."""
    vocab, hidden = refs["embeddings.token_embedding.weight"].shape
    config = {
        "architectures": ["CLIPTextModel"], "model_type": "clip_text_model",
        "vocab_size": vocab, "hidden_size": hidden,
        "intermediate_size": refs["encoder.layers.0.mlp.fc1.weight"].shape[0],
        "num_hidden_layers": 1 + max(int(k.split(".")[2]) for k in refs
                                     if k.startswith("encoder.layers.")),
        "num_attention_heads": max(1, hidden // 64),
        "max_position_embeddings": refs["embeddings.position_embedding.weight"].shape[0],
        "hidden_act": "gelu" if role == "clip_g" else "quick_gelu",
        "layer_norm_eps": 1e-5, "bos_token_id": 0, "eos_token_id": 2, "pad_token_id": 1,
    }
    if "text_projection.weight" in refs:
        config["projection_dim"] = refs["text_projection.weight"].shape[0]
    return config


def file_parts(file: SafetensorsFile, roles: tuple[str, ...]) -> dict[str, dict[str, TensorRef]]:
    """role ("clip_l", "clip_g", "t5", "vae") -> refs of the parts `file` holds; a bare CLIP's
    role is in its name ("clip_g"), else its width (1280: OpenCLIP-G)."""
    found: dict[str, dict[str, TensorRef]] = {}
    for role in roles:
        prefix = _ENCODER_PREFIX.format("t5xxl" if role == "t5" else role)
        marks = (T5_MARK,) if role == "t5" else CLIP_MARKS
        if any(prefix + mark in file for mark in marks):
            found[role] = tensors_under(file, prefix)
    if VAE_PREFIX + "decoder.conv_in.weight" in file:
        found["vae"] = ldm_vae_refs(file, VAE_PREFIX)
    if found:
        return found
    if T5_MARK in file:
        found["t5"] = tensors_under(file, "")
    elif mark := next((m for m in CLIP_MARKS if m in file), None):
        width = file.shape(mark)[1]
        name = file.path.name.lower()
        role = "clip_g" if "clip_g" in name or ("clip_l" not in name and width == 1280) \
            else "clip_l"
        found[role] = tensors_under(file, "")
    elif "decoder.conv_in.weight" in file:  # BFL's ae (LDM names) or a diffusers vae/ file
        found["vae"] = vae_file_refs(file)
    return found


def _component(slot: str, role: str, refs: dict[str, TensorRef], family: str,
               where: SafetensorsFile) -> ComponentWeights:
    if role == "t5":
        taken = t5_encoder_refs(refs)
        return ComponentWeights(slot, t5_config(taken), taken)
    if role == "vae":
        scaling, shift = _VAE_SCALING[family]
        config = {**vae_config(refs, where, sample_size=1024),
                  "scaling_factor": scaling, "shift_factor": shift,
                  "use_quant_conv": "quant_conv.weight" in refs,
                  "use_post_quant_conv": "post_quant_conv.weight" in refs}
        return ComponentWeights(slot, config, refs)
    clip = {k.removeprefix("text_model."): r for k, r in refs.items()}
    parts = (*CLIP_PARTS, *(("text_projection.",) if family == "sd3" else ()))
    taken = {k: r for k, r in clip.items() if k.startswith(parts)}
    return ComponentWeights(slot, _clip_config(taken, role), taken)


def load_flow_file(path: str | os.PathLike[str],
                   modules: list[str | os.PathLike[str]] | tuple[()] = ()
                   ) -> tuple[FlowWeights, list[str]]:
    """Lazy weights of the FLUX / SD3 single file `path` with what it lacks from `modules`
    (module docstring; a module replaces the file's own part), and the modules' stems (Forge's
    infotext names them "Module N"). WeightsError naming what is missing and how to give it:
    FLUX needs a VAE, CLIP-L and T5; SD3 a VAE, CLIP-L and CLIP-G (T5 optional). A FLUX
    `.gguf` (the transformer alone) gives `transformer` None: diffusion.loaders.flow.gguf
    loads it, quantized."""
    file: Any = tensor_file(Path(path))
    family = flow_file_family(file.path)
    if family is None:
        raise WeightsError(f"{file.path}: neither a FLUX (double_blocks.*) nor an SD3 "
                           "(joint_blocks.*) transformer file")
    kind = "sd3" if family == "sd3" else "flux"
    roles = ("clip_l", "clip_g", "t5") if kind == "sd3" else ("clip_l", "t5")
    found = {role: (refs, file) for role, refs in file_parts(file, roles).items()}
    stems = []
    for given in modules:
        if Path(given).suffix.lower() == ".gguf":  # city96's T5 encoders
            t5 = t5_gguf_refs(given)
            found["t5"] = (t5, t5[T5_MARK].file)
            stems.append(module_stem(Path(given)))
            continue
        module = SafetensorsFile(Path(given))
        parts = file_parts(module, roles)
        if not parts:
            raise WeightsError(f"{module.path}: no VAE or text encoder for {family} found (a "
                               "VAE's decoder.conv_in.weight, CLIP's "
                               f"{CLIP_MARK!r}, T5's {T5_MARK!r})")
        if other := next((role for role in parts if role not in (*roles, "vae")), None):
            takes = ", ".join("t5xxl" if role == "t5" else role for role in roles)
            raise WeightsError(f"{module.path}: a {other.upper().replace('_', '-')} text "
                               f"encoder, which {family} models do not take (they take "
                               f"{takes} and a VAE)")
        found.update({role: (refs, module) for role, refs in parts.items()})
        stems.append(module_stem(module.path))
    slots = {"vae": "vae", "clip_l": "text_encoder",
             "clip_g": "text_encoder_2", "t5": "text_encoder_3" if kind == "sd3"
             else "text_encoder_2"}
    needed = {"vae": "ae.safetensors (the VAE)", "clip_l": "clip_l.safetensors",
              "t5": "t5xxl_fp16.safetensors"} if kind == "flux" else {
        "vae": "a VAE file", "clip_l": "clip_l.safetensors", "clip_g": "clip_g.safetensors"}
    missing = [what for role, what in needed.items() if role not in found]
    if missing:
        raise WeightsError(f"{file.path}: this {family} file has no {', '.join(missing)}; "
                           f"give {' and '.join('--text-encoder ' + m.split()[0] for m in missing)}"
                           " (Forge's VAE / Text Encoder files)")
    components = {slots[role]: _component(slots[role], role, refs, kind, where)
                  for role, (refs, where) in found.items() if role in slots}
    gguf = file.path.suffix.lower() == ".gguf"
    transformer = None if gguf else (load_sd3_file if kind == "sd3" else load_flux_file)(file)
    return FlowWeights(family=kind, transformer=transformer,  # type: ignore[arg-type]
                       scheduler_config=dict(FLOW_SCHEDULERS[family]), tokenizer_dirs={},
                       **components), stems
