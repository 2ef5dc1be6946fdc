"""A tiny random LTX-2 folder built in-process: diffusers' LTX2Pipeline of the tiny parts of
ltx2_text_tiny (Gemma 3, LTX-2.0's connectors, the tokenizer), ltx2_transformer_tiny (its
text as wide as the connectors', its audio tokens the audio VAE's 2 x 4 features, STG-able
self-attention), ltx2_vae_tiny (16x spatial, 8x temporal), ltx2_audio_tiny (the audio VAE and
leaky-ReLU vocoder at 24 kHz) and LTX-2's scheduler config, saved as diffusers saves it."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ltx2_audio_tiny import tiny_ltx2_audio_vae, tiny_ltx2_vocoder
from ltx2_text_tiny import tiny_connectors, tiny_gemma3_folder, tiny_gemma_tokenizer
from ltx2_transformer_tiny import tiny_ltx2_transformer
from ltx2_vae_tiny import tiny_ltx2_vae

# Lightricks/LTX-2's scheduler/scheduler_config.json
LTX2_SCHEDULER: dict[str, Any] = dict(
    base_image_seq_len=1024, base_shift=0.95, invert_sigmas=False, max_image_seq_len=4096,
    max_shift=2.05, num_train_timesteps=1000, shift=1.0, shift_terminal=0.1,
    stochastic_sampling=False, time_shift_type="exponential", use_beta_sigmas=False,
    use_dynamic_shifting=True, use_exponential_sigmas=False, use_karras_sigmas=False)


def tiny_ltx2_pipeline(root: Path, name: str = "ltx2", **transformer: Any) -> tuple[Path, Any]:
    """The tiny LTX2Pipeline saved to `root / name`; (the folder, the pipeline). `transformer`:
    overrides of its config (e.g. perturbed_attn=False)."""
    import diffusers
    import transformers

    folder = root / name
    text = tiny_gemma3_folder(root / f"{name}-gemma")
    tokens = tiny_gemma_tokenizer(root / f"{name}-tokenizer")
    tokenizer = transformers.PreTrainedTokenizerFast(
        tokenizer_file=str(tokens / "tokenizer.json"), pad_token="<pad>",
        bos_token="<bos>", eos_token="<eos>", padding_side="left")
    pipe = diffusers.LTX2Pipeline(
        scheduler=diffusers.FlowMatchEulerDiscreteScheduler(**LTX2_SCHEDULER),
        vae=tiny_ltx2_vae(), audio_vae=tiny_ltx2_audio_vae(),
        text_encoder=transformers.Gemma3ForConditionalGeneration.from_pretrained(text).eval(),
        tokenizer=tokenizer, connectors=tiny_connectors(),
        transformer=tiny_ltx2_transformer(**{
            "caption_channels": 32, "audio_in_channels": 8, "audio_out_channels": 8,
            "vae_scale_factors": (8, 16, 16), "perturbed_attn": True, **transformer}),
        vocoder=tiny_ltx2_vocoder())
    pipe.save_pretrained(folder)
    # diffusers saves the fast tokenizer's files; the folder's tokenizer.json is what we read
    return folder, pipe
