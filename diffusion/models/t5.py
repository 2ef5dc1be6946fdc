"""T5 encoder (transformers' T5EncoderModel names): FLUX's and SD3's `text_encoder_2` /
`text_encoder_3`, T5-XXL v1.1 (relative position buckets, gated-GELU feed-forward, RMS norm).

With float16 weights the residual stream and the feed-forward output projection `wo` stay
float32: T5-XXL's activations pass float16's 65504 there (transformers keeps `wo` in float32
for that reason, `_keep_in_fp32_modules`, and clamps the rest; here nothing needs clamping).
"""

from __future__ import annotations

import math
from collections.abc import Generator, Iterator, Mapping, Sequence
from typing import Any

import numpy as np

from gpucore import Device
from gpustd import Tensor, asarray, elementwise_kernel, nn, permute
from gpustd.nn.module import ReadsAhead

from .layers import Place
from .transformer_ops import RMSNorm, cast

_DEFAULTS: dict[str, Any] = {
    "vocab_size": 32128, "d_model": 4096, "d_kv": 64, "d_ff": 10240, "num_layers": 24,
    "num_heads": 64, "relative_attention_num_buckets": 32,
    "relative_attention_max_distance": 128, "layer_norm_epsilon": 1e-6,
    "feed_forward_proj": "gated-gelu",
}
_GATED = ("gated-gelu", "gated-gelu_new")
_TIED = "encoder.embed_tokens.weight"  # transformers' alias of shared.weight


@elementwise_kernel
def _gated_gelu(gate, value):
    # transformers' NewGELUActivation (gelu_new): the tanh form, in float32
    g = float(gate)
    inner = math.sqrt(2.0 / math.pi) * (g + 0.044715 * g * g * g)
    return 0.5 * g * (1.0 + math.tanh(inner)) * float(value)


def relative_position_buckets(length: int, num_buckets: int, max_distance: int) -> np.ndarray:
    """(L, L) int32 bucket of each (query, key) pair for a bidirectional encoder: half the
    buckets per direction, exact up to num_buckets/4, logarithmic up to max_distance.
    transformers: `T5Attention._relative_position_bucket(key - query, True, ...)`."""
    position = np.arange(length, dtype=np.int64)
    relative = position[None, :] - position[:, None]
    half = num_buckets // 2
    buckets = (relative > 0).astype(np.int64) * half
    distance = np.abs(relative)
    max_exact = half // 2
    # float32 as torch computes it, so a pair on a bucket edge falls on the same side
    with np.errstate(divide="ignore"):
        scaled = (np.log(distance.astype(np.float32) / np.float32(max_exact))
                  / np.float32(math.log(max_distance / max_exact))
                  * np.float32(half - max_exact))
    large = max_exact + np.where(distance < max_exact, 0, scaled).astype(np.int64)
    large = np.minimum(large, half - 1)
    return (buckets + np.where(distance < max_exact, distance, large)).astype(np.int32)


class T5Attention(nn.Module):
    """Unscaled multi-head self-attention with an added position bias (T5 folds the
    1/sqrt(d) into its initialization); `relative_attention_bias` only in the first block."""

    def __init__(self, cfg: dict[str, Any], place: Place, *, has_bias: bool) -> None:
        inner = cfg["num_heads"] * cfg["d_kv"]
        self.heads = cfg["num_heads"]
        self.q = nn.Linear(cfg["d_model"], inner, bias=False, **place)
        self.k = nn.Linear(cfg["d_model"], inner, bias=False, **place)
        self.v = nn.Linear(cfg["d_model"], inner, bias=False, **place)
        self.o = nn.Linear(inner, cfg["d_model"], bias=False, **place)
        if has_bias:
            self.relative_attention_bias = nn.Embedding(
                cfg["relative_attention_num_buckets"], cfg["num_heads"], **place)

    def forward(self, x: Tensor, position_bias: Tensor) -> Tensor:
        q, k, v = nn.Linear.each(x, [self.q, self.k, self.v])  # one GEMM where it can
        out = nn.attention(q, k, v, mask=position_bias, scale=1.0, heads=self.heads)
        return self.o(out)


class T5SelfAttentionLayer(nn.Module):
    def __init__(self, cfg: dict[str, Any], place: Place, *, has_bias: bool) -> None:
        self.SelfAttention = T5Attention(cfg, place, has_bias=has_bias)
        self.layer_norm = RMSNorm(cfg["d_model"], cfg["layer_norm_epsilon"], place=place)


class T5DenseGatedActDense(nn.Module):
    """wo(gelu_tanh(wi_0 x) * wi_1 x); `wo` is float32 whatever the model's dtype."""

    def __init__(self, cfg: dict[str, Any], place: Place) -> None:
        d_model, d_ff = cfg["d_model"], cfg["d_ff"]
        self.wi_0 = nn.Linear(d_model, d_ff, bias=False, **place)
        self.wi_1 = nn.Linear(d_model, d_ff, bias=False, **place)
        self.wo = nn.Linear(d_ff, d_model, bias=False, dtype=np.float32, device=place["device"])

    def forward(self, x: Tensor, *, add_to: Tensor) -> Tensor:
        hidden = _gated_gelu(self.wi_0(x), self.wi_1(x))  # float32
        return self.wo(hidden, add_to=add_to)


class T5FeedForwardLayer(nn.Module):
    def __init__(self, cfg: dict[str, Any], place: Place) -> None:
        self.DenseReluDense = T5DenseGatedActDense(cfg, place)
        self.layer_norm = RMSNorm(cfg["d_model"], cfg["layer_norm_epsilon"], place=place)


class T5Block(nn.Module):
    def __init__(self, cfg: dict[str, Any], place: Place, *, has_bias: bool) -> None:
        self.dtype = place["dtype"]
        self.layer: nn.ModuleList[Any] = nn.ModuleList(  # two kinds: keys layer.0., layer.1.
            [T5SelfAttentionLayer(cfg, place, has_bias=has_bias), T5FeedForwardLayer(cfg, place)])

    def forward(self, x: Tensor, position_bias: Tensor) -> Tensor:
        """x: the float32 residual stream (B, L, d_model), updated in place and returned."""
        attention, feed_forward = self.layer[0], self.layer[1]
        h = cast(attention.layer_norm(x), self.dtype)
        out = attention.SelfAttention(h, position_bias)
        x = x + cast(out, np.float32)
        h = cast(feed_forward.layer_norm(x), self.dtype)
        return feed_forward.DenseReluDense(h, add_to=x)


class T5EncoderModel(nn.Module):
    """Token ids (B, L) -> hidden states (B, L, d_model), T5's encoder stack.

    Config: transformers' T5Config dict (`text_encoder_2/config.json` of a FLUX folder);
    `feed_forward_proj` must be gated-gelu (T5 v1.1, FLAN-T5, T5-XXL of FLUX and SD3).
    Parameter names are transformers' (`shared.weight`, `encoder.block.0.layer.0.
    SelfAttention.q.weight`, ...); `encoder.embed_tokens.weight`, the tied alias of
    `shared.weight`, is accepted in its place. transformers: `T5EncoderModel(ids)
    .last_hidden_state` (no attention mask, as FluxPipeline and StableDiffusion3Pipeline
    call it); returned in the model's dtype.
    """

    bias_per_layer = False  # UMT5: every block has its own relative_attention_bias table

    def __init__(self, config: dict[str, Any], *, dtype: Any = np.float32,
                 device: Device | None = None) -> None:
        cfg = {**_DEFAULTS, **config}
        if cfg["feed_forward_proj"] not in _GATED:
            raise ValueError(f"T5 feed_forward_proj {cfg['feed_forward_proj']!r} is not "
                             f"supported; this encoder implements {_GATED[0]!r} (T5 v1.1)")
        self.config = cfg
        place: Place = {"dtype": dtype, "device": device}
        self.dtype = np.dtype(dtype)
        self.shared = nn.Embedding(cfg["vocab_size"], cfg["d_model"], **place)
        self.encoder = nn.Namespace()
        self.encoder.block = nn.ModuleList(
            [T5Block(cfg, place, has_bias=i == 0 or self.bias_per_layer)
             for i in range(cfg["num_layers"])])
        self.encoder.final_layer_norm = RMSNorm(cfg["d_model"], cfg["layer_norm_epsilon"],
                                                place=place)

    def load_state_dict(self, state: Mapping[str, Any], *, strict: bool = True,
                        dtype: Any = None, to_host: bool = False) -> None:
        """nn.Module.load_state_dict, taking `encoder.embed_tokens.weight` for
        `shared.weight` when only it is present and ignoring it when both are."""
        super().load_state_dict(_Untied(state), strict=strict, dtype=dtype,
                                to_host=to_host)

    def position_bias(self, length: int, layer: int = 0) -> Tensor:
        """(1, H, L, L) float32 additive attention bias from block `layer`'s table."""
        cfg = self.config
        buckets = relative_position_buckets(length, cfg["relative_attention_num_buckets"],
                                            cfg["relative_attention_max_distance"])
        table = self.encoder.block[layer].layer[0].SelfAttention.relative_attention_bias
        bias = cast(table(asarray(buckets, device=table.weight.device)), np.float32)
        return permute(bias, (2, 0, 1)).reshape(1, cfg["num_heads"], length, length)

    def forward(self, input_ids: Any, attention_mask: Any = None) -> Tensor:
        """input_ids: (B, L) ints below vocab_size -> (B, L, d_model) in the model's dtype.
        attention_mask: None, or (B, L) with 0 for the tokens no token attends to (padding;
        ChromaPipeline passes the tokenizer's mask), as transformers' `attention_mask=`."""
        return self.forward_each([(input_ids, attention_mask)])[0]

    def forward_each(self, inputs: Sequence[tuple[Any, Any]]) -> list[Tensor]:
        """`forward(ids, mask)` of each (input_ids, attention_mask) pair, block by block: every
        input passes a block before the next block runs, so a streamed block (a memory
        mode's unit) comes to the GPU once for all of them (Wan's prompt and negative
        prompt). Each input runs the kernels its own `forward` would, on the same shapes:
        the states are `forward`'s, bitwise."""
        device = self.shared.weight.device
        streams, masks = [], []
        for input_ids, attention_mask in inputs:
            ids = np.asarray(input_ids)
            if ids.ndim != 2 or ids.dtype.kind not in "iu":
                raise ValueError(f"input_ids must be (batch, length) integers, got {ids.dtype} "
                                 f"of shape {ids.shape}")
            streams.append(cast(self.shared(asarray(ids.astype(np.int32), device=device)),
                                np.float32))
            masks.append(None if attention_mask is None else
                         self._additive_mask(ids.shape, attention_mask, device))
        kept: list[Tensor] = []  # T5's biases, from its first block's table, for every block
        for i, block in enumerate(self.encoder.block):
            for j, masked in enumerate(masks):
                if i == 0 or self.bias_per_layer:  # made as each input comes: one at a time
                    bias = self.position_bias(streams[j].shape[1], i)
                    bias = bias if masked is None else bias + masked
                    if not self.bias_per_layer:
                        kept.append(bias)
                streams[j] = block(streams[j], bias if self.bias_per_layer else kept[j])
        return [cast(self.encoder.final_layer_norm(x), self.dtype) for x in streams]

    @staticmethod
    def _additive_mask(shape: tuple[int, ...], attention_mask: Any, device: Device) -> Tensor:
        """(B, 1, 1, L) float32: 0 where `attention_mask` keeps a token, -inf where not."""
        keep = np.asarray(attention_mask)
        if keep.shape != shape:
            raise ValueError(f"attention_mask must have input_ids' shape {shape}, got "
                             f"{keep.shape}")
        return asarray(np.where(keep != 0, np.float32(0), np.float32(-np.inf))
                       .reshape(shape[0], 1, 1, shape[1]), device=device)


class UMT5EncoderModel(T5EncoderModel):
    """Token ids (B, L) -> hidden states (B, L, d_model), UMT5's encoder stack: T5 v1.1's,
    with a relative position bias table in every block (`encoder.block.N.layer.0.
    SelfAttention.relative_attention_bias.weight`). Wan's text encoder (umt5-xxl).
    transformers: `UMT5EncoderModel(ids, attention_mask=mask).last_hidden_state`.
    """

    bias_per_layer = True


class _Untied(Mapping[str, Any]):
    """A state dict seen with `encoder.embed_tokens.weight` folded into `shared.weight`."""

    def __init__(self, state: Mapping[str, Any]) -> None:
        self.state = state
        self.alias = _TIED in state and "shared.weight" not in state
        shape = getattr(state, "shape", None)
        if callable(shape):
            self.shape = lambda key: shape(self._key(key))

    def _key(self, key: str) -> str:
        return _TIED if self.alias and key == "shared.weight" else key

    def __getitem__(self, key: str) -> Any:
        if key == _TIED:
            raise KeyError(key)
        return self.state[self._key(key)]

    def __iter__(self) -> Iterator[str]:
        for key in self.state:
            if key == _TIED:
                if self.alias:
                    yield "shared.weight"
                continue
            yield key

    def __len__(self) -> int:
        return sum(1 for _ in self)

    def __contains__(self, key: object) -> bool:
        if key == _TIED:
            return False
        return isinstance(key, str) and self._key(key) in self.state

    def read_ahead(self, keys: Sequence[str], *, device: Device | None = None
                   ) -> Generator[Any, None, None]:
        """The state's own read ahead where it has one (nn.ReadsAhead: the next tensors read
        on threads while one uploads), under the aliased names; else one by one."""
        if isinstance(self.state, ReadsAhead):
            return self.state.read_ahead([self._key(key) for key in keys], device=device)
        return (self[key] for key in keys)
