"""HunyuanVideo-I2V's text encoder, transformers' LlavaForConditionalGeneration, as the two
parts run here: its language model (a LlamaModel's names: `layers.0.self_attn.q_proj.weight`,
`embed_tokens.weight`, `norm.weight`; the LM head left out) and its picture side
(models.hunyuan_video_i2v_prompt.LlavaVision's names: `vision_tower.vision_model.*`,
`multi_modal_projector.linear_1.weight`). Reads both layouts transformers saves: before 5
(`language_model.model.layers.0...`, `vision_tower.vision_model.embeddings...`) and its newer
one (`model.language_model.layers.0...`, `model.vision_tower.embeddings...`)."""

from __future__ import annotations

from typing import Any, TypeVar

__all__ = ["llava_configs", "split_llava"]

_T = TypeVar("_T")
# transformers' defaults, which a saved config.json leaves out where a value equals them
# (llava-hf's configs do): LlamaConfig's, CLIPVisionConfig's, LlavaConfig's
_LLAMA = {"vocab_size": 32000, "hidden_size": 4096, "intermediate_size": 11008,
          "num_hidden_layers": 32, "num_attention_heads": 32, "hidden_act": "silu",
          "max_position_embeddings": 2048, "rms_norm_eps": 1e-6, "rope_theta": 10000.0}
_CLIP_VISION = {"hidden_size": 768, "intermediate_size": 3072, "num_hidden_layers": 12,
                "num_attention_heads": 12, "num_channels": 3, "image_size": 224,
                "patch_size": 32, "hidden_act": "quick_gelu", "layer_norm_eps": 1e-5,
                "projection_dim": 512}
_LLAVA = {"image_token_index": 32000, "projector_hidden_act": "gelu",
          "vision_feature_select_strategy": "default", "vision_feature_layer": -2,
          "multimodal_projector_bias": True}


def llava_configs(config: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """(the language model's config, the whole LlavaConfig) of a LLaVA config.json, each
    with transformers' defaults where the file leaves them out."""
    text = {**_LLAMA, "model_type": "llama", **(config.get("text_config") or {})}
    vision = {**_CLIP_VISION, **(config.get("vision_config") or {})}
    return text, {**_LLAVA, **config, "text_config": text, "vision_config": vision}


def split_llava(tensors: dict[str, _T]) -> tuple[dict[str, _T], dict[str, _T]]:
    """(the language model's tensors, the vision tower's and projector's) of a LLaVA
    checkpoint's `tensors`, renamed as the module docstring says; the LM head dropped."""
    language: dict[str, _T] = {}
    vision: dict[str, _T] = {}
    for key, value in tensors.items():
        name = key.removeprefix("model.")
        if name.startswith("language_model."):
            rest = name.removeprefix("language_model.")
            if not rest.startswith("lm_head."):
                language[rest.removeprefix("model.")] = value
        elif name.startswith("vision_tower."):
            rest = name.removeprefix("vision_tower.")
            vision["vision_tower." + (rest if rest.startswith("vision_model.")
                                      else "vision_model." + rest)] = value
        elif name.startswith("multi_modal_projector."):
            vision[name] = value
    return language, vision
