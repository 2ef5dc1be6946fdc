"""Greedy and beam-search decoding (diffusion.interrogate.decoding) against transformers'
`generate` on a tiny random GPT-2, its logits handed to our decoder by a step function on the
CPU: token ids equal over beam counts, minimum and maximum lengths, captions that end at the
end token and captions cut at max_length."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

torch = pytest.importorskip("torch", reason="test-only reference (extra: reference)")
transformers = pytest.importorskip("transformers", reason="test-only reference (extra: reference)")

from diffusion.interrogate.decoding import beam_search, greedy  # noqa: E402

pytestmark = pytest.mark.nodevice
EOS, VOCAB = 3, 40


@pytest.fixture(scope="module")
def model() -> Any:
    config = transformers.GPT2Config(vocab_size=VOCAB, n_positions=32, n_embd=32, n_layer=1,
                                     n_head=2, eos_token_id=EOS, bos_token_id=EOS,
                                     pad_token_id=0, tie_word_embeddings=False)
    torch.manual_seed(4)
    gpt = transformers.GPT2LMHeadModel(config).eval()
    with torch.no_grad():  # small weights, a large head: varied text, some of it ending early
        for name, p in gpt.named_parameters():
            if "ln" in name and name.endswith("weight"):
                p.fill_(1.0)
            else:
                p.normal_(0, 0.15)
        gpt.lm_head.weight.mul_(5.0)
    return gpt


class _Steps:
    """The model's logits for each running sequence, recomputed whole (its rows reordered as
    the beams are)."""

    def __init__(self, model: Any) -> None:
        self.model, self.rows = model, None

    def __call__(self, ids: np.ndarray) -> np.ndarray:
        new = torch.from_numpy(np.asarray(ids, np.int64))
        self.rows = new if self.rows is None else torch.cat([self.rows, new], dim=1)
        with torch.no_grad():
            return self.model(self.rows).logits[:, -1].numpy()

    def reorder(self, rows: np.ndarray) -> None:
        self.rows = self.rows[torch.from_numpy(np.asarray(rows, np.int64))]


@pytest.mark.parametrize(("beams", "min_length", "max_length"),
                         [(1, 3, 12), (2, 3, 12), (3, 5, 16), (4, 3, 10)])
def test_decoding_matches_transformers(model: Any, beams: int, min_length: int,
                                       max_length: int) -> None:
    ended = set()
    for seed in range(4):
        prompt = [EOS, *np.random.default_rng(seed).integers(4, VOCAB, 2).tolist()]
        with torch.no_grad():
            want = model.generate(torch.tensor([prompt]), num_beams=beams, do_sample=False,
                                  min_length=min_length, max_length=max_length,
                                  eos_token_id=EOS, pad_token_id=0)[0].tolist()
        steps = _Steps(model)
        lengths = {"eos": EOS, "min_length": min_length, "max_length": max_length}
        if beams == 1:
            got = greedy(steps, prompt, **lengths)
        else:
            got = beam_search(steps, steps.reorder, prompt, beams=beams, **lengths)
        assert got == want
        assert len(got) >= min_length and EOS not in got[3:-1]
        ended.add(got[-1] == EOS and len(got) < max_length)
    assert ended == {True, False}  # captions end at EOS and at max_length
