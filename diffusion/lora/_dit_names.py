"""Kohya's (sd-scripts') names for the layers of FLUX, SD3, Z-Image, Lumina 2, Wan, Krea 2
and HunyuanVideo LoRAs: BFL's, Stability's, Z-Image's, Alpha-VLLM's (Lumina 2's), Wan's,
Krea 2's and Tencent's (HunyuanVideo's, HunyuanImage 2.1's) checkpoint module paths, flattened
(`double_blocks_0_img_attn_qkv`, `joint_blocks_3_x_block_mlp_fc1`, `layers_0_attention_qkv`,
`blocks_0_attn_wq`), to diffusers' transformer modules, which our models carry.
A fused projection (BFL's and SD3's qkv, FLUX's single-block linear1: q, k, v and the MLP's
input) patches the row ranges of the layers it was split into, and the final adaLN (the last
SD3 block's text adaLN too) has its (shift, scale) halves swapped, as the single-file loaders
read them and as diffusers' kohya conversions (`_convert_kohya_flux_lora_to_diffusers`,
`_convert_sd3_lora_to_diffusers` in diffusers' lora_conversion_utils) split the updates.
"""

from __future__ import annotations

import re
from typing import Any, NamedTuple

from ..loaders.flow import flux_file, sd3_file
from ..loaders.hunyuan_video import transformer as hunyuan_video_file
from ..loaders.keymaps import hunyuan_keys
from ..loaders.keymaps.dit_keys import BFL_DOUBLE_QKV, BFL_SINGLE_SPLIT
from ..loaders.lumina2 import transformer as lumina2_file

__all__ = ["Part", "dit_aliases"]


class Part(NamedTuple):
    """Where (part of) a kohya module's update goes: a diffusers module path, the rows of the
    fused update it takes (None: all), and whether its two halves come swapped."""

    path: str
    rows: tuple[int, int] | None = None
    swapped: bool = False


def _flat(name: str) -> str:
    return name.replace(".", "_")


def _split(fused: str, targets: tuple[str, ...], sizes: tuple[int, ...]) -> dict[str, list[Part]]:
    parts, start = [], 0
    for target, size in zip(targets, sizes, strict=True):
        parts.append(Part(target, (start, start + size)))
        start += size
    return {_flat(fused): parts}


def _flux(shapes: dict[str, tuple[int, ...]], config: dict[str, Any]) -> dict[str, list[Part]]:
    dim = config["num_attention_heads"] * config["attention_head_dim"]
    aliases = {_flat(source): [Part(target)] for source, target in flux_file.BFL_RENAMES.items()}
    aliases["final_layer_adaLN_modulation_1"] = [Part(flux_file._SWAPPED, swapped=True)]
    for i in range(config["num_layers"]):
        for source, target in flux_file._DOUBLE.items():
            aliases[_flat(f"double_blocks.{i}.{source}")] = [
                Part(f"transformer_blocks.{i}.{target}")]
        for source, targets in BFL_DOUBLE_QKV.items():
            aliases.update(_split(f"double_blocks.{i}.{source}",
                                  tuple(f"transformer_blocks.{i}.{t}" for t in targets),
                                  (dim,) * 3))
    for i in range(config["num_single_layers"]):
        block = f"single_transformer_blocks.{i}"
        for source, target in flux_file._SINGLE.items():
            aliases[_flat(f"single_blocks.{i}.{source}")] = [Part(f"{block}.{target}")]
        mlp = shapes[f"{block}.proj_mlp"][0]
        aliases.update(_split(f"single_blocks.{i}.linear1",
                              tuple(f"{block}.{t}" for t in BFL_SINGLE_SPLIT),
                              (dim, dim, dim, mlp)))
    return aliases


def _hunyuan(shapes: dict[str, tuple[int, ...]], config: dict[str, Any]
             ) -> dict[str, list[Part]]:
    """Tencent's original names of HunyuanVideo's and HunyuanImage 2.1's transformers (what
    musubi-tuner's, ComfyUI's and diffusers' original-format HunyuanVideo LoRAs use): the
    fused q/k/v of the double blocks and the refiner, the single blocks' linear1 (q, k, v,
    the MLP's input) split by rows, `img_mlp.fc1`, `modulation.linear`, `vector_in`, ...
    diffusers: `_convert_hunyuan_video_lora_to_diffusers`."""
    dim = config["num_attention_heads"] * config["attention_head_dim"]
    time = "time_text_embed" if "pooled_projection_dim" in config else "time_guidance_embed"
    aliases = {_flat(source): [Part(target.format(time=time),
                                    swapped=target == hunyuan_keys.FINAL_ADALN)]
               for source, target in hunyuan_video_file._RENAMES.items()}
    for i in range(config["num_refiner_layers"]):
        src = f"txt_in.individual_token_refiner.blocks.{i}"
        dst = f"context_embedder.token_refiner.refiner_blocks.{i}"
        aliases.update({_flat(f"{src}.{source}"): [Part(f"{dst}.{target}")]
                        for source, target in hunyuan_keys._REFINER.items()})
        aliases.update(_split(f"{src}.self_attn_qkv",
                              tuple(f"{dst}.attn.to_{x}" for x in "qkv"), (dim,) * 3))
    for i in range(config["num_layers"]):
        src, dst = f"double_blocks.{i}", f"transformer_blocks.{i}"
        aliases.update({_flat(f"{src}.{source}"): [Part(f"{dst}.{target}")]
                        for source, target in {**hunyuan_keys._DOUBLE,
                                               **hunyuan_keys._DOUBLE_NORMS}.items()})
        for stream, targets in hunyuan_keys._DOUBLE_QKV.items():
            aliases.update(_split(f"{src}.{stream}_qkv", tuple(f"{dst}.{t}" for t in targets),
                                  (dim,) * 3))
    for i in range(config["num_single_layers"]):
        src, dst = f"single_blocks.{i}", f"single_transformer_blocks.{i}"
        aliases.update({_flat(f"{src}.{source}"): [Part(f"{dst}.{target}")] for source, target
                        in (("linear2", "proj_out"), ("modulation.linear", "norm.linear"),
                            ("q_norm", "attn.norm_q"), ("k_norm", "attn.norm_k"))})
        mlp = shapes[f"{dst}.proj_mlp"][0]
        aliases.update(_split(f"{src}.linear1", tuple(
            f"{dst}.{t}" for t in hunyuan_keys._SINGLE_SPLIT), (dim, dim, dim, mlp)))
    return aliases


def _sd3(config: dict[str, Any]) -> dict[str, list[Part]]:
    dim = config["num_attention_heads"] * config["attention_head_dim"]
    layers = config["num_layers"]
    aliases = {_flat(source): [Part(target, swapped=target == "norm_out.linear")]
               for source, target in sd3_file._RENAMES.items()}
    for i in range(layers):
        for source, target in sd3_file._BLOCK.items():
            swapped = i == layers - 1 and target == "norm1_context.linear"
            aliases[_flat(f"joint_blocks.{i}.{source}")] = [
                Part(f"transformer_blocks.{i}.{target}", swapped=swapped)]
        for source, targets in sd3_file._QKV.items():
            aliases.update(_split(f"joint_blocks.{i}.{source}",
                                  tuple(f"transformer_blocks.{i}.{t}" for t in targets),
                                  (dim,) * 3))
    return aliases


def _zimage(config: dict[str, Any]) -> dict[str, list[Part]]:
    """The original Z-Image names (what ComfyUI's and musubi-tuner's LoRAs use where they
    differ from diffusers'): the fused attention.qkv, attention.out, x_embedder, final_layer;
    Z-Image Omni's SigLIP refiner's attention too (`siglip_feat_dim` set)."""
    dim = config["dim"]
    aliases = {"x_embedder": [Part("all_x_embedder.2-1")],
               "final_layer_linear": [Part("all_final_layer.2-1.linear")],
               "final_layer_adaLN_modulation_1": [Part("all_final_layer.2-1.adaLN_modulation.1")]}
    stacks = ("layers", "noise_refiner", "context_refiner") + (
        ("siglip_refiner",) if config.get("siglip_feat_dim") else ())
    for stack in stacks:
        count = config["n_layers" if stack == "layers" else "n_refiner_layers"]
        for i in range(count):
            attention = f"{stack}.{i}.attention"
            aliases[_flat(f"{attention}.out")] = [Part(f"{attention}.to_out.0")]
            aliases.update(_split(f"{attention}.qkv", tuple(
                f"{attention}.{t}" for t in ("to_q", "to_k", "to_v")), (dim,) * 3))
    return aliases


# Wan's original module names (ComfyUI's `diffusion_model.blocks.0.self_attn.q`) -> diffusers';
# diffusers: `_convert_non_diffusers_wan_lora_to_diffusers`
_WAN_BLOCK = {"self_attn.q": "attn1.to_q", "self_attn.k": "attn1.to_k", "self_attn.v": "attn1.to_v",
              "self_attn.o": "attn1.to_out.0", "cross_attn.q": "attn2.to_q",
              "cross_attn.k": "attn2.to_k", "cross_attn.v": "attn2.to_v",
              "cross_attn.o": "attn2.to_out.0", "cross_attn.k_img": "attn2.add_k_proj",
              "cross_attn.v_img": "attn2.add_v_proj", "ffn.0": "ffn.net.0.proj",
              "ffn.2": "ffn.net.2"}
_WAN_RENAMES = {"text_embedding.0": "condition_embedder.text_embedder.linear_1",
                "text_embedding.2": "condition_embedder.text_embedder.linear_2",
                "time_embedding.0": "condition_embedder.time_embedder.linear_1",
                "time_embedding.2": "condition_embedder.time_embedder.linear_2",
                "time_projection.1": "condition_embedder.time_proj", "head.head": "proj_out",
                "img_emb.proj.1": "condition_embedder.image_embedder.ff.net.0.proj",
                "img_emb.proj.3": "condition_embedder.image_embedder.ff.net.2"}


def _wan(config: dict[str, Any]) -> dict[str, list[Part]]:
    """Wan 2.1's original names, which ComfyUI's and musubi-tuner's LoRAs use."""
    aliases = {_flat(source): [Part(target)] for source, target in _WAN_RENAMES.items()}
    for i in range(config["num_layers"]):
        aliases.update({_flat(f"blocks.{i}.{source}"): [Part(f"blocks.{i}.{target}")]
                        for source, target in _WAN_BLOCK.items()})
    return aliases


# Krea 2's original module names (krea-ai/krea-2; ComfyUI's, its trainer's, ai-toolkit's) for
# diffusers' -> the original; diffusers: `_convert_non_diffusers_krea2_lora_to_diffusers`
_KREA2_LAYER = {"attn.to_q": "attn.wq", "attn.to_k": "attn.wk", "attn.to_v": "attn.wv",
                "attn.to_out.0": "attn.wo", "attn.to_gate": "attn.gate", "ff.gate": "mlp.gate",
                "ff.up": "mlp.up", "ff.down": "mlp.down"}
_KREA2_RENAMES = {"img_in": "first", "final_layer.linear": "last.linear",
                  "time_embed.linear_1": "tmlp.0", "time_embed.linear_2": "tmlp.2",
                  "time_mod_proj": "tproj.1", "txt_in.linear_1": "txtmlp.1",
                  "txt_in.linear_2": "txtmlp.3", "text_fusion.projector": "txtfusion.projector"}
_KREA2_BLOCK = re.compile(r"(transformer_blocks|text_fusion\.(?:layerwise|refiner)_blocks)"
                          r"\.(\d+)\.(.+)")


def _krea2(shapes: dict[str, tuple[int, ...]]) -> dict[str, list[Part]]:
    """Krea 2's original names: `blocks.N.attn.wq`, `txtfusion.refiner_blocks.N.mlp.up`,
    `first`, `tproj.1`, ... (every one a whole diffusers layer)."""
    aliases = {}
    for path in shapes:
        original = _KREA2_RENAMES.get(path)
        if (m := _KREA2_BLOCK.fullmatch(path)) and m[3] in _KREA2_LAYER:
            stack = "blocks" if m[1] == "transformer_blocks" else m[1].replace(
                "text_fusion", "txtfusion")
            original = f"{stack}.{m[2]}.{_KREA2_LAYER[m[3]]}"
        if original is not None:
            aliases[_flat(original)] = [Part(path)]
    return aliases


def _lumina2(config: dict[str, Any]) -> dict[str, list[Part]]:
    """Lumina 2's original names (Alpha-VLLM's NextDiT: ComfyUI's and diffusion-pipe's
    LoRAs): the fused attention.qkv split by rows into q and the narrower k and v,
    attention.out, feed_forward.w1-3, adaLN_modulation.1, the embedders and final layer, as
    the single-file loader renames them. diffusers:
    `_convert_non_diffusers_lumina2_lora_to_diffusers` (its split fixed at 2304 / 768)."""
    dim = config["hidden_size"]
    kv = config["num_kv_heads"] * dim // config["num_attention_heads"]
    originals = ["x_embedder", "t_embedder.mlp.0", "t_embedder.mlp.2", "cap_embedder.1",
                 "final_layer.linear", "final_layer.adaLN_modulation.1"]
    aliases = {}
    for stack, count in (("layers", config["num_layers"]),
                         ("noise_refiner", config["num_refiner_layers"]),
                         ("context_refiner", config["num_refiner_layers"])):
        for i in range(count):
            block = f"{stack}.{i}"
            originals += [f"{block}.attention.out", f"{block}.feed_forward.w1",
                          f"{block}.feed_forward.w2", f"{block}.feed_forward.w3"]
            if stack != "context_refiner":  # its blocks are unmodulated
                originals.append(f"{block}.adaLN_modulation.1")
            aliases.update(_split(f"{block}.attention.qkv", tuple(
                f"{block}.attn.{t}" for t in ("to_q", "to_k", "to_v")), (dim, kv, kv)))
    for original in originals:
        # the single-file loader's renaming, of a weight's name
        target = lumina2_file._target(f"{original}.weight").removesuffix(".weight")
        aliases[_flat(original)] = [Part(target)]
    return aliases


def dit_aliases(model: Any, shapes: dict[str, tuple[int, ...]]) -> dict[str, list[Part]]:
    """Kohya's flat name -> the parts it patches, for a FLUX, SD3, Z-Image, Lumina 2, Wan,
    Krea 2, HunyuanVideo or HunyuanImage 2.1 transformer (`shapes`: module path -> weight shape);
    empty for other models (FLUX.2's, HiDream-I1's, Kandinsky 5's, AuraFlow's). Parts whose
    module the model lacks (schnell's guidance embedder, SD3 blocks without dual attention,
    Wan 2.1 T2V's image projections) are left out."""
    config = model.config
    # FLUX.2, HiDream-I1 (whose num_single_layers is not FLUX's) and AuraFlow (whose
    # caption_projection_dim is not SD3's): no kohya names known yet
    if ("timestep_guidance_channels" in config or "llama_layers" in config
            or "num_mmdit_layers" in config):
        return {}
    if "num_single_layers" in config and "num_refiner_layers" in config:
        aliases = _hunyuan(shapes, config)  # before FLUX.1's, whose block names it shares
    elif "num_single_layers" in config:
        aliases = _flux(shapes, config)
    elif "caption_projection_dim" in config:
        aliases = _sd3(config)
    elif "cap_feat_dim" in config and "num_kv_heads" in config:
        aliases = _lumina2(config)  # before Z-Image's, whose caption width it shares
    elif "cap_feat_dim" in config:
        aliases = _zimage(config)
    elif "freq_dim" in config and "text_dim" in config:
        aliases = _wan(config)
    elif "num_layerwise_text_blocks" in config:
        aliases = _krea2(shapes)
    else:
        return {}
    return {name: parts for name, parts in aliases.items()
            if all(part.path in shapes for part in parts)}
