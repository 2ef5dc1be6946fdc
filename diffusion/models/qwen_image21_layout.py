"""Where Qwen-Image 2.1's tokens sit: the prefix (the prompt's text tokens with the condition
pictures' latent blocks among them, where the Qwen3-VL prompt holds their image pads) and the
target picture after it. A layout is a list of items: an int a run of that many text tokens, a
(rows, columns) pair one picture's latent block (row-major). From it come the rotary positions,
the prefix's kept keys and its block-causal attention as segments (diffusers'
transformer_qwenimage21.py: `QwenImage21Rope`, `build_token_metadata`,
`_qwenimage21_prefix_segments`).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

import numpy as np

from gpucore import Device
from gpustd import Tensor, asarray

__all__ = ["PrefixSegment", "prefix_keep", "prefix_layout", "prefix_segments",
           "qwen_image21_positions"]

Layout = Sequence[int | tuple[int, int]]
_ROPE_RANGE = (-1024, 8191)  # diffusers' tables: positions 0..8191, then -1024..-1
_TOKENS_PER_PAD = 4  # an image pad of the prompt stands for 2 x 2 latent tokens


def qwen_image21_positions(layout: Layout) -> np.ndarray:
    """Rotary positions (tokens, 3) (frame, row, column) of a sequence laid out as `layout`.
    A text token takes the running position p on all three axes (p += 1); an image block
    frame p, rows and columns centred on zero (row - ceil(rows / 2)), then
    p += max(rows, columns). Text-to-image: `[prompt tokens, (rows, columns)]`. diffusers:
    `QwenImage21Rope.forward(img_shapes, image_pad_mask)` (its indices)."""
    parts, position = [], 0
    for item in layout:
        if isinstance(item, tuple):
            rows, columns = item
            grid = np.meshgrid(np.arange(rows) - (rows - rows // 2),
                               np.arange(columns) - (columns - columns // 2), indexing="ij")
            parts.append(np.stack([np.full_like(grid[0], position), *grid], -1).reshape(-1, 3))
            position += max(rows, columns)
        else:
            parts.append(np.repeat(np.arange(position, position + item)[:, None], 3, axis=1))
            position += item
    ids = np.concatenate(parts).astype(np.int64)
    if ids.size and (ids.min() < _ROPE_RANGE[0] or ids.max() > _ROPE_RANGE[1]):
        raise ValueError(f"the sequence {list(layout)} passes Qwen-Image 2.1's rotary positions "
                         f"{_ROPE_RANGE}; use a smaller picture or a shorter prompt")
    return ids


def prefix_layout(length: int, image_pad_mask: np.ndarray | None,
                  shapes: Sequence[tuple[int, int]]) -> list[int | tuple[int, int]]:
    """The prefix's layout from the prompt's image pads: image_pad_mask (L,) bool True at the
    pads (None: none), `shapes` the condition pictures' (rows, columns) in latents, in the
    order of their pads. Picture i takes the next rows * columns / 4 pads, which must be one
    run (adjacent pictures are still separate blocks); every other token is text. diffusers:
    the transformer's `repeat_interleave` of `img_mask` by 4 and `build_token_metadata`."""
    pads = np.zeros(length, bool) if image_pad_mask is None else image_pad_mask
    counts = []
    for rows, columns in shapes:
        if rows < 1 or columns < 1 or rows * columns % _TOKENS_PER_PAD:
            raise ValueError(f"a condition picture of {rows} x {columns} latents does not fill "
                             "whole image pads (2 x 2 latents each); give it an even size")
        counts.append(rows * columns // _TOKENS_PER_PAD)
    if int(pads.sum()) != sum(counts):
        raise ValueError(f"the prompt holds {int(pads.sum())} image pads, the condition pictures "
                         f"{list(shapes)} fill {sum(counts)}; encode the prompt with these "
                         "pictures at these sizes")
    layout: list[int | tuple[int, int]] = []
    start, picture = 0, 0
    while start < length:
        if pads[start]:
            end = start + counts[picture]
            if not pads[start:end].all():
                raise ValueError(f"condition picture {picture + 1}'s {counts[picture]} image "
                                 "pads are not one run in the prompt; encode the prompt with "
                                 "these pictures at these sizes")
            layout.append(tuple(shapes[picture]))  # type: ignore[arg-type]
            picture += 1
        else:
            end = start + int(np.argmax(np.append(pads[start:], True)))
            layout.append(end - start)
        start = end
    return layout


def prefix_keep(layout: Layout, keep: np.ndarray | None) -> np.ndarray | None:
    """The prefix's kept keys (B, Lp) bool from the prompt's (B, L) (None: all kept): a text
    token keeps its prompt token's flag, a picture's latents are always kept (their pads' flags
    are not read). None when every key is kept. diffusers: the transformer's
    `joint_key_valid`."""
    if keep is None:
        return None
    parts, position = [], 0
    for item in layout:
        if isinstance(item, tuple):
            parts.append(np.ones((len(keep), item[0] * item[1]), bool))
            position += item[0] * item[1] // _TOKENS_PER_PAD
        else:
            parts.append(keep[:, position:position + item])
            position += item
    joint = np.concatenate(parts, axis=1)
    return None if joint.all() else joint


class PrefixSegment(NamedTuple):
    """One run of the prefix's queries, tokens start..end, and how they attend to the keys
    0..end: `causal` (the kernel's triangle, start = 0) and `mask` (B or 1, 1, end - start or
    1, end) uint32 nonzero for the keys kept (None: all)."""

    start: int
    end: int
    mask: Tensor | None
    causal: bool


def prefix_segments(layout: Layout, keep: np.ndarray | None, device: Device
                    ) -> list[PrefixSegment]:
    """The prefix's block-causal attention as one attention call per item of the layout: a
    text run sees the tokens before it and, causally, itself; a picture's block sees the
    tokens before it and all of itself; padded keys (`keep` (B, Lp) False) are never seen.
    Text alone is one causal segment. diffusers: `_qwenimage21_prefix_segments` and
    `QwenImage21AttnProcessor`'s prefill (its `(q >= kv) or same image block` mask)."""
    segments, start = [], 0
    for item in layout:
        end = start + (item[0] * item[1] if isinstance(item, tuple) else item)
        kept = None if keep is None or keep[:, :end].all() else keep[:, None, None, :end]
        text = not isinstance(item, tuple)
        if text and start > 0:
            # what the kernel's triangle cannot say (it needs as many queries as keys): all
            # of the keys before the run, the run's own up to each query
            rows = np.arange(end - start)[:, None]
            triangle = np.arange(end)[None, :] <= start + rows
            kept = triangle[None, None] if kept is None else kept & triangle
        mask = None if kept is None else asarray(kept.astype(np.uint32), device=device)
        segments.append(PrefixSegment(start, end, mask, text and start == 0))
        start = end
    return segments
