"""Qwen-Image 2.1's prompt embedding for prompts of text alone against diffusers'
QwenImage21Pipeline.encode_prompt (a tiny random Qwen3-VL text encoder and an offline tiny
tokenizer in a Qwen3VLProcessor; the pipeline's other parts are not needed to encode)."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import numpy as np
import pytest

pytest.importorskip("diffusers", reason="diffusers is a test-only reference")
import torch
from qwen3vl_tiny import tiny_qwen3vl, tiny_qwen3vl_processor, tiny_qwen3vl_tokenizer
from sd_tiny import state_dict
from support import assert_close

import gpucore
from diffusion.loaders.qwen_image import language_model_refs, qwen3_vl_text_config
from diffusion.models.llm import LLMTextModel
from diffusion.models.qwen21_prompt import (
    T2I_TEMPLATE,
    encode_t2i,
    joint_img_mask,
    tokenize_t2i,
)
from diffusion.text.llm_tokenizer import LLMTokenizer

TOL = 1e-5  # float32 through three layers, measured 7.5e-7 of the largest
# two lengths (the batch is padded), an empty prompt (read as " ")
PROMPTS = ["a red circle", "two big blue squares on a wooden table, oil painting", ""]


@pytest.fixture(scope="module")
def folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny tokenizer's folder."""
    return tiny_qwen3vl_tokenizer(tmp_path_factory.mktemp("qwen3vl-tokenizer"))


@pytest.fixture(scope="module")
def reference(folder: Path) -> tuple[Any, Path]:
    """diffusers' QwenImage21Pipeline holding the tiny text encoder and the processor of
    `folder`, and `folder`."""
    import diffusers

    processor = tiny_qwen3vl_processor(folder)
    encoder = tiny_qwen3vl(processor.tokenizer.convert_tokens_to_ids("<|image_pad|>"))
    pipe = diffusers.QwenImage21Pipeline(scheduler=None, vae=None, text_encoder=encoder,
                                         processor=processor, transformer=None)
    return pipe, folder


def _ours(pipe: Any, device: gpucore.Device) -> LLMTextModel:
    """Our text encoder from the reference's config.json and its state dict as a Qwen3-VL
    file holds it (the language model under model.language_model.)."""
    weights = state_dict(pipe.text_encoder)
    assert "model.language_model.layers.0.self_attn.q_norm.weight" in weights
    ours = LLMTextModel(qwen3_vl_text_config(pipe.text_encoder.config.to_dict()), device=device)
    ours.load_state_dict(language_model_refs(weights))
    return ours


def _encode_reference(pipe: Any, prompts: list[str]) -> tuple[np.ndarray, Any, np.ndarray]:
    with torch.no_grad():
        embeds, mask, image_pad = pipe.encode_prompt(prompts, device=torch.device("cpu"))
    return embeds.numpy(), None if mask is None else mask.numpy(), image_pad.numpy()


def test_prompt_embeds_equal_diffusers(reference: tuple[Any, Path],
                                       first_device: gpucore.Device) -> None:
    """A batch of three prompts: the template and the left-padded ids as the processor gives
    them, the system message's token count as the pipeline drops it, then the embeddings,
    their mask and the image-slot mask as encode_prompt returns them."""
    pipe, folder = reference
    tokenizer = LLMTokenizer(folder)
    assert T2I_TEMPLATE == pipe.prompt_template_t2i
    ids, mask, drop = tokenize_t2i(tokenizer, PROMPTS)
    inputs = pipe.processor(text=[T2I_TEMPLATE.format(p or " ") for p in PROMPTS],
                            padding=True, padding_side="left", return_tensors="np")
    np.testing.assert_array_equal(ids, inputs["input_ids"])
    np.testing.assert_array_equal(mask, inputs["attention_mask"])
    assert drop == pipe._drop_idx
    expected = _encode_reference(pipe, PROMPTS)
    got = encode_t2i(_ours(pipe, first_device), tokenizer, PROMPTS)
    assert expected[1] is not None and got[1] is not None
    kept = expected[1].astype(bool)
    assert_close(got[0][kept], expected[0][kept], tol=TOL)
    assert not got[0][~kept].any() and not expected[0][~kept].any()  # zeros past each prompt
    np.testing.assert_array_equal(got[1], expected[1])
    np.testing.assert_array_equal(got[2], expected[2])
    assert got[2].dtype == bool and not got[2].any()


def test_prompts_matter_and_one_prompt_has_no_mask(reference: tuple[Any, Path],
                                                   first_device: gpucore.Device) -> None:
    """Two prompts' embeddings visibly differ (each prompt's last token, which reads all of
    it); one prompt alone: no mask (encode_prompt's None), the embeddings equal its row of
    the padded batch (left padding shifts its positions, which the rotary's relative angles
    do not see)."""
    pipe, folder = reference
    tokenizer = LLMTokenizer(folder)
    ours = _ours(pipe, first_device)
    batch, mask, _ = encode_t2i(ours, tokenizer, PROMPTS[:2])
    assert mask is not None
    last = mask.sum(axis=1) - 1
    first, second = batch[0, last[0]], batch[1, last[1]]
    assert np.abs(first - second).mean() > 0.2 * np.abs(second).mean()  # 0.46
    alone, none, image_pad = encode_t2i(ours, tokenizer, PROMPTS[:1])
    expected = _encode_reference(pipe, PROMPTS[:1])
    assert none is None and expected[1] is None and image_pad.shape == alone.shape[:2]
    assert_close(alone, expected[0], tol=TOL)
    assert_close(alone[0], batch[0, : last[0] + 1], tol=TOL)


@pytest.mark.nodevice
def test_img_mask_and_bad_input(folder: Path) -> None:
    """joint_img_mask: the image-slot mask then one True slot per 2x2 latent tokens (the
    pipeline's append_target_slots); bad input in one line each."""
    image_pad = np.zeros((2, 5), bool)
    got = joint_img_mask(image_pad, 6 * 4)
    assert got.shape == (2, 11) and not got[:, :5].any() and got[:, 5:].all()
    tokenizer = LLMTokenizer(folder)
    with pytest.raises(ValueError, match=re.escape("holds <|image_pad|>")):
        tokenize_t2i(tokenizer, ["a <|image_pad|> b"])
    with pytest.raises(ValueError, match="more than 40 tokens"):
        tokenize_t2i(tokenizer, ["a red circle"], max_length=40)
    with pytest.raises(ValueError, match="non-empty list"):
        tokenize_t2i(tokenizer, "a red circle")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="multiple of 4"):
        joint_img_mask(image_pad, 6)
    with pytest.raises(ValueError, match="no text_config"):
        qwen3_vl_text_config({"hidden_size": 40})
    with pytest.raises(ValueError, match="'qwen2_5_vl_text'; Qwen-Image 2\\.1's is"):
        qwen3_vl_text_config({"text_config": {"hidden_size": 40,
                                              "model_type": "qwen2_5_vl_text"}})
