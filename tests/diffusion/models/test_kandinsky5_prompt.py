"""Kandinsky 5's prompt encoding against diffusers' Kandinsky5T2IPipeline.encode_prompt (a tiny
random Qwen2_5_VLForConditionalGeneration and CLIPTextModel, a tiny Qwen tokenizer that splits
the template as Qwen2.5-VL's does; the pipeline's other parts are not needed to encode): the
token ids both encoders read, the Qwen states, CLIP's pooled output and the cu_seqlens they
imply."""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Any

import numpy as np
import pytest

pytest.importorskip("diffusers", reason="diffusers is a test-only reference")
import torch
from kandinsky5_text_tiny import tiny_kandinsky5_text_pipeline
from sd_tiny import state_dict
from support import assert_close
from zimage_tiny import tiny_qwen_tokenizer

import gpucore
from diffusion.loaders.qwen_image.folder import language_model_config, language_model_refs
from diffusion.models.clip import CLIPTextModel
from diffusion.models.kandinsky5_prompt import (
    PREFIX_TOKENS,
    PROMPT_TEMPLATE,
    clean_prompt,
    clip_ids,
    encode,
    tokenize,
)
from diffusion.models.llm import LLMTextModel
from diffusion.text.llm_tokenizer import LLMTokenizer
from diffusion.text.tokenizer import CLIPTokenizer

LENGTH = 20  # max_sequence_length
# (states, pooled), of the largest: float32 measured 8.3e-7 and 5.6e-7, float16 2.7e-3 and 1.5e-3
TOL = {np.float32: (2e-6, 2e-6), np.float16: (5e-3, 3e-3)}
# short, empty (only <|im_end|> after the prefix), white space and entities to clean, and cut
# off (past 20 tokens after the prefix)
PROMPTS = ["a red circle", "", "  a cat &amp;amp;\t on a\u3000mat\x1c ",
           "the quick brown fox jumps over the lazy dog on a blue background with an astronaut "
           "riding a horse"]


@pytest.fixture(scope="module")
def root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("kandinsky5-text")


@pytest.fixture(scope="module")
def pipe(root: Path) -> Any:
    return tiny_kandinsky5_text_pipeline(root)


@pytest.fixture(scope="module")
def tokenizers(pipe: Any, root: Path) -> tuple[LLMTokenizer, CLIPTokenizer]:
    return (LLMTokenizer(root / "qwen-tokenizer"),
            CLIPTokenizer.from_pretrained(root / "clip-tokenizer"))


def _ours(pipe: Any, device: gpucore.Device, dtype: Any = np.float32
          ) -> tuple[LLMTextModel, CLIPTextModel]:
    """Our encoders from the pipeline's: Qwen2.5-VL's language model, CLIP without the
    `text_model.` prefix of its weights."""
    qwen = LLMTextModel(language_model_config(pipe.text_encoder.config.to_dict()), dtype=dtype,
                        device=device)
    qwen.load_state_dict(language_model_refs(state_dict(pipe.text_encoder)))
    clip = CLIPTextModel(pipe.text_encoder_2.config.to_dict(), dtype=dtype, device=device)
    clip.load_state_dict(state_dict(pipe.text_encoder_2, "text_model."))
    return qwen, clip


def _reference(pipe: Any, prompt: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    with torch.no_grad():
        states, pooled, cu = pipe.encode_prompt(prompt, max_sequence_length=LENGTH,
                                                device=torch.device("cpu"))
    return states.numpy(), pooled.numpy(), cu.numpy()


def _cut(prompt: str) -> Any:
    """What reading `prompt` must warn: that it was cut (the last of PROMPTS), else nothing."""
    if prompt is not PROMPTS[-1]:
        return contextlib.nullcontext()
    return pytest.warns(UserWarning, match=r"is \d+ tokens past Kandinsky 5's max_sequence_len")


def test_template_cleaning_and_ids_equal_diffusers(pipe: Any, tokenizers: Any) -> None:
    """The template and the dropped count as the pipeline holds them, the cleaning, and the
    ids each encoder reads (captured from diffusers' calls): Qwen's the same, CLIP's its 77
    up to the end-of-text token, the rest masked padding."""
    from diffusers.pipelines.kandinsky5.pipeline_kandinsky_t2i import prompt_clean

    assert (PROMPT_TEMPLATE, PREFIX_TOKENS) == (pipe.prompt_template,
                                                pipe.prompt_template_encode_start_idx)
    for text in [*PROMPTS, "&lt;b&gt; x\x1d\x1fy\u2028\u00a0z &#x20;", "\x1c", " \n "]:
        assert clean_prompt(text) == prompt_clean(text), repr(text)
    seen: dict[str, Any] = {}
    hooks = [model.register_forward_pre_hook(
        lambda _m, _args, kwargs, name=name: seen.__setitem__(name, kwargs), with_kwargs=True)
        for name, model in (("qwen", pipe.text_encoder), ("clip", pipe.text_encoder_2))]
    qwen_tokenizer, clip_tokenizer = tokenizers
    try:
        for prompt in PROMPTS:
            _reference(pipe, prompt)
            with _cut(prompt):
                ids = tokenize(qwen_tokenizer, clean_prompt(prompt), LENGTH)
            np.testing.assert_array_equal(ids, seen["qwen"]["input_ids"].numpy())
            clip = clip_ids(clip_tokenizer, clean_prompt(prompt))
            expected, mask = (seen["clip"][k].numpy() for k in ("input_ids", "attention_mask"))
            np.testing.assert_array_equal(clip, expected[:, :clip.shape[1]])
            assert mask[0].sum() == clip.shape[1] and clip[0, -1] == clip_tokenizer.eos_token_id
    finally:
        for hook in hooks:
            hook.remove()
    assert ids.shape[1] == PREFIX_TOKENS + LENGTH  # the last prompt, cut to the limit


@pytest.mark.parametrize("dtype", [np.float32, np.float16])
def test_states_and_pooled_equal_diffusers(pipe: Any, tokenizers: Any,
                                           first_device: gpucore.Device, dtype: Any) -> None:
    """Each prompt's Qwen states (its real tokens, the prefix dropped) and CLIP's pooled output
    (BOS .. EOS run, where diffusers runs 77 tokens with the padding masked) as diffusers';
    diffusers' cu_seqlens is [0, the states' length]."""
    qwen, clip = _ours(pipe, first_device, dtype)
    tol, pooled_tol = TOL[dtype]
    for prompt in PROMPTS:
        expected, expected_pooled, cu = _reference(pipe, prompt)
        with _cut(prompt):
            states, pooled = encode(qwen, tokenizers[0], clip, tokenizers[1], prompt,
                                    max_sequence_length=LENGTH)
        assert states.dtype == pooled.dtype == np.float32
        assert states.shape == expected.shape and pooled.shape == expected_pooled.shape == (1, 32)
        np.testing.assert_array_equal(cu, [0, states.shape[1]])
        assert_close(states, expected, tol=tol, atol=tol * np.abs(expected).max())
        assert_close(pooled, expected_pooled, tol=pooled_tol,
                     atol=pooled_tol * np.abs(expected_pooled).max())
    assert states.shape[1] == LENGTH and expected.shape[1] == LENGTH  # the cut prompt


def test_prompt_changes_both_outputs(pipe: Any, tokenizers: Any,
                                     first_device: gpucore.Device) -> None:
    """The tiny random encoders read the prompt: two prompts' Qwen states differ far past the
    tolerance at the prompt's first token and, through attention, at the closing <|im_end|>
    (the same token in both), and so do their pooled outputs."""
    qwen, clip = _ours(pipe, first_device)
    a, pa = encode(qwen, tokenizers[0], clip, tokenizers[1], "a red circle")
    b, pb = encode(qwen, tokenizers[0], clip, tokenizers[1], "the cat on a mat")
    floor = 100 * TOL[np.float32][0] * np.abs(a).max()
    assert np.abs(a[0, 0] - b[0, 0]).max() > floor and np.abs(a[0, -1] - b[0, -1]).max() > floor
    assert np.abs(pa - pb).max() > 100 * TOL[np.float32][1] * np.abs(pa).max()


def test_bad_input(pipe: Any, tokenizers: Any, first_device: gpucore.Device,
                   tmp_path: Path) -> None:
    """One-line ValueErrors for a bad length or prompt, a non-Qwen2.5-VL encoder, a CLIP with
    a projection and a tokenizer without the template's 40-token split."""
    qwen, clip = _ours(pipe, first_device)
    args = (qwen, tokenizers[0], clip, tokenizers[1])
    for length in (0, 1025, 2.5, True):
        with pytest.raises(ValueError, match=r"max_sequence_length must be an integer 1 \.\. 1024"):
            encode(*args, "a cat", max_sequence_length=length)
    with pytest.raises(ValueError, match="the prompt must be a string, got list"):
        encode(*args, ["a cat"])  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"splits Kandinsky 5's template into \d+ tokens, not 40"):
        tokenize(LLMTokenizer(tiny_qwen_tokenizer(tmp_path / "plain")), "a cat")
    clip.has_projection = True
    with pytest.raises(ValueError, match="CLIP's pooled output without a projection"):
        encode(*args, "a cat")
    qwen.config = {**qwen.config, "model_type": "qwen3"}
    with pytest.raises(ValueError, match=r"Qwen2\.5-VL's language model"):
        encode(*args, "a cat")
