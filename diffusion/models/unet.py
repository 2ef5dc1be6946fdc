"""UNet2DConditionModel as Stable Diffusion 1.x / 2.x and SDXL (base and refiner) use it, with
diffusers' parameter names and config."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Protocol

import numpy as np

from gpucore import Device
from gpustd import Tensor, asarray, nn
from gpustd.shape import concatenate

from .layers import Context, Downsample2D, Place, ResnetBlock2D, Upsample2D
from .unet_blocks import Transformer2DModel, UNetBlock

_DEFAULTS: dict[str, Any] = {
    "in_channels": 4, "out_channels": 4, "layers_per_block": 2, "norm_num_groups": 32,
    "norm_eps": 1e-5, "flip_sin_to_cos": True, "freq_shift": 0, "cross_attention_dim": 768,
    "attention_head_dim": 8, "num_attention_heads": None, "use_linear_projection": False,
    "upcast_attention": False, "transformer_layers_per_block": 1,
    "block_out_channels": (320, 640, 1280, 1280),
    "down_block_types": ("CrossAttnDownBlock2D",) * 3 + ("DownBlock2D",),
    "up_block_types": ("UpBlock2D",) + ("CrossAttnUpBlock2D",) * 3,
    "addition_embed_type": None, "addition_time_embed_dim": None,
    "projection_class_embeddings_input_dim": None,
    "encoder_hid_dim": None, "encoder_hid_dim_type": None,
}
# Config keys whose other values select layers we do not build: each must keep diffusers'
# default (missing counts as the default).
_FIXED: dict[str, Any] = {
    "center_input_sample": False, "mid_block_type": "UNetMidBlock2DCrossAttn",
    "downsample_padding": 1, "mid_block_scale_factor": 1, "act_fn": "silu",
    "dual_cross_attention": False, "resnet_time_scale_shift": "default",
    "resnet_skip_time_act": False, "resnet_out_scale_factor": 1.0,
    "time_embedding_type": "positional", "conv_in_kernel": 3, "conv_out_kernel": 3,
    "attention_type": "default", "class_embeddings_concat": False,
    "class_embed_type": None,
    "time_cond_proj_dim": None, "num_class_embeds": None, "time_embedding_dim": None,
    "time_embedding_act_fn": None, "timestep_post_act": None, "cross_attention_norm": None,
    "reverse_transformer_layers_per_block": None,
}
_FALSY = ("only_cross_attention", "mid_block_only_cross_attention")  # bool or per-level list


def _per_block(cfg: dict[str, Any], key: str, count: int, value: Any = None) -> list[int]:
    """A per-level setting as `count` ints (a single int applies to every level)."""
    value = cfg[key] if value is None else value
    values = list(value) if isinstance(value, (list, tuple)) else [value] * count
    if len(values) != count or not all(isinstance(v, int) for v in values):
        raise ValueError(f"UNet config {key}={value!r}: expected an int or {count} ints (one per "
                         "level of block_out_channels); per-layer lists are not supported")
    return values


def check_config(config: Mapping[str, Any]) -> dict[str, Any]:
    """The config with our defaults filled in; ValueError naming any key we do not implement."""
    cfg = {**_DEFAULTS, **config}
    for key, default in _FIXED.items():
        if cfg.get(key, default) != default:
            raise ValueError(f"UNet config {key}={cfg[key]!r} is not supported (SD 1.x/2.x and "
                             f"SDXL UNets have {default!r}); this model architecture is not one "
                             "we implement")
    for key in _FALSY:
        value = cfg.get(key)
        if any(value) if isinstance(value, (list, tuple)) else value:
            raise ValueError(f"UNet config {key}={value!r} is not supported (SD and SDXL UNets "
                             "leave it false)")
    if not isinstance(cfg["cross_attention_dim"], int):
        raise ValueError(f"UNet config cross_attention_dim={cfg['cross_attention_dim']!r}: only "
                         "one int (the same context width at every level) is supported")
    kind = cfg["addition_embed_type"]
    if kind not in (None, "text_time"):
        raise ValueError(f"UNet config addition_embed_type={kind!r} is not supported (SD leaves "
                         "it unset, SDXL has 'text_time')")
    if kind == "text_time":
        for key in ("addition_time_embed_dim", "projection_class_embeddings_input_dim"):
            if not isinstance(cfg[key], int) or cfg[key] < 1:
                raise ValueError(f"UNet config addition_embed_type='text_time' needs {key} (a "
                                 f"positive int), got {cfg[key]!r}")
    hid = cfg["encoder_hid_dim_type"]
    if hid not in (None, "text_proj") or (hid is None) != (cfg["encoder_hid_dim"] is None):
        raise ValueError(f"UNet config encoder_hid_dim_type={hid!r} with encoder_hid_dim="
                         f"{cfg['encoder_hid_dim']!r} is not supported (SD and SDXL leave both "
                         "unset, Kolors has 'text_proj' and its text encoder's width)")
    return cfg


class BlockOutputHook(Protocol):
    """What may replace a block's output while installed (diffusion.models.reference_adain):
    `kind` "input", "middle" or "output" and `index` name the block as the original (LDM)
    UNet counts its input_blocks (conv_in 0, then each resnet with its attention, each
    downsampler) and output_blocks (each resnet with its attention, the level's upsampler
    with its last)."""

    def block_output(self, kind: str, index: int, h: Tensor) -> Tensor: ...


class UNetEncoder(nn.Module):
    """The UNet's input half, shared by the UNet and ControlNet (which copies it): conv_in,
    the time (and SDXL's added) embedding, the down blocks and the mid block, with diffusers'
    names. `config` has been through `check_config`."""

    # Set on a UNet while the ControlNet extension's reference_adain runs
    # (diffusion.models.reference_adain): it sees, and may replace, each block's output.
    block_hook: BlockOutputHook | None = None

    def __init__(self, cfg: dict[str, Any], place: Place) -> None:
        self.config = cfg
        channels = list(cfg["block_out_channels"])
        blocks = len(channels)
        layers = _per_block(cfg, "layers_per_block", blocks)
        # diffusers names the head count attention_head_dim (num_attention_heads wins if set)
        heads = _per_block(cfg, "attention_head_dim", blocks,
                           cfg["num_attention_heads"] or cfg["attention_head_dim"])
        depth = _per_block(cfg, "transformer_layers_per_block", blocks)
        if len(cfg["down_block_types"]) != blocks:
            raise ValueError(f"UNet config down_block_types has {len(cfg['down_block_types'])} "
                             f"entries, block_out_channels {blocks}")
        self._levels = (channels, layers, heads, depth)
        temb = channels[0] * 4

        def mlp(width_in: int) -> nn.Namespace:
            module = nn.Namespace()
            module.linear_1 = nn.Linear(width_in, temb, **place)
            module.linear_2 = nn.Linear(temb, temb, **place)
            return module

        self.conv_in = nn.Conv2d(cfg["in_channels"], channels[0], 3, padding=1, **place)
        self.time_embedding = mlp(channels[0])
        if cfg["addition_embed_type"] == "text_time":
            self.add_embedding = mlp(cfg["projection_class_embeddings_input_dim"])

        down = []
        for i, kind in enumerate(cfg["down_block_types"]):
            cin, cout, last = channels[max(i - 1, 0)], channels[i], i == blocks - 1
            if kind not in ("CrossAttnDownBlock2D", "DownBlock2D"):
                raise ValueError(f"unsupported down block type {kind!r}")
            resnets = [self._resnet(place, cin if j == 0 else cout, cout)
                       for j in range(layers[i])]
            attns = ([self._transformer(place, cout, heads[i], depth[i])
                      for _ in range(layers[i])] if kind == "CrossAttnDownBlock2D" else None)
            down.append(UNetBlock(resnets, attns,
                                  None if last else Downsample2D(cout, place=place),
                                  "downsamplers"))
        self.down_blocks = nn.ModuleList(down)

        self.mid_block = nn.Namespace()
        self.mid_block.resnets = nn.ModuleList([self._resnet(place, channels[-1], channels[-1])
                                                for _ in range(2)])
        self.mid_block.attentions = nn.ModuleList(
            [self._transformer(place, channels[-1], heads[-1], depth[-1])])

    def _resnet(self, place: Place, i: int, o: int) -> ResnetBlock2D:
        cfg = self.config
        return ResnetBlock2D(i, o, temb_channels=cfg["block_out_channels"][0] * 4,
                             groups=cfg["norm_num_groups"], eps=cfg["norm_eps"], place=place)

    def _transformer(self, place: Place, c: int, h: int, d: int) -> Transformer2DModel:
        cfg = self.config
        return Transformer2DModel(c, h, cfg["cross_attention_dim"], depth=d,
                                  groups=cfg["norm_num_groups"], place=place,
                                  linear_projection=cfg["use_linear_projection"])

    def embedding(self, sample: Tensor, timesteps: Any,
                  added_cond: Mapping[str, Any] | None) -> Tensor:
        """silu(time embedding [+ SDXL's added embedding]), (B, 4 * block_out_channels[0]):
        what every resnet's time projection reads."""
        emb = self.time_embedding_of(sample, timesteps)
        if self.uses_added_cond:
            emb = emb + self.added_embedding_of(added_cond, sample.shape[0], sample)
        elif added_cond is not None:
            raise ValueError("added_cond is for SDXL UNets (addition_embed_type='text_time'); "
                             "this UNet takes none: pass added_cond=None")
        return nn.silu(emb)

    def down(self, h: Tensor, temb_act: Tensor, context: Context,
             intrablock: list[Tensor] | None = None) -> tuple[Tensor, list[Tensor]]:
        """The down blocks from conv_in's output h: (last h, skips), skips beginning with h.

        intrablock: T2I-Adapter features, consumed from the front, one per down block while
        they last: added to a cross-attention block's last transformer output (before its
        downsampler), or to a plain block's output (after it), as diffusers does."""
        skips = [h]
        hook = self.block_hook
        for block in self.down_blocks:
            attentive = block.attention(0) is not None
            for i, res in enumerate(block.resnets):
                h = res(h, temb_act)
                attn = block.attention(i)
                if attn is not None:
                    h = attn(h, context)
                if hook is not None:
                    h = hook.block_output("input", len(skips), h)
                if intrablock and attentive and i == len(block.resnets) - 1:
                    h = h + intrablock.pop(0)
                skips.append(h)
            sampler = block.sampler()
            if sampler is not None:
                h = sampler(h)
                if hook is not None:
                    h = hook.block_output("input", len(skips), h)
                skips.append(h)
            if intrablock and not attentive:  # diffusers adds in place: the skip sees it too
                h = skips[-1] = h + intrablock.pop(0)
        return h, skips

    def mid(self, h: Tensor, temb_act: Tensor, context: Context) -> Tensor:
        mid = self.mid_block
        h = mid.resnets[1](mid.attentions[0](mid.resnets[0](h, temb_act), context), temb_act)
        return h if self.block_hook is None else self.block_hook.block_output("middle", 0, h)

    @property
    def uses_added_cond(self) -> bool:
        """True for SDXL UNets, whose forward needs `added_cond` (text_embeds, time_ids)."""
        return self.config["addition_embed_type"] == "text_time"

    def time_embedding_of(self, sample: Tensor, timesteps: Any) -> Tensor:
        """time_embedding(sinusoid(timesteps)), (B, 4 * block_out_channels[0]) in sample's
        dtype."""
        batch = sample.shape[0]
        if isinstance(timesteps, Tensor):
            if timesteps.dtype != np.float32 or timesteps.shape != (batch,):
                raise ValueError(f"timesteps as a Tensor must be float32 of shape ({batch},), "
                                 f"got {timesteps.dtype} {timesteps.shape}; pass "
                                 "gpustd.asarray(np.full(batch, t, np.float32))")
            steps = timesteps
        else:
            steps = asarray(np.broadcast_to(np.asarray(timesteps, np.float32).reshape(-1),
                                            (batch,)), device=sample.device)
        cfg = self.config
        t = nn.timestep_embedding(steps, cfg["block_out_channels"][0], dtype=sample.dtype,
                                  flip_sin_to_cos=cfg["flip_sin_to_cos"],
                                  downscale_freq_shift=cfg["freq_shift"])
        return self.time_embedding.linear_2(nn.silu(self.time_embedding.linear_1(t)))

    def added_embedding_of(self, added_cond: Any, batch: int, sample: Tensor) -> Tensor:
        """SDXL's add_embedding(concat(text_embeds, sinusoid(time_ids) flattened per row))."""
        cfg = self.config
        dim, width = cfg["addition_time_embed_dim"], cfg["projection_class_embeddings_input_dim"]
        need = (f"pass added_cond={{'text_embeds': (B, P) pooled text embedding, 'time_ids': "
                f"(B, n) time ids}} with P + n * {dim} == {width} (SDXL base: 1280 and 6 ids, "
                "refiner: 1280 and 5)")
        if not isinstance(added_cond, Mapping) or set(added_cond) != {"text_embeds", "time_ids"}:
            got = sorted(added_cond) if isinstance(added_cond, Mapping) else added_cond
            raise ValueError(f"this SDXL UNet (addition_embed_type='text_time') needs "
                             f"added_cond; got {got!r}: {need}")
        text, ids = added_cond["text_embeds"], added_cond["time_ids"]
        if not isinstance(text, Tensor):
            text = asarray(np.asarray(text, np.float32), device=sample.device)
        if not isinstance(ids, Tensor):
            ids = np.asarray(ids, np.float32)
        elif ids.dtype != np.float32:
            raise ValueError(f"time_ids as a Tensor must be float32, got {ids.dtype}")
        if (text.ndim != 2 or len(ids.shape) != 2 or text.shape[0] != batch
                or ids.shape[0] != batch or text.shape[1] + ids.shape[1] * dim != width):
            raise ValueError(f"added_cond shapes text_embeds {text.shape}, time_ids {ids.shape} "
                             f"do not fit a batch of {batch}: {need}")
        time_embeds = nn.timestep_embedding(ids.reshape(-1), dim, dtype=sample.dtype,
                                            flip_sin_to_cos=cfg["flip_sin_to_cos"],
                                            downscale_freq_shift=cfg["freq_shift"],
                                            device=sample.device)
        if text.dtype != sample.dtype:
            text = text.astype(sample.dtype)
        joined = concatenate([text, time_embeds.reshape(batch, ids.shape[1] * dim)], axis=1)
        return self.add_embedding.linear_2(nn.silu(self.add_embedding.linear_1(joined)))


class UNet2DConditionModel(UNetEncoder):
    """The SD 1.x/2.x/SDXL UNet. Config: diffusers' `unet/config.json` dict.

    SDXL's `addition_embed_type="text_time"` adds `add_embedding` (linear_1, SiLU, linear_2) of
    the pooled text embedding and the sinusoidal embeddings of the micro-conditioning time ids
    to the time embedding; `forward` then needs `added_cond`.
    """

    def __init__(self, config: dict[str, Any], *, dtype: Any = np.float32,
                 device: Device | None = None) -> None:
        place: Place = {"dtype": dtype, "device": device}
        cfg = check_config(config)
        super().__init__(cfg, place)
        channels, layers, heads, depth = self._levels
        blocks = len(channels)
        if len(cfg["up_block_types"]) != blocks:
            raise ValueError(f"UNet config up_block_types has {len(cfg['up_block_types'])} "
                             f"entries, block_out_channels {blocks}")
        up = []
        rev, rev_heads, rev_layers = channels[::-1], heads[::-1], layers[::-1]
        rev_depth = depth[::-1]
        for i, kind in enumerate(cfg["up_block_types"]):
            if kind not in ("CrossAttnUpBlock2D", "UpBlock2D"):
                raise ValueError(f"unsupported up block type {kind!r}")
            prev, cout = rev[max(i - 1, 0)], rev[i]
            cin, last, n = rev[min(i + 1, blocks - 1)], i == blocks - 1, rev_layers[i] + 1
            resnets = [self._resnet(place, (prev if j == 0 else cout)
                                    + (cin if j == n - 1 else cout), cout) for j in range(n)]
            attns = ([self._transformer(place, cout, rev_heads[i], rev_depth[i])
                      for _ in range(n)] if kind == "CrossAttnUpBlock2D" else None)
            up.append(UNetBlock(resnets, attns, None if last else Upsample2D(cout, place=place),
                                "upsamplers"))
        self.up_blocks = nn.ModuleList(up)

        groups = cfg["norm_num_groups"]
        self.conv_norm_out = nn.GroupNorm(groups, channels[0], eps=cfg["norm_eps"], **place)
        self.conv_out = nn.Conv2d(channels[0], cfg["out_channels"], 3, padding=1, **place)
        if cfg["encoder_hid_dim_type"] == "text_proj":  # Kolors: ChatGLM's 4096 to 2048
            self.encoder_hid_proj = nn.Linear(cfg["encoder_hid_dim"],
                                              cfg["cross_attention_dim"], **place)

    def forward(self, sample: Tensor, timesteps: Any, context: Tensor,
                added_cond: Mapping[str, Any] | None = None, *,
                down_block_additional_residuals: Sequence[Tensor] | None = None,
                mid_block_additional_residual: Tensor | None = None,
                down_intrablock_additional_residuals: Sequence[Tensor] | None = None,
                ip_hidden_states: Sequence[Tensor] | None = None) -> Tensor:
        """sample: (B, in_channels, h, w) latents; context: (B, L, cross_attention_dim).

        timesteps: one number or B numbers (list / numpy), or a float32 Tensor of shape (B,) on
        the sample's device, used there with no read-back (so a recorded step can be replayed
        with new values). added_cond (SDXL only, else None): {"text_embeds": (B, P) pooled text
        embedding, "time_ids": (B, n) micro-conditioning ids}, each a Tensor (time_ids float32)
        or array-like, with P + n * addition_time_embed_dim ==
        projection_class_embeddings_input_dim. Returns the model output (noise or v),
        (B, out_channels, h, w). diffusers: `unet(sample, timesteps, context,
        added_cond_kwargs=added_cond).sample`.

        The guidance networks' residuals, as diffusers names them (each in sample's dtype):
        ControlNet's `down_block_additional_residuals` (one per skip, conv_in's first) and
        `mid_block_additional_residual`, added to the skips and to the mid block's output;
        T2I-Adapter's `down_intrablock_additional_residuals` (one per down block, the extra
        one SDXL's adapter has going to the mid block's output).

        `ip_hidden_states`: the image tokens (B, n, cross_attention_dim) of each IP-Adapter
        installed in the cross-attention layers (diffusion.models.ip_adapter; diffusers'
        `added_cond_kwargs["image_embeds"]` after its `encoder_hid_proj`).

        A Kolors UNet (encoder_hid_dim_type "text_proj") takes context (B, L, encoder_hid_dim)
        and projects it by its `encoder_hid_proj` first, as diffusers does.
        """
        if hasattr(self, "encoder_hid_proj"):
            context = self.encoder_hid_proj(context)
        temb_act = self.embedding(sample, timesteps, added_cond)
        attend_to: Context = context if ip_hidden_states is None else (
            context, list(ip_hidden_states))
        intrablock = (None if down_intrablock_additional_residuals is None
                      else list(down_intrablock_additional_residuals))
        h, skips = self.down(self.conv_in(sample), temb_act, attend_to, intrablock)
        if down_block_additional_residuals is not None:
            if len(down_block_additional_residuals) != len(skips):
                raise ValueError(f"down_block_additional_residuals has "
                                 f"{len(down_block_additional_residuals)} tensors; this UNet has "
                                 f"{len(skips)} skips: pass one per skip, as a ControlNet of "
                                 "the same architecture gives them")
            skips = [s + r for s, r in zip(skips, down_block_additional_residuals)]
        h = self.mid(h, temb_act, attend_to)
        if mid_block_additional_residual is not None:
            h = h + mid_block_additional_residual
        if intrablock and intrablock[0].shape == h.shape:
            h = h + intrablock.pop(0)

        output = 0  # the LDM UNet's output block
        for block in self.up_blocks:
            sampler = block.sampler()
            for i, res in enumerate(block.resnets):
                h = res(concatenate([h, skips.pop()], axis=1), temb_act)
                attn = block.attention(i)
                if attn is not None:
                    h = attn(h, attend_to)
                if sampler is not None and i == len(block.resnets) - 1:
                    h = sampler(h, skips[-1].shape[-2:])  # to the next skip's: may be odd
                if self.block_hook is not None:
                    h = self.block_hook.block_output("output", output, h)
                output += 1
        return self.conv_out(h, prologue=self.conv_norm_out.prologue(h, silu=True))
