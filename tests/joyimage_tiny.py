"""A tiny random JoyImage Edit built in-process (diffusers, transformers, tokenizers): its
transformer (two double-stream blocks, 16-wide heads over [4, 6, 6] rotary axes), the tiny
Wan 2.1 VAE (4 latent channels, 8 pixels a latent), a Qwen3-VL text encoder with its
three-block vision tower (and a picture processor with small pixel limits) and the whole
JoyImageEditPipeline, written as a diffusers folder (model_index.json by hand: the tiny
processor has no video processor to save) and kept in memory as the reference."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pytest
from qwen3vl_tiny import (
    QWEN3VL_PIXELS,
    QWEN3VL_TEXT,
    QWEN3VL_VISION,
    tiny_qwen3vl,
    tiny_qwen3vl_processor,
    tiny_qwen3vl_tokenizer,
)
from sd_tiny import randomized
from wan_tiny import tiny_wan_vae

JOYIMAGE_TINY: dict[str, Any] = dict(
    patch_size=[1, 2, 2], in_channels=4, hidden_size=32, num_attention_heads=2,
    text_dim=QWEN3VL_TEXT["hidden_size"], mlp_width_ratio=3.0, num_layers=2,
    rope_dim_list=[4, 6, 6], rope_type="rope", theta=256)
# JoyImage's scheduler_config.json: a fixed shift, no resolution-dependent one (the pipeline
# passes no `mu`)
JOYIMAGE_SCHEDULER: dict[str, Any] = dict(num_train_timesteps=1000, shift=3.0,
                                          use_dynamic_shifting=False)
_INDEX = {"_class_name": "JoyImageEditPipeline", "_diffusers_version": "0.42.1",
          "transformer": ["diffusers", "JoyImageEditTransformer3DModel"],
          "vae": ["diffusers", "AutoencoderKLWan"],
          "text_encoder": ["transformers", "Qwen3VLForConditionalGeneration"],
          "tokenizer": ["transformers", "Qwen2Tokenizer"],
          "processor": ["transformers", "Qwen3VLProcessor"],
          "scheduler": ["diffusers", "FlowMatchEulerDiscreteScheduler"]}


def tiny_joyimage_transformer(seed: int = 11, **overrides: Any) -> Any:
    """diffusers' JoyImageEditTransformer3DModel of JOYIMAGE_TINY (with `overrides`), random
    weights scaled so the prompt and the reference picture visibly matter."""
    import diffusers

    model = diffusers.JoyImageEditTransformer3DModel(**{**JOYIMAGE_TINY, **overrides})
    return randomized(model, seed, scale=0.8)


def tiny_joyimage_pipeline(root: Path, *, plus: bool = False) -> Any:
    """diffusers' JoyImageEditPipeline of tiny random parts, written to `root / "joyimage"`
    (`plus`: JoyImageEditPlusPipeline's, its transformer JoyImageEditPlusTransformer3DModel
    of the same weights, to `root / "joyimage-plus"`); returns the pipeline."""
    import diffusers

    tokenizer = tiny_qwen3vl_tokenizer(root / "joyimage-tokenizer")
    processor = tiny_qwen3vl_processor(tokenizer, QWEN3VL_PIXELS)
    transformer = tiny_joyimage_transformer()
    if plus:
        config = {k: v for k, v in transformer.config.items() if not k.startswith("_")}
        model = diffusers.JoyImageEditPlusTransformer3DModel(**config)
        model.load_state_dict(transformer.state_dict())
        transformer = model.eval()
    kind = diffusers.JoyImageEditPlusPipeline if plus else diffusers.JoyImageEditPipeline
    pipe = kind(
        scheduler=diffusers.FlowMatchEulerDiscreteScheduler(**JOYIMAGE_SCHEDULER),
        vae=tiny_wan_vae(), tokenizer=processor.tokenizer, processor=processor,
        text_encoder=tiny_qwen3vl(processor.tokenizer.convert_tokens_to_ids("<|image_pad|>"),
                                  vision=QWEN3VL_VISION),
        transformer=transformer)
    folder = root / ("joyimage-plus" if plus else "joyimage")
    for name in ("transformer", "vae", "text_encoder", "scheduler"):
        getattr(pipe, name).save_pretrained(folder / name)
    shutil.copytree(tokenizer, folder / "tokenizer", dirs_exist_ok=True)
    shutil.copytree(tokenizer, folder / "processor", dirs_exist_ok=True)
    (folder / "processor" / "preprocessor_config.json").write_text(json.dumps(QWEN3VL_PIXELS))
    index = {**_INDEX, "_class_name": type(pipe).__name__,
             "transformer": ["diffusers", type(transformer).__name__]}
    (folder / "model_index.json").write_text(json.dumps(index))
    return pipe


@pytest.fixture(scope="session")
def tiny_joyimage(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Any]:
    """(the folder `root / "joyimage"`, diffusers' JoyImageEditPipeline) of tiny random parts,
    for the test modules that import it."""
    pytest.importorskip("diffusers", reason="diffusers is a test-only reference")
    root = tmp_path_factory.mktemp("tiny-joyimage")
    return root / "joyimage", tiny_joyimage_pipeline(root)


@pytest.fixture(scope="session")
def tiny_joyimage_plus(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Any]:
    """(the folder `root / "joyimage-plus"`, diffusers' JoyImageEditPlusPipeline) of tiny
    random parts."""
    pytest.importorskip("diffusers", reason="diffusers is a test-only reference")
    root = tmp_path_factory.mktemp("tiny-joyimage-plus")
    return root / "joyimage-plus", tiny_joyimage_pipeline(root, plus=True)
