"""Wan 2.2 Animate's transformer as a GGUF file (city96's / QuantStack's form: the original
release's names, the matrices quantized, the rest floats): it loads with its matrices kept as
GGML blocks on the GPU, gives diffusers' WanAnimateTransformer3DModel holding the values the
file stores (gguf-py's own dequantize) to float32 error, and the unquantized model's flow
within the format's measured error."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import numpy as np
import pytest

pytest.importorskip("gguf", reason="GGUF files need the gguf package")
pytest.importorskip("diffusers", reason="diffusers is a test-only reference")
import torch
from sd_tiny import state_dict
from support import assert_close
from wan_animate_tiny import (
    ANIMATE_TINY,
    TEXT_TOKENS,
    animate_original_names,
    tiny_animate_transformer,
)

import gpucore
from diffusion.loaders.component import load_component
from diffusion.loaders.formats.gguf_write import write_gguf
from diffusion.loaders.wan.animate import load_wan_animate_transformer
from diffusion.models.wan_animate import WanAnimateTransformer3DModel
from gpustd import asarray
from gpustd.nn.quantized import quantized_weights

# 2 heads of 32 and a 64-wide feed-forward: rows of whole 32-value blocks, matrices of 1024+
# values, so the blocks' attention, feed-forward, face blocks and embedders are quantized
WIDE = {"attention_head_dim": 32, "added_kv_proj_dim": 64, "ffn_dim": 64}
LATENT, SIZE = ANIMATE_TINY["latent_channels"], ANIMATE_TINY["motion_encoder_size"]


def _inputs() -> dict[str, np.ndarray]:
    rng = np.random.default_rng(9)

    def normal(*shape: int) -> np.ndarray:
        return rng.standard_normal(shape).astype(np.float32)

    return {"latents": normal(1, 2 * LATENT + 4, 3, 4, 6),
            "text": normal(1, TEXT_TOKENS, ANIMATE_TINY["text_dim"]),
            "image": normal(1, 5, ANIMATE_TINY["image_dim"]),
            "pose": normal(1, LATENT, 2, 4, 6),
            "face": rng.uniform(-1, 1, (1, 3, 5, SIZE, SIZE)).astype(np.float32)}


def _theirs(model: Any, x: dict[str, np.ndarray], timestep: np.ndarray) -> np.ndarray:
    t = {k: torch.from_numpy(v) for k, v in x.items()}
    with torch.no_grad():
        return model(t["latents"], torch.from_numpy(timestep), t["text"],  # type: ignore[no-any-return]
                     t["image"], t["pose"], t["face"]).sample.numpy()


def _ours(model: WanAnimateTransformer3DModel, x: dict[str, np.ndarray],
          timestep: np.ndarray) -> np.ndarray:
    on = {k: asarray(v, device=model.device) for k, v in x.items()}
    return model(on["latents"], timestep, on["text"],  # type: ignore[no-any-return]
                 encoder_hidden_states_image=on["image"], pose_hidden_states=on["pose"],
                 face_pixel_values=on["face"]).numpy()


def _stored(path: Path, model: Any) -> Any:
    """diffusers' `model` given the values the GGUF at `path` stores (gguf-py's reader and
    dequantize), its names brought back by diffusers' convert_wan_transformer_to_diffusers."""
    import gguf
    from diffusers.loaders.single_file_utils import convert_wan_transformer_to_diffusers

    reader = gguf.GGUFReader(path)
    values = {t.name: torch.from_numpy(np.array(gguf.quants.dequantize(t.data, t.tensor_type),
                                                np.float32)) for t in reader.tensors}
    converted = convert_wan_transformer_to_diffusers(dict(values))
    # the converter takes the release's conv_out at its index of seven res blocks; ours has 2
    converted["motion_encoder.conv_out.weight"] = values[
        "motion_encoder.enc.net_app.convs.3.weight"]
    state = model.state_dict()
    model.load_state_dict({k: v.reshape(state[k].shape) for k, v in converted.items()
                           if k in state})  # strict: every tensor of the model from the file
    return model


# the largest element error and the mean error against the unquantized model's flow, over the
# flow's root mean square (measured: Q8_0 0.040 and 0.011; Q4_0, whose 4 bits move this tiny
# random model far more, 0.88 and 0.23; diffusers' model holding the file's values alike)
@pytest.mark.parametrize(("kind", "worst", "mean"), [("q8_0", 0.08, 0.02), ("q4_0", 1.5, 0.4)])
def test_gguf_within_quantization_error(first_device: gpucore.Device, tmp_path: Path,
                                        kind: str, worst: float, mean: float) -> None:
    """The file read as WanPipeline.from_pretrained reads a transformer (load_component with
    row slices: the face blocks' linear1_kv cut into to_k and to_v as blocks)."""
    reference = tiny_animate_transformer(**WIDE)
    path = tmp_path / f"Wan2.2-Animate-14B-{kind.upper()}.gguf"
    written = write_gguf(path, animate_original_names(
        {k: torch.from_numpy(v) for k, v in state_dict(reference).items()}, 2).items(), kind,
        architecture="wan")
    assert written[kind] == 60  # every block's matrices, the face blocks', the embedders'
    weights = load_wan_animate_transformer(path, config={"num_attention_heads": 2})
    ours = load_component(WanAnimateTransformer3DModel(weights.config, device=first_device),
                          weights, slices=True)
    kept = quantized_weights(ours)
    assert {"blocks.0.attn1.to_q.weight", "blocks.3.ffn.net.0.proj.weight",
            "face_adapter.1.to_k.weight", "face_adapter.1.to_v.weight"} <= set(kept)
    # each linear1_kv two; the motion encoder's conv_out (its own equalised-lr conv, not a
    # Linear or Conv2d) expanded on the host
    assert len(kept) == 60 + 2 - 1
    x, timestep = _inputs(), np.array([600.0], np.float32)
    got = _ours(ours, x, timestep)
    stored = _theirs(_stored(path, copy.deepcopy(reference)), x, timestep)
    assert_close(got, stored, tol=1e-5)  # measured 2.3e-6 of the flow's size at worst
    plain = _theirs(reference, x, timestep)
    scale = np.sqrt((plain ** 2).mean())
    error = np.abs(got - plain)
    assert error.max() < worst * scale and error.mean() < mean * scale, (
        error.max() / scale, error.mean() / scale)
