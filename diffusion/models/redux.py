"""FLUX Redux's networks: the SigLIP image encoder (transformers' `SiglipVisionModel`,
google/siglip-so400m-patch14-384 in FLUX.1 Redux dev) whose last hidden state, one token per
14x14 patch, the Redux embedder (diffusers' `ReduxImageEncoder`: two linears with SiLU between)
carries into T5's space."""

from __future__ import annotations

from typing import Any

import numpy as np

from gpucore import Device
from gpustd import Tensor, asarray, nn, permute

from .clip import CLIPAttention
from .layers import Place

__all__ = ["ReduxImageEncoder", "SiglipVisionModel"]

_SIGLIP_DEFAULTS: dict[str, Any] = {
    "hidden_size": 1152, "intermediate_size": 4304, "num_hidden_layers": 27,
    "num_attention_heads": 16, "image_size": 384, "patch_size": 14, "num_channels": 3,
    "hidden_act": "gelu_pytorch_tanh", "layer_norm_eps": 1e-6,
}


class SiglipEncoderLayer(nn.Module):
    """Pre-norm attention and a tanh-GELU MLP, each added back (CLIP's layer names)."""

    def __init__(self, cfg: dict[str, Any], place: Place) -> None:
        dim, eps = cfg["hidden_size"], cfg["layer_norm_eps"]
        if cfg["hidden_act"] != "gelu_pytorch_tanh":
            raise ValueError(f"SigLIP hidden_act {cfg['hidden_act']!r} is not supported; "
                             "only gelu_pytorch_tanh")
        self.layer_norm1 = nn.LayerNorm(dim, eps=eps, **place)
        self.self_attn = CLIPAttention(dim, cfg["num_attention_heads"], place, causal=False)
        self.layer_norm2 = nn.LayerNorm(dim, eps=eps, **place)
        self.mlp = nn.Namespace()
        self.mlp.fc1 = nn.Linear(dim, cfg["intermediate_size"], **place)
        self.mlp.fc2 = nn.Linear(cfg["intermediate_size"], dim, **place)

    def forward(self, x: Tensor) -> Tensor:
        x = x + self.self_attn(self.layer_norm1(x))
        hidden = nn.gelu(self.mlp.fc1(self.layer_norm2(x)), approximate="tanh")
        return x + self.mlp.fc2(hidden)


class SiglipVisionModel(nn.Module):
    """Pictures (B, 3, S, S) in SigLIP's normalization -> the last hidden state
    (B, (S / patch)^2, hidden), post-layer-normed. Config: transformers' SiglipVisionConfig
    fields (a folder's `config.json`; a full SiglipConfig's `vision_config`). Parameter names
    are transformers' (`vision_model.encoder.layers.0.self_attn.q_proj.weight`); the pooling
    head (`vision_model.head.*`) is not read. transformers:
    `SiglipVisionModel(pixel_values).last_hidden_state`."""

    def __init__(self, config: dict[str, Any], *, dtype: Any = np.float32,
                 device: Device | None = None) -> None:
        place: Place = {"dtype": dtype, "device": device}
        cfg = {**_SIGLIP_DEFAULTS, **(config.get("vision_config") or config)}
        self.config = cfg
        dim, patch = cfg["hidden_size"], cfg["patch_size"]
        if cfg["image_size"] % patch:
            raise ValueError(f"SigLIP vision config: image_size {cfg['image_size']} is not a "
                             f"multiple of patch_size {patch}")
        self.vision_model = nn.Namespace()
        embeddings = self.vision_model.embeddings = nn.Namespace()
        embeddings.patch_embedding = nn.Conv2d(cfg["num_channels"], dim, patch, stride=patch,
                                               **place)
        embeddings.position_embedding = nn.Embedding((cfg["image_size"] // patch) ** 2, dim,
                                                     **place)
        self.vision_model.encoder = nn.Namespace()
        self.vision_model.encoder.layers = nn.ModuleList(
            [SiglipEncoderLayer(cfg, place) for _ in range(cfg["num_hidden_layers"])])
        self.vision_model.post_layernorm = nn.LayerNorm(dim, eps=cfg["layer_norm_eps"],
                                                        **place)

    @property
    def image_size(self) -> int:
        return int(self.config["image_size"])

    def forward(self, pixels: np.ndarray) -> Tensor:
        weight = self.vision_model.post_layernorm.weight
        size = self.image_size
        if pixels.ndim != 4 or pixels.shape[1:] != (self.config["num_channels"], size, size):
            raise ValueError(f"this SigLIP image encoder reads (B, 3, {size}, {size}) "
                             f"pictures, got {pixels.shape}")
        emb = self.vision_model.embeddings
        patches = emb.patch_embedding(asarray(pixels, dtype=weight.dtype, device=weight.device))
        batch, dim = patches.shape[:2]
        tokens = permute(patches.reshape(batch, dim, patches.shape[2] * patches.shape[3]),
                         (0, 2, 1))
        positions = asarray(np.arange(tokens.shape[1], dtype=np.int32)[None],
                            device=weight.device)
        x = tokens + emb.position_embedding(positions)
        for layer in self.vision_model.encoder.layers:
            x = layer(x)
        return self.vision_model.post_layernorm(x)


class ReduxImageEncoder(nn.Module):
    """SigLIP's tokens (B, N, redux_dim) -> T5-space tokens (B, N, txt_in_features):
    `redux_down(silu(redux_up(x)))`. Config: diffusers' ReduxImageEncoder fields (the Redux
    folder's `image_embedder/config.json`). diffusers: `ReduxImageEncoder(x).image_embeds`."""

    def __init__(self, config: dict[str, Any], *, dtype: Any = np.float32,
                 device: Device | None = None) -> None:
        place: Place = {"dtype": dtype, "device": device}
        self.config = {"redux_dim": 1152, "txt_in_features": 4096, **config}
        redux, text = self.config["redux_dim"], self.config["txt_in_features"]
        self.redux_up = nn.Linear(redux, text * 3, **place)
        self.redux_down = nn.Linear(text * 3, text, **place)

    def forward(self, x: Tensor) -> Tensor:
        return self.redux_down(nn.silu(self.redux_up(x)))

