"""A tiny random diffusers Lumina2Pipeline built in-process and saved as a folder: lumdit's
tiny transformer (lumina2_tiny), a Gemma 2 of GEMMA2_TINY's shape with Gemma-2-2B's attention
window (4096: past the pipeline's 512 tokens, so the window never binds, as on the real
model), a Gemma-shaped tokenizer.json, a 16-channel VAE of 8x downsampling (diffusers'
Lumina2Pipeline takes 8 as given) with FLUX's scale and shift."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from flow_tiny import CORPUS
from lumina2_tiny import GEMMA2_TINY, tiny_lumina2_transformer
from sd_tiny import randomized

from diffusion.models.lumina2_prompt import SYSTEM_PROMPT

GEMMA_SPECIAL = ["<pad>", "<eos>", "<bos>", "<unk>"]  # ids 0-2 as GEMMA2_TINY says
# Lumina-Image-2.0's scheduler/scheduler_config.json: a constant shift of 6
LUMINA2_SCHEDULER: dict[str, Any] = {"num_train_timesteps": 1000, "shift": 6.0,
                                     "use_dynamic_shifting": False}


def tiny_lumina2_tokenizer(folder: Path) -> Path:
    """A Gemma-shaped tokenizer.json in `folder`: <pad>, <eos>, <bos>, <unk> as ids 0-3, a BPE
    over CORPUS and Lumina 2's system prompt with spaces as "▁", <bos> before each prompt;
    its tokenizer_config.json asks for left padding (Lumina2Pipeline pads on the right
    whatever it says)."""
    from tokenizers import Tokenizer, models, pre_tokenizers, processors
    from tokenizers.trainers import BpeTrainer

    tokenizer = Tokenizer(models.BPE(unk_token="<unk>"))
    tokenizer.pre_tokenizer = pre_tokenizers.Metaspace(prepend_scheme="never")
    tokenizer.train_from_iterator([*CORPUS, SYSTEM_PROMPT + " <Prompt Start>"] * 10,
                                  BpeTrainer(vocab_size=GEMMA2_TINY["vocab_size"],
                                             special_tokens=GEMMA_SPECIAL))
    tokenizer.post_processor = processors.TemplateProcessing(
        single="<bos> $A", special_tokens=[("<bos>", 2)])
    folder.mkdir(parents=True, exist_ok=True)
    tokenizer.save(str(folder / "tokenizer.json"))
    (folder / "tokenizer_config.json").write_text(json.dumps({
        "pad_token": "<pad>", "bos_token": "<bos>", "eos_token": "<eos>",
        "padding_side": "left", "model_max_length": 1024, "tokenizer_class": "GemmaTokenizer"}))
    return folder


def tiny_lumina2_gemma(seed: int = 7) -> Any:
    """transformers' Gemma2Model of GEMMA2_TINY with a 4096-token window, random weights (norm
    weights near 0: Gemma scales by 1 + weight)."""
    import torch
    import transformers

    config = transformers.Gemma2Config(**{**GEMMA2_TINY, "sliding_window": 4096})
    model = randomized(transformers.Gemma2Model(config), seed, scale=0.3)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "norm" in name:
                p.sub_(1.0)
    return model.eval()


def tiny_lumina2_pipeline(root: Path, name: str = "lumina-2") -> Any:
    """diffusers' Lumina2Pipeline of tiny random parts saved to `root / name`; returns it."""
    import diffusers
    import transformers

    tokens = tiny_lumina2_tokenizer(root / f"{name}-tokenizer")
    tokenizer = transformers.PreTrainedTokenizerFast(
        tokenizer_file=str(tokens / "tokenizer.json"), pad_token="<pad>", bos_token="<bos>",
        eos_token="<eos>", padding_side="left")
    vae = randomized(diffusers.AutoencoderKL(
        block_out_channels=(32,) * 4, in_channels=3, out_channels=3, latent_channels=16,
        down_block_types=("DownEncoderBlock2D",) * 4, up_block_types=("UpDecoderBlock2D",) * 4,
        norm_num_groups=32, use_quant_conv=False, use_post_quant_conv=False,
        scaling_factor=0.3611, shift_factor=0.1159), 2)
    pipe = diffusers.Lumina2Pipeline(
        transformer=tiny_lumina2_transformer(),
        scheduler=diffusers.FlowMatchEulerDiscreteScheduler(**LUMINA2_SCHEDULER),
        vae=vae, text_encoder=tiny_lumina2_gemma(), tokenizer=tokenizer)
    pipe.save_pretrained(root / name)
    # the tokenizer's own config, as Gemma's folders hold it (left padding asked)
    (tokens / "tokenizer_config.json").replace(root / name / "tokenizer" /
                                               "tokenizer_config.json")
    return pipe
