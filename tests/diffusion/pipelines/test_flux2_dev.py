"""FLUX.2 dev (diffusers' Flux2Pipeline) through the command line: the family told apart
from klein, Mistral Small 3.1's templated prompt tokenized as transformers does and its
hidden states as Mistral3ForConditionalGeneration's, diffusers' picture with `--sampler
diffusers --rng torch` at two Distilled CFG Scales (the embedded guidance) and two prompts,
each visibly mattering, and CFG refused in one line."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

pytest.importorskip("diffusers", reason="diffusers is a test-only reference (extra: reference)")
import torch
from cli_support import cli_error, cli_ok, png_pixels

import gpucore
from diffusion.loaders.flux2 import flux2_family
from diffusion.pipelines.flow.flux2_dev import SYSTEM_MESSAGE, Flux2Pipeline

COMMON = ("--width", "24", "--height", "16", "--steps", "2", "--sampler", "diffusers", "--rng",
          "torch", "--seed", "7", "--dtype", "float32")


def test_mistral_prompt_as_transformers(first_device: gpucore.Device,
                                        tiny_flux2_dev: tuple[Path, Any]) -> None:
    """Token ids and mask as the processor's chat template gives them, and the three
    stacked hidden states as Mistral3ForConditionalGeneration's."""
    from diffusers.pipelines.flux2.pipeline_flux2 import SYSTEM_MESSAGE as REFERENCE

    folder, reference = tiny_flux2_dev
    assert SYSTEM_MESSAGE == REFERENCE
    assert flux2_family(folder) == "flux2-dev"
    pipe = Flux2Pipeline.from_pretrained(folder, device=first_device)
    prompts = ["a red circle", "an astronaut [IMG]riding a horse"]
    with torch.no_grad():
        expected = reference.encode_prompt(prompts, device="cpu", max_sequence_length=192)[0]
    ours = pipe.encode_prompt(prompts, 192).numpy()
    assert ours.shape == tuple(expected.shape) == (2, 192, 120)
    reference_states = expected.numpy()
    scale = np.abs(reference_states).max()
    # float32 over 31 random layers whose stream grows to hundreds: rounding compounds
    np.testing.assert_allclose(ours, reference_states, atol=1e-3 * scale, rtol=1e-3)
    assert np.abs(ours - reference_states).mean() < 1e-5 * scale
    from diffusers.pipelines.flux2.pipeline_flux2 import format_input

    inputs = reference.tokenizer.apply_chat_template(
        format_input(prompts, REFERENCE), add_generation_prompt=False, tokenize=True,
        return_dict=True, return_tensors="np", padding="max_length", truncation=True,
        max_length=192)
    from diffusion.text.llm_tokenizer import mistral_chat_prompt

    ids, mask = pipe.tokenizer([mistral_chat_prompt(p.replace("[IMG]", ""), SYSTEM_MESSAGE)
                                for p in prompts], 192, add_special_tokens=False)
    np.testing.assert_array_equal(ids, inputs["input_ids"])
    np.testing.assert_array_equal(mask, inputs["attention_mask"])
    assert mask.sum(1).max() < 192  # the padding is in the comparison


def test_flux2_dev_from_the_cli(first_device: gpucore.Device, tiny_flux2_dev: tuple[Path, Any],
                                tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """diffusers' picture for two prompts at Distilled CFG Scales 4 and 6, the prompt and
    the scale each visibly changing it; CFG above 1 is refused in one line."""
    folder, reference = tiny_flux2_dev

    def diffusers_picture(prompt: str, guidance: float) -> np.ndarray:
        return reference(prompt=prompt, height=16, width=24, num_inference_steps=2,
                         guidance_scale=guidance, generator=torch.Generator().manual_seed(7),
                         output_type="np").images[0]

    # ours equals diffusers' for each prompt at its scale, and stands apart from diffusers'
    # picture of the other prompt, or of the other scale
    runs = {("a red circle", 4.0): "a", ("an astronaut riding a horse", 6.0): "c"}
    for (prompt, guidance), name in runs.items():
        out, _ = cli_ok(capsys, "txt2img", "--model", str(folder), "--prompt", prompt,
                        *COMMON, "--distilled-cfg-scale", str(guidance), "--out",
                        str(tmp_path / f"{name}.png"))
        ours = png_pixels(out)
        assert np.abs(ours - diffusers_picture(prompt, guidance)).mean() < 0.01
        other_scale = 10.0 - guidance
        other_prompt = next(p for p, _ in runs if p != prompt)
        assert np.abs(ours - diffusers_picture(prompt, other_scale)).mean() > 0.01
        assert np.abs(ours - diffusers_picture(other_prompt, guidance)).mean() > 0.015
    capsys.readouterr()
    assert "FLUX.2 dev runs without CFG" in cli_error(
        capsys, "txt2img", "--model", str(folder), "--prompt", "a red circle", *COMMON,
        "--cfg-scale", "3", "--out", str(tmp_path / "d.png"))
