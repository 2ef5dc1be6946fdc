"""HunyuanVideo-I2V's prompt with its picture against diffusers'
HunyuanVideoImageToVideoPipeline._get_llama_prompt_embeds (hunyuan_video_i2v_tiny's LLaVA:
a tiny CLIP ViT/14 at 336 pixels, its 576 picture tokens through the projector into the tiny
Llama, and its Llama 3 shaped tokenizer): the picture's tokens every 4th (token_replace) or
2nd, then the prompt's with the template's 103 tokens and the assistant header dropped, their
mask; a prompt cut off (diffusers' fallback); another picture visibly moves the states."""

from __future__ import annotations

from contextlib import nullcontext
from typing import Any

import numpy as np
import pytest

pytest.importorskip("diffusers", reason="diffusers is a test-only reference")
import torch
from hunyuan_video_i2v_tiny import tiny_hunyuan_video_i2v_text
from sd_tiny import state_dict

import gpucore
from diffusion.loaders.hunyuan_video.llava import llava_configs, split_llava
from diffusion.models.hunyuan_video_i2v_prompt import LlavaVision, llava_states
from diffusion.models.llm import LLMTextModel
from diffusion.text.llm_tokenizer import LLMTokenizer

LENGTH = 24  # max_sequence_length
# of the largest state (the picture's reach 340, the tiny Llama's random weights): float32
# measured 1.7e-5 (the text's states after 576 picture tokens)
TOL = 3e-5
LONG = ("the quick brown fox jumps over the lazy dog on a blue background with an astronaut "
        "riding a horse and a cat sitting on a mat")


def _picture(seed: int) -> Any:
    from PIL import Image

    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 256, (40, 52, 3), dtype=np.uint8))


def test_hunyuan_video_i2v_prompt_equals_diffusers(device: gpucore.Device,
                                                   tmp_path_factory: Any) -> None:
    import diffusers
    from diffusers.pipelines.hunyuan_video.pipeline_hunyuan_video_image2video import (
        DEFAULT_PROMPT_TEMPLATE,
    )

    root = tmp_path_factory.mktemp("hv-i2v-text")
    parts = tiny_hunyuan_video_i2v_text(root)
    pipe = diffusers.HunyuanVideoImageToVideoPipeline(transformer=None, vae=None,
                                                      scheduler=None, **parts)
    llava = parts["text_encoder"]
    language, seen = split_llava(state_dict(llava))
    config = llava.config.to_dict()
    llama = LLMTextModel({**config["text_config"], "model_type": "llama"}, device=device)
    llama.load_state_dict(language)
    vision = LlavaVision(config, device=device)
    vision.load_state_dict(seen)
    tokenizer = LLMTokenizer(root / "llava-tokenizer")
    picture = _picture(1)
    for prompt, interleave in (("a red circle", 4), (LONG, 2)):
        with torch.no_grad():
            expected, expected_mask = pipe._get_llama_prompt_embeds(
                picture, [prompt], DEFAULT_PROMPT_TEMPLATE, device=torch.device("cpu"),
                dtype=torch.float32, max_sequence_length=LENGTH,
                image_embed_interleave=interleave)
        with pytest.warns(UserWarning, match="cut off") if prompt == LONG else nullcontext():
            states, mask = llava_states(llama, vision, tokenizer, picture, [prompt], interleave,
                                        image_token_index=config["image_token_index"],
                                        max_sequence_length=LENGTH)
        np.testing.assert_array_equal(mask, expected_mask.numpy())
        # the padding's states are masked out (diffusers' differ: it lets padding read
        # padding, which no kept token sees)
        kept = mask.astype(bool)
        error = np.abs(states - expected.numpy())[kept].max()
        assert error < TOL * np.abs(expected.numpy()).max()
    other, _ = llava_states(llama, vision, tokenizer, _picture(2), [LONG], 2,
                            image_token_index=config["image_token_index"],
                            max_sequence_length=LENGTH)
    text = slice(576 // 2, None)  # the prompt's states, moved by the picture before them
    assert np.abs(other[:, text] - states[:, text]).mean() > 0.05 * np.abs(states[:, text]).mean()



def test_llava_configs_fill_transformers_defaults() -> None:
    """A llava-hf style config.json, which leaves out what equals transformers' defaults: the
    vision tower's quick GELU and the language model's hidden size filled in; the
    checkpoints' two layouts of names split alike."""
    text, whole = llava_configs({"model_type": "llava", "image_token_index": 128257,
                                 "text_config": {"vocab_size": 128320, "rope_theta": 5e5},
                                 "vision_config": {"image_size": 336, "patch_size": 14}})
    assert text["model_type"] == "llama" and text["hidden_size"] == 4096
    assert text["rope_theta"] == 5e5 and whole["vision_config"]["hidden_act"] == "quick_gelu"
    assert whole["image_token_index"] == 128257 and whole["vision_feature_layer"] == -2
    old = {"language_model.model.norm.weight": 1, "language_model.lm_head.weight": 2,
           "vision_tower.vision_model.post_layernorm.weight": 3,
           "multi_modal_projector.linear_1.weight": 4}
    new = {"model.language_model.norm.weight": 1, "lm_head.weight": 2,
           "model.vision_tower.post_layernorm.weight": 3,
           "model.multi_modal_projector.linear_1.weight": 4}
    expected = ({"norm.weight": 1}, {"vision_tower.vision_model.post_layernorm.weight": 3,
                                     "multi_modal_projector.linear_1.weight": 4})
    assert split_llava(old) == split_llava(new) == expected
