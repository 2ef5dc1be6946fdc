"""HiDream-I1's prompt encoding against diffusers' HiDreamImagePipeline.encode_prompt (tiny
random CLIPs with projection, T5 and LlamaForCausalLM of hidream_text_tiny; the pipeline's
other parts are not needed to encode): the pooled CLIP pair, T5's masked states and the
stack of every Llama layer's states, for a batch of prompts of different lengths, one cut
off, and prompt_2/3/4 each reaching its own encoder only."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

pytest.importorskip("diffusers", reason="diffusers is a test-only reference")
import torch
from hidream_text_tiny import tiny_hidream_text
from sd_tiny import state_dict
from support import assert_close

import gpucore
from diffusion.models.clip import CLIPTextModel
from diffusion.models.hidream_prompt import clip_pooled, llama_states, t5_states
from diffusion.models.llm import LLMTextModel
from diffusion.models.t5 import T5EncoderModel
from diffusion.text.llm_tokenizer import LLMTokenizer
from diffusion.text.t5_tokenizer import T5Tokenizer
from diffusion.text.tokenizer import CLIPTokenizer

# the prompts here are cut at 12 tokens on purpose (test_hidream_prompt checks the warning)
pytestmark = pytest.mark.filterwarnings("ignore:a prompt is .* past HiDream")
LENGTH = 12  # max_sequence_length
# (pooled, T5, Llama) relative to the largest value: float32, measured 7.2e-7, 8.5e-7, 1.0e-6
TOL = (2e-6, 2e-6, 2e-6)
# short, empty, and cut off past 12 tokens
PROMPTS = ["a red circle", "", "the quick brown fox jumps over the lazy dog on a blue "
           "background with an astronaut riding a horse"]


@pytest.fixture(scope="module")
def parts(tmp_path_factory: pytest.TempPathFactory) -> tuple[Any, Path]:
    """(diffusers' pipeline of the text parts alone, the tokenizers' root)."""
    import diffusers

    root = tmp_path_factory.mktemp("hidream-text")
    pipe = diffusers.HiDreamImagePipeline(transformer=None, vae=None, scheduler=None,
                                          **tiny_hidream_text(root))
    return pipe, root


def _ours(pipe: Any, root: Path, device: gpucore.Device) -> dict[str, Any]:
    clips = []
    for encoder in (pipe.text_encoder, pipe.text_encoder_2):
        clip = CLIPTextModel(encoder.config.to_dict(), device=device, with_projection=True)
        clip.load_state_dict(state_dict(encoder, "text_model."))
        clips.append((clip, CLIPTokenizer.from_pretrained(root / "clip-tokenizer")))
    t5 = T5EncoderModel(pipe.text_encoder_3.config.to_dict(), device=device)
    t5.load_state_dict(state_dict(pipe.text_encoder_3))
    llama = LLMTextModel(pipe.text_encoder_4.config.to_dict(), device=device)
    llama.load_state_dict({k.removeprefix("model."): v for k, v in
                           state_dict(pipe.text_encoder_4).items() if not k.startswith("lm_")})
    return dict(clips=clips, t5=(t5, T5Tokenizer(root / "t5-tokenizer")),
                llama=(llama, LLMTokenizer(root / "llama-tokenizer", pad_with_eos=True)))


def _expected(pipe: Any, prompts: list[str], **others: Any) -> list[np.ndarray]:
    with torch.no_grad():
        out = pipe.encode_prompt(prompts, do_classifier_free_guidance=False,
                                 max_sequence_length=LENGTH, device=torch.device("cpu"),
                                 **others)
    t5, _, llama, _, pooled, _ = out
    return [pooled.numpy(), t5.numpy(), llama.numpy()]


def _close(ours: np.ndarray, expected: np.ndarray, tol: float) -> None:
    assert ours.shape == expected.shape and ours.dtype == np.float32
    assert_close(ours, expected, tol=tol, atol=tol * np.abs(expected).max())


def test_prompt_states_equal_diffusers(parts: tuple[Any, Path],
                                       first_device: gpucore.Device) -> None:
    """The pooled pair (B, 16), T5's states (B, 12, 24) and the Llama stack (3, B, 12, 20)
    of a batch as diffusers'; the padding is Llama's end token, masked; a prompt changes
    its own row only, and each of prompt_2/3/4 its own encoder's part only."""
    pipe, root = parts
    ours = _ours(pipe, root, first_device)
    pooled, t5, llama = _expected(pipe, PROMPTS)
    assert pooled.shape == (3, 16) and t5.shape == (3, LENGTH, 24)
    assert llama.shape == (3, 3, LENGTH, 20)
    with pytest.warns(UserWarning, match="tokens past HiDream's 12 for CLIP"):
        pooled_ours = clip_pooled(ours["clips"], PROMPTS, LENGTH)
    with pytest.warns(UserWarning, match="for T5; its end is cut off"):
        t5_ours = t5_states(*ours["t5"], PROMPTS, LENGTH)
    with pytest.warns(UserWarning, match="for Llama; its end is cut off"):
        llama_ours = llama_states(*ours["llama"], PROMPTS, LENGTH)
    got = [pooled_ours, t5_ours, llama_ours]
    for mine, theirs, tol in zip(got, (pooled, t5, llama), TOL, strict=True):
        _close(mine, theirs, tol)
    # the padding matters (the T5 mask, Llama's end token): the empty prompt's states
    # differ from an unmasked run's
    ids, mask = ours["llama"][1](PROMPTS, LENGTH)
    assert ids[1, -1] == pipe.tokenizer_4.eos_token_id and mask[1, -1] == 0
    unmasked = ours["t5"][0](ours["t5"][1].encode(PROMPTS[1:2], LENGTH)[0]).numpy()
    assert np.abs(unmasked - t5[1:2]).max() > 100 * TOL[1] * np.abs(t5).max()
    # a prompt moves its own row only
    other = [clip_pooled(ours["clips"], ["a blue cat", PROMPTS[1]], LENGTH),
             t5_states(*ours["t5"], ["a blue cat", PROMPTS[1]], LENGTH),
             llama_states(*ours["llama"], ["a blue cat", PROMPTS[1]], LENGTH)]
    for mine, new in zip(got, other, strict=True):
        if mine.ndim == 4:  # the Llama stack's rows are its second axis
            mine, new = np.moveaxis(mine, 1, 0), np.moveaxis(new, 1, 0)
        assert np.abs(new[0] - mine[0]).max() > 100 * 2e-6 * np.abs(mine).max()
        np.testing.assert_allclose(new[1], mine[1], atol=2e-6 * np.abs(mine).max())
    # prompt_2 is CLIP-G's alone (the pooled pair's second half), prompt_3 T5's, prompt_4
    # Llama's: as diffusers reads them
    side = "a photo of a cat sitting on a mat"
    pooled_2, t5_3, llama_4 = (_expected(pipe, PROMPTS[:1], prompt_2=side)[0],
                               _expected(pipe, PROMPTS[:1], prompt_3=side)[1],
                               _expected(pipe, PROMPTS[:1], prompt_4=side)[2])
    np.testing.assert_allclose(pooled_2[:, :8], pooled[:1, :8], atol=1e-6)
    assert np.abs(pooled_2[:, 8:] - pooled[:1, 8:]).max() > 1e-3
    g = clip_pooled(ours["clips"][1:], [side], LENGTH)
    _close(g, pooled_2[:, 8:], TOL[0])
    _close(t5_states(*ours["t5"], [side], LENGTH), t5_3, TOL[1])
    _close(llama_states(*ours["llama"], [side], LENGTH), llama_4, TOL[2])


def test_bad_input(parts: tuple[Any, Path], first_device: gpucore.Device) -> None:
    """One-line ValueErrors for a bad length or prompt list, a text encoder other than
    Llama's and a CLIP without a projection."""
    ours = _ours(*parts, first_device)
    for length in (0, 2.5, True):
        with pytest.raises(ValueError, match="max_sequence_length must be a whole number"):
            llama_states(*ours["llama"], ["a cat"], length)
    with pytest.raises(ValueError, match="a non-empty list of strings"):
        t5_states(*ours["t5"], [])
    clip = ours["clips"][0][0]
    clip.has_projection = False
    with pytest.raises(ValueError, match="projected pooled output"):
        clip_pooled(ours["clips"], ["a cat"])
    llama = ours["llama"][0]
    llama.config = {**llama.config, "model_type": "qwen3"}
    with pytest.raises(ValueError, match=r"HiDream reads prompts with Llama 3\.1"):
        llama_states(*ours["llama"], ["a cat"])
