"""HunyuanVideo's text encoder in one file, as ComfyUI ships it (`llava_llama3_fp16.
safetensors`: llava-llama-3-8b's language model under `model.`, written here from the tiny
transformers LlamaModel beside a vision tower's and an lm_head's tensors, which are left out):
read back as the LLM text encoder of Llama 3's settings, its states at the layer
HunyuanVideo's pipeline reads equal transformers'."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("transformers", reason="transformers is a test-only reference")
import torch
from hunyuan_video_tiny import LLAMA_TINY, tiny_llama
from safetensors.numpy import save_file
from sd_tiny import state_dict
from support import assert_close

import gpucore
from diffusion.loaders.errors import WeightsError
from diffusion.loaders.z_image import load_llm_file
from diffusion.models.llm import LLMTextModel


def _comfyui_file(path: Path, state: dict[str, np.ndarray],
                  extra: dict[str, np.ndarray] | None = None) -> Path:
    body = {f"model.{k}": v for k, v in state.items()}
    other = {"vision_tower.patch_embed.weight": np.zeros((4, 3), np.float32),
             "lm_head.weight": np.zeros((LLAMA_TINY["vocab_size"], 40), np.float32)}
    save_file({**body, **other, **(extra or {})}, path)
    return path


def test_llava_llama3_file(first_device: gpucore.Device, tmp_path: Path) -> None:
    reference = tiny_llama()
    state = state_dict(reference)
    path = _comfyui_file(tmp_path / "llava_llama3_fp16.safetensors", state)
    # the tiny heads are 10 wide, not Llama 3 8B's 128: the head count is the folder config's
    weights = load_llm_file(path, kind="llama", config={"num_attention_heads": 4})
    assert set(weights) == set(state)
    assert {k: weights.config[k] for k in ("model_type", "rope_theta", "num_key_value_heads",
                                           "num_hidden_layers", "head_dim")} == {
        "model_type": "llama", "rope_theta": 500_000.0, "num_key_value_heads": 2,
        "num_hidden_layers": 4, "head_dim": 10}
    ours = LLMTextModel(weights.config, device=first_device)
    ours.load_state_dict({k: weights[k] for k in weights})
    ids = np.random.default_rng(1).integers(3, LLAMA_TINY["vocab_size"], (1, 21))
    with torch.no_grad():
        expected = reference(input_ids=torch.from_numpy(ids), output_hidden_states=True
                                ).hidden_states[-3].numpy()
    assert_close(ours.hidden_states(ids, layer=-3).numpy(), expected, tol=1e-4)


@pytest.mark.nodevice
def test_llava_llama3_file_refuses_others(tmp_path: Path) -> None:
    biased = {"model.layers.0.self_attn.q_proj.bias": np.zeros(40, np.float32)}
    path = _comfyui_file(tmp_path / "qwen2.safetensors", state_dict(tiny_llama()), biased)
    with pytest.raises(WeightsError, match=r"q/k/v biases .* not a Llama text encoder"):
        load_llm_file(path, kind="llama")
