"""A LoRA on a quantized (GGUF Q8_0) UNet: merged into the blocks and quantized again
(diffusion.lora._quantized), its picture as far from the float32 LoRA picture as the
quantization puts the plain pictures; removing it gives the file's blocks back bit for bit."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("gguf", reason="GGUF needs the gguf package (diffusion extra)")
pytest.importorskip("diffusers", reason="builds the tiny test model (extra: reference)")
safetensors_numpy = pytest.importorskip("safetensors.numpy", reason="writes the test LoRA")
from sd_tiny import tiny_unet, write_pipeline  # noqa: E402

import gpucore  # noqa: E402
from diffusion import load_pipeline  # noqa: E402
from diffusion.cli.main import main  # noqa: E402
from diffusion.loaders.sd.gguf_unet import load_unet_gguf  # noqa: E402
from diffusion.lora import LoraManager  # noqa: E402
from diffusion.pipelines.sd.memory import MemoryMode  # noqa: E402
from gpustd.nn.quantized import quantized_weights  # noqa: E402

# (64, 64) projections and a 3x3 conv of the tiny UNet, as kohya names them
LAYERS = {"lora_unet_mid_block_attentions_0_transformer_blocks_0_attn1_to_q": (64, 64),
          "lora_unet_down_blocks_1_attentions_0_transformer_blocks_0_attn2_to_out_0": (64, 64),
          "lora_unet_up_blocks_0_resnets_0_conv2": (64, 64 * 9)}


def _lora(path: Path) -> Path:
    rng = np.random.default_rng(1)
    tensors = {}
    for name, (rows, cols) in LAYERS.items():
        down = rng.standard_normal((4, cols)).astype(np.float32) * 0.2
        if cols != rows:  # a conv LoRA: (rank, in, 3, 3) down, (out, rank, 1, 1) up
            down = down.reshape(4, 64, 3, 3)
        up = rng.standard_normal((rows, 4)).astype(np.float32) * 0.2
        tensors[f"{name}.lora_down.weight"] = down
        tensors[f"{name}.lora_up.weight"] = up if cols == rows else up.reshape(rows, 4, 1, 1)
    safetensors_numpy.save_file(tensors, str(path))
    return path


def test_lora_on_q8_0_unet(first_device: gpucore.Device, tmp_path: Path) -> None:
    folder = write_pipeline(tmp_path / "tiny")
    gguf_path = tmp_path / "unet-q8_0.gguf"
    assert main(["quantize", str(folder), "--type", "q8_0", str(gguf_path)]) == 0
    lora = _lora(tmp_path / "style.safetensors")

    before: dict[str, np.ndarray] = {}

    def pictures(quantized: bool) -> tuple[np.ndarray, np.ndarray, object]:
        pipe = load_pipeline(folder, device=first_device)
        if quantized:
            pipe.unet = load_unet_gguf(gguf_path, device=first_device,
                                       config=dict(tiny_unet().config))
            before.update((k, w.raw()) for k, w in quantized_weights(pipe.unet).items())

        def run() -> np.ndarray:
            return pipe.txt2img("a lighthouse", steps=1, seed=4, width=16,
                                height=16).images[0].astype(int)
        plain = run()
        loras = LoraManager(pipe)
        loras.set([(lora, 1.0, 1.0)])
        patched = run()
        return plain, patched, (pipe, loras)

    f32_plain, f32_lora, _ = pictures(False)
    q8_plain, q8_lora, (pipe, loras) = pictures(True)
    held = quantized_weights(pipe.unet)
    key = "mid_block.attentions.0.transformer_blocks.0.attn1.to_q.weight"
    assert held[key].format == "q8_0"  # merged and quantized again, same format
    assert not np.array_equal(held[key].raw(), before[key])
    quantization = np.abs(q8_plain - f32_plain).mean()
    error = np.abs(q8_lora - f32_lora).mean()
    change = np.abs(f32_lora - f32_plain).mean()
    assert change > 4 * max(quantization, 0.25), (change, quantization)  # the LoRA shows
    # the requantized LoRA adds about one more quantization error, not the LoRA's change
    assert error <= 2 * quantization + 0.5, (error, quantization, change)
    # streamed block by block (--lowvram: quantized blocks to the host and back), unchanged
    pipe.set_memory_mode(MemoryMode(lowvram=True))
    streamed = pipe.txt2img("a lighthouse", steps=1, seed=4, width=16, height=16).images[0]
    np.testing.assert_array_equal(streamed, q8_lora)
    assert pipe.memory.residency.evictions > 0
    pipe.set_memory_mode(MemoryMode())
    # removed: the file's blocks, bit for bit
    loras.clear()
    after = quantized_weights(pipe.unet)
    for k, raw in before.items():
        np.testing.assert_array_equal(after[k].raw(), raw, err_msg=k)
