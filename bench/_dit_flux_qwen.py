"""bench/dit_families.py's rows of the FLUX-style and Qwen-Image transformers (Qwen-Image,
Qwen-Image-Edit, FLUX.2 klein 9B, Chroma, FLUX.1 Kontext) and of the LLM text encoders they
read (Qwen2.5-VL-7B's language model, Qwen3-8B): their inputs and each side's calls. The
shapes are dit_families' docstring's."""

from __future__ import annotations

from typing import Any

import numpy as np

import gpucore
import gpustd

from ._dit_models import (
    CHROMA,
    EDIT_TEXT,
    FLUX2_KLEIN_9B,
    FLUX_DEV,
    QWEN3_8B,
    QWEN25VL_7B,
    QWEN_IMAGE,
    Model,
)

NAMES = ("qwen3_8b", "qwen25vl", "flux2klein", "chroma", "kontext", "qwenimage",
         "qwenimageedit")


def _positions(text: int, rows: int, columns: int, axes: int, context: int = 0
               ) -> tuple[np.ndarray, np.ndarray]:
    """FLUX-style ids: zeros for text ((0, 0, 0, l) with 4 axes), (i, row, column[, 0]) for
    each image's patches (i = 0 the noise, 1 .. `context` images after it)."""
    text_ids = np.zeros((text, axes), np.float32)
    if axes == 4:
        text_ids[:, 3] = np.arange(text)
    r, c = np.meshgrid(np.arange(rows), np.arange(columns), indexing="ij")
    images = []
    for index in range(1 + context):
        ids = np.zeros((rows * columns, axes), np.float32)
        ids[:, 0], ids[:, 1], ids[:, 2] = index, r.ravel(), c.ravel()
        images.append(ids)
    return text_ids, np.concatenate(images)


def inputs(name: str, config: dict[str, Any], quick: bool) -> dict[str, np.ndarray]:
    """Random inputs of the row (a numpy array each; `rows` the patches' side): token ids for
    the LLMs; the patches, text states and their positions for the transformers."""
    rng = np.random.default_rng(0)
    side = 8 if quick else 64  # patches per side: 1024 / 16
    if name in ("qwen25vl", "qwen3_8b"):
        length = 24 if quick else (256 if name == "qwen25vl" else 512)
        return {"ids": rng.integers(0, config["vocab_size"], (1, length))}
    text = 12 if quick else {"qwenimage": 222, "qwenimageedit": EDIT_TEXT}.get(name, 512)
    tokens = side * side * (2 if name in ("kontext", "qwenimageedit") else 1)
    x = {"latents": rng.standard_normal((1, tokens, config["in_channels"])),
         "text": rng.standard_normal((1, text, config["joint_attention_dim"])),
         "t": np.array([0.7]), "rows": np.array(side)}
    axes = len(config["axes_dims_rope"])
    if not name.startswith("qwenimage"):
        x["txt_ids"], x["img_ids"] = _positions(text, side, side, axes,
                                                1 if name == "kontext" else 0)
    if name == "kontext":
        x["pooled"], x["guidance"] = rng.standard_normal((1, 768 if not quick else 24)), [2.5]
    return x


def _llm_reference(transformers: Any, config: dict[str, Any]) -> Any:
    kind = transformers.Qwen3Model if config["model_type"] == "qwen3" else transformers.Qwen2Model
    config_class = (transformers.Qwen3Config if config["model_type"] == "qwen3"
                    else transformers.Qwen2Config)
    return kind(config_class(**config))


def _ours_llm(config: dict[str, Any], dtype: Any, device: gpucore.Device) -> Any:
    from diffusion.models.llm import LLMTextModel

    # Qwen2.5-VL's language model: Qwen2's layers, its multimodal RoPE the plain one for text
    kind = "qwen3" if config["model_type"] == "qwen3" else "qwen2_5_vl_text"
    return LLMTextModel(dict(config, model_type=kind), dtype=dtype, device=device)


def _llm_layers(name: str) -> tuple[int, ...]:
    return (9, 18, 27) if name == "qwen3_8b" else (-1,)


def _dit(name: str) -> Model:
    """The model table's line for transformer `name`."""
    from diffusion.models import chroma, flux, flux2, qwen_image

    def tensors(x: dict[str, Any], dtype: Any, device: Any) -> tuple[Any, Any]:
        latents = gpustd.asarray(x["latents"], dtype=dtype, device=device)
        return latents, gpustd.asarray(x["text"], dtype=dtype, device=device)

    if name.startswith("qwenimage"):
        # Qwen-Image-Edit: one reference of the noise's size after the noise's patches
        references = [1] if name == "qwenimageedit" else []

        def ref_call(ref: Any, x: dict[str, Any]) -> Any:
            rows = int(x["rows"])
            return ref(hidden_states=x["torch"]["latents"],
                       encoder_hidden_states=x["torch"]["text"], timestep=x["torch"]["t"],
                       img_shapes=[[(1, rows, rows)] * (1 + len(references))]).sample

        def call(ours: Any, x: dict[str, Any], dtype: Any) -> Any:
            rows = int(x["rows"])
            return ours(*tensors(x, dtype, ours.device), x["t"], rows, rows,
                        references=[(rows, rows)] * len(references))
        return Model(QWEN_IMAGE, lambda d, t, c: d.QwenImageTransformer2DModel(**c), ref_call,
                      lambda c, dt, dev: qwen_image.QwenImageTransformer2DModel(
                          c, dtype=dt, device=dev), call)
    kinds = {"flux2klein": ("Flux2Transformer2DModel", flux2.Flux2Transformer2DModel,
                            FLUX2_KLEIN_9B),
             "chroma": ("ChromaTransformer2DModel", chroma.ChromaTransformer2DModel, CHROMA),
             "kontext": ("FluxTransformer2DModel", flux.FluxTransformer2DModel, FLUX_DEV)}
    reference_name, ours_class, config = kinds[name]

    def ref_call_ids(ref: Any, x: dict[str, Any]) -> Any:
        t = x["torch"]
        extra = ({"pooled_projections": t["pooled"], "guidance": t["guidance"]}
                 if name == "kontext" else {})
        return ref(hidden_states=t["latents"], encoder_hidden_states=t["text"],
                   timestep=t["t"], img_ids=t["img_ids"], txt_ids=t["txt_ids"], **extra).sample

    def call_ids(ours: Any, x: dict[str, Any], dtype: Any) -> Any:
        latents, text = tensors(x, dtype, ours.x_embedder.weight.device)
        if name == "kontext":
            pooled = gpustd.asarray(x["pooled"], dtype=dtype, device=latents.device)
            return ours(latents, text, pooled, x["t"], x["img_ids"], x["txt_ids"],
                        x["guidance"])
        return ours(latents, text, x["t"], x["img_ids"], x["txt_ids"])

    return Model(config, lambda d, t, c: getattr(d, reference_name)(**c), ref_call_ids,
                  lambda c, dt, dev: ours_class(c, dtype=dt, device=dev), call_ids)


def model(name: str) -> Model:
    """The model table's line for the row."""
    if name not in ("qwen25vl", "qwen3_8b"):
        return _dit(name)
    layers = _llm_layers(name)

    def ref_call(ref: Any, x: dict[str, Any]) -> Any:
        import torch

        states = ref(input_ids=x["torch"]["ids"], output_hidden_states=True).hidden_states
        return torch.cat([states[k] for k in layers], dim=-1)

    def call(ours: Any, x: dict[str, Any], dtype: Any) -> Any:
        return gpustd.concatenate(ours.hidden_states_of(x["ids"], None, layers), axis=2)

    return Model(QWEN25VL_7B if name == "qwen25vl" else QWEN3_8B,
                  lambda d, t, c: _llm_reference(t, c), ref_call, _ours_llm, call)
