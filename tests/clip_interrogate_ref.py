"""A tiny random transformers CLIPModel for the CLIP interrogator's tests, and its term lists."""

from __future__ import annotations

from pathlib import Path
from typing import Any

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
