"""Tiny random FLUX / SD3 components built in-process (transformers, diffusers, tokenizers):
a T5 encoder, a T5-shaped Unigram tokenizer.json, and a whole FLUX pipeline folder."""

from __future__ import annotations

import math
from collections import Counter
from pathlib import Path
from typing import Any

from sd_tiny import CLIP_TINY, VAE_TINY, randomized, tiny_text_encoder, write_tokenizer

T5_TINY: dict[str, Any] = dict(
    vocab_size=120, d_model=32, d_kv=8, d_ff=37, num_layers=2, num_heads=4,
    feed_forward_proj="gated-gelu", relative_attention_num_buckets=8,
    relative_attention_max_distance=20, dropout_rate=0.0)
FLUX_TINY: dict[str, Any] = dict(
    patch_size=1, in_channels=16, num_layers=1, num_single_layers=1, attention_head_dim=8,
    num_attention_heads=2, joint_attention_dim=32, pooled_projection_dim=24,
    axes_dims_rope=(2, 2, 4))
CHROMA_TINY: dict[str, Any] = dict(
    patch_size=1, in_channels=16, num_layers=2, num_single_layers=2, attention_head_dim=8,
    num_attention_heads=2, joint_attention_dim=32, axes_dims_rope=(2, 2, 4),
    approximator_num_channels=16, approximator_hidden_dim=24, approximator_layers=2)
FLUX_DEV_SCHEDULER: dict[str, Any] = dict(
    base_image_seq_len=256, base_shift=0.5, max_image_seq_len=4096, max_shift=1.15,
    num_train_timesteps=1000, shift=3.0, use_dynamic_shifting=True)
CORPUS = ["a red circle on a blue background", "a photo of a cat sitting on a mat",
          "the quick brown fox jumps over the lazy dog", "an astronaut riding a horse"]


def tiny_t5(seed: int = 5) -> Any:
    import transformers

    return randomized(transformers.T5EncoderModel(transformers.T5Config(**T5_TINY)), seed)


def t5_pieces() -> list[tuple[str, float]]:
    """The Unigram pieces of CORPUS with their log-probabilities: <pad> 0, </s> 1, <unk> 2,
    each word after a space (most frequent first), the space alone, then each letter. Built,
    not trained: tokenizers' UnigramTrainer breaks ties in hash order, which differs from
    process to process, and a test asserting that a prompt matters then passed or failed with
    the draw."""
    words = Counter(word for line in CORPUS for word in line.split())
    total = sum(words.values())
    ranked = sorted(words.items(), key=lambda item: (-item[1], item[0]))
    letters = sorted({letter for word in words for letter in word})
    return [("<pad>", 0.0), ("</s>", 0.0), ("<unk>", 0.0),
            *[("\u2581" + word, math.log(count / total)) for word, count in ranked],
            ("\u2581", -10.0), *[(letter, -12.0) for letter in letters]]


def tiny_t5_tokenizer(folder: Path) -> Path:
    """A T5-shaped tokenizer.json (<pad> 0, </s> 1, <unk> 2; NFKC, Metaspace, Unigram of
    `t5_pieces()`, "$A </s>") in `folder`: the same file in every process."""
    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors

    tokenizer = Tokenizer(models.Unigram(t5_pieces(), unk_id=2))
    tokenizer.normalizer = normalizers.Sequence([normalizers.NFKC(),
                                                 normalizers.Replace("  ", " ")])
    tokenizer.pre_tokenizer = pre_tokenizers.Metaspace()
    tokenizer.decoder = decoders.Metaspace()
    tokenizer.post_processor = processors.TemplateProcessing(
        single="$A </s>", special_tokens=[("</s>", 1)])
    folder.mkdir(parents=True, exist_ok=True)
    tokenizer.save(str(folder / "tokenizer.json"))
    return folder


def tiny_flux_pipeline(root: Path, *, dev: bool) -> Any:
    """diffusers' FluxPipeline of tiny random parts (CLIP pooled 32 -> pooled_projection_dim,
    T5 d_model 32, 4-channel latents packed to 16, a VAE without quant convs and with FLUX's
    shift), saved to `root` as a diffusers folder; returns the pipeline."""
    import diffusers
    import transformers

    write_tokenizer(root / "clip-tokenizer")
    tiny_t5_tokenizer(root / "t5-tokenizer")
    clip_tokenizer = transformers.CLIPTokenizer(str(root / "clip-tokenizer" / "vocab.json"),
                                                str(root / "clip-tokenizer" / "merges.txt"),
                                                model_max_length=77)
    t5_tokenizer = transformers.T5TokenizerFast(
        tokenizer_file=str(root / "t5-tokenizer" / "tokenizer.json"))
    transformer = randomized(diffusers.FluxTransformer2DModel(
        **{**FLUX_TINY, "pooled_projection_dim": CLIP_TINY["hidden_size"]},
        guidance_embeds=dev), 7)
    vae = randomized(diffusers.AutoencoderKL(
        **VAE_TINY, use_quant_conv=False, use_post_quant_conv=False, scaling_factor=0.3611,
        shift_factor=0.1159), 2)
    scheduler = diffusers.FlowMatchEulerDiscreteScheduler(
        **(FLUX_DEV_SCHEDULER if dev else {"shift": 1.0}))
    pipe = diffusers.FluxPipeline(scheduler=scheduler, vae=vae, text_encoder=tiny_text_encoder(),
                                  tokenizer=clip_tokenizer, text_encoder_2=tiny_t5(),
                                  tokenizer_2=t5_tokenizer, transformer=transformer)
    pipe.save_pretrained(root / "flux")
    return pipe


def tiny_sd3_pipeline(root: Path, *, latent_channels: int = 4) -> Any:
    """diffusers' StableDiffusion3Pipeline of tiny random parts in SD3.5 Medium's shape
    (QK-norm, a dual-attention block): two CLIPs with projection (32 wide each, 64 pooled), a
    T5 80 wide (so the CLIP states are zero-padded by 16), 4-channel latents (16 as the real
    models': diffusers' SD3 inpainting blends only those); saved to `root / "sd3"`; returns
    the pipeline."""
    import diffusers
    import transformers

    write_tokenizer(root / "clip-tokenizer")
    tiny_t5_tokenizer(root / "t5-tokenizer")

    def clip_tokenizer() -> Any:
        folder = root / "clip-tokenizer"
        return transformers.CLIPTokenizer(str(folder / "vocab.json"), str(folder / "merges.txt"),
                                          model_max_length=77)

    def clip(seed: int) -> Any:
        config = transformers.CLIPTextConfig(**CLIP_TINY, projection_dim=32)
        return randomized(transformers.CLIPTextModelWithProjection(config), seed)

    t5 = randomized(transformers.T5EncoderModel(transformers.T5Config(
        **{**T5_TINY, "d_model": 80})), 6)
    transformer = randomized(diffusers.SD3Transformer2DModel(
        sample_size=8, patch_size=2, in_channels=latent_channels, num_layers=2,
        attention_head_dim=8, num_attention_heads=2, joint_attention_dim=80,
        caption_projection_dim=16, pooled_projection_dim=64, out_channels=latent_channels,
        pos_embed_max_size=12, qk_norm="rms_norm", dual_attention_layers=(0,)), 9)
    vae = randomized(diffusers.AutoencoderKL(
        **{**VAE_TINY, "latent_channels": latent_channels}, use_quant_conv=False,
        use_post_quant_conv=False, scaling_factor=1.5305,
        shift_factor=0.0609), 2)
    pipe = diffusers.StableDiffusion3Pipeline(
        transformer=transformer, scheduler=diffusers.FlowMatchEulerDiscreteScheduler(shift=3.0),
        vae=vae, text_encoder=clip(3), tokenizer=clip_tokenizer(), text_encoder_2=clip(4),
        tokenizer_2=clip_tokenizer(), text_encoder_3=t5,
        tokenizer_3=transformers.T5TokenizerFast(
            tokenizer_file=str(root / "t5-tokenizer" / "tokenizer.json")))
    pipe.save_pretrained(root / "sd3")
    return pipe


def bfl_checkpoint(model: Any, prefix: str, *, bf16: bool = True) -> dict[str, Any]:
    """The BFL names of a diffusers FLUX transformer's tensors (bfloat16, as BFL ships them,
    unless `bf16` is False): diffusers' single-file conversion
    (convert_flux_transformer_checkpoint_to_diffusers) run backwards."""
    import torch

    sd = model.state_dict()
    out: dict[str, Any] = {}
    renames = {"time_in.in_layer": "time_text_embed.timestep_embedder.linear_1",
               "time_in.out_layer": "time_text_embed.timestep_embedder.linear_2",
               "vector_in.in_layer": "time_text_embed.text_embedder.linear_1",
               "vector_in.out_layer": "time_text_embed.text_embedder.linear_2",
               "guidance_in.in_layer": "time_text_embed.guidance_embedder.linear_1",
               "guidance_in.out_layer": "time_text_embed.guidance_embedder.linear_2",
               "txt_in": "context_embedder", "img_in": "x_embedder",
               "final_layer.linear": "proj_out"}
    for p in ("weight", "bias"):
        for bfl, ours in renames.items():
            if f"{ours}.{p}" in sd:  # schnell has no guidance embedder
                out[f"{bfl}.{p}"] = sd[f"{ours}.{p}"]
        scale, shift = sd[f"norm_out.linear.{p}"].chunk(2)
        out[f"final_layer.adaLN_modulation.1.{p}"] = torch.cat([shift, scale])
        for i in range(model.config.num_layers):
            d = f"transformer_blocks.{i}."
            for bfl, names in (("img_attn.qkv", ("to_q", "to_k", "to_v")),
                               ("txt_attn.qkv", ("add_q_proj", "add_k_proj", "add_v_proj"))):
                out[f"double_blocks.{i}.{bfl}.{p}"] = torch.cat(
                    [sd[f"{d}attn.{n}.{p}"] for n in names])
            for bfl, ours in (("img_mod.lin", "norm1.linear"),
                              ("txt_mod.lin", "norm1_context.linear"),
                              ("img_mlp.0", "ff.net.0.proj"), ("img_mlp.2", "ff.net.2"),
                              ("txt_mlp.0", "ff_context.net.0.proj"),
                              ("txt_mlp.2", "ff_context.net.2"),
                              ("img_attn.proj", "attn.to_out.0"),
                              ("txt_attn.proj", "attn.to_add_out")):
                out[f"double_blocks.{i}.{bfl}.{p}"] = sd[f"{d}{ours}.{p}"]
        for i in range(model.config.num_single_layers):
            s = f"single_transformer_blocks.{i}."
            out[f"single_blocks.{i}.linear1.{p}"] = torch.cat(
                [sd[f"{s}attn.to_q.{p}"], sd[f"{s}attn.to_k.{p}"], sd[f"{s}attn.to_v.{p}"],
                 sd[f"{s}proj_mlp.{p}"]])
            out[f"single_blocks.{i}.linear2.{p}"] = sd[f"{s}proj_out.{p}"]
            out[f"single_blocks.{i}.modulation.lin.{p}"] = sd[f"{s}norm.linear.{p}"]
    for i in range(model.config.num_layers):
        for side, q, k in (("img", "norm_q", "norm_k"), ("txt", "norm_added_q", "norm_added_k")):
            out[f"double_blocks.{i}.{side}_attn.norm.query_norm.scale"] = \
                sd[f"transformer_blocks.{i}.attn.{q}.weight"]
            out[f"double_blocks.{i}.{side}_attn.norm.key_norm.scale"] = \
                sd[f"transformer_blocks.{i}.attn.{k}.weight"]
    for i in range(model.config.num_single_layers):
        out[f"single_blocks.{i}.norm.query_norm.scale"] = \
            sd[f"single_transformer_blocks.{i}.attn.norm_q.weight"]
        out[f"single_blocks.{i}.norm.key_norm.scale"] = \
            sd[f"single_transformer_blocks.{i}.attn.norm_k.weight"]
    return {prefix + k: (v.to(torch.bfloat16) if bf16 else v).contiguous()
            for k, v in out.items()}


def sai_checkpoint(model: Any) -> dict[str, Any]:
    """A diffusers SD3 model's tensors under Stability's names (the original MMDiT's)."""
    import torch

    sd, out = model.state_dict(), {}

    def swap(t: Any) -> Any:  # (scale, shift) <-> (shift, scale)
        return torch.cat(t.chunk(2)[::-1])

    out["pos_embed"] = sd["pos_embed.pos_embed"]
    for ours, theirs in (("pos_embed.proj", "x_embedder.proj"),
                         ("time_text_embed.timestep_embedder.linear_1", "t_embedder.mlp.0"),
                         ("time_text_embed.timestep_embedder.linear_2", "t_embedder.mlp.2"),
                         ("time_text_embed.text_embedder.linear_1", "y_embedder.mlp.0"),
                         ("time_text_embed.text_embedder.linear_2", "y_embedder.mlp.2"),
                         ("context_embedder", "context_embedder"),
                         ("proj_out", "final_layer.linear")):
        for p in ("weight", "bias"):
            out[f"{theirs}.{p}"] = sd[f"{ours}.{p}"]
    for key, value in sd.items():
        if not key.startswith("transformer_blocks."):
            continue
        i, rest = key.split(".", 2)[1:]
        block, p = f"joint_blocks.{i}.", rest.rsplit(".", 1)[1]
        names = {"norm1.linear": "x_block.adaLN_modulation.1",
                 "norm1_context.linear": "context_block.adaLN_modulation.1",
                 "attn.to_out.0": "x_block.attn.proj", "attn2.to_out.0": "x_block.attn2.proj",
                 "attn.to_add_out": "context_block.attn.proj", "ff.net.0.proj": "x_block.mlp.fc1",
                 "ff.net.2": "x_block.mlp.fc2", "ff_context.net.0.proj": "context_block.mlp.fc1",
                 "ff_context.net.2": "context_block.mlp.fc2", "attn.norm_q": "x_block.attn.ln_q",
                 "attn.norm_k": "x_block.attn.ln_k", "attn.norm_added_q": "context_block.attn.ln_q",
                 "attn.norm_added_k": "context_block.attn.ln_k",
                 "attn2.norm_q": "x_block.attn2.ln_q", "attn2.norm_k": "x_block.attn2.ln_k"}
        module = rest.rsplit(".", 1)[0]
        if module in names:
            last = int(i) == model.config.num_layers - 1
            out[block + names[module] + "." + p] = (
                swap(value) if last and module == "norm1_context.linear" else value)
        elif module in ("attn.to_q", "attn.add_q_proj", "attn2.to_q"):
            prefix = {"attn.to_q": ("x_block.attn", "attn.to_"),
                      "attn.add_q_proj": ("context_block.attn", "attn.add_"),
                      "attn2.to_q": ("x_block.attn2", "attn2.to_")}[module]
            parts = ("q", "k", "v") if "to_" in prefix[1] else ("q_proj", "k_proj", "v_proj")
            out[f"{block}{prefix[0]}.qkv.{p}"] = torch.cat(
                [sd[f"transformer_blocks.{i}.{prefix[1]}{x}.{p}"] for x in parts])
    for p in ("weight", "bias"):
        out[f"final_layer.adaLN_modulation.1.{p}"] = swap(sd[f"norm_out.linear.{p}"])
    return out


def assert_holds_bf16_of(ours: Any, reference: Any) -> None:
    """Our transformer holds exactly the torch `reference`'s tensors rounded to bfloat16 (what a
    bf16 single file carries); a copy is rounded: Module.to works in place, and the module's
    fixture serves other tests."""
    import copy

    import numpy as np
    import torch

    expected = copy.deepcopy(reference).to(torch.bfloat16).to(torch.float32).state_dict()
    got = ours.state_dict()
    assert sorted(got) == sorted(expected)
    for key, value in expected.items():
        np.testing.assert_array_equal(got[key], value.numpy(), err_msg=key)


def tiny_chroma_pipeline(root: Path) -> Any:
    """diffusers' ChromaPipeline of tiny random parts (T5 d_model 32, CHROMA_TINY, 4-channel
    latents packed to 16, FLUX's VAE shift and scale, FLUX dev's shifting scheduler), saved
    to `root / "chroma"` as a diffusers folder; returns the pipeline. Its context embedder is
    scaled up so that the prompt visibly matters to a random transformer."""
    import diffusers
    import torch
    import transformers

    tiny_t5_tokenizer(root / "t5-tokenizer")
    tokenizer = transformers.T5TokenizerFast(
        tokenizer_file=str(root / "t5-tokenizer" / "tokenizer.json"))
    transformer = randomized(diffusers.ChromaTransformer2DModel(**CHROMA_TINY), 7)
    with torch.no_grad():
        transformer.context_embedder.weight.mul_(4)
    vae = randomized(diffusers.AutoencoderKL(
        **VAE_TINY, use_quant_conv=False, use_post_quant_conv=False, scaling_factor=0.3611,
        shift_factor=0.1159), 2)
    pipe = diffusers.ChromaPipeline(
        scheduler=diffusers.FlowMatchEulerDiscreteScheduler(**FLUX_DEV_SCHEDULER), vae=vae,
        text_encoder=tiny_t5(), tokenizer=tokenizer, transformer=transformer)
    pipe.save_pretrained(root / "chroma")
    return pipe


def chroma_checkpoint(model: Any, prefix: str) -> dict[str, Any]:
    """The original names of a diffusers Chroma transformer's tensors (as
    `chroma-unlocked-v50.safetensors` has them): diffusers' single-file conversion
    (convert_chroma_transformer_checkpoint_to_diffusers) run backwards."""
    import torch

    sd = {k: v.clone().contiguous() for k, v in model.state_dict().items()}
    out: dict[str, Any] = {}
    for key, value in sd.items():
        if key.startswith("distilled_guidance_layer.norms."):
            out[key.replace(".weight", ".scale")] = value
        elif key.startswith("distilled_guidance_layer."):
            out[key.replace("linear_1", "in_layer").replace("linear_2", "out_layer")] = value
    for ours, original in (("context_embedder", "txt_in"), ("x_embedder", "img_in"),
                           ("proj_out", "final_layer.linear")):
        for p in ("weight", "bias"):
            out[f"{original}.{p}"] = sd[f"{ours}.{p}"]
    for i in range(model.config.num_layers):
        d, o = f"transformer_blocks.{i}.", f"double_blocks.{i}."
        for p in ("weight", "bias"):
            for side, names in (("img", ("to_q", "to_k", "to_v")),
                                ("txt", ("add_q_proj", "add_k_proj", "add_v_proj"))):
                out[f"{o}{side}_attn.qkv.{p}"] = torch.cat([sd[f"{d}attn.{n}.{p}"]
                                                            for n in names])
            out[f"{o}img_attn.proj.{p}"] = sd[f"{d}attn.to_out.0.{p}"]
            out[f"{o}txt_attn.proj.{p}"] = sd[f"{d}attn.to_add_out.{p}"]
            for side, ff in (("img", "ff"), ("txt", "ff_context")):
                out[f"{o}{side}_mlp.0.{p}"] = sd[f"{d}{ff}.net.0.proj.{p}"]
                out[f"{o}{side}_mlp.2.{p}"] = sd[f"{d}{ff}.net.2.{p}"]
        for side, q, k in (("img", "norm_q", "norm_k"), ("txt", "norm_added_q", "norm_added_k")):
            out[f"{o}{side}_attn.norm.query_norm.scale"] = sd[f"{d}attn.{q}.weight"]
            out[f"{o}{side}_attn.norm.key_norm.scale"] = sd[f"{d}attn.{k}.weight"]
    for i in range(model.config.num_single_layers):
        s, o = f"single_transformer_blocks.{i}.", f"single_blocks.{i}."
        for p in ("weight", "bias"):
            out[f"{o}linear1.{p}"] = torch.cat([sd[f"{s}attn.to_q.{p}"], sd[f"{s}attn.to_k.{p}"],
                                               sd[f"{s}attn.to_v.{p}"], sd[f"{s}proj_mlp.{p}"]])
            out[f"{o}linear2.{p}"] = sd[f"{s}proj_out.{p}"]
        out[f"{o}norm.query_norm.scale"] = sd[f"{s}attn.norm_q.weight"]
        out[f"{o}norm.key_norm.scale"] = sd[f"{s}attn.norm_k.weight"]
    return {prefix + k: v for k, v in out.items()}


def chroma_picture(pipe: Any, prompt: str, negative: str, *, seed: int, steps: int, cfg: float,
                   length: int) -> Any:
    """diffusers' ChromaPipeline picture (24 x 16, float HxWx3) with its prompt masks made
    boolean (it passes them as float 0 / 1, which torch adds to the attention scores)."""
    import torch

    embeds, _, mask, negative_embeds, _, negative_mask = pipe.encode_prompt(
        prompt, negative_prompt=negative, device="cpu", max_sequence_length=length,
        do_classifier_free_guidance=cfg > 1)
    return pipe(prompt_embeds=embeds, prompt_attention_mask=mask.bool(),
                negative_prompt_embeds=negative_embeds,
                negative_prompt_attention_mask=None if negative_mask is None
                else negative_mask.bool(), height=16, width=24, num_inference_steps=steps,
                guidance_scale=cfg, generator=torch.Generator().manual_seed(seed),
                max_sequence_length=length, output_type="np").images[0]
