"""The PRX transformer (Photoroom, 2025; diffusers' PRXTransformer2DModel names): a single
stream of image patch tokens, each block attending over the text's keys and values beside its
own (the text is projected once, `txt_in`, and never updated), adaLN modulation by the
timestep (and, for PRX-7B, the latent's size), a gated tanh-GELU MLP.

Each block: q, k, v of the modulated, layer-normed image tokens from one fused projection
(`img_qkv_proj`), RMS norms over each head of q and k, the text's k and v from another
(`txt_kv_proj`, its k normed by `norm_added_k`), FLUX's interleaved-pair rotary embedding of
the patch (row, column) on the image's q and k alone, attention of the image queries over the
text keys then the image keys (the text's padding masked), gated residuals.

    model = PRXTransformer2DModel(config)                  # transformer/config.json
    tokens = patches(latents, 2)                           # (B, h/2 * w/2, 4C), host
    flow = model(tokens, states, t, model.rotary(h, w, len_text), mask, size=(h, w))

diffusers: `PRXTransformer2DModel(latents, timestep, encoder_hidden_states,
attention_mask).sample`, with `patches` / `unpatched` its `img2seq` / `seq2img`.
"""

from __future__ import annotations

import typing
from typing import Any

import numpy as np

from gpucore import Device
from gpustd import Tensor, asarray, concatenate, nn, take_slice

from .layers import Place
from .llm_layers import ACTIVATIONS
from .transformer_ops import (
    Modulation,
    RMSNorm,
    cast,
    joint_norm_rope,
    kept,
    norm_rope,
    rope_tables,
)

# the rotary tables: (cos, sin) over the text (angle 0) then the image, and the image's alone
Tables = tuple[tuple[Tensor, Tensor], tuple[Tensor, Tensor]]

__all__ = ["PRXTransformer2DModel", "patches", "unpatched"]

_DEFAULTS: dict[str, Any] = {
    "in_channels": 16, "patch_size": 2, "context_in_dim": 2304, "hidden_size": 1792,
    "mlp_ratio": 3.5, "num_heads": 28, "depth": 16, "axes_dim": None, "theta": 10000,
    "time_factor": 1000.0, "time_max_period": 10000, "bottleneck_size": None,
    "resolution_embeds": False}


def patches(latents: np.ndarray, p: int) -> np.ndarray:
    """(B, C, H, W) -> (B, H/p * W/p, C * p * p): each p x p patch a token, channels
    outermost. diffusers: `transformer_prx.img2seq`."""
    b, c, h, w = latents.shape
    grid = latents.reshape(b, c, h // p, p, w // p, p).transpose(0, 2, 4, 1, 3, 5)
    return grid.reshape(b, (h // p) * (w // p), c * p * p)


def unpatched(tokens: np.ndarray, p: int, height: int, width: int) -> np.ndarray:
    """`patches`' inverse for latents of height x width. diffusers: `seq2img`."""
    b, _, d = tokens.shape
    c = d // (p * p)
    grid = tokens.reshape(b, height // p, width // p, c, p, p).transpose(0, 3, 1, 4, 2, 5)
    return grid.reshape(b, c, height, width)


class MLPEmbedder(nn.Module):
    """out_layer(silu(in_layer x)). diffusers: `transformer_prx.MLPEmbedder`."""

    def __init__(self, in_dim: int, dim: int, place: Place) -> None:
        self.in_layer = nn.Linear(in_dim, dim, **place)
        self.out_layer = nn.Linear(dim, dim, **place)

    def forward(self, x: Tensor) -> Tensor:
        return self.out_layer(nn.silu(self.in_layer(x)))


class Named(nn.Module):
    """A holder of diffusers' nested names (`modulation.lin`, `final_layer.linear`,
    `resolution_embedder.mlp`): its attributes are the layers given."""

    def __init__(self, **layers: nn.Module) -> None:
        for name, layer in layers.items():
            setattr(self, name, layer)

    def __getattr__(self, name: str) -> Any:  # the layers set in __init__ (typed for mypy)
        raise AttributeError(name)


class PRXAttention(nn.Module):
    """The image's fused q/k/v, the text's fused k/v, q/k norms, to_out. diffusers:
    `PRXAttention` with `PRXAttnProcessor2_0`."""

    def __init__(self, dim: int, heads: int, place: Place) -> None:
        self.heads, self.dim = heads, dim
        self.img_qkv_proj = nn.Linear(dim, 3 * dim, bias=False, **place)
        self.txt_kv_proj = nn.Linear(dim, 2 * dim, bias=False, **place)
        self.norm_q = RMSNorm(dim // heads, 1e-6, place=place)
        self.norm_k = RMSNorm(dim // heads, 1e-6, place=place)
        self.norm_added_k = RMSNorm(dim // heads, 1e-6, place=place)
        self.to_out = nn.ModuleList([nn.Linear(dim, dim, bias=False, **place)])

    def heads_out(self, x: Tensor, text: Tensor, rotary: Tables, mask: Tensor | None
                  ) -> Tensor:
        """The attention's heads (B, Li, dim) before to_out: image queries over the text's
        keys then the image's. rotary: PRXTransformer2DModel.rotary's tables (the text's
        rows at angle 0: its keys pass unturned, as diffusers turns the image's alone)."""
        d = self.dim
        qkv, kv = self.img_qkv_proj(x), self.txt_kv_proj(text)
        q, k, v = (take_slice(qkv, i * d, (i + 1) * d, axis=-1) for i in range(3))
        text_k, text_v = (take_slice(kv, i * d, (i + 1) * d, axis=-1) for i in range(2))
        joint, image = rotary
        q = norm_rope(self.norm_q, q, image, self.heads)
        keys = joint_norm_rope([(self.norm_added_k, text_k), (self.norm_k, k)], joint,
                               self.heads)
        return nn.attention(q, keys, concatenate([text_v, v], axis=1), heads=self.heads,
                            mask=mask)


class PRXBlock(nn.Module):
    """diffusers: `PRXBlock` (its modulation's six vectors: the attention's shift, scale,
    gate, then the MLP's)."""

    def __init__(self, dim: int, heads: int, mlp_hidden: int, place: Place) -> None:
        self.attention = PRXAttention(dim, heads, place)
        self.gate_proj = nn.Linear(dim, mlp_hidden, bias=False, **place)
        self.up_proj = nn.Linear(dim, mlp_hidden, bias=False, **place)
        self.down_proj = nn.Linear(mlp_hidden, dim, bias=False, **place)
        self.modulation = Named(lin=nn.Linear(dim, 6 * dim, **place))

    def forward(self, x: Tensor, text: Tensor, activated: Tensor, rotary: Tables,
                mask: Tensor | None) -> Tensor:
        """activated: silu(temb), made once for every block."""
        mods = Modulation(self.modulation.lin(activated), 6)
        heads = self.attention.heads_out(mods.norm(x, 0, 1), text, rotary, mask)
        x = mods.gated_linear(2, x, self.attention.to_out[0], heads)
        h = mods.norm(x, 3, 4)
        kernels = ACTIVATIONS["gelu_pytorch_tanh"]
        gated = kernels[1] if h.dtype == np.float16 else kernels[0]
        inner = cast(typing.cast(Tensor, gated(self.gate_proj(h), self.up_proj(h))), h.dtype)
        return mods.gated_linear(5, x, self.down_proj, inner)


class PRXTransformer2DModel(nn.Module):
    """Patch tokens (B, L, C p^2) -> the flow (B, L, C p^2). Config: transformer/config.json
    (diffusers' PRXTransformer2DModel fields); parameter names diffusers'
    (`img_in.weight`, `blocks.0.attention.img_qkv_proj.weight`,
    `final_layer.adaLN_modulation.1.weight`, ...)."""

    def __init__(self, config: dict[str, Any], *, dtype: Any = np.float32,
                 device: Device | None = None) -> None:
        cfg = {**_DEFAULTS, **config}
        cfg["axes_dim"] = list(cfg["axes_dim"] or [32, 32])
        dim, heads = int(cfg["hidden_size"]), int(cfg["num_heads"])
        if dim % heads or sum(cfg["axes_dim"]) != dim // heads or len(cfg["axes_dim"]) != 2:
            raise ValueError(f"PRX's transformer needs hidden_size {dim} a multiple of num_heads "
                             f"{heads} and two axes_dim {cfg['axes_dim']} filling a head")
        place: Place = {"dtype": dtype, "device": device}
        self.config, self.dtype = cfg, np.dtype(dtype)
        patch = cfg["in_channels"] * cfg["patch_size"] ** 2
        bottleneck = cfg["bottleneck_size"]
        self.img_in = (nn.Linear(patch, dim, **place) if bottleneck is None else nn.ModuleList(
            [nn.Linear(patch, bottleneck, **place), nn.Linear(bottleneck, dim, **place)]))
        self.time_in = MLPEmbedder(256, dim, place)
        self.txt_in = nn.Linear(cfg["context_in_dim"], dim, **place)
        if cfg["resolution_embeds"]:
            self.resolution_embedder = Named(mlp=MLPEmbedder(256, dim, place))
        mlp_hidden = int(dim * cfg["mlp_ratio"])
        self.blocks = nn.ModuleList([PRXBlock(dim, heads, mlp_hidden, place)
                                     for _ in range(cfg["depth"])])
        self.final_layer = Named(linear=nn.Linear(dim, patch, **place),
                                 adaLN_modulation=nn.ModuleList(  # (SiLU, Linear)
                                     [nn.Module(), nn.Linear(dim, 2 * dim, **place)]))
        self._tables: dict[tuple[Any, ...], Tables] = {}

    def rotary(self, height: int, width: int, text: int) -> Tables:
        """(cos, sin) over `text` tokens at angle 0 then the (height / p) x (width / p)
        patches at their (row, column), and the patches' alone; kept per size. diffusers:
        `PRXEmbedND` of `get_image_ids`."""
        p, device = self.config["patch_size"], self.txt_in.weight.device

        def make() -> Tables:
            rows, columns = height // p, width // p
            ids = np.zeros((text + rows * columns, 2), np.float32)
            ids[text:, 0] = np.repeat(np.arange(rows), columns)
            ids[text:, 1] = np.tile(np.arange(columns), rows)
            axes, theta = tuple(self.config["axes_dim"]), float(self.config["theta"])
            return (rope_tables(ids, axes, theta, device=device),
                    rope_tables(ids[text:], axes, theta, device=device))

        return kept(self._tables, (height, width, text, device), make)

    def _sinusoid(self, values: Any, dim: int, scale: float, device: Device) -> Tensor:
        if not isinstance(values, Tensor):
            values = np.asarray(values, np.float32).reshape(-1)
        return nn.timestep_embedding(values, dim, flip_sin_to_cos=True, downscale_freq_shift=0,
                                     scale=scale, max_period=self.config["time_max_period"],
                                     dtype=np.float32, device=device)

    def conditioning(self, timestep: Any, batch: int, size: tuple[int, int]) -> Tensor:
        """temb (B, dim): the timestep's embedding (+ the latent size's, PRX-7B)."""
        device = self.txt_in.weight.device
        emb = cast(self._sinusoid(timestep, 256, self.config["time_factor"], device), self.dtype)
        temb = self.time_in(emb)
        if hasattr(self, "resolution_embedder"):
            sides = [cast(self._sinusoid(np.full(batch, side, np.float32), 128, 1.0, device),
                          self.dtype) for side in size]
            temb = temb + self.resolution_embedder.mlp(concatenate(sides, axis=-1))
        return temb

    def forward(self, hidden_states: Tensor, encoder_hidden_states: Tensor, timestep: Any,
                rotary: Tables, mask: Tensor | None = None, *,
                size: tuple[int, int]) -> Tensor:
        """hidden_states (B, Li, C p^2): `patches` of the latents; encoder_hidden_states
        (B, Lt, context_in_dim); timestep (B,): the scheduler's timestep / 1000, host numbers
        or a float32 Tensor; rotary: `rotary(H, W, Lt)`; mask: keys kept, (B, 1, 1, Lt + Li)
        uint32 nonzero (the text's padding 0), None for all; size: the latents' (H, W)."""
        batch = hidden_states.shape[0]
        text = self.txt_in(encoder_hidden_states)
        x = hidden_states
        for layer in (self.img_in if isinstance(self.img_in, nn.ModuleList) else [self.img_in]):
            x = layer(x)
        activated = nn.silu(self.conditioning(timestep, batch, size))
        for block in self.blocks:
            x = block(x, text, activated, rotary, mask)
        mods = Modulation(self.final_layer.adaLN_modulation[1](activated), 2)
        return self.final_layer.linear(mods.norm(x, 0, 1))

    @staticmethod
    def key_mask(mask: np.ndarray, image_tokens: int, device: Device) -> Tensor | None:
        """The text's (B, Lt) mask (1 a real token) as forward's key mask, the image's keys
        kept; None where nothing is padding."""
        keep = np.asarray(mask).astype(bool)
        if keep.all():
            return None
        full = np.concatenate([keep, np.ones((keep.shape[0], image_tokens), bool)], axis=1)
        return asarray(full.astype(np.uint32)[:, None, None, :], device=device)

