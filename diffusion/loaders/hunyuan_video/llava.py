"""HunyuanVideo-I2V's text encoder, transformers' LlavaForConditionalGeneration, as the two
parts run here: its language model (a LlamaModel's names: `layers.0.self_attn.q_proj.weight`,
`embed_tokens.weight`, `norm.weight`; the LM head left out) and its picture side
(models.hunyuan_video_i2v_prompt.LlavaVision's names: `vision_tower.vision_model.*`,
`multi_modal_projector.linear_1.weight`). Reads both layouts transformers saves: before 5
(`language_model.model.layers.0...`, `vision_tower.vision_model.embeddings...`) and its newer
one (`model.language_model.layers.0...`, `model.vision_tower.embeddings...`)."""

from __future__ import annotations

from typing import TypeVar

__all__ = ["split_llava"]

_T = TypeVar("_T")


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
