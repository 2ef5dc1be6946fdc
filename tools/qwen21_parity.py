"""Qwen-Image 2.1's transformer at full size: our step (float32 and float16) and diffusers'
bf16 one against diffusers' float32 on CUDA, the same random weights (normal(0, 0.02), norm
scales 1 + normal(0, 0.02)) and inputs (4096 picture tokens after a 256-token prompt, t 0.5),
each side's prompt prefix made first. bench dit_families compares ours with diffusers bf16
only; this says which side the difference is.

    python -m tools.qwen21_parity [LAYERS]      # 32 by default (the released model's)
"""

from __future__ import annotations

import gc
import sys
from typing import Any

import numpy as np

import gpustd
from bench._dit_models import QWEN_IMAGE21
from diffusion.models.qwen_image21 import QwenImage21Transformer2DModel

TEXT, SIDE = 256, 64


def _reference(model: Any, inputs: dict[str, np.ndarray], dtype: Any) -> np.ndarray:
    """diffusers' step after its prefix (kv_cache "extract", then "cached"), the picture's
    tokens as float32."""
    import torch
    from diffusers.models.transformers.transformer_qwenimage21 import QwenImage21KVCache

    cuda = {k: torch.from_numpy(v).to("cuda") for k, v in inputs.items()}
    settings = dict(hidden_states=cuda["latents"].to(dtype),
                    encoder_hidden_states=cuda["text"].to(dtype),
                    timestep=torch.tensor([0.5], device="cuda", dtype=dtype),
                    img_shapes=[[(1, SIDE, SIDE)]], img_mask=cuda["img_mask"],
                    kv_cache=QwenImage21KVCache(len(model.transformer_blocks)))
    with torch.no_grad():
        model(kv_cache_mode="extract", **settings)
        out = model(kv_cache_mode="cached", **settings).sample
    return out.float().cpu().numpy()[:, -SIDE * SIDE:]


def _ours(config: dict[str, Any], state: dict[str, np.ndarray], inputs: dict[str, np.ndarray],
          dtype: Any) -> np.ndarray:
    model = QwenImage21Transformer2DModel(config, dtype=dtype)
    model.load_state_dict(state)
    prefix = model.prefix(gpustd.asarray(inputs["text"], dtype=np.float32, device=model.device))
    latents = gpustd.asarray(inputs["latents"], dtype=dtype, device=model.device)
    out = model(latents, np.array([0.5]), SIDE, SIDE, prefix).numpy().astype(np.float32)
    del model, prefix
    gc.collect()
    return out  # type: ignore[no-any-return]


def _errors(ours: np.ndarray, truth: np.ndarray) -> str:
    diff = np.abs(ours - truth)
    return (f"max {diff.max() / np.abs(truth).max():.3g} of the largest, mean "
            f"{diff.mean() / np.abs(truth).mean():.3g} of the mean")


def main(layers: int) -> None:
    import diffusers
    import torch

    config = dict(QWEN_IMAGE21, num_layers=layers)
    torch.manual_seed(0)
    reference = diffusers.QwenImage21Transformer2DModel(**config).to("cuda", torch.float32)
    with torch.no_grad():
        for name, p in reference.named_parameters():
            if "norm" in name and name.endswith("weight"):
                p.copy_(1 + 0.02 * torch.randn_like(p))
            else:
                p.normal_(0, 0.02)
    rng = np.random.default_rng(0)
    inputs = {"latents": rng.standard_normal((1, SIDE * SIDE, 64)).astype(np.float32),
              "text": rng.standard_normal((1, TEXT, config["context_in_dim"])).astype(np.float32),
              "img_mask": np.concatenate([np.zeros((1, TEXT), bool),
                                          np.ones((1, SIDE * SIDE // 4), bool)], 1)}
    truth = _reference(reference, inputs, torch.float32)
    state = {k: v.detach().float().cpu().numpy() for k, v in reference.state_dict().items()}
    bf16 = _reference(reference.to(torch.bfloat16), inputs, torch.bfloat16)
    del reference
    gc.collect()
    torch.cuda.empty_cache()
    print(f"{layers} layers, against diffusers float32 on CUDA:")
    print(f"  diffusers bf16: {_errors(bf16, truth)}")
    for dtype in (np.float32, np.float16):
        ours = _ours(config, state, inputs, dtype)
        print(f"  ours {np.dtype(dtype).name}: {_errors(ours, truth)}")


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 32)
