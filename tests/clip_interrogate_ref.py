"""A tiny random transformers CLIPModel for the CLIP interrogator's tests, and its term lists."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

TERMS = {"artists": [f"by artist {name}" for name in ("ann", "bob", "cy", "dee", "eve")],
         "flavors.top3": ["red", "green stripes", "a blue sky", "dark", "bright light", "fog"],
         "mediums": ["oil painting", "photograph", "pencil sketch"]}


def write_clip_model(folder: Path, seed: int = 5) -> Any:
    """transformers' CLIPModel (tiny, random, weights scaled so text and picture matter) saved
    in `folder`; returns the model."""
    import transformers
    from sd_tiny import randomized

    config = transformers.CLIPConfig(
        text_config={"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2,
                     "num_attention_heads": 4, "vocab_size": 49408,
                     "max_position_embeddings": 77},
        vision_config={"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2,
                       "num_attention_heads": 4, "image_size": 30, "patch_size": 6},
        projection_dim=16)
    model = randomized(transformers.CLIPModel(config), seed, scale=1.0)
    model.save_pretrained(folder)
    return model


def write_terms(folder: Path) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for name, terms in TERMS.items():
        (folder / f"{name}.txt").write_text("\n".join(terms) + "\n", encoding="utf-8")


def reference_ranks(model: Any, picture: Any) -> list[tuple[str, float]]:
    """The WebUI's rank() with transformers' CLIPModel features."""
    import torch

    from diffusion.models.clip_vision import clip_pixels
    from diffusion.text.tokenizer import CLIPTokenizer

    pixels = torch.from_numpy(clip_pixels(picture, 30))
    tokenizer = CLIPTokenizer()
    out = []
    with torch.no_grad():
        image = model.get_image_features(pixel_values=pixels)
        image = getattr(image, "pooler_output", image)
        image = image / image.norm(dim=-1, keepdim=True)
        for name in sorted(TERMS):
            terms = TERMS[name]
            ids = torch.from_numpy(tokenizer(terms).astype(np.int64))
            text = model.get_text_features(input_ids=ids)
            text = getattr(text, "pooler_output", text)
            text = text / text.norm(dim=-1, keepdim=True)
            probs = (100.0 * image @ text.T).softmax(dim=-1)[0]
            top = 3 if name.endswith("top3") else 1
            values, labels = probs.topk(top)
            out += [(terms[int(i)], float(v) * 100) for v, i in zip(values, labels)]
    return out
