"""Kolors' text side against diffusers' (tiny models, kolors_tiny): ChatGLMModel's hidden
states before the last layer and its pooled last token, and the ChatGLM tokenizer rebuilt on
`tokenizers` from a SentencePiece BPE model against diffusers' ChatGLMTokenizer (on
SentencePiece's BPE rule written out by hand: the library is not installed here)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("diffusers", reason="test-only reference (extra: reference)")
import torch
from kolors_tiny import VOCAB, chatglm, chatglm_tokenizer, spm_encode, write_spm
from sd_tiny import state_dict

import gpucore
from diffusion.models.chatglm import ChatGLMModel
from diffusion.text.chatglm_tokenizer import ChatGLMTokenizer

PROMPTS = ["a lighthouse at dusk, oil painting", "  a  cat   on the table ", "一只猫坐在桌子上",
           "黄昏 lighthouse ñ é 🙂", "", "the sea " * 40]


def _ours(reference: torch.nn.Module, device: gpucore.Device) -> ChatGLMModel:
    model = ChatGLMModel(dict(reference.config.to_dict()), device=device)
    weights = {k: v for k, v in state_dict(reference).items()
               if k.startswith(("embedding.", "encoder.layers."))}
    model.load_state_dict(weights)
    return model


def test_tokenizer_matches_chatglm_tokenizer(tmp_path: Path) -> None:
    """ids, mask and positions for prompts with extra spaces, Chinese, characters outside the
    vocabulary (byte fallback), the empty prompt and one past max_length (truncated); the
    bare pieces equal SentencePiece's BPE of the text."""
    theirs = chatglm_tokenizer(tmp_path / "theirs")
    ours = ChatGLMTokenizer(write_spm(tmp_path / "ours"), max_length=64)
    expected = theirs(PROMPTS, padding="max_length", max_length=64, truncation=True)
    ids, mask, positions = ours(PROMPTS)
    np.testing.assert_array_equal(ids, expected["input_ids"])
    np.testing.assert_array_equal(mask, expected["attention_mask"])
    np.testing.assert_array_equal(positions, expected["position_ids"])
    for text in PROMPTS:
        assert ours.pieces(text) == spm_encode(text)
    assert any(i < 259 for i in ours.pieces(PROMPTS[3]))  # a byte piece was used
    assert len(VOCAB) + 1 in ids[:, -len(ours.pieces(PROMPTS[0])) - 2]  # [gMASK] leads


def test_chatglm_matches_diffusers(device: gpucore.Device, tmp_path: Path) -> None:
    """hidden_states[-2] (every row, the padding's too) and hidden_states[-1]'s last token
    of left-padded prompts, float32 (measured 1.5e-6 of states up to 4.2)."""
    reference = chatglm().eval()
    ours = _ours(reference, device)
    tokenizer = chatglm_tokenizer(tmp_path)
    batch = tokenizer(PROMPTS[:2], padding="max_length", max_length=24, truncation=True,
                      return_tensors="pt")
    with torch.no_grad():
        out = reference(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"],
                        position_ids=batch["position_ids"], output_hidden_states=True)
    hidden = out.hidden_states[-2].permute(1, 0, 2).numpy()
    pooled = out.hidden_states[-1][-1].numpy()
    # the padding rows see the tokens after them: its rows differ between the prompts
    assert np.abs(hidden[0, 0] - hidden[1, 0]).max() > 0.05
    for row in range(2):
        got, got_pooled = ours.prompt_states(*(batch[k][row:row + 1].numpy() for k in (
            "input_ids", "attention_mask", "position_ids")))
        np.testing.assert_allclose(got.numpy()[0], hidden[row], rtol=0, atol=5e-6)
        np.testing.assert_allclose(got_pooled[0], pooled[row], rtol=0, atol=5e-6)


def test_chatglm_float16_weights(first_device: gpucore.Device, tmp_path: Path) -> None:
    """float16 weights (Kolors' fp16 download), the stream float32: diffusers' float32 states
    of the same float16-rounded weights to float16 error (measured 7e-4 of the largest
    state)."""
    reference = chatglm().eval()
    with torch.no_grad():
        for param in reference.parameters():
            param.copy_(param.half().float())
    ours = ChatGLMModel(dict(reference.config.to_dict()), dtype=np.float16, device=first_device)
    ours.load_state_dict({k: v.astype(np.float16) for k, v in state_dict(reference).items()
                          if k.startswith(("embedding.", "encoder.layers."))})
    batch = chatglm_tokenizer(tmp_path)(PROMPTS[:1], padding="max_length", max_length=24,
                                        truncation=True, return_tensors="pt")
    with torch.no_grad():
        out = reference(**batch, output_hidden_states=True)
    got, pooled = ours.prompt_states(*(batch[k].numpy() for k in (
        "input_ids", "attention_mask", "position_ids")))
    hidden = out.hidden_states[-2].permute(1, 0, 2).numpy()
    scale = np.abs(hidden).max()
    assert np.abs(got.numpy() - hidden).max() < 2e-3 * scale
    assert np.abs(pooled - out.hidden_states[-1][-1].numpy()).max() < 2e-3 * scale
