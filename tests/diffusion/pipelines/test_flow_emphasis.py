"""The WebUI's emphasis on the T5 families (FLUX.1, Chroma, SD 3.5), as Forge applies it,
against references written out on torch CPU with diffusers' tiny pipelines' own tokenizers and
encoders: each piece tokenized on its own, the states times the weights, then Forge's
`EmphasisOriginal` (scaled back to the mean before); CLIP's pooled output of the words without
the brackets. The pieces are written out here, not parsed by the code under test."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import numpy as np
import pytest

pytest.importorskip("diffusers", reason="diffusers is a test-only reference (extra: reference)")
import torch

import gpucore
from diffusion.pipelines.load import load_pipeline
from diffusion.text.emphasis_mode import emphasis_mode
from diffusion.text.flow_emphasis import clip_ids, t5_ids, weighted_pieces
from diffusion.text.t5_tokenizer import T5Tokenizer
from diffusion.text.tokenizer import CLIPTokenizer

PROMPT = "a (red:1.4) circle on a [blue] background"
PIECES = [("a ", 1.0), ("red", 1.4), (" circle on a ", 1.0), ("blue", 1 / 1.1),
          (" background", 1.0)]
WORDS = "a red circle on a blue background"


def _t5_reference(tokenizer: Any, encoder: Any, length: int, *, masked: bool = False
                  ) -> tuple[torch.Tensor, torch.Tensor, int]:
    """Forge's T5 pass over PROMPT's pieces, padded to `length` (diffusers' padding): the
    states (1, length, D), each position's multiplier (1, length, 1), the tokens with </s>."""
    ids: list[int] = []
    weights: list[float] = []
    for text, weight in PIECES:
        tokens = tokenizer(text, add_special_tokens=False, truncation=False)["input_ids"]
        ids += tokens
        weights += [weight] * len(tokens)
    ids += [tokenizer.eos_token_id]
    count = len(ids)
    ids += [tokenizer.pad_token_id] * (length - count)
    weights += [1.0] * (length - len(weights))
    mask = torch.tensor([[1] * count + [0] * (length - count)])
    with torch.no_grad():
        z = encoder(torch.tensor([ids]), attention_mask=mask if masked else None)[0].double()
    return z, torch.tensor(weights, dtype=torch.float64)[None, :, None], count


def _original(z: torch.Tensor, multipliers: torch.Tensor) -> np.ndarray:
    """Forge's EmphasisOriginal.after_transformers: z times the multipliers, scaled by the old
    mean over the new."""
    original_mean = z.mean()
    z = z * multipliers
    return (z * (original_mean / z.mean())).numpy()


def _rel(ours: Any, theirs: np.ndarray) -> float:
    ours = np.asarray(ours, np.float64)
    return float(np.abs(ours - theirs).max() / np.abs(theirs).max())


@pytest.mark.nodevice
def test_prompts_without_emphasis_tokenize_as_before(tmp_path: Path) -> None:
    """No brackets: the tokenizers' own ids (long prompts cut keeping </s> / EOS); BREAK is
    dropped; "None" keeps the brackets as text, "Ignore" their words at weight 1."""
    from flow_tiny import tiny_t5_tokenizer

    t5 = T5Tokenizer(tiny_t5_tokenizer(tmp_path / "t5"))
    clip = CLIPTokenizer()
    long = " ".join(["a red circle on a blue background"] * 30)
    prompts = ["a photo of a cat", long, ""]
    ours = t5_ids(t5, prompts, 40)
    ids, mask = t5.encode(prompts, 40)
    np.testing.assert_array_equal(ours.ids, ids)
    np.testing.assert_array_equal(ours.mask, mask)
    assert not ours.weighted
    np.testing.assert_array_equal(clip_ids(clip, prompts).ids, clip(prompts))
    sd2 = CLIPTokenizer(pad_token="!")
    np.testing.assert_array_equal(clip_ids(sd2, prompts).ids, sd2(prompts))
    assert weighted_pieces("a cat BREAK a dog") == [("a cat", 1.0), ("a dog", 1.0)]
    assert weighted_pieces("(cat:1.2)", "None") == [("(cat:1.2)", 1.0)]
    assert weighted_pieces("a (cat:1.2)", "Ignore") == [("a ", 1.0), ("cat", 1.0)]
    with pytest.raises(ValueError, match="emphasis must be one of"):
        weighted_pieces("cat", "Strong")


def test_flux_weighs_t5_as_forge(first_device: gpucore.Device,
                                 tiny_flux_dev: tuple[Path, Any]) -> None:
    """FLUX.1: T5's states weighted and scaled to their mean over all 512 positions; CLIP's
    pooled output of the words; a prompt with emphasis conditions differently from its
    words."""
    root, pipe = tiny_flux_dev
    model = load_pipeline(root / "flux", device=first_device)
    states, pooled = (t.numpy() for t in model.pipe.encode_prompt([PROMPT], 512))
    z, multipliers, _ = _t5_reference(pipe.tokenizer_2, pipe.text_encoder_2, 512)
    with torch.no_grad():
        plain_z = pipe.text_encoder_2(torch.tensor(pipe.tokenizer_2(
            WORDS, padding="max_length", max_length=512).input_ids)[None])[0].double()
        words_pooled = pipe._get_clip_prompt_embeds(WORDS, device="cpu").numpy()
    assert _rel(states, _original(z, multipliers)) < 2e-5
    with emphasis_mode("No norm"):  # the request's mode (generate sets it): no rescaling
        no_norm = model.pipe.encode_prompt([PROMPT], 512)[0].numpy()
    assert _rel(no_norm, (z * multipliers).numpy()) < 2e-5
    assert _rel(pooled, words_pooled) < 2e-5
    plain = model.pipe.encode_prompt([WORDS], 512)[0].numpy()
    assert _rel(plain, plain_z.numpy()) < 2e-5
    assert _rel(states, plain_z.numpy()) > 0.05  # the weights acted


def test_chroma_weighs_the_tokens_it_reads(first_device: gpucore.Device,
                                           tiny_chroma: tuple[Path, Any]) -> None:
    """Chroma: T5 with its mask, the means over the prompt's tokens, </s> and one pad (what
    the transformer attends to)."""
    root, pipe = tiny_chroma
    model = load_pipeline(root / "chroma", device=first_device)
    states, _ = model.pipe.encode_prompt([PROMPT], 512)
    encoder = copy.deepcopy(pipe.text_encoder).double()
    z, multipliers, count = _t5_reference(pipe.tokenizer, encoder, 512, masked=True)
    assert states.shape[1] == count + 1
    read = slice(0, count + 1)
    # this tiny masked T5 carries float32's summation order far: against float64 its states
    # are 6.2e-5 off on lavapipe (an AMD EPYC; 3.1e-5 from torch float32's on another CPU),
    # torch float32's 6.8e-6; the weights themselves move T5's states by more than 5e-2
    # (test_flux_weighs_t5_as_forge)
    assert _rel(states.numpy(), _original(z[:, read], multipliers[:, read])) < 1e-4


def test_sd3_weighs_each_encoder_as_forge(first_device: gpucore.Device,
                                          tiny_sd3: tuple[Path, Any]) -> None:
    """SD 3.5: CLIP-L's and CLIP-G's penultimate states each weighted and scaled to their own
    mean (77 positions), T5's over its 256; the pooled outputs of the words."""
    root, pipe = tiny_sd3
    model = load_pipeline(root / "sd3", device=first_device)
    states, pooled = model.pipe.encode_prompt([PROMPT], 256)
    clips = []
    for index, tokenizer in enumerate((pipe.tokenizer, pipe.tokenizer_2)):
        weights = [1.0] + [w for text, w in PIECES
                           for _ in tokenizer(text, add_special_tokens=False).input_ids]
        weights += [1.0] * (77 - len(weights))
        with torch.no_grad():
            z, _ = pipe._get_clip_prompt_embeds(WORDS, device="cpu", clip_model_index=index)
        z = z.double()
        clips.append(_original(z, torch.tensor(weights, dtype=torch.float64)[None, :, None]))
    width = states.shape[-1]
    clip_states = np.concatenate(clips, axis=-1)[..., :width]
    clip_states = np.pad(clip_states, ((0, 0), (0, 0), (0, width - clip_states.shape[-1])))
    z, multipliers, _ = _t5_reference(pipe.tokenizer_3, pipe.text_encoder_3, 256)
    reference = np.concatenate([clip_states, _original(z, multipliers)], axis=1)
    assert _rel(states, reference) < 2e-5
    with torch.no_grad():
        words_pooled = pipe.encode_prompt(WORDS, WORDS, WORDS, device="cpu")[2].numpy()
    assert _rel(pooled, words_pooled) < 2e-5
