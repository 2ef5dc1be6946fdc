"""Qwen-Image with a ControlNet unit (qwenimage_tiny's model and a tiny QwenImageControlNetModel
made by diffusers here, InstantX's Union form): through the CLI with `--sampler diffusers
--rng torch` the picture is diffusers' QwenImageControlNetPipeline's (true CFG, the weight,
the guidance end), the control visibly matters, and a single file finds its config."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

pytest.importorskip("diffusers", reason="diffusers is a test-only reference (extra: reference)")
import torch
from cli_support import cli_picture
from control_tiny import circle
from PIL import Image
from qwenimage_tiny import QWENIMAGE_TINY, tiny_qwenimage_pipeline
from safetensors.torch import save_file
from sd_tiny import randomized

import gpucore
from diffusion.loaders import WeightsError
from diffusion.loaders.control.controlnet_file import controlnet_weights

TOLERANCE = 0.01  # mean abs pixel, pictures in [0, 1]
WIDTH, HEIGHT = 40, 24  # latents 10 x 6: 5 x 3 patches
# long enough to outweigh the template's system text, which the tiny tokenizer splits finely
PROMPT = "a red circle on a blue square, " * 6


def tiny_qwenimage_controlnet(scale: float = 3.0) -> Any:
    """diffusers' QwenImageControlNetModel for qwenimage_tiny's transformer: one block (both
    of the transformer's take its residual), every weight random, the residual projection
    scaled by `scale` so the map visibly matters."""
    import diffusers

    model = randomized(diffusers.QwenImageControlNetModel(
        **{**QWENIMAGE_TINY, "num_layers": 1}), 29, scale=0.3)
    with torch.no_grad():
        for name, parameter in model.named_parameters():
            if name.startswith("controlnet_blocks"):
                parameter.mul_(scale)
    return model


def test_qwenimage_controlnet_equals_diffusers(first_device: gpucore.Device,
                                               tmp_path_factory: pytest.TempPathFactory,
                                               tmp_path: Path,
                                               capsys: pytest.CaptureFixture[str]) -> None:
    import diffusers

    root = tmp_path_factory.mktemp("tiny-qwen-image-cn")
    reference, folder = tiny_qwenimage_pipeline(root), root / "qwen-image"
    controlnet = tiny_qwenimage_controlnet()
    controlnet.save_pretrained(tmp_path / "cn")
    picture = Image.fromarray(circle(HEIGHT, WIDTH))
    picture.save(tmp_path / "control.png")
    base = ("txt2img", "--model", str(folder), "--prompt", PROMPT, "--negative-prompt", "a cat",
            "--width", str(WIDTH), "--height", str(HEIGHT), "--steps", "2", "--cfg-scale", "4",
            "--sampler", "diffusers", "--rng", "torch", "--seed", "7", "--dtype", "float32")
    unit = ("--controlnet", str(tmp_path / "cn"), "--control-image",
            str(tmp_path / "control.png"), "--control-weight", "0.75", "--control-end", "0.5")

    ours = cli_picture(capsys, *base, *unit, "--out", str(tmp_path / "a.png"))
    pipe = diffusers.QwenImageControlNetPipeline(**reference.components, controlnet=controlnet)
    theirs = pipe(PROMPT, negative_prompt="a cat", true_cfg_scale=4.0, control_image=picture,
                  height=HEIGHT, width=WIDTH, num_inference_steps=2,
                  controlnet_conditioning_scale=0.75, control_guidance_end=0.5,
                  generator=torch.Generator().manual_seed(7), output_type="np").images[0]
    assert np.abs(ours - np.round(theirs * 255) / 255).mean() <= TOLERANCE
    plain = cli_picture(capsys, *base, "--out", str(tmp_path / "plain.png"))
    assert np.abs(ours - plain).mean() >= 5 * TOLERANCE  # the control matters

    # a single file: its config beside it, or (Qwen-Image's 128-wide heads) its tensors'
    file = tmp_path / "qwen-cn.safetensors"
    save_file({k: v.contiguous() for k, v in controlnet.state_dict().items()}, file)
    with pytest.raises(WeightsError, match=r"without Qwen-Image's 128-wide heads: give its "
                                           r"config\.json beside it"):
        controlnet_weights(file)
    (tmp_path / "cn" / "config.json").rename(file.with_suffix(".json"))
    config = controlnet_weights(file).config
    assert config["_class_name"] == "QwenImageControlNetModel" and config["num_layers"] == 1


class _Ref:
    """A tensor's shape, as the config reader sees a file's tensors."""

    def __init__(self, *shape: int) -> None:
        self.shape = shape


@pytest.mark.nodevice
def test_instantx_file_config_from_its_tensors(tmp_path: Path) -> None:
    """InstantX's Union file (Qwen-Image's 128-wide heads, 5 blocks) needs no config beside
    it; an inpainting one's extra channels are read too."""
    from diffusion.loaders.control.dit_controlnet_file import dit_controlnet_config

    refs: dict[str, Any] = {"img_in.weight": _Ref(3072, 64), "txt_in.weight": _Ref(3072, 3584),
                            "txt_norm.weight": _Ref(3584),
                            "controlnet_x_embedder.weight": _Ref(3072, 68)}
    for i in range(5):
        refs[f"transformer_blocks.{i}.attn.norm_q.weight"] = _Ref(128)
    config = dit_controlnet_config(tmp_path / "union.safetensors", refs, None)
    assert config == {"_class_name": "QwenImageControlNetModel", "in_channels": 64,
                      "num_layers": 5, "attention_head_dim": 128, "num_attention_heads": 24,
                      "joint_attention_dim": 3584, "extra_condition_channels": 4}
