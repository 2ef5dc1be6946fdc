"""MiDaS v3's DPT-Hybrid (the depth_midas annotator, dpt_hybrid-midas-501f0c75.pt) on gpustd.

    model = MidasDptHybrid.from_state_dict(tensors, device=device)
    depth = model(x)                  # [N, 3, H, W] in -1..1 -> relative depth [N, H, W]

The picture goes through a BiT ResNet-50's stem and three stages (bit_resnet.py: strides 4, 8,
16), whose last output, projected by a 1x1 conv, is the token grid of a ViT-B/16 (a class
token first, the 24 x 24 position table resized bilinearly to the picture's grid). DPT's
neck reads four maps: the ResNet's first two stages as they are, and the tokens after blocks
8 and 11, each with the class token's "project" readout (the tokens beside the class token
through a linear layer and GELU), a 1x1 conv, and for the last a 3x3 conv at stride 2. Each
map is brought to 256 channels by a 3x3 conv (`scratch.layerN_rn`), then fused from the
coarsest up (`scratch.refinenetN`: two pre-activation residual units, bilinear 2x with the
corners aligned, a 1x1 conv), and the head (`scratch.output_conv`) halves the channels,
doubles the size, and ends in ReLU'd convs to one channel. H and W must be multiples of 32.
Keys as the file's (`pretrained.model.*`, `pretrained.act_postprocess3/4.*`, `scratch.*`; the
classifier `pretrained.model.head` and final `norm` are not used). torch: MiDaS's
`DPTDepthModel(backbone="vitb_rn50_384", non_negative=True)`; transformers'
`DPTForDepthEstimation` with a hybrid DPTConfig computes the same on square pictures.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import numpy as np

from gpucore import Device, default_device
from gpustd import Tensor, asarray, concatenate, maximum, nn, permute, take_slice

from ..layers import Place
from ..resample import bilinear_matrix, resample
from .bit_resnet import BitResNet, standardized

__all__ = ["MidasDptHybrid"]

HOOKS = (8, 11)  # the ViT blocks whose tokens DPT-Hybrid reads (its hooks [0, 1, 8, 11])
_BACKBONE = "pretrained.model.patch_embed.backbone."
_HEAD_DIM = 64  # ViT-B/16: 12 heads of 64


def _relu(x: Tensor) -> Tensor:
    return maximum(x, 0.0)


def _doubled(x: Tensor) -> Tensor:
    """torch: `F.interpolate(x, scale_factor=2, mode="bilinear", align_corners=True)`."""
    h, w = x.shape[2:]
    return resample(x, bilinear_matrix(h, 2 * h, align_corners=True),
                    bilinear_matrix(w, 2 * w, align_corners=True))


class _Block(nn.Module):
    """timm's ViT block: pre-norm attention (one fused qkv projection) and GELU MLP."""

    def __init__(self, dim: int, hidden: int, place: Place) -> None:
        self.heads = max(1, dim // _HEAD_DIM)
        self.norm1 = nn.LayerNorm(dim, eps=1e-6, **place)
        self.attn = nn.Namespace()
        self.attn.qkv = nn.Linear(dim, 3 * dim, **place)
        self.attn.proj = nn.Linear(dim, dim, **place)
        self.norm2 = nn.LayerNorm(dim, eps=1e-6, **place)
        self.mlp = nn.Namespace()
        self.mlp.fc1 = nn.Linear(dim, hidden, **place)
        self.mlp.fc2 = nn.Linear(hidden, dim, **place)

    def forward(self, x: Tensor) -> Tensor:
        dim = x.shape[-1]
        qkv = self.attn.qkv(self.norm1(x))
        q, k, v = (take_slice(qkv, i * dim, (i + 1) * dim, axis=2) for i in range(3))
        x = x + self.attn.proj(nn.attention(q, k, v, heads=self.heads))
        return x + self.mlp.fc2(nn.gelu(self.mlp.fc1(self.norm2(x))))


class _Readout(nn.Module):
    """MiDaS's ProjectReadout: each token beside the class token, through Linear(2D, D) and
    GELU (the weight's halves applied apart: the class token's half once per picture)."""

    def __init__(self, dim: int, place: Place) -> None:
        self.project = nn.ModuleList([nn.Linear(2 * dim, dim, **place)])

    def forward(self, x: Tensor) -> Tensor:
        linear = self.project[0]
        length, dim = x.shape[1:]
        tokens = nn.linear(take_slice(x, 1, length, axis=1),
                           take_slice(linear.weight, 0, dim, axis=1), linear.bias)
        readout = nn.linear(take_slice(x, 0, 1, axis=1),
                            take_slice(linear.weight, dim, 2 * dim, axis=1))
        return nn.gelu(tokens + readout)


class _ResidualUnit(nn.Module):
    def __init__(self, features: int, place: Place) -> None:
        self.conv1 = nn.Conv2d(features, features, 3, padding=1, **place)
        self.conv2 = nn.Conv2d(features, features, 3, padding=1, **place)

    def forward(self, x: Tensor) -> Tensor:
        return self.conv2(_relu(self.conv1(_relu(x))), add=x)


class _Fusion(nn.Module):
    """FeatureFusionBlock_custom (no batch norm, corners aligned)."""

    def __init__(self, features: int, place: Place) -> None:
        self.resConfUnit1 = _ResidualUnit(features, place)
        self.resConfUnit2 = _ResidualUnit(features, place)
        self.out_conv = nn.Conv2d(features, features, 1, **place)

    def forward(self, x: Tensor, skip: Tensor | None = None) -> Tensor:
        if skip is not None:
            x = x + self.resConfUnit1(skip)
        return self.out_conv(_doubled(self.resConfUnit2(x)))


class MidasDptHybrid(nn.Module):
    """DPTDepthModel(backbone="vitb_rn50_384"); `config` as `config_of` reads it from a file's
    shapes."""

    def __init__(self, config: Mapping[str, Any], *, dtype: Any = np.float32,
                 device: Device | None = None) -> None:
        place: Place = {"dtype": dtype, "device": device or default_device()}
        dim, widths = config["dim"], config["widths"]
        self.pretrained = nn.Namespace()
        model = self.pretrained.model = nn.Namespace()
        model.patch_embed = nn.Namespace()
        model.patch_embed.backbone = BitResNet(widths, config["depths"], place)
        model.patch_embed.proj = nn.Conv2d(widths[-1], dim, 1, **place)
        model.cls_token = nn.parameter((1, 1, dim), dtype, place["device"])
        model.pos_embed = nn.parameter((1, config["grid"] ** 2 + 1, dim), dtype,
                                       place["device"])
        model.blocks = nn.ModuleList([_Block(dim, config["mlp"], place)
                                      for _ in range(config["layers"])])
        third, fourth = config["readouts"]
        self.pretrained.act_postprocess3 = nn.ModuleList([
            _Readout(dim, place), nn.Identity(), nn.Identity(), nn.Conv2d(dim, third, 1, **place)])
        self.pretrained.act_postprocess4 = nn.ModuleList([
            _Readout(dim, place), nn.Identity(), nn.Identity(), nn.Conv2d(dim, fourth, 1, **place),
            nn.Conv2d(fourth, fourth, 3, stride=2, padding=1, **place)])
        features = config["features"]
        self.scratch = nn.Namespace()
        for index, channels in enumerate((widths[1], widths[2], third, fourth), start=1):
            setattr(self.scratch, f"layer{index}_rn",
                    nn.Conv2d(channels, features, 3, padding=1, bias=False, **place))
            setattr(self.scratch, f"refinenet{index}", _Fusion(features, place))
        self.scratch.output_conv = nn.ModuleList([
            nn.Conv2d(features, features // 2, 3, padding=1, **place), nn.Identity(),
            nn.Conv2d(features // 2, config["head"], 3, padding=1, **place), nn.Identity(),
            nn.Conv2d(config["head"], 1, 1, **place)])
        self._positions: dict[tuple[int, int], Tensor] = {}

    @staticmethod
    def config_of(state: Mapping[str, Any]) -> dict[str, Any]:
        """The sizes of the network whose tensors `state` holds. ValueError naming a tensor it
        lacks."""
        def shape(key: str) -> tuple[int, ...]:
            if key not in state:
                raise ValueError(f"no tensor {key}")
            return tuple(state[key].shape)

        widths, depths = BitResNet.shapes(state, _BACKBONE)
        layers = len({key.split(".")[3] for key in state
                      if key.startswith("pretrained.model.blocks.")})
        if layers <= max(HOOKS) or len(depths) != 3:
            raise ValueError(f"{layers} ViT blocks over {len(depths)} ResNet stages, where "
                             f"DPT-Hybrid has 12 over 3")
        return {"dim": shape("pretrained.model.cls_token")[-1], "widths": widths,
                "depths": depths, "layers": layers,
                "mlp": shape("pretrained.model.blocks.0.mlp.fc1.weight")[0],
                "grid": math.isqrt(shape("pretrained.model.pos_embed")[1] - 1),
                "readouts": (shape("pretrained.act_postprocess3.3.weight")[0],
                             shape("pretrained.act_postprocess4.3.weight")[0]),
                "features": shape("scratch.layer1_rn.weight")[0],
                "head": shape("scratch.output_conv.2.weight")[0]}

    @classmethod
    def from_state_dict(cls, state: Mapping[str, Any], *, dtype: Any = np.float32,
                        device: Device | None = None) -> MidasDptHybrid:
        """Build from the file's numpy arrays (MiDaS's `{"model": ...}` wrapper with an
        optimizer's state read too). ValueError naming a missing or mis-shaped tensor."""
        if "pretrained.model.cls_token" not in state:
            state = {key.removeprefix("model."): value for key, value in state.items()}
        try:
            model = cls(cls.config_of(state), dtype=dtype, device=device)
        except ValueError as exc:
            raise ValueError(f"{exc}: not MiDaS's DPT-Hybrid (dpt_hybrid-midas-501f0c75.pt)"
                             ) from None
        wanted = [key for key, _ in model.named_parameters()]
        missing = [key for key in wanted if key not in state]
        if missing:
            raise ValueError(f"no tensor {missing[0]}: not MiDaS's DPT-Hybrid "
                             "(dpt_hybrid-midas-501f0c75.pt)")
        model.load_state_dict({key: standardized(state[key]) if key.startswith(_BACKBONE)
                               and np.ndim(state[key]) == 4 else state[key] for key in wanted})
        return model

    @property
    def device(self) -> Device:
        return self.pretrained.model.cls_token.device

    def _position_table(self, rows: int, cols: int) -> Tensor:
        """The position table resized to the grid: torch's `F.interpolate(grid, (rows, cols),
        mode="bilinear")` (MiDaS's _resize_pos_embed), computed once per grid on the host."""
        if (rows, cols) not in self._positions:
            table = self.pretrained.model.pos_embed
            values = table.numpy().astype(np.float64)[0]
            grid, dim = math.isqrt(values.shape[0] - 1), values.shape[1]
            resized = np.einsum("ij,jkd,lk->ild", bilinear_matrix(grid, rows, align_corners=False),
                                values[1:].reshape(grid, grid, dim),
                                bilinear_matrix(grid, cols, align_corners=False), optimize=True)
            joined = np.concatenate([values[:1], resized.reshape(rows * cols, dim)])
            self._positions[rows, cols] = asarray(joined[None].astype(table.dtype),
                                                  device=table.device)
        return self._positions[rows, cols]

    def _grid(self, tokens: Tensor, post: Any, rows: int, cols: int) -> Tensor:
        """act_postprocess: readout, tokens to a [N, D, rows, cols] map, its convs."""
        x = post[0](tokens)
        x = permute(x.reshape(x.shape[0], rows, cols, x.shape[2]), (0, 3, 1, 2))
        for conv in list(post)[3:]:
            x = conv(x)
        return x

    def forward(self, x: Any) -> Tensor:
        """[N, 3, H, W] (a Tensor or numpy array, taken in the weights' dtype), the picture
        scaled to -1..1 -> relative depth [N, H, W] (larger: nearer). torch:
        `DPTDepthModel(x)`."""
        dtype = self.pretrained.model.cls_token.dtype
        if not isinstance(x, Tensor):
            x = asarray(np.asarray(x, dtype), device=self.device)
        elif x.dtype != dtype:
            x = x.astype(dtype)
        n, _, height, width = x.shape
        if height % 32 or width % 32:
            raise ValueError(f"depth_midas: {width}x{height} is not a multiple of 32 on each "
                             "side")
        model, rows, cols = self.pretrained.model, height // 16, width // 16
        positions = self._position_table(rows, cols)  # read back before any work is queued
        stages = model.patch_embed.backbone(x)
        tokens = model.patch_embed.proj(stages[-1])
        dim = tokens.shape[1]
        h = permute(tokens.reshape(n, dim, rows * cols), (0, 2, 1))
        h = concatenate([concatenate([model.cls_token] * n), h], axis=1)
        h = h + positions
        hooked = []
        for index, block in enumerate(model.blocks):
            h = block(h)
            if index in HOOKS:
                hooked.append(h)
            if index == max(HOOKS):
                break
        scratch = self.scratch
        maps = [stages[0], stages[1],
                self._grid(hooked[0], self.pretrained.act_postprocess3, rows, cols),
                self._grid(hooked[1], self.pretrained.act_postprocess4, rows, cols)]
        maps = [getattr(scratch, f"layer{i}_rn")(m) for i, m in enumerate(maps, start=1)]
        path = scratch.refinenet4(maps[3])
        for index in (3, 2, 1):
            path = getattr(scratch, f"refinenet{index}")(path, maps[index - 1])
        head = scratch.output_conv
        out = _relu(head[2](_doubled(head[0](path))))
        return _relu(head[4](out)).reshape(n, height, width)
