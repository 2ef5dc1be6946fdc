"""Depth Anything (V1 and V2: one architecture) on gpustd: a DINOv2 ViT backbone and a DPT head,
with transformers' `DepthAnythingForDepthEstimation` parameter names and config.

Pictures (B, 3, H, W) with H and W multiples of the patch (14) -> relative depth (B, H, W),
larger = nearer. The position embeddings are resampled to the picture's patch grid as
transformers does (torch's bicubic, align_corners=False), on the host once per grid size.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from gpucore import Device
from gpustd import Tensor, asarray, clip, concatenate, matmul, nn, permute, take_slice

from .layers import Place
from .resample import bilinear_matrix, cubic_matrix, resample

__all__ = ["DepthAnythingForDepthEstimation"]

_DEFAULTS: dict[str, Any] = {
    "patch_size": 14, "reassemble_factors": [4, 2, 1, 0.5], "neck_hidden_sizes": [48, 96, 192, 384],
    "fusion_hidden_size": 64, "head_in_index": -1, "head_hidden_size": 32,
    "depth_estimation_type": "relative", "max_depth": 1,
}
_BACKBONE: dict[str, Any] = {
    "hidden_size": 384, "num_hidden_layers": 12, "num_attention_heads": 6, "mlp_ratio": 4,
    "hidden_act": "gelu", "layer_norm_eps": 1e-6, "image_size": 518, "patch_size": 14,
    "num_channels": 3, "qkv_bias": True, "use_swiglu_ffn": False, "apply_layernorm": True,
    "out_indices": [3, 6, 9, 12],
}


def _relu(x: Tensor) -> Tensor:
    return clip(x, 0.0, None)


class _Dinov2Layer(nn.Module):
    def __init__(self, cfg: dict[str, Any], place: Place) -> None:
        dim, eps = cfg["hidden_size"], cfg["layer_norm_eps"]
        self.heads = cfg["num_attention_heads"]
        self.norm1 = nn.LayerNorm(dim, eps=eps, **place)
        self.attention = nn.Namespace()
        self.attention.attention = nn.Namespace()
        for name in ("query", "key", "value"):
            setattr(self.attention.attention, name,
                    nn.Linear(dim, dim, bias=cfg["qkv_bias"], **place))
        self.attention.output = nn.Namespace()
        self.attention.output.dense = nn.Linear(dim, dim, **place)
        self.layer_scale1 = nn.Namespace()
        self.layer_scale1.lambda1 = nn.parameter((dim,), place["dtype"], place["device"])
        self.norm2 = nn.LayerNorm(dim, eps=eps, **place)
        self.mlp = nn.Namespace()
        self.mlp.fc1 = nn.Linear(dim, int(dim * cfg["mlp_ratio"]), **place)
        self.mlp.fc2 = nn.Linear(int(dim * cfg["mlp_ratio"]), dim, **place)
        self.layer_scale2 = nn.Namespace()
        self.layer_scale2.lambda1 = nn.parameter((dim,), place["dtype"], place["device"])

    def forward(self, x: Tensor) -> Tensor:
        a = self.attention.attention
        h = self.norm1(x)
        out = nn.attention(a.query(h), a.key(h), a.value(h), heads=self.heads)
        x = x + self.attention.output.dense(out) * self.layer_scale1.lambda1
        h = self.mlp.fc2(nn.gelu(self.mlp.fc1(self.norm2(x))))
        return x + h * self.layer_scale2.lambda1


class _ConvTranspose(nn.Module):
    """ConvTranspose2d with kernel = stride (no overlap): one GEMM per pixel, then a shuffle.
    weight (C_in, C_out, k, k) as torch stores it."""

    def __init__(self, channels: int, factor: int, place: Place) -> None:
        self.factor = factor
        self.weight = nn.parameter((channels, channels, factor, factor), place["dtype"],
                                   place["device"])
        self.bias = nn.parameter((channels,), place["dtype"], place["device"])

    def forward(self, x: Tensor) -> Tensor:
        b, c, h, w = x.shape
        k, out = self.factor, self.weight.shape[1]
        tokens = permute(x, (0, 2, 3, 1)).reshape(b * h * w, c)
        y = matmul(tokens, self.weight.reshape(c, out * k * k))
        y = permute(y.reshape(b, h, w, out, k, k), (0, 3, 1, 4, 2, 5))
        return y.reshape(b, out, h * k, w * k) + self.bias.reshape(1, out, 1, 1)


class _Residual(nn.Module):
    def __init__(self, channels: int, place: Place) -> None:
        self.convolution1 = nn.Conv2d(channels, channels, 3, padding=1, **place)
        self.convolution2 = nn.Conv2d(channels, channels, 3, padding=1, **place)

    def forward(self, x: Tensor) -> Tensor:
        return self.convolution2(_relu(self.convolution1(_relu(x))), add=x)


class _Fusion(nn.Module):
    def __init__(self, channels: int, place: Place) -> None:
        self.projection = nn.Conv2d(channels, channels, 1, **place)
        self.residual_layer1 = _Residual(channels, place)
        self.residual_layer2 = _Residual(channels, place)

    def forward(self, x: Tensor, residual: Tensor | None, size: tuple[int, int]) -> Tensor:
        if residual is not None:
            x = x + self.residual_layer1(residual)
        x = self.residual_layer2(x)
        _, _, h, w = x.shape
        x = resample(x, bilinear_matrix(h, size[0], align_corners=True),
                     bilinear_matrix(w, size[1], align_corners=True))
        return self.projection(x)


class DepthAnythingForDepthEstimation(nn.Module):
    """transformers' DepthAnythingForDepthEstimation (config: its `config.json` dict, the
    backbone's under `backbone_config`). `forward(pixels)` -> predicted_depth (B, H, W)."""

    def __init__(self, config: dict[str, Any], *, dtype: Any = np.float32,
                 device: Device | None = None) -> None:
        place: Place = {"dtype": dtype, "device": device}
        cfg = {**_DEFAULTS, **config}
        backbone = {**_BACKBONE, **(cfg.get("backbone_config") or {})}
        if backbone["use_swiglu_ffn"]:
            raise ValueError("Depth Anything with a SwiGLU backbone (ViT-g) is not supported")
        if [float(f) for f in cfg["reassemble_factors"]] != [4.0, 2.0, 1.0, 0.5]:
            raise ValueError(f"reassemble_factors {cfg['reassemble_factors']} are not "
                             "Depth Anything's [4, 2, 1, 0.5]")
        self.config, self.backbone_config = cfg, backbone
        dim, patch = backbone["hidden_size"], backbone["patch_size"]
        self.backbone = nn.Namespace()
        emb = self.backbone.embeddings = nn.Namespace()
        emb.cls_token = nn.parameter((1, 1, dim), dtype, device)
        emb.mask_token = nn.parameter((1, dim), dtype, device)
        grid = backbone["image_size"] // patch
        emb.position_embeddings = nn.parameter((1, grid * grid + 1, dim), dtype, device)
        emb.patch_embeddings = nn.Namespace()
        emb.patch_embeddings.projection = nn.Conv2d(backbone["num_channels"], dim, patch,
                                                    stride=patch, **place)
        self.backbone.encoder = nn.Namespace()
        self.backbone.encoder.layer = nn.ModuleList(
            [_Dinov2Layer(backbone, place) for _ in range(backbone["num_hidden_layers"])])
        self.backbone.layernorm = nn.LayerNorm(dim, eps=backbone["layer_norm_eps"], **place)

        sizes, fusion = cfg["neck_hidden_sizes"], cfg["fusion_hidden_size"]
        self.neck = nn.Namespace()
        self.neck.reassemble_stage = nn.Namespace()
        layers = []
        for channels, factor in zip(sizes, cfg["reassemble_factors"]):
            layer = nn.Namespace()
            layer.projection = nn.Conv2d(cfg.get("reassemble_hidden_size", dim), channels, 1,
                                         **place)
            if factor > 1:
                layer.resize = _ConvTranspose(channels, int(factor), place)
            elif factor < 1:
                layer.resize = nn.Conv2d(channels, channels, 3, stride=2, padding=1, **place)
            layers.append(layer)
        self.neck.reassemble_stage.layers = nn.ModuleList(layers)
        self.neck.convs = nn.ModuleList([nn.Conv2d(c, fusion, 3, padding=1, bias=False, **place)
                                         for c in sizes])
        self.neck.fusion_stage = nn.Namespace()
        self.neck.fusion_stage.layers = nn.ModuleList([_Fusion(fusion, place) for _ in sizes])
        self.head = nn.Namespace()
        self.head.conv1 = nn.Conv2d(fusion, fusion // 2, 3, padding=1, **place)
        self.head.conv2 = nn.Conv2d(fusion // 2, cfg["head_hidden_size"], 3, padding=1, **place)
        self.head.conv3 = nn.Conv2d(cfg["head_hidden_size"], 1, 1, **place)
        self._positions: dict[tuple[int, int], Tensor] = {}

    @property
    def device(self) -> Device:
        return self.head.conv3.weight.device

    def forward(self, pixels: Any) -> Tensor:
        """pixels (B, 3, H, W), H and W multiples of the patch size, normalized with
        ImageNet's mean and std -> relative depth (B, H, W). transformers:
        `model(pixels).predicted_depth`."""
        if not isinstance(pixels, Tensor):
            pixels = asarray(np.asarray(pixels, np.float32), device=self.device)
        patch = self.backbone_config["patch_size"]
        b, _, height, width = pixels.shape
        if height % patch or width % patch:
            raise ValueError(f"Depth Anything reads pictures whose sides are multiples of "
                             f"{patch}, got {height}x{width}")
        ph, pw = height // patch, width // patch
        features = self._backbone(pixels, ph, pw)
        fused = self._neck(features, ph, pw)
        head = self.head
        x = head.conv1(fused)
        x = resample(x, bilinear_matrix(x.shape[2], ph * patch, align_corners=True),
                     bilinear_matrix(x.shape[3], pw * patch, align_corners=True))
        depth = _relu(head.conv3(_relu(head.conv2(x))))
        if self.config["depth_estimation_type"] != "relative":
            raise ValueError("metric Depth Anything models are not supported")
        scale = float(self.config["max_depth"] or 1)
        depth = depth if scale == 1 else depth * scale
        return depth.reshape(b, height, width)

    def _backbone(self, pixels: Tensor, ph: int, pw: int) -> list[Tensor]:
        emb = self.backbone.embeddings
        patches = emb.patch_embeddings.projection(pixels)
        b, dim = patches.shape[:2]
        tokens = permute(patches.reshape(b, dim, ph * pw), (0, 2, 1))
        x = concatenate([concatenate([emb.cls_token] * b), tokens], axis=1)
        x = x + self._position_embeddings(ph, pw)
        wanted = set(self.backbone_config["out_indices"])
        out = []
        for i, layer in enumerate(self.backbone.encoder.layer, start=1):
            x = layer(x)
            if i in wanted:
                out.append(self.backbone.layernorm(x))
        return out

    def _position_embeddings(self, ph: int, pw: int) -> Tensor:
        """transformers' Dinov2Embeddings.interpolate_pos_encoding, (1, 1 + ph * pw, D)."""
        if (ph, pw) not in self._positions:
            table = self.backbone.embeddings.position_embeddings
            grid = math.isqrt(table.shape[1] - 1)
            if (ph, pw) == (grid, grid):
                self._positions[ph, pw] = table
            else:
                values = table.numpy().astype(np.float32)
                dim = values.shape[-1]
                patch_table = values[0, 1:].reshape(grid, grid, dim).astype(np.float64)
                rows, cols = cubic_matrix(grid, ph), cubic_matrix(grid, pw)
                resized = np.einsum("ij,jkd,lk->ild", rows, patch_table, cols)
                joined = np.concatenate([values[0, :1], resized.reshape(ph * pw, dim)])
                self._positions[ph, pw] = asarray(joined[None].astype(table.dtype),
                                                  device=table.device)
        return self._positions[ph, pw]

    def _neck(self, features: list[Tensor], ph: int, pw: int) -> Tensor:
        maps = []
        for feature, layer, conv in zip(features, self.neck.reassemble_stage.layers,
                                        self.neck.convs):
            b, length, dim = feature.shape
            grid = take_slice(feature, 1, length, axis=1)
            x = layer.projection(permute(grid.reshape(b, ph, pw, dim), (0, 3, 1, 2)))
            resize = getattr(layer, "resize", None)
            maps.append(conv(x if resize is None else resize(x)))
        maps = maps[::-1]
        fused = None
        for index, (feature, layer) in enumerate(zip(maps, self.neck.fusion_stage.layers)):
            if index + 1 < len(maps):
                size = tuple(maps[index + 1].shape[2:])
            else:
                size = (feature.shape[2] * 2, feature.shape[3] * 2)
            fused = layer(feature if fused is None else fused,
                          None if fused is None else feature, size)
        assert fused is not None
        return fused
