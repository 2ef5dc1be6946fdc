"""What Tencent's original HunyuanImage 2.1, HunyuanVideo 1.5 and HunyuanVideo (1.0)
transformer checkpoints share, in diffusers' names: the text refiner (`txt_in.`: its fused
`self_attn_qkv` split by rows), the ByT5 glyph projection (`byt5_in.`), the time embedding
(`time_in.`, meanflow's `time_r_in.`), the final layer (its adaLN's (shift, scale) halves to
be read swapped into diffusers' (scale, shift): SwappedHalvesWeights), the double blocks,
whose projections are read split (`img_attn_q`: what diffusers' converters read) or fused
(`img_attn_qkv`: what Tencent's tensor-parallel conversion splits), and the single blocks
(HunyuanImage 2.1's and HunyuanVideo's; `linear1` likewise). diffusers: scripts/
convert_hunyuan_image_to_diffusers.py, convert_hunyuan_video1_5_to_diffusers.py and
convert_hunyuan_video_to_diffusers.py."""

from __future__ import annotations

from ..weights import TensorFile, TensorRef
from .dit_keys import key_of, split_rows

__all__ = ["FINAL_ADALN", "OPTIONAL", "RENAMES", "double_refs", "fused_or_split", "refiner_refs",
           "renamed_refs", "single_refs", "whole_ref"]

FINAL_ADALN = "norm_out.linear"  # the original's final_layer.adaLN_modulation.1, swapped
# original -> diffusers, outside the blocks (each .weight and .bias); the time embedding's
# diffusers module is the model's (HunyuanImage: time_guidance_embed, HunyuanVideo 1.5:
# time_embed): "{time}"
RENAMES = {
    "byt5_in.layernorm": "context_embedder_2.norm", "byt5_in.fc1": "context_embedder_2.linear_1",
    "byt5_in.fc2": "context_embedder_2.linear_2", "byt5_in.fc3": "context_embedder_2.linear_3",
    "img_in.proj": "x_embedder.proj", "txt_in.input_embedder": "context_embedder.proj_in",
    "txt_in.t_embedder.mlp.0": "context_embedder.time_text_embed.timestep_embedder.linear_1",
    "txt_in.t_embedder.mlp.2": "context_embedder.time_text_embed.timestep_embedder.linear_2",
    "txt_in.c_embedder.linear_1": "context_embedder.time_text_embed.text_embedder.linear_1",
    "txt_in.c_embedder.linear_2": "context_embedder.time_text_embed.text_embedder.linear_2",
    "time_in.mlp.0": "{time}.timestep_embedder.linear_1",
    "time_in.mlp.2": "{time}.timestep_embedder.linear_2",
    "time_r_in.mlp.0": "{time}.timestep_embedder_r.linear_1",
    "time_r_in.mlp.2": "{time}.timestep_embedder_r.linear_2",
    "final_layer.linear": "proj_out", "final_layer.adaLN_modulation.1": FINAL_ADALN,
}
OPTIONAL = ("byt5_in.", "time_r_in.")  # the glyph and meanflow parts, where a model has them
_REFINER = {"norm1": "norm1", "norm2": "norm2", "self_attn_proj": "attn.to_out.0",
            "mlp.fc1": "ff.net.0.proj", "mlp.fc2": "ff.net.2",
            "adaLN_modulation.1": "norm_out.linear"}
_DOUBLE = {"img_mod.linear": "norm1.linear", "txt_mod.linear": "norm1_context.linear",
           "img_attn_proj": "attn.to_out.0", "txt_attn_proj": "attn.to_add_out",
           "img_mlp.fc1": "ff.net.0.proj", "img_mlp.fc2": "ff.net.2",
           "txt_mlp.fc1": "ff_context.net.0.proj", "txt_mlp.fc2": "ff_context.net.2"}
_DOUBLE_NORMS = {"img_attn_q_norm": "attn.norm_q", "img_attn_k_norm": "attn.norm_k",
                 "txt_attn_q_norm": "attn.norm_added_q", "txt_attn_k_norm": "attn.norm_added_k"}
_SINGLE_SPLIT = ("attn.to_q", "attn.to_k", "attn.to_v", "proj_mlp")
_DOUBLE_QKV = {"img_attn": ("attn.to_q", "attn.to_k", "attn.to_v"),
               "txt_attn": ("attn.add_q_proj", "attn.add_k_proj", "attn.add_v_proj")}


def whole_ref(file: TensorFile, prefix: str, source: str, what: str) -> TensorRef:
    """A ref to the file's tensor `source` (under `prefix`); WeightsError naming `what`
    where it is missing."""
    name = key_of(file, prefix, source, what)
    return TensorRef(file, name, file.shape(name))


def fused_or_split(file: TensorFile, prefix: str, fused: str, parts: tuple[str, ...],
                   targets: tuple[str, ...], sizes: tuple[int, ...], what: str
                   ) -> dict[str, TensorRef]:
    """Refs of `targets`: row ranges (`sizes`) of tensor `fused` where the file has it, else
    the tensors `parts` whole."""
    if prefix + fused in file:
        return split_rows(file, key_of(file, prefix, fused, what), targets, sizes)
    return {t: whole_ref(file, prefix, p, what) for p, t in zip(parts, targets)}


def refiner_refs(file: TensorFile, prefix: str, dim: int, refiners: int, what: str
                 ) -> dict[str, TensorRef]:
    """The text refiner's blocks (`txt_in.individual_token_refiner.blocks.N.`) under
    diffusers' `context_embedder.token_refiner.refiner_blocks.N.` names."""
    refs: dict[str, TensorRef] = {}
    for p in ("weight", "bias"):
        for i in range(refiners):
            src, dst = f"txt_in.individual_token_refiner.blocks.{i}.", \
                f"context_embedder.token_refiner.refiner_blocks.{i}."
            for source, target in _REFINER.items():
                refs[f"{dst}{target}.{p}"] = whole_ref(file, prefix, f"{src}{source}.{p}", what)
            refs.update(split_rows(file, key_of(file, prefix, f"{src}self_attn_qkv.{p}", what),
                                   tuple(f"{dst}attn.to_{x}.{p}" for x in "qkv"), (dim,) * 3))
    return refs


def double_refs(file: TensorFile, prefix: str, dim: int, doubles: int, what: str
                ) -> dict[str, TensorRef]:
    """The double blocks (`double_blocks.N.`) under diffusers' `transformer_blocks.N.`
    names, their q/k/v fused or split."""
    refs: dict[str, TensorRef] = {}
    for i in range(doubles):
        src, dst = f"double_blocks.{i}.", f"transformer_blocks.{i}."
        for p in ("weight", "bias"):
            for source, target in _DOUBLE.items():
                refs[f"{dst}{target}.{p}"] = whole_ref(file, prefix, f"{src}{source}.{p}", what)
            for stream, targets in _DOUBLE_QKV.items():
                refs.update(fused_or_split(
                    file, prefix, f"{src}{stream}_qkv.{p}",
                    tuple(f"{src}{stream}_{x}.{p}" for x in "qkv"),
                    tuple(f"{dst}{t}.{p}" for t in targets), (dim,) * 3, what))
        for source, target in _DOUBLE_NORMS.items():
            refs[f"{dst}{target}.weight"] = whole_ref(file, prefix, f"{src}{source}.weight",
                                                      what)
    return refs


def single_refs(file: TensorFile, prefix: str, dim: int, singles: int, what: str
                ) -> dict[str, TensorRef]:
    """The single blocks (`single_blocks.N.`) under diffusers' `single_transformer_blocks.N.`
    names: `linear1` (q, k, v and the MLP's input stacked) split by rows or read split
    (`linear1_q` ... `linear1_mlp`), `linear2` bare or as `linear2.fc`."""
    refs: dict[str, TensorRef] = {}
    for i in range(singles):
        src, dst = f"single_blocks.{i}.", f"single_transformer_blocks.{i}."
        for p in ("weight", "bias"):
            refs[f"{dst}norm.linear.{p}"] = whole_ref(file, prefix, f"{src}modulation.linear.{p}",
                                                      what)
            out = f"{src}linear2.fc.{p}" if prefix + f"{src}linear2.fc.{p}" in file \
                else f"{src}linear2.{p}"
            refs[f"{dst}proj_out.{p}"] = whole_ref(file, prefix, out, what)
            fused = f"{src}linear1.{p}"
            mlp = (file.shape(prefix + fused)[0] - 3 * dim if prefix + fused in file
                   else whole_ref(file, prefix, f"{src}linear1_mlp.{p}", what).shape[0])
            refs.update(fused_or_split(
                file, prefix, fused, tuple(f"{src}linear1_{x}.{p}" for x in ("q", "k", "v", "mlp")),
                tuple(f"{dst}{t}.{p}" for t in _SINGLE_SPLIT), (dim, dim, dim, mlp), what))
        for x in "qk":
            refs[f"{dst}attn.norm_{x}.weight"] = whole_ref(file, prefix,
                                                           f"{src}{x}_norm.weight", what)
    return refs


def renamed_refs(file: TensorFile, prefix: str, renames: dict[str, str],
                 optional: tuple[str, ...], time: str, what: str) -> dict[str, TensorRef]:
    """The tensors outside the blocks (`renames`: original -> diffusers, each .weight and
    .bias; those starting with an `optional` prefix where the file has them), "{time}"
    standing for the model's time embedding module."""
    refs: dict[str, TensorRef] = {}
    for p in ("weight", "bias"):
        for source, target in renames.items():
            if source.startswith(optional) and prefix + f"{source}.{p}" not in file:
                continue
            refs[f"{target.format(time=time)}.{p}"] = whole_ref(file, prefix, f"{source}.{p}",
                                                               what)
    return refs
