"""Original LDM (CompVis / Stability) single-file key names -> diffusers / transformers names.

The same mapping as diffusers' `loaders/single_file_utils.py` (`convert_ldm_unet_checkpoint`,
`convert_ldm_vae_checkpoint`, `convert_ldm_clip_checkpoint`, `convert_open_clip_checkpoint`),
written per key: each LDM key is parsed once and renamed from the tables below.
"""

from __future__ import annotations

import re

from ..errors import WeightsError
from ..weights import TensorFile, TensorRef

__all__ = [
    "CLIP_PREFIX",
    "OPEN_CLIP_PREFIX",
    "UNET_PREFIX",
    "VAE_PREFIX",
    "clip_refs",
    "ldm_unet_layout",
    "ldm_vae_refs",
    "open_clip_refs",
    "unet_refs",
    "vae_file_refs",
    "vae_refs",
]

UNET_PREFIX = "model.diffusion_model."
VAE_PREFIX = "first_stage_model."
CLIP_PREFIX = "cond_stage_model.transformer."  # SD1: already transformers' CLIP layout
OPEN_CLIP_PREFIX = "cond_stage_model.model."  # SD2: OpenCLIP ViT-H/14 text tower

_UNET_FIXED = {"time_embed.0": "time_embedding.linear_1", "time_embed.2": "time_embedding.linear_2",
               "input_blocks.0.0": "conv_in", "out.0": "conv_norm_out", "out.2": "conv_out",
               # SDXL's text_time embedding MLP (pooled text + time ids)
               "label_emb.0.0": "add_embedding.linear_1", "label_emb.0.2": "add_embedding.linear_2"}
_UNET_RESNET = {"in_layers.0": "norm1", "in_layers.2": "conv1", "out_layers.0": "norm2",
                "out_layers.3": "conv2", "emb_layers.1": "time_emb_proj",
                "skip_connection": "conv_shortcut"}
_VAE_FIXED = {"norm_out": "conv_norm_out", "conv_in": "conv_in", "conv_out": "conv_out"}
_VAE_ATTENTION = {"norm": "group_norm", "q": "to_q", "k": "to_k", "v": "to_v",
                  "proj_out": "to_out.0"}
_OPEN_CLIP_FIXED = {"token_embedding.weight": "embeddings.token_embedding.weight",
                    "positional_embedding": "embeddings.position_embedding.weight",
                    "ln_final.weight": "final_layer_norm.weight",
                    "ln_final.bias": "final_layer_norm.bias"}
_OPEN_CLIP_LAYER = {"ln_1": "layer_norm1", "ln_2": "layer_norm2", "mlp.c_fc": "mlp.fc1",
                    "mlp.c_proj": "mlp.fc2", "attn.out_proj": "self_attn.out_proj"}


def _rename_head(name: str, table: dict[str, str]) -> str:
    """Replace the leading module path of `name` found in `table` (longest match first)."""
    for old in sorted(table, key=len, reverse=True):
        if name == old or name.startswith(old + "."):
            return table[old] + name[len(old):]
    return name


def ldm_unet_layout(names: list[str]) -> tuple[int, int]:
    """(number of resolution levels, layers per block) of an LDM UNet from its key names (with
    the `model.diffusion_model.` prefix stripped): input_blocks holds conv_in, then per level
    `layers` resnets plus a downsampler except at the last level."""
    inputs = {int(m[1]) for n in names if (m := re.match(r"input_blocks\.(\d+)\.", n))}
    levels = 1 + len({n for n in names if re.fullmatch(r"input_blocks\.\d+\.0\.op\.weight", n)})
    return levels, max(1, (max(inputs, default=0) + 1) // levels - 1)


def unet_name(name: str, layers_per_block: int) -> str | None:
    """Diffusers name of LDM UNet tensor `name` (prefix stripped), None for foreign keys."""
    module, _, param = name.rpartition(".")
    if module in _UNET_FIXED:
        return f"{_UNET_FIXED[module]}.{param}"
    per_level = layers_per_block + 1
    if m := re.fullmatch(r"input_blocks\.(\d+)\.([01])\.(.+)", name):
        if int(m[1]) == 0:
            return None
        level, layer = divmod(int(m[1]) - 1, per_level)
        head, rest = f"down_blocks.{level}", m[3]
        if m[2] == "1":
            return f"{head}.attentions.{layer}.{rest}"
        if rest.startswith("op."):
            return f"{head}.downsamplers.0.conv.{rest[3:]}"
        return f"{head}.resnets.{layer}.{_rename_head(rest, _UNET_RESNET)}"
    if m := re.fullmatch(r"middle_block\.([012])\.(.+)", name):
        if m[1] == "1":
            return f"mid_block.attentions.0.{m[2]}"
        return f"mid_block.resnets.{int(m[1]) // 2}.{_rename_head(m[2], _UNET_RESNET)}"
    if m := re.fullmatch(r"output_blocks\.(\d+)\.([012])\.(.+)", name):
        level, layer = divmod(int(m[1]), per_level)
        head, rest = f"up_blocks.{level}", m[3]
        if m[2] == "0":
            return f"{head}.resnets.{layer}.{_rename_head(rest, _UNET_RESNET)}"
        if rest.startswith("conv."):
            return f"{head}.upsamplers.0.conv.{rest[5:]}"
        return f"{head}.attentions.{layer}.{rest}" if m[2] == "1" else None
    return None


def vae_name(name: str, num_levels: int) -> str | None:
    """Diffusers name of LDM VAE tensor `name` (prefix stripped), None for foreign keys. The
    LDM decoder numbers its up blocks from the lowest resolution, diffusers from the highest."""
    if name.split(".")[0] in ("quant_conv", "post_quant_conv"):
        return name
    if not (m := re.fullmatch(r"(encoder|decoder)\.(.+)\.(weight|bias)", name)):
        return None
    side, module, param = m[1], m[2], m[3]
    if module in _VAE_FIXED:
        return f"{side}.{_VAE_FIXED[module]}.{param}"
    if mm := re.fullmatch(r"mid\.block_([12])\.(.+)", module):
        resnet = mm[2].replace("nin_shortcut", "conv_shortcut")
        return f"{side}.mid_block.resnets.{int(mm[1]) - 1}.{resnet}.{param}"
    if mm := re.fullmatch(r"mid\.attn_1\.(\w+)", module):
        target = _VAE_ATTENTION.get(mm[1])
        return f"{side}.mid_block.attentions.0.{target}.{param}" if target else None
    if mm := re.fullmatch(r"(down|up)\.(\d+)\.(block\.(\d+)\.(.+)|downsample\.conv|upsample\.conv)",
                          module):
        level = int(mm[2]) if side == "encoder" else num_levels - 1 - int(mm[2])
        head = f"{side}.{mm[1]}_blocks.{level}"
        if mm[4] is None:
            return f"{head}.{mm[1]}samplers.0.conv.{param}"
        resnet = mm[5].replace("nin_shortcut", "conv_shortcut")
        return f"{head}.resnets.{mm[4]}.{resnet}.{param}"
    return None


def unet_refs(file: TensorFile) -> dict[str, TensorRef]:
    """Diffusers UNet name -> where the tensor is in an LDM checkpoint."""
    names = [k[len(UNET_PREFIX):] for k in file.keys() if k.startswith(UNET_PREFIX)]
    _, layers = ldm_unet_layout(names)
    refs = {}
    for name in names:
        if (target := unet_name(name, layers)) is not None:
            refs[target] = TensorRef(file, UNET_PREFIX + name, file.shape(UNET_PREFIX + name))
    return refs


def vae_refs(file: TensorFile) -> dict[str, TensorRef]:
    """Diffusers AutoencoderKL name -> LDM tensor; 1x1-conv attention weights become linear."""
    names = [k[len(VAE_PREFIX):] for k in file.keys() if k.startswith(VAE_PREFIX)]
    levels = len({m[1] for n in names if (m := re.match(r"decoder\.up\.(\d+)\.", n))})
    refs = {}
    for name in names:
        if (target := vae_name(name, levels)) is None:
            continue
        shape = file.shape(VAE_PREFIX + name)
        if ".attentions." in target and len(shape) > 2:
            shape = shape[:2]
        refs[target] = TensorRef(file, VAE_PREFIX + name, shape)
    return refs


def clip_refs(file: TensorFile, prefix: str = CLIP_PREFIX) -> dict[str, TensorRef]:
    """SD1 text encoder (SDXL's first, under `conditioner.embedders.0.transformer.`): the
    checkpoint already holds transformers' CLIP names."""
    refs = {}
    for key in file.keys():
        if key.startswith(prefix):
            name = key[len(prefix):].removeprefix("text_model.")
            refs[name] = TensorRef(file, key, file.shape(key))
    return refs


def open_clip_refs(file: TensorFile, prefix: str = OPEN_CLIP_PREFIX, *,
                   whole: bool = False) -> dict[str, TensorRef]:
    """OpenCLIP text tower: OpenCLIP names -> CLIP names, fused in_proj split into q/k/v rows.

    SD2 (whole=False): the last resblock is left out: SD2 conditions on the penultimate layer's
    output, so diffusers' SD2 text encoder has 23 of OpenCLIP's 24 layers (diffusers ignores
    `resblocks.23`); the `text_projection` is unused by CLIPTextModel and left out too.
    SDXL (whole=True, prefix `conditioner.embedders.1.model.`, the refiner's `...0.model.`):
    every layer, and `text_projection` (stored (width, proj)) as transformers'
    CLIPTextModelWithProjection `text_projection.weight` (proj, width), read transposed.
    """
    refs = {}
    layer_re = re.compile(re.escape(prefix) + r"transformer\.resblocks\.(\d+)\.(.+)")
    layers = [(int(m[1]), m[2], key) for key in file.keys() if (m := layer_re.fullmatch(key))]
    last = max((n for n, _, _ in layers), default=-1)
    for name, target in _OPEN_CLIP_FIXED.items():
        if (key := prefix + name) in file:
            refs[target] = TensorRef(file, key, file.shape(key))
    if whole and (key := prefix + "text_projection") in file and len(file.shape(key)) == 2:
        width, proj = file.shape(key)
        refs["text_projection.weight"] = TensorRef(file, key, (proj, width), transposed=True)
    for n, rest, key in layers:
        head, shape = f"encoder.layers.{n}", file.shape(key)
        if n == last and not whole:
            continue
        if rest in ("attn.in_proj_weight", "attn.in_proj_bias"):
            width, param = shape[0] // 3, rest.rpartition("_")[2]
            for i, part in enumerate("qkv"):
                refs[f"{head}.self_attn.{part}_proj.{param}"] = TensorRef(
                    file, key, (width, *shape[1:]), rows=(i * width, (i + 1) * width))
        else:
            refs[f"{head}.{_rename_head(rest, _OPEN_CLIP_LAYER)}"] = TensorRef(file, key, shape)
    return refs


def vae_file_refs(file: TensorFile) -> dict[str, TensorRef]:
    """Diffusers AutoencoderKL name -> tensor, whichever of the three layouts the file uses."""
    keys = file.keys()
    if any(key.startswith("encoder.down_blocks.") for key in keys):
        return {key: TensorRef(file, key, file.shape(key)) for key in keys}
    prefix = VAE_PREFIX if VAE_PREFIX + "decoder.conv_in.weight" in file else ""
    if prefix + "decoder.conv_in.weight" not in file:
        sample = ", ".join(repr(key) for key in keys[:3]) or "no tensors"
        raise WeightsError(f"{file.path}: not a VAE: no 'decoder.conv_in.weight' (bare or under "
                           f"'{VAE_PREFIX}') and no diffusers 'encoder.down_blocks.*' names; it "
                           f"holds {sample}. Pass a Stable Diffusion VAE file (*.vae.safetensors)")
    return ldm_vae_refs(file, prefix)


def ldm_vae_refs(file: TensorFile, prefix: str) -> dict[str, TensorRef]:
    """As `vae_refs`, for keys under any prefix (a VAE file's are bare). Keys that are
    not the autoencoder's (`loss.*`, `model_ema.*`, a checkpoint's UNet) are left out, as the
    WebUI leaves them out."""
    names = [key[len(prefix):] for key in file.keys() if key.startswith(prefix)]
    levels = len({m[1] for name in names if (m := re.match(r"decoder\.up\.(\d+)\.", name))})
    refs = {}
    for name in names:
        if (target := vae_name(name, levels)) is None:
            continue
        shape = file.shape(prefix + name)
        if ".attentions." in target and len(shape) > 2:  # LDM's 1x1 convs -> linear weights
            shape = shape[:2]
        refs[target] = TensorRef(file, prefix + name, shape)
    return refs
