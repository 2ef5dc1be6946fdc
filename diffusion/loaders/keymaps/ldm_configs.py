"""Diffusers-style configs for the components of a single-file checkpoint, inferred from tensor
shapes, plus the SD1/SD2, inpainting and v-prediction detection diffusers uses."""

from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from ..errors import WeightsError
from ..weights import TensorFile, TensorRef

__all__ = ["PREDICTION_TYPES", "clip_text_config", "detect_prediction_type", "scheduler_config",
           "unet_config", "vae_config"]

PREDICTION_TYPES = ("epsilon", "v_prediction", "sample")
_V_WORDS = {"v": "v_prediction", "v_prediction": "v_prediction", "eps": "epsilon",
            "epsilon": "epsilon", "x0": "sample", "sample": "sample"}


def _count(refs: Mapping[str, TensorRef], pattern: str) -> int:
    """Number of distinct indices `N` in names matching `pattern` (which holds one `(\\d+)`)."""
    regex = re.compile(pattern)
    return len({m[1] for name in refs if (m := regex.match(name))})


def _shape(refs: Mapping[str, TensorRef], name: str, file: TensorFile,
           component: str) -> tuple[int, ...]:
    if name not in refs:
        raise WeightsError(f"{file.path}: {component} tensor {name!r} (diffusers name) is missing; "
                           "the checkpoint is incomplete or not a Stable Diffusion 1/2/XL model")
    return refs[name].shape


def unet_config(refs: Mapping[str, TensorRef], file: TensorFile, *, family: str,
                prediction_type: str) -> dict[str, Any]:
    """UNet2DConditionModel config for converted LDM UNet tensors `refs`.

    Head counts are not stored in the weights: SD1 has 8 heads per attention, SD2 has 64-channel
    heads (diffusers' `attention_head_dim` [5, 10, 20, 20]). SD2 projects with linear layers and
    gets `upcast_attention=True`: it only makes attention softmax run in float32, which SD2.1
    needs in float16 and costs nothing in accuracy elsewhere.
    """
    def shape(name: str) -> tuple[int, ...]:
        return _shape(refs, name, file, "UNet")

    levels = _count(refs, r"down_blocks\.(\d+)\.")
    channels = [shape(f"down_blocks.{i}.resnets.0.conv1.weight")[0] for i in range(levels)]
    attn = "mid_block.attentions.0."
    in_channels = shape("conv_in.weight")[1]
    config: dict[str, Any] = {
        "_class_name": "UNet2DConditionModel",
        "sample_size": 96 if family == "sd2" and prediction_type == "v_prediction" else 64,
        "in_channels": in_channels,
        "out_channels": shape("conv_out.weight")[0],
        "down_block_types": [
            "CrossAttnDownBlock2D" if f"down_blocks.{i}.attentions.0.proj_in.weight" in refs
            else "DownBlock2D" for i in range(levels)],
        "up_block_types": [
            "CrossAttnUpBlock2D" if f"up_blocks.{i}.attentions.0.proj_in.weight" in refs
            else "UpBlock2D" for i in range(levels)],
        "block_out_channels": channels,
        "layers_per_block": _count(refs, r"down_blocks\.0\.resnets\.(\d+)\."),
        "transformer_layers_per_block": _count(refs, r"mid_block\.attentions\.0\."
                                                     r"transformer_blocks\.(\d+)"),
        "cross_attention_dim": shape(attn + "transformer_blocks.0.attn2.to_k.weight")[1],
        "attention_head_dim": [max(1, c // 64) for c in channels] if family == "sd2" else 8,
        "use_linear_projection": len(shape(attn + "proj_in.weight")) == 2,
        "upcast_attention": family == "sd2",
        "act_fn": "silu", "norm_num_groups": 32, "norm_eps": 1e-5, "center_input_sample": False,
        "downsample_padding": 1, "flip_sin_to_cos": True, "freq_shift": 0,
        "mid_block_scale_factor": 1,
    }
    if "time_embedding.cond_proj.weight" in refs:
        config["time_cond_proj_dim"] = refs["time_embedding.cond_proj.weight"].shape[1]
    return config


def vae_config(refs: Mapping[str, TensorRef], file: TensorFile, *,
               sample_size: int) -> dict[str, Any]:
    """AutoencoderKL config for converted LDM VAE tensors (`scaling_factor` is SD's 0.18215)."""
    def shape(name: str) -> tuple[int, ...]:
        return _shape(refs, name, file, "VAE")

    levels = _count(refs, r"encoder\.down_blocks\.(\d+)\.")
    return {
        "_class_name": "AutoencoderKL",
        "sample_size": sample_size,
        "in_channels": shape("encoder.conv_in.weight")[1],
        "out_channels": shape("decoder.conv_out.weight")[0],
        "down_block_types": ["DownEncoderBlock2D"] * levels,
        "up_block_types": ["UpDecoderBlock2D"] * levels,
        "block_out_channels": [shape(f"encoder.down_blocks.{i}.resnets.0.conv1.weight")[0]
                               for i in range(levels)],
        "layers_per_block": _count(refs, r"encoder\.down_blocks\.0\.resnets\.(\d+)\."),
        "latent_channels": shape("decoder.conv_in.weight")[1],
        "act_fn": "silu", "norm_num_groups": 32, "scaling_factor": 0.18215,
    }


def clip_text_config(refs: Mapping[str, TensorRef], file: TensorFile, *,
                     family: str) -> dict[str, Any]:
    """transformers CLIPTextConfig dict: SD1 is OpenAI CLIP ViT-L/14 (quick_gelu), SD2 the
    OpenCLIP ViT-H/14 text tower (gelu, penultimate layer); heads are 64 channels wide."""
    def shape(name: str) -> tuple[int, ...]:
        return _shape(refs, name, file, "text encoder")

    vocab, hidden = shape("embeddings.token_embedding.weight")
    return {
        "architectures": ["CLIPTextModel"], "model_type": "clip_text_model",
        "vocab_size": vocab, "hidden_size": hidden,
        "intermediate_size": shape("encoder.layers.0.mlp.fc1.weight")[0],
        "num_hidden_layers": _count(refs, r"encoder\.layers\.(\d+)\."),
        "num_attention_heads": max(1, hidden // 64),
        "max_position_embeddings": shape("embeddings.position_embedding.weight")[0],
        "hidden_act": "gelu" if family == "sd2" else "quick_gelu",
        "projection_dim": 512 if family == "sd2" else 768,
        "layer_norm_eps": 1e-5, "bos_token_id": 0, "eos_token_id": 2, "pad_token_id": 1,
    }


def scheduler_config(family: str, prediction_type: str) -> dict[str, Any]:
    """The scheduler the reference repos ship (SD1.5: PNDM, SD2.1: DDIM), same training betas."""
    return {
        "_class_name": "DDIMScheduler" if family == "sd2" else "PNDMScheduler",
        "num_train_timesteps": 1000, "beta_start": 0.00085, "beta_end": 0.012,
        "beta_schedule": "scaled_linear", "trained_betas": None, "clip_sample": False,
        "set_alpha_to_one": False, "skip_prk_steps": True, "steps_offset": 1,
        "timestep_spacing": "leading", "prediction_type": prediction_type,
    }


def detect_prediction_type(file: TensorFile, *, family: str, inpainting: bool,
                           explicit: str | None, turbo: bool = False) -> str:
    """What the UNet predicts, from the first source that says:

    1. `explicit` (the caller's `prediction_type=`);
    2. the original LDM config next to the checkpoint (`model.yaml` beside `model.safetensors`):
       `parameterization: "v"` means v-prediction, no such line means LDM's default epsilon;
    3. the file's SAI ModelSpec metadata (`modelspec.prediction_type`, or an architecture
       ending in "-v" such as "stable-diffusion-v2-768-v"), or a `v_pred` marker tensor;
    4. diffusers' default: SD2 (not inpainting) is the 768-v model, everything else epsilon.
       (SD2-base 512 checkpoints are epsilon: pass `prediction_type="epsilon"` or add the yaml.)
       SD-Turbo (`turbo`, distilled from the 512 px SD 2.1) is epsilon, as its diffusers
       scheduler config says.
    """
    if explicit is not None:
        if explicit not in PREDICTION_TYPES:
            raise ValueError(f"prediction_type must be one of {PREDICTION_TYPES}, got {explicit!r}")
        return explicit
    for yaml in (file.path.with_suffix(".yaml"), file.path.with_suffix(".yml")):
        if yaml.is_file():
            return _yaml_parameterization(yaml)
    stated = file.metadata.get("modelspec.prediction_type", "").strip().lower()
    if stated in _V_WORDS:
        return _V_WORDS[stated]
    if file.metadata.get("modelspec.architecture", "").endswith("-v") or "v_pred" in file:
        return "v_prediction"
    return "v_prediction" if family == "sd2" and not (inpainting or turbo) else "epsilon"


def _yaml_parameterization(path: Path) -> str:
    # A regex, not a YAML parser: the one field needed is a plain scalar in every LDM config,
    # and PyYAML is not a dependency.
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except OSError as error:
        raise WeightsError(f"{path}: cannot read the checkpoint's config: {error}") from error
    m = re.search(r"^\s*parameterization:\s*[\"']?(\w+)", text, re.MULTILINE)
    word = m[1].lower() if m else "eps"
    if word not in _V_WORDS:
        raise WeightsError(f"{path}: unknown parameterization {word!r} (expected eps, v or x0)")
    return _V_WORDS[word]
