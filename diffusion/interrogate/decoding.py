"""Greedy and beam-search decoding of one sequence, as transformers' `generate` does it for
BLIP's captions (`num_beams`, `min_length`, `max_length`, `eos_token_id`; no sampling, no
repetition penalty, `length_penalty` 1, `early_stopping` False). Lengths count the prompt's
tokens, as there. The network is a `step`: the next tokens of each running sequence (B, L) ->
their logits (B, vocab), keeping its own cache, which `reorder` rearranges by rows when the
beams change.

Beam search is transformers' (4.50 and later; 5.x): the 2 x beams best continuations of all
beams by summed log-probabilities, those ending in the end token (among the first `beams`)
finished with their score divided by the number of tokens generated (the end token included),
the others continuing; it stops at `max_length`, or once no running beam can beat the worst of
`beams` finished ones. transformers before 4.36 divided by the whole length, the prompt's
included; with `num_beams` 1 (the WebUI's default) the two are the same greedy decoding.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np

__all__ = ["beam_search", "greedy"]

Step = Callable[[np.ndarray], np.ndarray]
Reorder = Callable[[np.ndarray], None]
_FAR = np.float32(-1e9)  # transformers' "never this one"


def _log_softmax(logits: np.ndarray) -> np.ndarray:
    logits = logits.astype(np.float32)
    shifted = logits - logits.max(axis=-1, keepdims=True)
    return shifted - np.log(np.exp(shifted).sum(axis=-1, keepdims=True))


def greedy(step: Step, prompt: Sequence[int], *, eos: int, min_length: int,
           max_length: int) -> list[int]:
    """The prompt and the most likely token after it, one at a time, until `eos` (kept) or
    `max_length` tokens; `eos` is not chosen before `min_length`. transformers:
    `generate(num_beams=1, do_sample=False)`."""
    ids, new = list(prompt), list(prompt)
    while len(ids) < max_length:
        logits = step(np.asarray([new]))[0].astype(np.float32)
        if len(ids) < min_length:
            logits[eos] = -np.inf
        token = int(np.argmax(logits))
        ids.append(token)
        new = [token]
        if token == eos:
            break
    return ids


def beam_search(step: Step, reorder: Reorder, prompt: Sequence[int], *, beams: int,
                eos: int, min_length: int, max_length: int,
                length_penalty: float = 1.0) -> list[int]:
    """The best finished sequence of a beam search over `beams` sequences (see the module
    docstring); `step` runs `beams` rows from the first call on. transformers:
    `generate(num_beams=beams, do_sample=False)`."""
    start = len(prompt)
    keep = 2 * beams
    running = [list(prompt)] * beams
    running_scores = np.full(beams, _FAR, np.float32)
    running_scores[0] = 0
    finished: list[list[int]] = [list(prompt)] * beams
    finished_scores = np.full(beams, _FAR, np.float32)
    is_finished = np.zeros(beams, bool)
    improvable = True
    tokens = np.asarray(running)
    length = start
    while True:
        # 1. every continuation of every beam, by summed log-probability
        log_probs = _log_softmax(step(tokens))
        if length < min_length:
            log_probs[:, eos] = -np.inf
        vocab = log_probs.shape[1]
        total = (log_probs + running_scores[:, None]).reshape(-1)
        top = np.argsort(-total, kind="stable")[:keep]
        top_scores, rows, ids = total[top], top // vocab, top % vocab
        candidates = [running[row] + [int(token)] for row, token in zip(rows, ids)]
        ends = (ids == eos) | (length + 1 >= max_length)
        # 2. the best `beams` that go on
        going = top_scores + ends.astype(np.float32) * _FAR
        order = np.argsort(-going, kind="stable")[:beams]
        running = [candidates[i] for i in order]
        running_scores = going[order]
        # 3. the ends among the first `beams`, scored per generated token, join the finished
        scores = top_scores / np.float32((length + 1 - start) ** length_penalty)
        if not improvable:
            scores = scores + _FAR
        just_finished = ends & (np.arange(keep) < beams)
        scores = scores + (~just_finished).astype(np.float32) * _FAR
        merged_scores = np.concatenate([finished_scores, scores])
        best = np.argsort(-merged_scores, kind="stable")[:beams]
        merged = finished + candidates
        flags = np.concatenate([is_finished, just_finished])
        finished = [merged[i] for i in best]
        finished_scores, is_finished = merged_scores[best], flags[best]
        reorder(rows[order])
        tokens = ids[order][:, None]
        length += 1
        # 4. stop when no running beam can beat the worst finished one, or none can go on
        best_possible = running_scores[0] / np.float32((length - start) ** length_penalty)
        worst = np.where(is_finished, finished_scores.min(), _FAR)
        improvable = improvable and bool(np.any(best_possible > worst))
        if not improvable or bool(ends.all()):
            return finished[0]
