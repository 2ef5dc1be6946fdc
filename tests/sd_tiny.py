"""Tiny random Stable Diffusion models, built in-process with diffusers/transformers (no hub).

Shapes follow diffusers' own dummy test components; vocab is CLIP's real 49408 so the real
tokenizer applies. Weights are redrawn from N(0, 0.05^2)-ish so no layer is a zero-init
identity that would hide a bug.
"""

from __future__ import annotations

import atexit
import json
import shutil
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

UNET_TINY: dict[str, Any] = dict(
    block_out_channels=(32, 64), layers_per_block=2, sample_size=16, in_channels=4,
    out_channels=4, down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
    up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"), cross_attention_dim=32,
    attention_head_dim=(2, 4), norm_num_groups=32,
)
VAE_TINY: dict[str, Any] = dict(
    block_out_channels=(32, 32), in_channels=3, out_channels=3, latent_channels=4,
    down_block_types=("DownEncoderBlock2D",) * 2, up_block_types=("UpDecoderBlock2D",) * 2,
    norm_num_groups=32,
)
CLIP_TINY: dict[str, Any] = dict(
    bos_token_id=49406, eos_token_id=49407, hidden_size=32, intermediate_size=37,
    layer_norm_eps=1e-5, num_attention_heads=4, num_hidden_layers=5, pad_token_id=1,
    vocab_size=49408, max_position_embeddings=77,
)


def randomized(model: Any, seed: int, scale: float = 0.2) -> Any:
    """Redraw every parameter: weights ~ N(0, (scale / sqrt(fan_in))^2), norms near 1."""
    import torch

    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "norm" in name and name.endswith("weight"):
                p.copy_(1 + 0.1 * torch.randn(p.shape, generator=gen))
            elif p.ndim >= 2:
                fan_in = int(np.prod(p.shape[1:]))
                p.copy_(torch.randn(p.shape, generator=gen) * (scale * 5 / fan_in**0.5))
            else:
                p.copy_(0.1 * torch.randn(p.shape, generator=gen))
    return model.eval()


def tiny_unet(seed: int = 1, **overrides: Any) -> Any:
    import diffusers

    return randomized(diffusers.UNet2DConditionModel(**{**UNET_TINY, **overrides}), seed)


def tiny_vae(seed: int = 2) -> Any:
    import diffusers

    return randomized(diffusers.AutoencoderKL(**VAE_TINY), seed)


def tiny_text_encoder(seed: int = 3, **overrides: Any) -> Any:
    import transformers

    config = transformers.CLIPTextConfig(**{**CLIP_TINY, **overrides})
    return randomized(transformers.CLIPTextModel(config), seed)


def write_tokenizer(folder: Path) -> None:
    """vocab.json + merges.txt from the bundled CLIP vocabulary (SD 1.x settings)."""
    from diffusion.text.tokenizer import bundled_vocab

    vocab, merges = bundled_vocab()
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "vocab.json").write_text(json.dumps(vocab), encoding="utf-8")
    (folder / "merges.txt").write_text(
        "#version: 0.2\n" + "\n".join(f"{a} {b}" for a, b in merges) + "\n", encoding="utf-8")
    (folder / "tokenizer_config.json").write_text(json.dumps(
        {"model_max_length": 77, "pad_token": "<|endoftext|>"}), encoding="utf-8")


_default_build: list[Path] = []  # the default folder, built once a process


def write_pipeline(root: Path, *, unet: Any = None, vae: Any = None, text_encoder: Any = None,
                   scheduler: Any = None) -> Path:
    """A diffusers pipeline folder with tiny components (save_pretrained, safetensors).

    The default one (no component given; its seeds are fixed, so every build is the same
    bytes) is built once a process and copied after: a dozen test modules ask for it."""
    if unet is None and vae is None and text_encoder is None and scheduler is None:
        if not _default_build:
            scratch = Path(tempfile.mkdtemp(prefix="tiny-sd-"))
            atexit.register(shutil.rmtree, scratch, ignore_errors=True)
            _default_build.append(_build_pipeline(scratch / "tiny-sd"))
        shutil.copytree(_default_build[0], root, dirs_exist_ok=True)
        return root
    return _build_pipeline(root, unet=unet, vae=vae, text_encoder=text_encoder,
                           scheduler=scheduler)


def _build_pipeline(root: Path, *, unet: Any = None, vae: Any = None, text_encoder: Any = None,
                    scheduler: Any = None) -> Path:
    """write_pipeline's work: save each component, the tokenizer and model_index.json."""
    import diffusers

    (unet or tiny_unet()).save_pretrained(root / "unet")
    (vae or tiny_vae()).save_pretrained(root / "vae")
    (text_encoder or tiny_text_encoder()).save_pretrained(root / "text_encoder")
    (scheduler or diffusers.DDIMScheduler(
        beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear",
        clip_sample=False, set_alpha_to_one=False, steps_offset=1,
    )).save_pretrained(root / "scheduler")
    write_tokenizer(root / "tokenizer")
    index = {
        "_class_name": "StableDiffusionPipeline", "_diffusers_version": "0.30.0",
        "feature_extractor": [None, None], "safety_checker": [None, None],
        "requires_safety_checker": False,
        "scheduler": ["diffusers", type(scheduler).__name__ if scheduler else "DDIMScheduler"],
        "text_encoder": ["transformers", "CLIPTextModel"],
        "tokenizer": ["transformers", "CLIPTokenizer"],
        "unet": ["diffusers", "UNet2DConditionModel"], "vae": ["diffusers", "AutoencoderKL"],
    }
    (root / "model_index.json").write_text(json.dumps(index), encoding="utf-8")
    return root


def state_dict(model: Any, strip: str = "") -> dict[str, np.ndarray]:
    """A torch module's parameters as numpy, keys optionally without a prefix."""
    return {k.removeprefix(strip): v.detach().numpy() for k, v in model.state_dict().items()
            if not k.endswith("position_ids")}


def ported(cls: Any, reference: Any, device: Any, **options: Any) -> Any:
    """Our `cls` built from a diffusers `reference`'s config on `device` (with `options` such
    as dtype), holding the reference's weights."""
    ours = cls(dict(reference.config), device=device, **options)
    ours.load_state_dict(state_dict(reference))
    return ours
