"""LoRA for Z-Image Omni's own parts, the SigLIP embedder and refiner that read the condition
pictures' SigLIP2 features: a diffusers/PEFT file (`transformer.siglip_refiner.0...`) gives
diffusers' ZImageOmniPipeline picture after its `load_lora_weights`, and kohya's layout of the
same update (`lora_unet_`, the original fused `attention.qkv`) the same picture."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

pytest.importorskip("diffusers", reason="diffusers is a test-only reference (extra: reference)")
pytest.importorskip("peft", reason="diffusers' LoRA loading needs peft")
import torch
from PIL import Image
from safetensors.torch import save_file
from zimage_tiny import ZIMAGE_OMNI_TINY, tiny_zimage_omni_pipeline

import gpucore
from diffusion import load_pipeline

RANK = 2
DIM, FEATURES = ZIMAGE_OMNI_TINY["dim"], ZIMAGE_OMNI_TINY["siglip_feat_dim"]
HIDDEN = int(DIM / 3 * 8)
# diffusers reads condition pictures of 64 pixels a side or more
REQUEST = dict(sampler="diffusers", rng="torch", seed=7, steps=2, width=64, height=64,
               cfg_scale=1.0)


def _pair(out: int, width: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return (torch.randn(RANK, width, generator=g) * 0.5, torch.randn(out, RANK, generator=g) * 0.5)


def _files(folder: Path) -> None:
    """peft.safetensors and kohya.safetensors: one update of the SigLIP embedder's linear,
    the refiner's attention (q, k and v sharing their down projection, as a fused qkv's
    does) and its feed-forward's w2, in each layout (kohya's alpha the rank: scale 1)."""
    down, up = _pair(3 * DIM, DIM, 0)
    layers = {"siglip_embedder.1": _pair(DIM, FEATURES, 1),
              "siglip_refiner.0.feed_forward.w2": _pair(DIM, HIDDEN, 2)}
    peft = {f"transformer.siglip_refiner.0.attention.{name}.lora_{ab}.weight": w
            for k, name in enumerate(("to_q", "to_k", "to_v"))
            for ab, w in (("A", down.clone()), ("B", up[k * DIM:(k + 1) * DIM].contiguous()))}
    kohya = {"lora_unet_siglip_refiner_0_attention_qkv.lora_down.weight": down,
             "lora_unet_siglip_refiner_0_attention_qkv.lora_up.weight": up,
             "lora_unet_siglip_refiner_0_attention_qkv.alpha": torch.tensor(float(RANK))}
    for path, (a, b) in layers.items():
        peft.update({f"transformer.{path}.lora_A.weight": a,
                     f"transformer.{path}.lora_B.weight": b})
        name = "lora_unet_" + path.replace(".", "_")
        kohya.update({f"{name}.lora_down.weight": a, f"{name}.lora_up.weight": b,
                      f"{name}.alpha": torch.tensor(float(RANK))})
    save_file(peft, str(folder / "peft.safetensors"))
    save_file(kohya, str(folder / "kohya.safetensors"))


@pytest.fixture(scope="module")
def omni(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, Image.Image, Any]:
    """The tiny folder, the LoRA folder, the condition picture, diffusers' picture with the
    PEFT LoRA at 0.5."""
    root = tmp_path_factory.mktemp("tiny-z-image-omni-lora")
    reference = tiny_zimage_omni_pipeline(root)
    # diffusers encodes condition pictures in bfloat16 (for its bfloat16 VAE); its float32
    # VAE here reads them back in float32
    encode = reference.vae.encode
    reference.vae.encode = lambda x, *args, **kwargs: encode(x.float(), *args, **kwargs)
    _files(root)
    picture = Image.fromarray(np.random.default_rng(1).integers(0, 256, (64, 64, 3),
                                                                np.uint8))
    reference.load_lora_weights(str(root / "peft.safetensors"), adapter_name="peft")
    reference.set_adapters(["peft"], adapter_weights=[0.5])
    with torch.no_grad():
        expected = reference(prompt="a red circle", image=[picture], height=64, width=64,
                             num_inference_steps=2, guidance_scale=0.0,
                             max_sequence_length=64, generator=torch.Generator().manual_seed(7),
                             output_type="np").images[0]
    return root / "z-image-omni", root, picture, expected


def test_omni_siglip_lora_matches_diffusers(first_device: gpucore.Device,
                                            omni: tuple[Path, Path, Image.Image, Any]) -> None:
    folder, loras, picture, expected = omni
    model = load_pipeline(folder, device=first_device)
    model.lora_dir = loras

    def ours(prompt: str) -> np.ndarray:
        return model.generate(prompt, init_image=picture, **REQUEST).images[0].astype(int)

    got = {layout: ours(f"<lora:{layout}:0.5>a red circle") for layout in ("peft", "kohya")}
    for layout, pixels in got.items():
        assert np.abs(pixels - np.round(expected * 255)).max() <= 1, layout  # measured 1
    # the LoRA matters (the test's premise): it acts on the condition picture's features
    # (measured 16 levels mean)
    assert np.abs(got["peft"] - ours("a red circle")).mean() > 2
