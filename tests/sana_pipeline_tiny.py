"""Tiny random diffusers SanaPipeline / SanaSprintPipeline folders built in-process: sanadit's
tiny transformers (sana_tiny), sanavae's tiny DC-AE (dc_ae_tiny, 4x downsampling), a Gemma 2
of GEMMA2_TINY's layers 24 wide (the tiny transformer's caption_channels) with Gemma-2-2B's
4096-token window (past the instruction and prompt, as on the real model), a Gemma-shaped
tokenizer.json, and the released folders' schedulers: Sana's DPM-Solver++ on flow sigmas
(flow_shift 3) and Sprint's SCM."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from dc_ae_tiny import tiny_dc_ae
from flow_tiny import CORPUS
from lumina2_tiny import GEMMA2_TINY
from sana_tiny import SANA_SPRINT_TINY, tiny_sana_transformer
from sd_tiny import randomized

from diffusion.models.sana_prompt import COMPLEX_HUMAN_INSTRUCTION

GEMMA_SPECIAL = ["<pad>", "<eos>", "<bos>", "<unk>"]  # ids 0-2 as GEMMA2_TINY says
SANA_GEMMA2: dict[str, Any] = dict(GEMMA2_TINY, hidden_size=24, vocab_size=400,
                                   sliding_window=4096)
# Sana_1600M_1024px_diffusers' scheduler/scheduler_config.json (its fields that matter)
SANA_SCHEDULER: dict[str, Any] = dict(
    algorithm_type="dpmsolver++", solver_order=2, solver_type="midpoint",
    prediction_type="flow_prediction", use_flow_sigmas=True, flow_shift=3.0,
    final_sigmas_type="zero", lower_order_final=True, timestep_spacing="linspace",
    beta_schedule="linear", beta_start=0.0001, beta_end=0.02, num_train_timesteps=1000)


def tiny_sana_tokenizer(folder: Path) -> Path:
    """A Gemma-shaped tokenizer.json in `folder`: <pad>, <eos>, <bos>, <unk> as ids 0-3, a BPE
    of 400 pieces over CORPUS and Sana's instruction with spaces as "▁", <bos> before each
    text; its tokenizer_config.json asks for left padding (SanaPipeline pads on the right
    whatever it says)."""
    from tokenizers import Tokenizer, models, pre_tokenizers, processors
    from tokenizers.trainers import BpeTrainer

    tokenizer = Tokenizer(models.BPE(unk_token="<unk>"))
    tokenizer.pre_tokenizer = pre_tokenizers.Metaspace(prepend_scheme="never")
    tokenizer.train_from_iterator([*CORPUS, "\n".join(COMPLEX_HUMAN_INSTRUCTION)] * 10,
                                  BpeTrainer(vocab_size=SANA_GEMMA2["vocab_size"],
                                             special_tokens=GEMMA_SPECIAL))
    tokenizer.post_processor = processors.TemplateProcessing(
        single="<bos> $A", special_tokens=[("<bos>", 2)])
    folder.mkdir(parents=True, exist_ok=True)
    tokenizer.save(str(folder / "tokenizer.json"))
    (folder / "tokenizer_config.json").write_text(json.dumps({
        "pad_token": "<pad>", "bos_token": "<bos>", "eos_token": "<eos>",
        "padding_side": "left", "model_max_length": 8192, "tokenizer_class": "GemmaTokenizer"}))
    return folder


def tiny_sana_gemma(seed: int = 7) -> Any:
    """transformers' Gemma2Model of SANA_GEMMA2, random weights (norm weights near 0: Gemma
    scales by 1 + weight)."""
    import torch
    import transformers

    model = randomized(transformers.Gemma2Model(transformers.Gemma2Config(**SANA_GEMMA2)),
                       seed, scale=0.3)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "norm" in name:
                p.sub_(1.0)
    return model.eval()


def tiny_sana_pipeline(root: Path, name: str = "sana", *, sprint: bool = False,
                       **overrides: Any) -> Any:
    """diffusers' SanaPipeline (`sprint`: SanaSprintPipeline, the transformer with q/k norms
    and the guidance embedding, the SCM scheduler) of tiny random parts saved to
    `root / name`, the transformer's config changed by `overrides` (sample_size 16: one
    diffusers has resolution bins for); returns it."""
    import diffusers
    import transformers

    tokens = tiny_sana_tokenizer(root / f"{name}-tokenizer")
    tokenizer = transformers.GemmaTokenizerFast(
        tokenizer_file=str(tokens / "tokenizer.json"), pad_token="<pad>", bos_token="<bos>",
        eos_token="<eos>", padding_side="left")
    parts = dict(vae=tiny_dc_ae(), text_encoder=tiny_sana_gemma(), tokenizer=tokenizer)
    if sprint:
        pipe = diffusers.SanaSprintPipeline(
            transformer=tiny_sana_transformer(**{**SANA_SPRINT_TINY, **overrides}),
            scheduler=diffusers.SCMScheduler(), **parts)
    else:
        pipe = diffusers.SanaPipeline(
            transformer=tiny_sana_transformer(**overrides),
            scheduler=diffusers.DPMSolverMultistepScheduler(**SANA_SCHEDULER), **parts)
    pipe.save_pretrained(root / name)
    (tokens / "tokenizer_config.json").replace(root / name / "tokenizer" /
                                               "tokenizer_config.json")
    return pipe
