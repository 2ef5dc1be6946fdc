"""Sana's prompt states against diffusers' SanaPipeline.encode_prompt on a tiny random
folder: Gemma 2's last hidden states of the prompt behind the complex human instruction (the
first token and the last max_sequence_length - 1 kept) and of a negative prompt without it,
their masks; unpadded, the same real rows. (encode_prompt's own default is no instruction:
SanaPipeline.__call__ passes the list.)"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

pytest.importorskip("diffusers", reason="diffusers is a test-only reference (extra: reference)")
import torch

import gpucore
from diffusion.models.llm import LLMTextModel
from diffusion.models.sana_prompt import COMPLEX_HUMAN_INSTRUCTION, encode
from diffusion.text.llm_tokenizer import LLMTokenizer


def test_sana_prompt_states(first_device: gpucore.Device, tiny_sana: tuple[Path, Any]) -> None:
    folder, reference = tiny_sana
    prompts = ["A red circle ", "an astronaut riding a horse"]
    with torch.no_grad():
        positive, mask, negative, negative_mask = reference.encode_prompt(
            prompts, negative_prompt="a photo of a cat", max_sequence_length=12,
            complex_human_instruction=list(COMPLEX_HUMAN_INSTRUCTION))
    model = LLMTextModel(reference.text_encoder.config.to_dict(), device=first_device)
    model.load_state_dict({k: v.numpy() for k, v in reference.text_encoder.state_dict().items()})
    tokenizer = LLMTokenizer(folder / "tokenizer")
    states, ours_mask = encode(model, tokenizer, prompts, max_sequence_length=12)
    np.testing.assert_array_equal(ours_mask, mask.numpy())
    keep = mask.numpy().astype(bool)
    assert not keep.all() and keep.sum(axis=1)[0] > 2  # some padding, some prompt tokens
    expected = positive.numpy()
    scale = np.abs(expected[keep]).max()
    assert np.abs(states[keep] - expected[keep]).max() < 5e-6 * scale  # 1.1e-6 measured
    # the prompt visibly matters: the two prompts' last real rows differ
    assert np.abs(expected[0, 1:3] - expected[1, 1:3]).max() > 0.1 * scale
    short, short_mask = encode(model, tokenizer, prompts, max_sequence_length=12, padded=False)
    assert short.shape[1] == keep.sum(axis=1).max() < 12
    assert np.abs(short[short_mask.astype(bool)] - states[keep]).max() < 1e-5 * scale
    states, ours_mask = encode(model, tokenizer, ["a photo of a cat"] * 2,
                               max_sequence_length=12, instruction=())
    np.testing.assert_array_equal(ours_mask, negative_mask.numpy())
    keep = ours_mask.astype(bool)
    assert np.abs(states[keep] - negative.numpy()[keep]).max() < 1e-5 * scale
    with pytest.warns(UserWarning, match="past Sana's max_sequence_length"):
        encode(model, tokenizer, ["a cat " * 20], max_sequence_length=12)
    with pytest.raises(ValueError, match="max_sequence_length must be an integer"):
        encode(model, tokenizer, prompts, max_sequence_length=1)
