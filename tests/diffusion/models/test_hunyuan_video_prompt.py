"""HunyuanVideo's prompt encoding against diffusers' HunyuanVideoPipeline.encode_prompt (a tiny
random LlamaModel and CLIPTextModel, hunyuan_video_text_tiny's Llama 3 shaped tokenizer; the
pipeline's other parts are not needed to encode): the template, the ids Llama reads, the
states two layers before the last with the template's 95 tokens dropped, their mask, and
CLIP's pooled output, for a batch of prompts of different lengths, one cut off."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

pytest.importorskip("diffusers", reason="diffusers is a test-only reference")
import torch
from hunyuan_video_text_tiny import tiny_hunyuan_video_text
from sd_tiny import state_dict
from support import assert_close

import gpucore
from diffusion.models.clip import CLIPTextModel
from diffusion.models.hunyuan_video_prompt import (
    CROP_START,
    PROMPT_TEMPLATE,
    clip_pooled,
    llama_states,
    tokenize,
)
from diffusion.models.llm import LLMTextModel
from diffusion.text.llm_tokenizer import LLMTokenizer
from diffusion.text.tokenizer import CLIPTokenizer

LENGTH = 24  # max_sequence_length
# (states, pooled), of the largest: float32 measured 7.5e-6 (the tiny Llama's states reach
# 104) and 5.6e-7
TOL = (2e-5, 2e-6)
# short, empty, and cut off (past 24 tokens after the template's 95)
PROMPTS = ["a red circle", "", "the quick brown fox jumps over the lazy dog on a blue "
           "background with an astronaut riding a horse and a cat sitting on a mat"]


@pytest.fixture(scope="module")
def parts(tmp_path_factory: pytest.TempPathFactory) -> tuple[Any, Path]:
    """(diffusers' pipeline of the text parts alone, the tokenizers' root)."""
    import diffusers

    root = tmp_path_factory.mktemp("hunyuan-video-text")
    pipe = diffusers.HunyuanVideoPipeline(transformer=None, vae=None, scheduler=None,
                                          **tiny_hunyuan_video_text(root))
    return pipe, root


def _ours(pipe: Any, root: Path, device: gpucore.Device
          ) -> tuple[LLMTextModel, LLMTokenizer, CLIPTextModel, CLIPTokenizer]:
    llama = LLMTextModel(pipe.text_encoder.config.to_dict(), device=device)
    llama.load_state_dict(state_dict(pipe.text_encoder))
    clip = CLIPTextModel(pipe.text_encoder_2.config.to_dict(), device=device)
    clip.load_state_dict(state_dict(pipe.text_encoder_2, "text_model."))
    return (llama, LLMTokenizer(root / "llama-tokenizer"), clip,
            CLIPTokenizer.from_pretrained(root / "clip-tokenizer"))


def test_prompt_states_equal_diffusers(parts: tuple[Any, Path],
                                       first_device: gpucore.Device) -> None:
    """The template and crop as diffusers', the ids Llama reads (captured from its call),
    the states, mask and pooled output of a batch; a prompt changes its own row only."""
    from diffusers.pipelines.hunyuan_video.pipeline_hunyuan_video import (
        DEFAULT_PROMPT_TEMPLATE,
    )

    pipe, root = parts
    assert (PROMPT_TEMPLATE, CROP_START) == (DEFAULT_PROMPT_TEMPLATE["template"],
                                            DEFAULT_PROMPT_TEMPLATE["crop_start"])
    seen: dict[str, Any] = {}
    hook = pipe.text_encoder.register_forward_pre_hook(
        lambda _m, _args, kwargs: seen.update(kwargs), with_kwargs=True)
    try:
        with torch.no_grad():
            expected, pooled_expected, mask_expected = (t.numpy() for t in pipe.encode_prompt(
                PROMPTS, max_sequence_length=LENGTH, device=torch.device("cpu")))
    finally:
        hook.remove()
    llama, tokenizer, clip, clip_tokenizer = _ours(pipe, root, first_device)
    with pytest.warns(UserWarning, match=r"tokens past HunyuanVideo's max_sequence_length"):
        ids, _ = tokenize(tokenizer, PROMPTS, LENGTH)
    np.testing.assert_array_equal(ids, seen["input_ids"].numpy())
    # the tiny tokenizer keeps the short prompts whole: a real token after the crop is theirs
    assert seen["attention_mask"].numpy()[:2, CROP_START:].sum() > 3
    with pytest.warns(UserWarning):
        states, mask = llama_states(llama, tokenizer, PROMPTS, LENGTH)
    pooled = clip_pooled(clip, clip_tokenizer, PROMPTS)
    assert states.shape == expected.shape == (3, LENGTH, 40) and states.dtype == np.float32
    np.testing.assert_array_equal(mask, mask_expected)
    assert_close(states, expected, tol=TOL[0], atol=TOL[0] * np.abs(expected).max())
    assert pooled.shape == pooled_expected.shape == (3, 32)
    assert_close(pooled, pooled_expected, tol=TOL[1], atol=TOL[1] * np.abs(pooled).max())
    # the prompt matters: another first prompt moves its row far past the tolerance, and
    # leaves the others' as they were (the padding is the row's own)
    other, _ = llama_states(llama, tokenizer, ["a blue cat", *PROMPTS[1:2]], LENGTH)
    floor = 100 * TOL[0] * np.abs(states).max()
    assert np.abs(other[0] - states[0]).max() > floor
    np.testing.assert_allclose(other[1], states[1], atol=TOL[0] * np.abs(states).max())
    other_pooled = clip_pooled(clip, clip_tokenizer, ["a blue cat"])
    assert np.abs(other_pooled - pooled[:1]).max() > 100 * TOL[1] * np.abs(pooled).max()


def test_bad_input(parts: tuple[Any, Path], first_device: gpucore.Device,
                   tmp_path: Path) -> None:
    """One-line ValueErrors for a bad length or prompt list, a text encoder other than
    Llama's, a tokenizer without Llama 3's chat tokens and a CLIP with a projection."""
    from zimage_tiny import tiny_qwen_tokenizer

    llama, tokenizer, clip, clip_tokenizer = _ours(*parts, first_device)
    for length in (0, 2.5, True):
        with pytest.raises(ValueError, match="max_sequence_length must be a whole number"):
            llama_states(llama, tokenizer, ["a cat"], length)
    with pytest.raises(ValueError, match="a non-empty list of strings"):
        llama_states(llama, tokenizer, [])
    with pytest.raises(ValueError, match=r"has no <\|start_header_id\|> token: HunyuanVideo"):
        llama_states(llama, LLMTokenizer(tiny_qwen_tokenizer(tmp_path / "qwen")), ["a cat"])
    clip.has_projection = True
    with pytest.raises(ValueError, match="CLIP's pooled output without a projection"):
        clip_pooled(clip, clip_tokenizer, ["a cat"])
    llama.config = {**llama.config, "model_type": "qwen3"}
    with pytest.raises(ValueError, match="LLaVA-Llama-3's language model"):
        llama_states(llama, tokenizer, ["a cat"])
