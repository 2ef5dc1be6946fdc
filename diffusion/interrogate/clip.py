"""The WebUI's CLIP interrogator ("clip" of /sdapi/v1/interrogate): BLIP's caption of the picture
(diffusion.interrogate.blip), then each term list of the interrogate folder (the WebUI's
`interrogate/*.txt`: artists, flavors, mediums, movements) ranked against the picture by CLIP, as
the WebUI's `modules/interrogate.py` ranks them (softmax of 100 x the cosine similarity of image
and text embeddings), its best terms each added after ", ".

    clip = ClipInterrogator(Path("models/CLIP"), Path("interrogate"),
                            blip=BlipCaptioner(Path("models/BLIP")))
    clip.caption(picture, {})  # "a woman in a garden, oil on canvas, by Claude Monet, ..."

Without `blip` the text is the terms alone, joined by ", ".

The model is a transformers `CLIPModel` (a folder with config.json and model.safetensors or
pytorch_model.bin, e.g. openai/clip-vit-large-patch14, the WebUI's ViT-L/14), read once per
device, on first use there. A list file named `NAME.topN.txt` gives its N best terms, others
their best one.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from gpucore import Device, default_device

from ..process_shared import process_shared
from .blip import BLIP_OPTIONS, BlipCaptioner, check_blip_options
from .deepbooru import InterrogateModelError
from .per_device import PerDevice

__all__ = ["CLIP_OPTIONS", "Category", "ClipInterrogator", "check_clip_options", "rank",
           "read_categories"]

# the WebUI's options and their defaults (its "Interrogate" section), BLIP's included
CLIP_OPTIONS: dict[str, Any] = {"interrogate_clip_dict_limit": 1500,
                                "interrogate_clip_skip_categories": [], **BLIP_OPTIONS}
_TOPN = re.compile(r"\.top(\d+)$")
_WEIGHTS = ("model.safetensors", "pytorch_model.bin")
_BATCH = 64  # terms encoded at once


def check_clip_options(body: Mapping[str, Any]) -> dict[str, Any]:
    """CLIP_OPTIONS' entries of an options body (POST /sdapi/v1/options), checked:
    ValueError saying which is wrong."""
    updates: dict[str, Any] = check_blip_options(body)
    if "interrogate_clip_dict_limit" in body:
        value = body["interrogate_clip_dict_limit"]
        if isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0 or \
                value != int(value):
            raise ValueError("interrogate_clip_dict_limit must be a whole number of terms, 0 "
                             f"or more (0: all), got {value!r}")
        updates["interrogate_clip_dict_limit"] = int(value)
    if "interrogate_clip_skip_categories" in body:
        value = body["interrogate_clip_skip_categories"]
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise ValueError("interrogate_clip_skip_categories must be a list of term list "
                             f"names (e.g. [\"artists\"]), got {value!r}")
        updates["interrogate_clip_skip_categories"] = value
    return updates


@dataclass(frozen=True)
class Category:
    name: str  # the file's stem
    topn: int
    items: tuple[str, ...]


def read_categories(folder: Path | None) -> list[Category]:
    """The term lists of `folder` (its *.txt, by name). InterrogateModelError when none."""
    files = sorted(folder.glob("*.txt")) if folder and folder.is_dir() else []
    if not files:
        where = f"in {folder}" if folder else "(no interrogate folder given)"
        raise InterrogateModelError(
            f"model 'clip': no term lists (*.txt) {where}; put the WebUI's interrogate/ files "
            "there (artists.txt, flavors.txt, mediums.txt, movements.txt; --interrogate-dir)")
    out = []
    for path in files:
        match = _TOPN.search(path.stem)
        lines = [line.strip() for line in path.read_text(encoding="utf-8").splitlines()]
        out.append(Category(path.stem, 1 if match is None else int(match.group(1)),
                            tuple(lines)))
    return out


def rank(image: np.ndarray, texts: np.ndarray, terms: Sequence[str],
         top_count: int = 1) -> list[tuple[str, float]]:
    """The WebUI's `rank`: (term, probability in percent) of the `top_count` best terms, from
    normalized image (D,) and text (N, D) embeddings: softmax of 100 x their similarity."""
    logits = 100.0 * texts.astype(np.float64) @ image.astype(np.float64)
    probs = np.exp(logits - logits.max())
    probs /= probs.sum()
    order = np.argsort(-probs, kind="stable")[:min(top_count, len(terms))]
    return [(terms[i], float(probs[i] * 100)) for i in order]


def _normalized(rows: np.ndarray) -> np.ndarray:
    rows = np.asarray(rows, np.float32)
    return rows / np.linalg.norm(rows, axis=-1, keepdims=True)


class ClipInterrogator:
    """CLIP from `model` (a CLIPModel folder) and term lists from `terms` (a folder), read on
    first use onto each device a call names (`device` where it names none; None: the default
    device); `blip` captions the picture before the terms, on the same device."""

    def __init__(self, model: Path | None, terms: Path | None,
                 blip: BlipCaptioner | None = None, *, device: Device | None = None) -> None:
        self.model_path, self.terms, self.device = model, terms, device
        self.blip = blip
        self._networks: PerDevice[tuple[Any, Any, Any]] = PerDevice()
        # the term lists' embeddings, host arrays: whichever device made them, all use them
        self._features: dict[tuple[str, ...], np.ndarray] = {}

    def __reduce__(self) -> tuple[Any, ...]:
        # a job sent to a worker process (serve --devices) takes that process's own
        # interrogator of these files along (diffusion.process_shared; BLIP becomes that
        # process's too), on that process's GPU
        return process_shared, (ClipInterrogator, self.model_path, self.terms, self.blip)

    def forget(self) -> None:
        """Drop every device's CLIP networks and BLIP's (the server's unload-checkpoint: their
        GPU memory goes once nothing else holds them); the next picture reads them again. The
        term lists' embeddings stay: host arrays, slow to make again for the WebUI's lists."""
        self._networks.clear()
        if self.blip is not None:
            self.blip.forget()

    def weights(self) -> Path:
        """The CLIPModel's weights file; InterrogateModelError naming what to add."""
        folder = self.model_path
        found = [folder / name for name in _WEIGHTS if folder and (folder / name).is_file()]
        if not found or not (folder and (folder / "config.json").is_file()):
            where = f"in {folder}" if folder else "(no CLIP model folder given)"
            raise InterrogateModelError(
                f"model 'clip': no transformers CLIPModel (config.json and model.safetensors) "
                f"{where}; put openai/clip-vit-large-patch14's files there (--clip-models-path)")
        return found[0]

    def check(self) -> list[Category]:
        """The term lists, and the models' files checked (InterrogateModelError)."""
        self.weights()
        if self.blip is not None:
            self.blip.check()
        return read_categories(self.terms)

    def models(self, device: Device | None = None) -> Any:
        """(vision encoder, text encoder, tokenizer) on `device` (None: this interrogator's),
        read there on first use."""
        import json

        from ..loaders import WeightsError
        from ..loaders.formats.torch_file import open_weights_file
        from ..models.clip import CLIPTextModel
        from ..models.clip_vision import CLIPVisionModelWithProjection
        from ..text.tokenizer import CLIPTokenizer

        path = self.weights()

        def read(where: Device) -> tuple[Any, Any, Any]:
            try:
                config = json.loads((path.parent / "config.json").read_text("utf-8"))
                file = open_weights_file(path)
                state = {key: file.read(key) for key in file.keys()
                         if not key.endswith("position_ids") and key != "logit_scale"}
                vision = CLIPVisionModelWithProjection(config, device=where)
                vision.load_state_dict({k: v for k, v in state.items()
                                        if k.startswith(("vision_model.", "visual_"))})
                text_config = {**config.get("text_config", {}),
                               "projection_dim": config.get("projection_dim", 512)}
                text = CLIPTextModel(text_config, device=where, with_projection=True)
                text.load_state_dict({k.removeprefix("text_model."): v for k, v in state.items()
                                      if k.startswith(("text_model.", "text_projection"))})
                tokenizer = CLIPTokenizer.from_pretrained(path.parent)
            except (WeightsError, ValueError, KeyError, OSError) as error:
                raise InterrogateModelError(
                    f"model 'clip': {path}: not a CLIPModel this program reads: "
                    f"{error}") from None
            return vision, text, tokenizer
        return self._networks.get(device or self.device or default_device(), read)

    def image_features(self, picture: Any, device: Device | None = None) -> np.ndarray:
        """The normalized image embedding (D,) of a PIL picture (CLIP's preparation), on
        `device` (None: this interrogator's)."""
        from ..models.clip_vision import clip_pixels

        vision = self.models(device)[0]
        pixels = clip_pixels(picture.convert("RGB"), vision.image_size, device=vision.device)
        return _normalized(vision(pixels).numpy())[0]

    def text_features(self, terms: Sequence[str], device: Device | None = None) -> np.ndarray:
        """The normalized text embeddings (N, D) of `terms` (77 tokens at most, as the WebUI
        truncates them), made on `device` (None: this interrogator's), kept for the next
        picture."""
        key = tuple(terms)
        if key not in self._features:
            _, text, tokenizer = self.models(device)
            rows = [text.forward_pooled(tokenizer(list(terms[i:i + _BATCH])))[1].numpy()
                    for i in range(0, len(terms), _BATCH)]
            self._features[key] = _normalized(np.concatenate(rows))
        return self._features[key]

    def ranks(self, picture: Any, options: Mapping[str, Any],
              device: Device | None = None) -> list[tuple[str, float]]:
        """Each list's best terms (term, percent), lists by name, under CLIP_OPTIONS, on
        `device` (None: this interrogator's)."""
        settings = {**CLIP_OPTIONS, **options}
        limit = int(settings["interrogate_clip_dict_limit"])
        skipped = set(settings["interrogate_clip_skip_categories"] or ())
        image = self.image_features(picture, device)
        out: list[tuple[str, float]] = []
        for category in self.check():
            terms = category.items[:limit] if limit else category.items
            if category.name in skipped or not terms:
                continue
            out += rank(image, self.text_features(terms, device), terms, category.topn)
        return out

    def caption(self, picture: Any, options: Mapping[str, Any],
                device: Device | None = None) -> str:
        """The WebUI's interrogation text: BLIP's caption, then each term after ", ", as
        `(term:probability)` under the option interrogate_return_ranks (without `blip`, the
        terms joined by ", "), on `device` (None: this interrogator's; a server's worker names its
        own GPU)."""
        ranks = self.ranks(picture, options, device)
        if options.get("interrogate_return_ranks"):
            terms = [f"({term}:{score / 100:.3f})" for term, score in ranks]
        else:
            terms = [term for term, _ in ranks]
        if self.blip is None:
            return ", ".join(terms)
        return self.blip.caption(picture, options, device) + "".join(f", {term}" for term in terms)
