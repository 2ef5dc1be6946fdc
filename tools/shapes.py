"""Drawn-shapes data set of the bundled model: vocabulary, captions, drawing, and measuring.

One picture = one shape of one colour on a plain background of another colour. `draw` renders a
`Spec` (4x supersampled, box-filtered down); `measure` reads colour, background, position and
size back from any picture (a drawn one or a model's output), so tests can check a model's
images against their captions. `tokenizer_files` writes the reduced CLIP tokenizer of the model.
"""

from __future__ import annotations

import dataclasses
import json
import re
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageDraw

__all__ = [
    "COLOURS",
    "HELD_OUT",
    "POSITIONS",
    "SHAPES",
    "SIZES",
    "TEMPLATES",
    "WORDS",
    "Spec",
    "agrees",
    "caption",
    "dataset",
    "draw",
    "measure",
    "parse",
    "sample_spec",
    "tokenizer_files",
]

COLOURS: dict[str, tuple[int, int, int]] = {
    "red": (220, 40, 40), "green": (40, 170, 60), "blue": (40, 80, 220),
    "yellow": (240, 220, 40), "orange": (245, 140, 30), "purple": (140, 60, 180),
    "white": (245, 245, 245), "black": (20, 20, 20),
}
SHAPES = ("circle", "square", "triangle", "star")
POSITIONS = ("left", "right", "top", "bottom", "center")
SIZES = ("small", "large")
# never drawn for training: each colour and shape still appears in other combinations
HELD_OUT = (("red", "star"), ("blue", "triangle"), ("yellow", "square"), ("purple", "circle"))
TEMPLATES = {
    "plain": "a {colour} {shape} on a {background} background",
    "full": "a {size} {colour} {shape} at the {position} on a {background} background",
}
WORDS = ("a", "on", "at", "the", "background", *COLOURS, *SHAPES, *POSITIONS, *SIZES)

# radius (of the circle of equal area) as a fraction of the width, per size word
_RADIUS = {"small": (0.10, 0.13), "large": (0.22, 0.27)}
_SIZE_THRESHOLD = 0.165
# centroid offset from the middle along the position's axis; large shapes sit nearer the
# middle so that they are not cut by the border
_OFFSET = {"small": (0.21, 0.28), "large": (0.16, 0.19)}
_DIRECTION = {"left": (-1, 0), "right": (1, 0), "top": (0, -1), "bottom": (0, 1), "center": (0, 0)}
_CENTER_BOX = 0.09


@dataclasses.dataclass(frozen=True)
class Spec:
    """One picture: words, and concrete geometry in fractions of the width (x right, y down)."""

    colour: str
    shape: str
    background: str
    position: str
    size_word: str
    cx: float = 0.5
    cy: float = 0.5
    radius: float = 0.2
    angle: float = 0.0


def sample_spec(rng: np.random.Generator, held_out: bool = False) -> Spec:
    """A random spec; `held_out=True` draws only HELD_OUT (colour, shape) pairs, else never."""
    while True:
        colour, shape = str(rng.choice(list(COLOURS))), str(rng.choice(SHAPES))
        if ((colour, shape) in HELD_OUT) == held_out:
            break
    background = str(rng.choice([c for c in COLOURS if c != colour]))
    position, size_word = str(rng.choice(POSITIONS)), str(rng.choice(SIZES))
    radius = float(rng.uniform(*_RADIUS[size_word]))
    dx, dy = _DIRECTION[position]
    offset = float(rng.uniform(*_OFFSET[size_word]))
    jitter = rng.uniform(-0.04, 0.04, size=2)
    cx = 0.5 + dx * offset + (jitter[0] if dx == 0 else 0.0)
    cy = 0.5 + dy * offset + (jitter[1] if dy == 0 else 0.0)
    angle = float(rng.uniform(-15, 15))
    return Spec(colour, shape, background, position, size_word, float(cx), float(cy), radius,
                angle)


def caption(spec: Spec, template: str = "full") -> str:
    """The caption of `spec` from TEMPLATES[template] ("plain" leaves position/size unsaid)."""
    return TEMPLATES[template].format(colour=spec.colour, shape=spec.shape,
                                      background=spec.background, position=spec.position,
                                      size=spec.size_word)


def parse(text: str) -> dict[str, str | None]:
    """What a caption states: colour, shape, background, and position/size (None if unsaid)."""
    words = "|".join
    full = re.fullmatch(rf"a ({words(SIZES)}) ({words(COLOURS)}) ({words(SHAPES)}) at the "
                        rf"({words(POSITIONS)}) on a ({words(COLOURS)}) background", text)
    if full:
        size, colour, shape, position, background = full.groups()
        return dict(colour=colour, shape=shape, background=background, position=position,
                    size=size)
    plain = re.fullmatch(rf"a ({words(COLOURS)}) ({words(SHAPES)}) on a ({words(COLOURS)}) "
                         r"background", text)
    if not plain:
        raise ValueError(f"not a shapes caption: {text!r}")
    colour, shape, background = plain.groups()
    return dict(colour=colour, shape=shape, background=background, position=None, size=None)


def _outline(shape: str, radius: float, angle: float) -> np.ndarray:
    """Polygon vertices (N, 2) around the origin whose area is pi * radius^2."""
    theta = np.deg2rad(angle)
    if shape == "square":
        half = radius * np.sqrt(np.pi) / 2
        points = np.array([[-half, -half], [half, -half], [half, half], [-half, half]])
    elif shape == "triangle":
        big = radius * np.sqrt(np.pi / 1.299)  # circumradius of the equal-area triangle
        a = np.deg2rad([-90, 30, 150])
        points = big * np.stack([np.cos(a), np.sin(a)], axis=1)
    elif shape == "star":
        big = radius * np.sqrt(np.pi / (5 * 0.5 * np.sin(np.deg2rad(36))))  # inner = outer / 2
        a = np.deg2rad(-90 + 36 * np.arange(10))
        r = np.where(np.arange(10) % 2 == 0, big, big / 2)
        points = np.stack([r * np.cos(a), r * np.sin(a)], axis=1)
    else:
        raise ValueError(f"unknown polygon shape {shape!r}")
    rotation = np.array([[np.cos(theta), -np.sin(theta)], [np.sin(theta), np.cos(theta)]])
    return points @ rotation.T


def draw(spec: Spec, size: int = 128) -> Image.Image:
    """RGB picture of `spec`, `size` x `size`, antialiased (drawn at 4x, box-filtered down)."""
    big = 4 * size
    image = Image.new("RGB", (big, big), COLOURS[spec.background])
    pen = ImageDraw.Draw(image)
    cx, cy, fill = spec.cx * big, spec.cy * big, COLOURS[spec.colour]
    if spec.shape == "circle":
        r = spec.radius * big
        pen.ellipse([cx - r, cy - r, cx + r, cy + r], fill=fill)
    else:
        points = _outline(spec.shape, spec.radius, spec.angle) * big + [cx, cy]
        pen.polygon([tuple(p) for p in points], fill=fill)
    return image.reduce(4)


def dataset(seed: int, n: int, held_out: bool = False,
            start: int = 0) -> Iterator[tuple[np.ndarray, str, Spec]]:
    """n (image uint8 (128, 128, 3), caption, spec) triples, a pure function of (seed, index):
    item i comes from its own generator, so any slice [start, start + n) can be made alone."""
    for i in range(start, start + n):
        rng = np.random.default_rng([seed, i])
        spec = sample_spec(rng, held_out)
        template = "plain" if rng.random() < 0.5 else "full"
        yield np.asarray(draw(spec)), caption(spec, template), spec


def _nearest(rgb: np.ndarray) -> str:
    palette = np.array(list(COLOURS.values()), np.float32)
    return list(COLOURS)[int(np.argmin(((palette - rgb) ** 2).sum(axis=1)))]


def measure(image: np.ndarray) -> dict[str, Any]:
    """Read a picture back: {background, colour, position, size} (words) plus `area` and
    `centroid` (fractions). image: uint8 (H, W, 3).

    Background: palette colour nearest the median border pixel. Foreground: pixels far from the
    background; its colour is the palette colour nearest their median. Its mask is then the
    pixels nearer that colour than the background (blur-robust), whose centroid and area give
    position and size. colour/position/size are None when there is no foreground.
    """
    pixels = np.asarray(image, np.float32)[..., :3]
    height, width = pixels.shape[:2]
    border = np.concatenate([pixels[0], pixels[-1], pixels[:, 0], pixels[:, -1]])
    background = _nearest(np.median(border, axis=0))
    bg = np.array(COLOURS[background], np.float32)
    far = np.sqrt(((pixels - bg) ** 2).sum(axis=-1)) > 60
    if far.sum() < 0.002 * height * width:
        return dict(background=background, colour=None, position=None, size=None, area=0.0,
                    centroid=None)
    colour = _nearest(np.median(pixels[far], axis=0))
    fg = np.array(COLOURS[colour], np.float32)
    line = fg - bg
    mask = (((pixels - bg) @ line) > 0.5 * float(line @ line)) if colour != background else far
    if not mask.any():
        mask = far
    ys, xs = np.nonzero(mask)
    cx, cy = (xs.mean() + 0.5) / width, (ys.mean() + 0.5) / height
    dx, dy = cx - 0.5, cy - 0.5
    if max(abs(dx), abs(dy)) < _CENTER_BOX:
        position = "center"
    elif abs(dx) >= abs(dy):
        position = "left" if dx < 0 else "right"
    else:
        position = "top" if dy < 0 else "bottom"
    area = float(mask.mean())
    size = "large" if np.sqrt(area / np.pi) > _SIZE_THRESHOLD else "small"
    return dict(background=background, colour=colour, position=position, size=size, area=area,
                centroid=(float(cx), float(cy)))


def agrees(stated: Spec | Mapping[str, Any] | str, measured: Mapping[str, Any]) -> bool:
    """Whether `measured` (from `measure`) matches what a caption says: colour and background
    always, position and size only where stated. `stated`: a caption, `parse`'s dict, or a
    Spec (everything stated)."""
    if isinstance(stated, str):
        stated = parse(stated)
    elif isinstance(stated, Spec):
        stated = dict(colour=stated.colour, background=stated.background,
                      position=stated.position, size=stated.size_word)
    return all(measured.get(key) == stated[key]
               for key in ("colour", "background", "position", "size")
               if stated.get(key) is not None)


def _applied_merges(word: str, ranks: Mapping[tuple[str, str], int]) -> list[tuple[str, str]]:
    """The merges CLIP's BPE applies to one lowercase ASCII word, in order."""
    parts = [*word[:-1], word[-1] + "</w>"]
    applied = []
    while len(parts) > 1:
        pairs = [(parts[i], parts[i + 1]) for i in range(len(parts) - 1)]
        best = min(pairs, key=lambda p: ranks.get(p, 1 << 30))
        if best not in ranks:
            break
        applied.append(best)
        merged, i = [], 0
        while i < len(parts):
            if i < len(parts) - 1 and (parts[i], parts[i + 1]) == best:
                merged.append(parts[i] + parts[i + 1])
                i += 2
            else:
                merged.append(parts[i])
                i += 1
        parts = merged
    return applied


def _clip_vocab() -> tuple[dict[str, int], list[tuple[str, str]]]:
    """diffusion.text.tokenizer.bundled_vocab(); where importing the `diffusion` package fails (a
    training machine without wgpu), its module is loaded alone and fed the packaged merges."""
    try:
        from diffusion.text.tokenizer import bundled_vocab
    except ImportError:
        import gzip
        import importlib.util

        root = Path(__file__).resolve().parents[1] / "diffusion"
        spec = importlib.util.spec_from_file_location("_clip_tokenizer", root / "tokenizer.py")
        module = importlib.util.module_from_spec(spec)  # type: ignore[arg-type]
        spec.loader.exec_module(module)  # type: ignore[union-attr]
        lines = gzip.decompress((root / "data/bpe_simple_vocab_16e6.txt.gz").read_bytes())
        merges = [tuple(line.split()) for line in
                  lines.decode("utf-8").split("\n")[1:49152 - 256 - 2 + 1]]
        chars = module._bytes_to_unicode()
        tokens = [*chars, *(c + "</w>" for c in chars), *("".join(m) for m in merges),
                  module.BOS, module.EOS]
        return {t: i for i, t in enumerate(tokens)}, merges  # type: ignore[return-value]
    return bundled_vocab()


def tokenizer_files(folder: str | Path, words: tuple[str, ...] = WORDS) -> dict[str, int]:
    """Write a reduced CLIP tokenizer (vocab.json, merges.txt, tokenizer_config.json,
    special_tokens_map.json) to `folder`; returns its vocab.

    Keeps the 512 byte tokens, the merges full CLIP applies to `words` (in CLIP's rank order)
    with their results, then BOS and EOS. BPE always applies the lowest-rank merge present, so
    `words` split exactly as in full CLIP and any other text falls back to smaller pieces.
    """
    full_vocab, merges = _clip_vocab()
    BOS, EOS = list(full_vocab)[-2:]
    ranks = {m: i for i, m in enumerate(merges)}
    kept = sorted({m for w in words for m in _applied_merges(w, ranks)}, key=ranks.__getitem__)
    base = list(full_vocab)[:512]
    tokens = list(dict.fromkeys([*base, *("".join(m) for m in kept), BOS, EOS]))
    vocab = {token: i for i, token in enumerate(tokens)}
    root = Path(folder)
    root.mkdir(parents=True, exist_ok=True)
    (root / "vocab.json").write_text(json.dumps(vocab, ensure_ascii=False), encoding="utf-8")
    (root / "merges.txt").write_text(
        "#version: 0.2\n" + "".join(f"{a} {b}\n" for a, b in kept), encoding="utf-8")
    special = {"bos_token": BOS, "eos_token": EOS, "unk_token": EOS, "pad_token": EOS}
    (root / "special_tokens_map.json").write_text(json.dumps(special, indent=2), encoding="utf-8")
    (root / "tokenizer_config.json").write_text(json.dumps(
        {**special, "model_max_length": 77, "do_lower_case": True,
         "tokenizer_class": "CLIPTokenizer"}, indent=2), encoding="utf-8")
    return vocab
