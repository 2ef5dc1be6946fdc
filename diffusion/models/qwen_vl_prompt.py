"""Prompts with pictures for Qwen2.5-VL (Qwen-Image-Edit's text encoder): the vision tower's
tokens put in place of the prompt's image pad tokens, and the multimodal rotary positions of
the whole sequence (transformers' `Qwen2_5_VLModel.get_rope_index`): text tokens count up on
all three axes; a picture's tokens sit at (start, start + row, start + column) over its merged
grid, and the text after it goes on from start + max(rows, columns).

    states = encode_with_images(language_model, vision, ids, image_token_id=151655,
                                pixel_values=pixels, grid_thw=grids)
"""

from __future__ import annotations

from typing import Any

import numpy as np

from gpustd import Tensor, asarray

from .llm import LLMTextModel
from .qwen_vision import Qwen2_5_VisionTransformer

__all__ = ["encode_with_images", "expand_image_pads", "multimodal_positions"]


def expand_image_pads(text: str, grids: np.ndarray, *, pad: str = "<|image_pad|>",
                      merge: int = 2) -> str:
    """`text` with its k-th `pad` repeated once per token of picture k (t * h * w / merge^2
    of its grid). transformers: `Qwen2VLProcessor`'s expansion of the image token."""
    parts = text.split(pad)
    if len(parts) - 1 != len(grids):
        raise ValueError(f"the prompt template holds {len(parts) - 1} image slots for "
                         f"{len(grids)} pictures")
    out = [parts[0]]
    for grid, rest in zip(np.asarray(grids).reshape(-1, 3), parts[1:], strict=True):
        out.append(pad * (int(np.prod(grid)) // (merge * merge)) + rest)
    return "".join(out)


def multimodal_positions(ids: np.ndarray, image_token_id: int, grids: np.ndarray, *,
                         merge: int = 2) -> np.ndarray:
    """Positions (3, L) of one unpadded sequence of token ids (L,) whose runs of
    `image_token_id` are the pictures of `grids` (pictures, 3), in order. transformers:
    `Qwen2_5_VLModel.get_rope_index(ids[None], mm_token_type_ids, grids)[0][:, 0]`."""
    ids = np.asarray(ids).reshape(-1)
    grids = np.asarray(grids, np.int64).reshape(-1, 3)
    is_image = ids == image_token_id
    edges = np.flatnonzero(np.diff(np.concatenate([[0], is_image.astype(int), [0]])))
    runs = list(zip(edges[::2], edges[1::2], strict=True))
    if len(runs) != len(grids):
        raise ValueError(f"the prompt holds {len(runs)} runs of image tokens for "
                         f"{len(grids)} pictures")
    out = np.zeros((3, len(ids)), np.int64)
    position = done = 0
    for (start, stop), (frames, height, width) in zip(runs, grids.tolist(), strict=True):
        rows, cols = height // merge, width // merge
        if stop - start != frames * rows * cols:
            raise ValueError(f"a picture of grid {(frames, height, width)} has "
                             f"{frames * rows * cols} tokens, the prompt {stop - start}")
        out[:, done:start] = position + np.arange(start - done)
        position += start - done
        t, r, c = np.meshgrid(np.arange(frames), np.arange(rows), np.arange(cols),
                              indexing="ij")
        out[:, start:stop] = position + np.stack([t.reshape(-1), r.reshape(-1), c.reshape(-1)])
        position += max(rows, cols)
        done = stop
    out[:, done:] = position + np.arange(len(ids) - done)
    return out


def encode_with_images(language_model: LLMTextModel, vision: Qwen2_5_VisionTransformer,
                       ids: Any, *, image_token_id: int, pixel_values: Any, grid_thw: Any,
                       attention_mask: Any = None) -> Tensor:
    """The last hidden states (1, L, hidden) float32 of one prompt `ids` (L,) whose image
    tokens read the pictures `pixel_values` / `grid_thw` (`qwen_vision_pixels`'s,
    concatenated); `attention_mask` (L,): its padding (0), left out of the attention and of
    the positions' count (the padding's own positions 0). transformers:
    `Qwen2_5_VLModel(ids[None], attention_mask=, pixel_values=, image_grid_thw=,
    mm_token_type_ids=, output_hidden_states=True).hidden_states[-1]`."""
    ids = np.asarray(ids, np.int64).reshape(-1)
    grids = np.asarray(grid_thw, np.int64).reshape(-1, 3)
    merge = vision.config["spatial_merge_size"]
    keep = (np.ones(len(ids), bool) if attention_mask is None
            else np.asarray(attention_mask).reshape(-1).astype(bool))
    positions = np.zeros((3, len(ids)), np.int64)
    positions[:, keep] = multimodal_positions(ids[keep], image_token_id, grids, merge=merge)
    device = language_model.embed_tokens.weight.device
    embeddings = language_model.embed_tokens(asarray(ids.astype(np.int32)[None], device=device))
    states = embeddings.numpy().astype(np.float32)
    states[0, ids == image_token_id] = vision(pixel_values, grids).numpy().astype(np.float32)
    return language_model.multimodal_hidden_states(
        asarray(states, device=device), positions,
        attention_mask=None if attention_mask is None else keep[None])
