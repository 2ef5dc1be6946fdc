"""A Wan model put together from single files and a `--base` diffusers folder, as ComfyUI
users have it (Comfy-Org's Wan_2.1_ComfyUI_repackaged / Wan_2.2_ComfyUI_Repackaged):

    transformer     wan2.1_t2v_1.3B_bf16.safetensors, wan2.1_t2v_14B_fp8_e4m3fn.safetensors,
                    wan2.2_t2v_high_noise_14B_fp8_scaled.safetensors, a city96 GGUF
                    (`load_wan_file`); Wan VACE's wan2.1_vace_14B_fp16.safetensors; Wan
                    2.2 Animate's Wan2_2-Animate-14B.safetensors (`load_wan_animate_transformer`)
    vace_module     Kijai's Wan2_1-VACE_module_14B_bf16.safetensors, joined to a plain
                    Wan 2.1 text-to-video transformer file: Wan VACE
    transformer_2   Wan 2.2 A14B's low-noise expert: wan2.2_t2v_low_noise_14B_*.safetensors
    text_encoder    umt5_xxl_fp16.safetensors, umt5_xxl_fp8_e4m3fn_scaled.safetensors
                    (transformers' T5 names; the scaled float8 read by formats.safetensors),
                    or city96's umt5-xxl-encoder-Q8_0.gguf (llama.cpp's names)
    image_encoder   clip_vision_h.safetensors (transformers' CLIPVisionModel names)
    vae             wan_2.1_vae.safetensors, wan2.2_vae.safetensors (TI2V 5B's) in Wan's
                    original names (`load_wan_vae_file`)

The folder gives what no file does: the tokenizer, the scheduler, model_index.json (Wan 2.2
A14B's boundary_ratio, TI2V's expand_timesteps), the configs the shapes do not tell, and
every component no file replaces (the folder may hold only those; a missing one is named
with the file that stands in for it). A VACE transformer file makes the model Wan VACE
whatever the folder's pipeline (a Wan 2.1 text-to-video folder serves: VACE reads the same
UMT5, VAE and scheduler), an Animate file makes it Wan 2.2 Animate (an Animate or Wan 2.1
image-to-video folder serves, or a text-to-video one with the CLIP vision file); a plain one
makes it plain Wan.

    weights = load_wan("Wan2.1-T2V-1.3B-Diffusers",
                       WanFiles(transformer="wan2.1_t2v_1.3B_fp16.safetensors"))
"""

from __future__ import annotations

import os
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

from ..errors import WeightsError
from ..formats.diffusers_folder import component_config
from ..formats.safetensors import SafetensorsFile
from ..keymaps.t5_gguf import t5_gguf_refs
from ..keymaps.t5_keys import T5_MARK, t5_config, t5_encoder_refs
from ..weights import ComponentWeights, TensorRef, resolve_dtype
from .animate import load_wan_animate_transformer
from .file import load_wan_file, wan_file_family
from .folder import WanWeights, load_wan_folder
from .vae_file import load_wan_vae_file

__all__ = ["WanFiles", "load_wan"]

Source = str | os.PathLike[str] | None

_CLIP_MARK = "vision_model.embeddings.patch_embedding.weight"
_CLIP_PARTS = ("embeddings.", "pre_layrnorm.", "encoder.", "post_layernorm.")


@dataclass(frozen=True)
class WanFiles:
    """Single files in place of a Wan folder's components (None: the folder's own)."""

    transformer: Source = None
    transformer_2: Source = None
    text_encoder: Source = None
    image_encoder: Source = None
    vae: Source = None
    vace_module: Source = None

    def given(self) -> dict[str, Path]:
        """The components given as files, by name (and the VACE module as "vace_module")."""
        return {f.name: Path(value) for f in fields(self)
                if (value := getattr(self, f.name)) is not None}


def load_umt5_file(path: Path, config: dict[str, Any] | None, dtype: Any) -> ComponentWeights:
    """The UMT5 text encoder of a .safetensors file (transformers' names, bare or under
    ComfyUI's `text_encoders.umt5xxl.transformer.`) or a llama.cpp-named .gguf; `config`: the
    folder's text_encoder/config.json, else read from the shapes."""
    if path.suffix.lower() == ".gguf":
        refs = t5_gguf_refs(path)
    else:
        file = SafetensorsFile(path)
        prefix = next((p for p in ("", "text_encoders.umt5xxl.transformer.")
                       if p + T5_MARK in file), None)
        if prefix is None:
            raise WeightsError(f"{path}: no {T5_MARK!r} tensor: not a UMT5 text encoder "
                               "file; --text-encoder takes umt5_xxl_fp16.safetensors, "
                               "umt5_xxl_fp8_e4m3fn_scaled.safetensors or a UMT5 .gguf")
        refs = {key[len(prefix):]: TensorRef(file, key, file.shape(key))
                for key in file.keys() if key.startswith(prefix)}
    if "encoder.block.1.layer.0.SelfAttention.relative_attention_bias.weight" not in refs \
            and "encoder.block.1.layer.0.SelfAttention.q.weight" in refs:
        raise WeightsError(f"{path}: a T5 encoder (one position bias table), not UMT5 (one "
                           "per block): Wan reads umt5-xxl; give umt5_xxl_*.safetensors")
    taken = t5_encoder_refs(refs)
    return ComponentWeights("text_encoder", config or t5_config(taken), taken, dtype=dtype)


def load_clip_vision_file(path: Path, config: dict[str, Any] | None, dtype: Any
                          ) -> ComponentWeights:
    """The CLIP vision encoder of a .safetensors file in transformers' names, under
    `vision_model.` (ComfyUI's clip_vision_h.safetensors) or bare; `config`: the folder's
    image_encoder/config.json, else ViT-H/14's (open_clip's, which Wan 2.1 I2V reads)."""
    file = SafetensorsFile(path)
    bare = _CLIP_MARK.removeprefix("vision_model.") in file  # transformers 5 saves no prefix
    if _CLIP_MARK not in file and not bare:
        raise WeightsError(f"{path}: no {_CLIP_MARK!r} tensor: not a CLIP vision encoder in "
                           "transformers' names; --clip-vision takes clip_vision_h"
                           ".safetensors")
    parts = _CLIP_PARTS if bare else ("vision_model.",)
    refs = {("vision_model." if bare else "") + key: TensorRef(file, key, file.shape(key))
            for key in file.keys() if key.startswith(parts)}
    if config is None:
        width, _, patch, _ = refs[_CLIP_MARK].shape
        positions = refs["vision_model.embeddings.position_embedding.weight"].shape[0]
        config = {"hidden_size": width, "patch_size": patch,
                  "image_size": patch * round((positions - 1) ** 0.5),
                  "intermediate_size": refs["vision_model.encoder.layers.0.mlp.fc1.weight"]
                  .shape[0], "num_attention_heads": width // 80, "hidden_act": "gelu",
                  "num_hidden_layers": 1 + max(int(k.split(".")[3]) for k in refs
                                               if k.startswith("vision_model.encoder.layers."))}
    return ComponentWeights("image_encoder", config, refs, dtype=dtype)


def load_wan(base: str | os.PathLike[str], files: WanFiles | None = None, *,
             dtype: Any = None, variant: str | None = None) -> WanWeights:
    """Lazy weights of the Wan folder `base` with `files` in place of its components (module
    docstring). WeightsError naming the file or folder at fault, or the file to add."""
    given = (files or WanFiles()).given()
    weights = load_wan_folder(base, dtype=dtype, variant=variant,
                              skip=tuple(name for name in given if name != "vace_module"))
    resolved = resolve_dtype(dtype)
    if "vace_module" in given and "transformer" not in given:
        raise WeightsError(f"{given['vace_module']}: a VACE module joins a Wan transformer "
                           "file; give the Wan 2.1 text-to-video transformer file as the model")
    animate = "transformer" in given and wan_file_family(given["transformer"]) == "wan-animate"
    if animate:  # Wan 2.2 Animate's original file, its head count from the folder's config
        weights.transformer = load_wan_animate_transformer(
            given["transformer"], dtype=dtype, config=component_config(base, "transformer"))
    for name in ("transformer", "transformer_2"):
        if name in given and not (animate and name == "transformer"):
            config = component_config(base, name) or (
                component_config(base, "transformer") if name == "transformer_2" else None)
            module = given.get("vace_module") if name == "transformer" else None
            setattr(weights, name, load_wan_file(given[name], dtype=dtype, config=config,
                                                 vace_module=module))
    if "transformer" in given:  # the file says whether the model is VACE or Animate, not
        kinds = {part.config.get("_class_name")  # the folder
                 for part in (weights.transformer, weights.transformer_2) if part is not None}
        if len(kinds) > 1:
            raise WeightsError("the two Wan 2.2 experts are of different kinds (VACE, Animate "
                               "or plain): give both experts' files of one kind")
        kind = kinds.pop()
        weights.vace = kind == "WanVACETransformer3DModel"
        weights.animate = kind == "WanAnimateTransformer3DModel"
    if "transformer_2" in given and weights.boundary_ratio is None:
        raise WeightsError(f"--model-2 {given['transformer_2']}: the folder {base} sets no "
                           "boundary_ratio (model_index.json); a second expert needs a Wan "
                           "2.2 A14B folder as --base")
    if "text_encoder" in given:
        weights.text_encoder = load_umt5_file(given["text_encoder"],
                                              component_config(base, "text_encoder"), resolved)
    if "vae" in given:
        weights.vae = load_wan_vae_file(given["vae"], component_config(base, "vae"), resolved)
    if "image_encoder" in given:
        weights.image_encoder = load_clip_vision_file(
            given["image_encoder"], component_config(base, "image_encoder"), resolved)
    _check_latents(weights, base)
    return weights


def _check_latents(weights: WanWeights, base: str | os.PathLike[str]) -> None:
    """WeightsError in one line when a transformer's latents are not the VAE's (a file beside
    the folder of another Wan: Wan 2.1's 16 channels, Wan 2.2 TI2V 5B's 48)."""
    assert weights.vae is not None
    channels = weights.vae.config.get("z_dim", 16)
    for part in (weights.transformer, weights.transformer_2):
        if part is None:
            continue
        made = part.config.get("out_channels") or part.config.get("in_channels")
        if made != channels:
            raise WeightsError(f"the transformer makes {made}-channel latents, the VAE of "
                               f"{base} reads {channels}: give --base the diffusers folder of "
                               "the same Wan model (Wan 2.1 and 2.2 A14B: 16, TI2V 5B: 48)")
