"""The tensor names diffusers' UNet2DConditionModel / AutoencoderKL and transformers'
CLIPTextModel(WithProjection) have for a given config (Stable Diffusion 1/2 and SDXL
architectures), so a loader can name the first missing tensor instead of failing later inside
the model."""

from __future__ import annotations

from typing import Any

from ..errors import WeightsError

__all__ = ["clip_text_keys", "unet_keys", "vae_keys"]

_WB = ("weight", "bias")

# UNet2DConditionModel config fields whose non-default values add tensors that SD1/SD2 lack
_UNET_DEFAULTS = {
    "mid_block_type": "UNetMidBlock2DCrossAttn", "class_embed_type": None,
    "addition_embed_type": None, "num_class_embeds": None, "encoder_hid_dim": None,
    "dual_cross_attention": False, "only_cross_attention": False, "attention_type": "default",
    "resnet_time_scale_shift": "default", "time_embedding_type": "positional",
    "conv_in_kernel": 3, "conv_out_kernel": 3,
}


def _params(prefix: str, *modules: str, bias: bool = True) -> list[str]:
    return [f"{prefix}{m}.{p}" for m in modules for p in (_WB if bias else ("weight",))]


def _resnet(prefix: str, in_ch: int, out_ch: int, *, time: bool) -> list[str]:
    modules = ["norm1", "conv1", *(["time_emb_proj"] if time else []), "norm2", "conv2"]
    if in_ch != out_ch:
        modules.append("conv_shortcut")
    return _params(prefix, *modules)


def _transformer(prefix: str, depth: int) -> list[str]:
    keys = _params(prefix, "norm", "proj_in")
    for t in range(depth):
        block = f"{prefix}transformer_blocks.{t}."
        for attn in ("attn1", "attn2"):
            keys += _params(block, f"{attn}.to_q", f"{attn}.to_k", f"{attn}.to_v", bias=False)
            keys += _params(block, f"{attn}.to_out.0")
        keys += _params(block, "norm1", "norm2", "norm3", "ff.net.0.proj", "ff.net.2")
    return keys + _params(prefix, "proj_out")


def _per_block(value: Any, n: int, name: str) -> list[int]:
    values = [value] * n if isinstance(value, int) else list(value)
    if len(values) != n:
        raise WeightsError(f"unet config: {name} has {len(values)} entries for {n} blocks")
    return values


def unet_keys(config: dict[str, Any]) -> list[str]:
    """State-dict keys of `diffusers.UNet2DConditionModel(**config)` for SD1/SD2/SDXL-style
    configs (SDXL: addition_embed_type "text_time", whose `add_embedding` MLP takes the pooled
    text embedding and the time ids); WeightsError for features that add other tensors."""
    for name, default in _UNET_DEFAULTS.items():
        if name == "addition_embed_type" and config.get(name) == "text_time":
            continue
        if name == "encoder_hid_dim" and config.get("encoder_hid_dim_type") == "text_proj":
            continue  # Kolors: encoder_hid_proj, ChatGLM's states to the context width
        if config.get(name, default) != default:
            raise WeightsError(f"unet config: {name}={config[name]!r} is not supported "
                               f"(Stable Diffusion 1/2 UNets use {default!r})")
    channels = list(config["block_out_channels"])
    n = len(channels)
    layers = _per_block(config.get("layers_per_block", 2), n, "layers_per_block")
    depth = _per_block(config.get("transformer_layers_per_block", 1), n,
                       "transformer_layers_per_block")
    down_types, up_types = list(config["down_block_types"]), list(config["up_block_types"])
    for kind in (*down_types, *up_types):
        if kind not in ("CrossAttnDownBlock2D", "DownBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"):
            raise WeightsError(f"unet config: block type {kind!r} is not supported")
    keys = _params("", "conv_in", "time_embedding.linear_1", "time_embedding.linear_2")
    if config.get("addition_embed_type") == "text_time":
        keys += _params("", "add_embedding.linear_1", "add_embedding.linear_2")
    if config.get("time_cond_proj_dim") is not None:  # LCM-distilled UNets: guidance embedding
        keys.append("time_embedding.cond_proj.weight")
    out_ch = channels[0]
    for i, kind in enumerate(down_types):
        in_ch, out_ch = out_ch, channels[i]
        for j in range(layers[i]):
            keys += _resnet(f"down_blocks.{i}.resnets.{j}.", in_ch if j == 0 else out_ch, out_ch,
                            time=True)
            if kind.startswith("CrossAttn"):
                keys += _transformer(f"down_blocks.{i}.attentions.{j}.", depth[i])
        if i < n - 1:
            keys += _params(f"down_blocks.{i}.downsamplers.0.", "conv")
    keys += _resnet("mid_block.resnets.0.", channels[-1], channels[-1], time=True)
    keys += _transformer("mid_block.attentions.0.", depth[-1])
    keys += _resnet("mid_block.resnets.1.", channels[-1], channels[-1], time=True)
    rev_channels, rev_layers, rev_depth = channels[::-1], layers[::-1], depth[::-1]
    out_ch = rev_channels[0]
    for i, kind in enumerate(up_types):
        prev_ch, out_ch = out_ch, rev_channels[i]
        skip_in = rev_channels[min(i + 1, n - 1)]
        count = rev_layers[i] + 1
        for j in range(count):
            skip = skip_in if j == count - 1 else out_ch
            keys += _resnet(f"up_blocks.{i}.resnets.{j}.", (prev_ch if j == 0 else out_ch) + skip,
                            out_ch, time=True)
            if kind.startswith("CrossAttn"):
                keys += _transformer(f"up_blocks.{i}.attentions.{j}.", rev_depth[i])
        if i < n - 1:
            keys += _params(f"up_blocks.{i}.upsamplers.0.", "conv")
    if config.get("encoder_hid_dim_type") == "text_proj":
        keys += _params("", "encoder_hid_proj")
    return keys + _params("", "conv_norm_out", "conv_out")


def _vae_mid(prefix: str, ch: int, attention: bool) -> list[str]:
    keys = _resnet(f"{prefix}mid_block.resnets.0.", ch, ch, time=False)
    if attention:
        keys += _params(f"{prefix}mid_block.attentions.0.", "group_norm", "to_q", "to_k", "to_v",
                        "to_out.0")
    return keys + _resnet(f"{prefix}mid_block.resnets.1.", ch, ch, time=False)


def vae_keys(config: dict[str, Any]) -> list[str]:
    """State-dict keys of `diffusers.AutoencoderKL(**config)`."""
    channels = list(config["block_out_channels"])
    n, layers = len(channels), int(config.get("layers_per_block", 1))
    attention = bool(config.get("mid_block_add_attention", True))
    keys = _params("encoder.", "conv_in")
    out_ch = channels[0]
    for i in range(n):
        in_ch, out_ch = out_ch, channels[i]
        for j in range(layers):
            keys += _resnet(f"encoder.down_blocks.{i}.resnets.{j}.", in_ch if j == 0 else out_ch,
                            out_ch, time=False)
        if i < n - 1:
            keys += _params(f"encoder.down_blocks.{i}.downsamplers.0.", "conv")
    keys += _vae_mid("encoder.", channels[-1], attention)
    keys += _params("encoder.", "conv_norm_out", "conv_out")
    keys += _params("decoder.", "conv_in")
    keys += _vae_mid("decoder.", channels[-1], attention)
    out_ch = channels[-1]
    for i, ch in enumerate(channels[::-1]):
        in_ch, out_ch = out_ch, ch
        for j in range(layers + 1):
            keys += _resnet(f"decoder.up_blocks.{i}.resnets.{j}.", in_ch if j == 0 else out_ch,
                            out_ch, time=False)
        if i < n - 1:
            keys += _params(f"decoder.up_blocks.{i}.upsamplers.0.", "conv")
    keys += _params("decoder.", "conv_norm_out", "conv_out")
    quant = [name for name, flag in (("quant_conv", "use_quant_conv"),
                                     ("post_quant_conv", "use_post_quant_conv"))
             if config.get(flag, True)]
    return keys + _params("", *quant)


def clip_text_keys(config: dict[str, Any]) -> list[str]:
    """State-dict keys of transformers' `CLIPTextModel(config)` without the `text_model.` prefix
    (the `embeddings.position_ids` buffer is not a weight and is left out); plus
    `text_projection.weight` for a CLIPTextModelWithProjection config (its `architectures`)."""
    keys = ["embeddings.token_embedding.weight", "embeddings.position_embedding.weight"]
    for n in range(int(config["num_hidden_layers"])):
        keys += _params(f"encoder.layers.{n}.", *(f"self_attn.{p}_proj" for p in "qkv"),
                        "self_attn.out_proj", "layer_norm1", "mlp.fc1", "mlp.fc2", "layer_norm2")
    keys += _params("", "final_layer_norm")
    if "CLIPTextModelWithProjection" in (config.get("architectures") or ()):
        keys.append("text_projection.weight")
    return keys

