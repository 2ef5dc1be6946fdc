"""The HiDream-I1 transformer (Full, Dev, Fast: one architecture; diffusers'
HiDreamImageTransformer2DModel names): 2 x 2 patches of the latents, double-stream then
single-stream blocks with mixture-of-experts feed-forwards, the text the T5 states and one
Llama 3.1 layer's states projected per block, adaLN from the timestep plus the pooled CLIP
embeddings, rotary embeddings over (0, row, column) positions."""

from __future__ import annotations

import hashlib
from typing import Any

import numpy as np

from gpucore import Device
from gpustd import Tensor, asarray, concatenate, nn, permute, take_slice, zeros
from gpustd.shape import put_slice

from .dit_layers import TimestepEmbedding
from .hidream_blocks import DoubleStreamBlock, Rope, SingleStreamBlock, Wrapped
from .layers import Place
from .step_cache import BranchCache, run_blocks
from .transformer_ops import Modulation, cast, kept, rope_tables

_DEFAULTS: dict[str, Any] = {
    "patch_size": 2, "in_channels": 16, "out_channels": None, "num_layers": 16,
    "num_single_layers": 32, "attention_head_dim": 128, "num_attention_heads": 20,
    "caption_channels": (4096, 4096), "text_emb_dim": 2048, "num_routed_experts": 4,
    "num_activated_experts": 2, "axes_dims_rope": (64, 32, 32), "max_resolution": (128, 128),
    "llama_layers": None,
}


class _Named(nn.Module):
    """One module under the name diffusers gives it (`timestep_embedder`, `linear`...)."""

    def __init__(self, name: str, module: nn.Module) -> None:
        setattr(self, name, module)
        self.inner = name

    def forward(self, x: Tensor) -> Tensor:
        return getattr(self, self.inner)(x)


class HiDreamImageTransformer2DModel(nn.Module):
    """Latents (B, C, H, W) -> the model's prediction (B, C, H, W), as diffusers returns it
    (HiDreamImagePipeline negates it into the flow).

    Config: `transformer/config.json` of a HiDream-I1 folder. diffusers:
    `HiDreamImageTransformer2DModel(hidden_states, timesteps, encoder_hidden_states_t5,
    encoder_hidden_states_llama3, pooled_embeds).sample`.
    """

    def __init__(self, config: dict[str, Any], *, dtype: Any = np.float32,
                 device: Device | None = None) -> None:
        cfg = {**_DEFAULTS, **config}
        if not cfg["llama_layers"]:
            raise ValueError("the HiDream config names no llama_layers (which Llama layer "
                             "each block reads): use the model folder's config.json")
        heads, head_dim = cfg["num_attention_heads"], cfg["attention_head_dim"]
        if sum(cfg["axes_dims_rope"]) not in (head_dim, head_dim // 2):
            raise ValueError(f"axes_dims_rope {tuple(cfg['axes_dims_rope'])} must add up to "
                             f"attention_head_dim {head_dim} or half of it")
        blocks = cfg["num_layers"] + cfg["num_single_layers"]
        if len(cfg["llama_layers"]) != blocks:
            raise ValueError(f"llama_layers names {len(cfg['llama_layers'])} layers for "
                             f"{blocks} blocks")
        self.config = cfg
        place: Place = {"dtype": dtype, "device": device}
        self.dtype = np.dtype(dtype)
        dim, patch = heads * head_dim, cfg["patch_size"]
        experts, top_k = cfg["num_routed_experts"], cfg["num_activated_experts"]
        self.out_channels = cfg["out_channels"] or cfg["in_channels"]
        self.t_embedder = _Named("timestep_embedder", TimestepEmbedding(256, dim, place))
        self.p_embedder = _Named("pooled_embedder",
                                 TimestepEmbedding(cfg["text_emb_dim"], dim, place))
        self.x_embedder = _Named("proj", nn.Linear(cfg["in_channels"] * patch * patch, dim,
                                                   **place))
        self.double_stream_blocks = nn.ModuleList(
            [Wrapped(DoubleStreamBlock(dim, heads, head_dim, experts, top_k, place))
             for _ in range(cfg["num_layers"])])
        self.single_stream_blocks = nn.ModuleList(
            [Wrapped(SingleStreamBlock(dim, heads, head_dim, experts, top_k, place))
             for _ in range(cfg["num_single_layers"])])
        self.final_layer = _FinalLayer(dim, patch * patch * self.out_channels, place)
        t5_width, llama_width = cfg["caption_channels"]
        self.caption_projection = nn.ModuleList(
            [_Named("linear", nn.Linear(width, dim, False, **place))
             for width in [llama_width] * blocks + [t5_width]])
        self._tables: dict[Any, Rope] = {}

    @property
    def device(self) -> Device:
        return self.final_layer.linear.weight.device

    def forward(self, hidden_states: Any, timesteps: Any, encoder_hidden_states_t5: Any,
                encoder_hidden_states_llama3: Any, pooled_embeds: Any, img_ids: Any = None,
                img_sizes: Any = None, hidden_states_masks: Any = None,
                cache: BranchCache | None = None) -> Tensor:
        """hidden_states (B, C, H, W) latents (or diffusers' patched (B, S, p*p*C) with
        img_ids (B, S, 3), img_sizes (B, 2) and hidden_states_masks (B, S)); timesteps (B,)
        the scheduler's timesteps (0..1000); encoder_hidden_states_t5 (B, Lt, T5 width);
        encoder_hidden_states_llama3 the stack of Llama layers' states (layers, B, Ll,
        width), or a sequence of them; pooled_embeds (B, text_emb_dim) the two CLIPs' pooled
        outputs side by side. Arrays or Tensors; cast to the model's dtype. `cache`: a step
        cache branch (`step_cache.StepCache.branch()`; First Block Cache: the first double
        block decides on the image tokens) the blocks run through, its calls in step order."""
        cfg = self.config
        x, keys, sizes, ids = self._patched(hidden_states, img_ids, img_sizes,
                                            hidden_states_masks)
        batch, length = x.shape[0], x.shape[1]
        x = self.x_embedder(x)
        steps = asarray(np.asarray(timesteps, np.float32).reshape(-1), device=self.device) \
            if not isinstance(timesteps, Tensor) else timesteps.reshape(-1)
        sinusoid = nn.timestep_embedding(steps, 256, flip_sin_to_cos=True,
                                         downscale_freq_shift=0, dtype=self.dtype,
                                         device=self.device)
        temb = self.t_embedder(sinusoid) + self.p_embedder(self._input(
            pooled_embeds, cfg["text_emb_dim"], "pooled_embeds"))
        activated = nn.silu(temb)  # every adaLN's SiLU, once
        t5, llama = self._text(encoder_hidden_states_t5, encoder_hidden_states_llama3, batch)
        text = concatenate([t5, llama[-1]], axis=1)
        total = length + text.shape[1] + llama[0].shape[1]
        rotary = self._rotary(ids, total)
        if keys is not None:  # the image keys' mask, then text keys kept
            keys = concatenate([keys, asarray(np.ones((batch, total - length, 1), self.dtype),
                                              device=self.device)], axis=1)
        blocks, singles = list(self.double_stream_blocks), list(self.single_stream_blocks)

        def head(x: Tensor, text: Tensor) -> tuple[Tensor, Tensor]:
            if not blocks:
                return x, text
            return blocks[0].block(x, text, llama[0], activated, rotary, keys)

        def tail(x: Tensor, text: Tensor) -> Tensor:
            for index, double in enumerate(blocks[1:], 1):
                x, text = double.block(x, text, llama[index], activated, rotary, keys)
            x = concatenate([x, text], axis=1)
            for index, single in enumerate(singles, len(blocks)):
                x = single.block(x, llama[index], activated, rotary, keys)
            return take_slice(x, 0, length, axis=1)

        x = run_blocks(cache, x, text, head, tail)
        out = self.final_layer(x, activated)
        return self._unpatched(out, sizes, cfg["patch_size"])

    def _input(self, value: Any, width: int | None = None, name: str = "") -> Tensor:
        """value as a Tensor of the model's dtype on its device; ValueError unless its last
        axis is `width` wide (where given)."""
        shape = _shape(value)
        if width is not None and (len(shape) < 2 or shape[-1] != width):
            raise ValueError(f"{name} must be (..., {width}) for this model, got shape "
                             f"{shape}")
        return cast(value if isinstance(value, Tensor) else
                    asarray(np.asarray(value), device=self.device), self.dtype)

    def _text(self, t5: Any, llama: Any, batch: int) -> tuple[Tensor, list[Tensor]]:
        """The projected T5 states and, for each block, its Llama layer's projected states
        (caption_projection[i] of the layer llama_layers[i])."""
        layers, (t5_width, llama_width) = self.config["llama_layers"], \
            self.config["caption_channels"]
        depth = len(llama) if isinstance(llama, (list, tuple)) else _shape(llama)[0]
        if max(layers) >= depth:
            raise ValueError(f"encoder_hidden_states_llama3 holds {depth} Llama layers; this "
                             f"model reads layer {max(layers)}: pass every layer's states "
                             "(the text encoder's hidden_states[1:] stacked)")

        def layer(index: int) -> Any:
            if isinstance(llama, Tensor):  # one layer of the stack, (B, Ll, width)
                return take_slice(llama, index, index + 1, axis=0).reshape(llama.shape[1:])
            return llama[index]

        name = "encoder_hidden_states_llama3's layers"
        projections = list(self.caption_projection)
        projected = [projection(self._input(layer(index), llama_width, name))
                     for projection, index in zip(projections, layers)]
        t5_states = projections[-1](self._input(t5, t5_width, "encoder_hidden_states_t5"))
        if t5_states.shape[0] != batch or projected[0].shape[0] != batch:
            raise ValueError(f"the text states' batch ({t5_states.shape[0]}, "
                             f"{projected[0].shape[0]}) must be the latents' ({batch})")
        return t5_states, projected

    def _patched(self, hidden: Any, ids: Any, sizes: Any, masks: Any
                 ) -> tuple[Tensor, Tensor | None, list[tuple[int, int]], np.ndarray]:
        """diffusers' patchify: (B, S, p*p*C) tokens, the image keys' mask (B, S, 1) or None,
        the (rows, columns) of patches, the (S, 3) positions. A non-square picture is padded
        to max_seq tokens (zeros at position 0) with the padding's keys masked, as diffusers
        pads it."""
        cfg, patch = self.config, self.config["patch_size"]
        x = self._input(hidden)
        if masks is not None:  # already patched, diffusers' way
            if ids is None or sizes is None or x.ndim != 3:
                raise ValueError("patched hidden_states (B, S, features) need img_ids, "
                                 "img_sizes and hidden_states_masks together")
            ids = np.asarray(ids, np.float32)
            if ids.ndim == 3 and not (ids == ids[:1]).all():
                raise ValueError("img_ids must be the same for every picture of the batch")
            keys = self._input(np.asarray(masks).reshape(x.shape[0], -1, 1))
            grid_sizes = [(int(rows), int(cols)) for rows, cols in np.asarray(sizes)]
            return x, keys, grid_sizes, ids.reshape(-1, ids.shape[-1])[: x.shape[1]]
        if x.ndim != 4 or x.shape[2] % patch or x.shape[3] % patch:
            raise ValueError(f"hidden_states must be latents (B, C, H, W) with H and W "
                             f"multiples of {patch}, got {x.shape}")
        batch, channels, height, width = x.shape
        rows, cols = height // patch, width // patch
        tokens = permute(x.reshape(batch, channels, rows, patch, cols, patch),
                         (0, 2, 4, 3, 5, 1)).reshape(batch, rows * cols, -1)
        grid = np.zeros((rows, cols, 3), np.float32)
        grid[..., 1] += np.arange(rows)[:, None]
        grid[..., 2] += np.arange(cols)[None, :]
        grid = grid.reshape(-1, 3)
        if rows == cols:
            return tokens, None, [(rows, cols)] * batch, grid
        longest = cfg["max_resolution"][0] * cfg["max_resolution"][1] // (patch * patch)
        if rows * cols > longest:
            raise ValueError(f"{height} x {width} latents make {rows * cols} patches, more "
                             f"than the model's {longest} (max_resolution)")
        padded = zeros((batch, longest, tokens.shape[2]), self.dtype, device=self.device)
        put_slice(padded, tokens, 0, axis=1)
        mask = np.zeros((batch, longest, 1), self.dtype)
        mask[:, : rows * cols] = 1
        positions = np.zeros((longest, 3), np.float32)
        positions[: rows * cols] = grid
        return padded, asarray(mask, device=self.device), [(rows, cols)] * batch, positions

    def _unpatched(self, out: Tensor, sizes: list[tuple[int, int]], patch: int) -> Tensor:
        """diffusers' unpatchify: each picture's first rows * cols tokens back to (C, H, W)."""
        rows, cols = sizes[0]
        if any(tuple(size) != (rows, cols) for size in sizes):
            raise ValueError(f"img_sizes {sizes}: every picture of a batch must have one size")
        batch, channels = out.shape[0], self.out_channels
        grid = take_slice(out, 0, rows * cols, axis=1).reshape(batch, rows, cols, patch, patch,
                                                                channels)
        return permute(grid, (0, 5, 1, 3, 2, 4)).reshape(batch, channels, rows * patch,
                                                          cols * patch)

    def _rotary(self, ids: np.ndarray, total: int) -> Rope:
        """Rope tables for the image positions `ids` then text at position 0, `total`
        tokens, each row repeated for every head (kept on the device per size)."""
        key = (hashlib.sha1(np.ascontiguousarray(ids).tobytes()).hexdigest(), total)
        return kept(self._tables, key, lambda: self._tables_for(ids, total))

    def _tables_for(self, ids: np.ndarray, total: int) -> Rope:
        cfg = self.config
        axes, heads = tuple(cfg["axes_dims_rope"]), cfg["num_attention_heads"]
        head_dim = cfg["attention_head_dim"]
        positions = np.zeros((total, len(axes)), np.float32)
        positions[: len(ids)] = ids[:, : len(axes)]
        cos, sin = (t.numpy() for t in rope_tables(positions, axes, 10000.0, device=self.device))
        rest = head_dim - cos.shape[2]  # diffusers turns the first half only where axes do
        cos = np.concatenate([cos, np.ones((total, 1, rest), np.float32)], axis=2)
        sin = np.concatenate([sin, np.zeros((total, 1, rest), np.float32)], axis=2)
        return (asarray(np.tile(cos, (1, 1, heads)), device=self.device),
                asarray(np.tile(sin, (1, 1, heads)), device=self.device))


def _shape(value: Any) -> tuple[int, ...]:
    """An array's or Tensor's shape (np.shape would read a Tensor back)."""
    return tuple(value.shape) if hasattr(value, "shape") else np.shape(value)


class _FinalLayer(nn.Module):
    """norm_final (no affine, eps 1e-6) * (1 + scale) + shift, shift first, then `linear`.
    diffusers: `HiDreamImageOutEmbed`."""

    def __init__(self, dim: int, width: int, place: Place) -> None:
        self.adaLN_modulation = nn.ModuleList([nn.Identity(), nn.Linear(dim, 2 * dim, **place)])
        self.linear = nn.Linear(dim, width, **place)

    def forward(self, x: Tensor, activated: Tensor) -> Tensor:
        mods = Modulation(self.adaLN_modulation[1](activated), 2)
        return self.linear(mods.norm(x, shift=0, scale=1))
