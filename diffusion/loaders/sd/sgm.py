"""SDXL single-file checkpoints (Stability's SGM layout, `sd_xl_base_1.0.safetensors` and the
files shared as such): `conditioner.embedders.*` text encoders, `model.diffusion_model.*` UNet
with `label_emb`, `first_stage_model.*` VAE, converted to diffusers names and configs as diffusers'
`StableDiffusionXLPipeline.from_single_file` does.

Base: embedders.0 is CLIP ViT-L in transformers' layout (`...0.transformer.text_model.*`),
embedders.1 the OpenCLIP ViT-bigG text tower (`...1.model.*`). Refiner: only OpenCLIP bigG, as
embedders.0 (`...0.model.*`). Configs come from the tensor shapes; what the shapes cannot tell
is SDXL's: 64-channel attention heads, 32 GroupNorm groups, 1024 px.
"""

from __future__ import annotations

import re
from typing import Any, Literal

import numpy as np

from ..errors import WeightsError
from ..keymaps.expected_keys import clip_text_keys, unet_keys, vae_keys
from ..keymaps.ldm_configs import clip_text_config, detect_prediction_type, unet_config, vae_config
from ..keymaps.ldm_keys import (
    UNET_PREFIX,
    VAE_PREFIX,
    clip_refs,
    open_clip_refs,
    unet_refs,
    vae_refs,
)
from ..weights import (
    ComponentWeights,
    ModelInfo,
    PipelineWeights,
    TensorFile,
    TensorRef,
    require_keys,
)

__all__ = ["SGM_CLIP_PREFIX", "is_turbo", "load_sgm_file", "turbo_scheduler_config"]

SGM_CLIP_PREFIX = "conditioner.embedders.0.transformer."
_OPEN_CLIP = {"sdxl": "conditioner.embedders.1.model.",
              "sdxl-refiner": "conditioner.embedders.0.model."}
TIME_IDS = {"sdxl": 6, "sdxl-refiner": 5}  # size, crop, target (2 each); refiner: score not target
_PIPELINE = {"sdxl": {"force_zeros_for_empty_prompt": True},
             "sdxl-refiner": {"force_zeros_for_empty_prompt": False,
                              "requires_aesthetics_score": True}}
# diffusers' SCHEDULER_DEFAULT_CONFIG with "euler" (single_file_utils._legacy_load_scheduler),
# the same as stable-diffusion-xl-base-1.0's scheduler_config.json
_EULER = {"_class_name": "EulerDiscreteScheduler", "num_train_timesteps": 1000,
          "beta_start": 0.00085, "beta_end": 0.012, "beta_schedule": "scaled_linear",
          "trained_betas": None, "interpolation_type": "linear", "sample_max_value": 1.0,
          "set_alpha_to_one": False, "skip_prk_steps": True, "steps_offset": 1,
          "timestep_spacing": "leading", "use_karras_sigmas": False, "clip_sample": False}


def is_turbo(file: TensorFile) -> bool:
    """A Turbo (ADD-distilled) checkpoint: its file name or ModelSpec title/architecture says so
    (the weights alone cannot tell; `sd_xl_turbo_1.0.safetensors`, `sd_turbo.safetensors`)."""
    said = " ".join([file.path.name, file.metadata.get("modelspec.title", ""),
                     file.metadata.get("modelspec.architecture", "")])
    return "turbo" in said.lower()


def turbo_scheduler_config(family: str, prediction_type: str) -> dict[str, Any]:
    """The schedulers stabilityai/sdxl-turbo (Euler ancestral) and sd-turbo (Euler) ship: the SD
    training betas with "trailing" timestep spacing, so 1-4 steps start at the last timestep."""
    config = {**_EULER, "timestep_spacing": "trailing", "prediction_type": prediction_type}
    if family.startswith("sdxl"):
        config["_class_name"] = "EulerAncestralDiscreteScheduler"
        for key in ("interpolation_type", "use_karras_sigmas"):
            del config[key]
    return config


def sgm_family(file: TensorFile) -> Literal["sdxl", "sdxl-refiner"]:
    """Base or refiner from which text encoders the file holds; WeightsError for other sets."""
    def has(prefix: str) -> bool:
        return any(key.startswith(prefix) for key in file.keys())

    clip, open_0, open_1 = (has(SGM_CLIP_PREFIX), has(_OPEN_CLIP["sdxl-refiner"]),
                            has(_OPEN_CLIP["sdxl"]))
    if clip and open_1 and not open_0:
        return "sdxl"
    if open_0 and not clip and not open_1:
        return "sdxl-refiner"
    found = sorted({m[0] for key in file.keys()
                    if (m := re.match(r"conditioner\.embedders\.\d+\.\w+", key))})
    if open_0 and (clip or open_1):
        why = ("it mixes a refiner's text encoder (conditioner.embedders.0.model.*) with a base "
               "model's (conditioner.embedders.0.transformer.* / conditioner.embedders.1.model.*)")
    elif clip:
        why = ("an SDXL base checkpoint needs OpenCLIP ViT-bigG as conditioner.embedders.1.model.*"
               " besides CLIP ViT-L; it is missing")
    else:
        why = "it has neither SDXL base's nor the refiner's text encoders"
    raise WeightsError(f"{file.path}: not a complete SDXL checkpoint: {why} (found "
                       f"{', '.join(found) or 'no text encoder'}); re-download or re-save it")


def load_sgm_file(file: TensorFile, *, dtype: np.dtype | None,
                  prediction_type: str | None) -> PipelineWeights:
    """Lazy weights of an SDXL base or refiner single-file checkpoint (see
    `load_pipeline_weights`)."""
    family = sgm_family(file)
    for key in (UNET_PREFIX + "input_blocks.0.0.weight", UNET_PREFIX + "label_emb.0.0.weight",
                VAE_PREFIX + "decoder.conv_in.weight"):
        if key not in file:
            raise WeightsError(f"{file.path}: not a complete SDXL checkpoint: tensor {key!r} is "
                               "missing; the file is truncated or holds only part of the model")
    texts: dict[str, dict[str, TensorRef]] = {
        "text_encoder_2": open_clip_refs(file, _OPEN_CLIP[family], whole=True)}
    if family == "sdxl":
        texts["text_encoder"] = clip_refs(file, SGM_CLIP_PREFIX)
    configs = {name: _text_config(refs, file, name) for name, refs in texts.items()}
    unet = unet_refs(file)
    inpainting = file.shape(UNET_PREFIX + "input_blocks.0.0.weight")[1] == 9
    prediction = detect_prediction_type(file, family=family, inpainting=inpainting,
                                        explicit=prediction_type)
    configs["unet"] = sgm_unet_config(unet, file, family, configs, prediction)
    vae = vae_refs(file)
    configs["vae"] = {**vae_config(vae, file, sample_size=1024), "scaling_factor": 0.13025,
                      "force_upcast": True}
    components = {}
    prefixes = {"unet": UNET_PREFIX, "vae": VAE_PREFIX, "text_encoder": SGM_CLIP_PREFIX,
                "text_encoder_2": _OPEN_CLIP[family]}
    for name, refs, expected in (("unet", unet, unet_keys), ("vae", vae, vae_keys),
                                 *((n, r, clip_text_keys) for n, r in texts.items())):
        # the missing tensor is named as diffusers names it; say where its LDM keys live
        where = f"{file.path} (keys {prefixes[name]}*)"
        kept = require_keys(name, refs, expected(configs[name]), where)
        components[name] = ComponentWeights(name, configs[name], kept, dtype=dtype)
    turbo = is_turbo(file)
    scheduler = (turbo_scheduler_config(family, prediction) if turbo
                 else {**_EULER, "prediction_type": prediction})
    return PipelineWeights(
        unet=components["unet"], vae=components["vae"],
        text_encoder=components.get("text_encoder"), text_encoder_2=components["text_encoder_2"],
        scheduler_config=scheduler, pipeline_config=dict(_PIPELINE[family]),
        info=ModelInfo(family=family, inpainting=inpainting, prediction_type=prediction,
                       source="single_file", turbo=turbo))


def _text_config(refs: dict[str, TensorRef], file: TensorFile, name: str) -> dict[str, Any]:
    """SDXL's text_encoder (CLIP ViT-L, quick_gelu) / text_encoder_2 (bigG, gelu, projection)
    configs, as their config.json files have them (legacy eos_token_id 2)."""
    if name == "text_encoder":
        return clip_text_config(refs, file, family="sd1")
    if "text_projection.weight" not in refs:
        raise WeightsError(f"{file.path}: the OpenCLIP text encoder has no text_projection; "
                           "SDXL needs it for the pooled prompt embedding (the file is "
                           "incomplete or not an SDXL checkpoint)")
    return {**clip_text_config(refs, file, family="sd2"),
            "architectures": ["CLIPTextModelWithProjection"],
            "projection_dim": refs["text_projection.weight"].shape[0]}


def _depths(refs: dict[str, TensorRef], levels: int) -> int | list[int]:
    """transformer_layers_per_block from the keys: one int when every attention level has the
    mid block's depth (SDXL refiner: 4), else each level's count, levels without attention 1
    except the last, whose entry diffusers also uses for the mid block (SDXL base: [1, 2, 10])."""
    def count(head: str) -> int:
        regex = re.compile(re.escape(head) + r"transformer_blocks\.(\d+)\.")
        return len({m[1] for name in refs if (m := regex.match(name))})

    mid = count("mid_block.attentions.0.")
    found = [count(f"down_blocks.{i}.attentions.0.") for i in range(levels)]
    if {d for d in found if d} <= {mid}:
        return mid
    return [d or (mid if i == levels - 1 else 1) for i, d in enumerate(found)]


def sgm_unet_config(refs: dict[str, TensorRef], file: TensorFile, family: str,
                 texts: dict[str, dict[str, Any]], prediction: str) -> dict[str, Any]:
    """SDXL UNet2DConditionModel config; WeightsError when the UNet does not fit the text
    encoders (a refiner UNet in a base checkpoint or the reverse)."""
    config = unet_config(refs, file, family="sd2", prediction_type=prediction)
    channels = config["block_out_channels"]
    widths = [texts[n]["hidden_size"] for n in ("text_encoder", "text_encoder_2") if n in texts]
    pooled = texts["text_encoder_2"]["projection_dim"]
    add_in = refs["add_embedding.linear_1.weight"].shape[1]
    time_dim, rest = divmod(add_in - pooled, TIME_IDS[family])
    kind = "base" if family == "sdxl" else "refiner"
    if config["cross_attention_dim"] != sum(widths) or rest or time_dim <= 0:
        raise WeightsError(
            f"{file.path}: the UNet does not fit the SDXL {kind}'s text encoders: it attends to "
            f"{config['cross_attention_dim']}-wide context (the encoders give {sum(widths)}) and "
            f"its label_emb takes {add_in} inputs (a {pooled}-wide pooled embedding plus "
            f"{TIME_IDS[family]} equal time ids expected); the file mixes parts of different "
            "models")
    config.update({
        "sample_size": 128, "attention_head_dim": [max(1, c // 64) for c in channels],
        "upcast_attention": False,
        "transformer_layers_per_block": _depths(refs, len(channels)),
        "addition_embed_type": "text_time", "addition_time_embed_dim": time_dim,
        "projection_class_embeddings_input_dim": add_in,
        "addition_embed_type_num_heads": 64,
    })
    return config
