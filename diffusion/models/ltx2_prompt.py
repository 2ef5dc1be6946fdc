"""LTX-2's prompt encoding, as diffusers' `LTX2Pipeline` computes it (`_get_gemma_prompt_embeds`
then `connectors(prompt_embeds, mask)`): Gemma 3's tokenizer (left padding to
max_sequence_length, 1024), every hidden state of its language model (the embeddings, each
layer's output, the last normed) stacked per token, normalised and packed, then the video and
audio connectors.

    text_model = LLMTextModel(gemma_text_config, device=device)   # loaders.ltx2.text
    connectors = LTX2TextConnectors(connectors_config, device=device)
    video, audio, mask = ltx2_prompt_states(text_model, connectors, tokenizer, "a fox runs")

Only a prompt's real tokens run through Gemma: with left padding the real tokens sit at the
last positions and attend to one another alone (padding is masked as a key), and rotary
embeddings see only position differences, so the unpadded sequence at positions 0..n-1 gives
their states (to float rounding); the packing's statistics cover real tokens alone, and the
connectors replace every padded row with their registers, so padded rows never reach the
result. A prompt of 100 tokens runs 100 tokens through the 48 layers instead of 1024.

A prompt longer than max_sequence_length is refused (diffusers cuts it silently), as is one
longer than Gemma's sliding window (1024 for Gemma 3 12B, which no token of a 1024-token
prompt leaves; the window itself is not implemented).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from gpustd import Tensor, concatenate

from ..text.llm_tokenizer import LLMTokenizer
from .llm import LLMTextModel
from .ltx2_connectors import LTX2TextConnectors, pack_states

__all__ = ["MAX_SEQUENCE_LENGTH", "ltx2_prompt_states", "stacked_states"]

MAX_SEQUENCE_LENGTH = 1024  # diffusers' max_sequence_length of LTX2Pipeline


def stacked_states(text_model: LLMTextModel, ids: np.ndarray) -> Tensor:
    """One prompt's real token ids (n,) -> every hidden state of the language model stacked
    on a last axis, (1, n, hidden_size, num_hidden_layers + 1) float32. transformers:
    `torch.stack(model(ids, output_hidden_states=True).hidden_states, -1)`."""
    count = len(text_model.layers)
    layers = text_model.hidden_states_of(np.asarray(ids)[None], None, range(count + 1))
    length, width = layers[0].shape[1], layers[0].shape[2]
    return concatenate([x.reshape(1, length, width, 1) for x in layers], axis=3)


def ltx2_prompt_states(text_model: LLMTextModel, connectors: LTX2TextConnectors,
                       tokenizer: LLMTokenizer, prompts: str | Sequence[str],
                       max_sequence_length: int = MAX_SEQUENCE_LENGTH
                       ) -> tuple[Tensor, Tensor, np.ndarray]:
    """Prompts -> (video prompt states (B, L, video width) float32, audio prompt states (B, L,
    audio width) float32, mask (B, L) int64), L = max_sequence_length; with the connectors'
    registers every row is kept (the mask all ones, as diffusers' connectors return it).
    ValueError for a prompt past max_sequence_length tokens, or connectors that do not read
    this text model's states. diffusers: `LTX2Pipeline.encode_prompt(prompt,
    do_classifier_free_guidance=False)` then `pipe.connectors(embeds, mask)`."""
    texts = [prompts] if isinstance(prompts, str) else list(prompts)
    if not texts:
        raise ValueError("ltx2_prompt_states needs at least one prompt")
    cfg = connectors.cfg
    width, count = text_model.config["hidden_size"], len(text_model.layers) + 1
    if (cfg["caption_channels"], cfg["text_proj_in_factor"]) != (width, count):
        raise ValueError(f"the connectors read {cfg['text_proj_in_factor']} hidden states of "
                         f"{cfg['caption_channels']} features, the text encoder gives {count} "
                         f"of {width}: give the text encoder and connectors of one LTX-2 folder")
    ids, mask = tokenizer([t.strip() for t in texts], max_sequence_length + 1,
                          padding="longest")
    video, audio = [], []
    for row, kept in zip(ids, mask.astype(bool), strict=True):
        if kept.sum() > max_sequence_length:
            raise ValueError(f"the prompt is longer than the {max_sequence_length} tokens "
                             "LTX-2's text encoder reads; shorten it")
        packed = pack_states(stacked_states(text_model, row[kept]),
                             per_token=connectors.per_modality)
        rows = connectors.project(packed)
        video.append(rows[0])
        audio.append(rows[1])
    return connectors.connect(video, audio, max_sequence_length)
