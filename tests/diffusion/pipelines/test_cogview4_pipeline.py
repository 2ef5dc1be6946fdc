"""CogView4: CogView4Pipeline on gpustd against diffusers' (tiny, random, float32), with CFG,
the prompt, the negative prompt and the size conditioning visibly mattering; the schedule's
pieces against diffusers' own; what the loader refuses in one line."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

pytest.importorskip("diffusers", reason="diffusers is a test-only reference (extra: reference)")
import torch

import gpucore
from diffusion.loaders.cogview4 import cogview4_family, load_cogview4_folder
from diffusion.loaders.errors import WeightsError
from diffusion.pipelines.flow.cogview4 import CogView4Pipeline, cogview4_mu

HEIGHT, WIDTH = 32, 48  # diffusers asks multiples of 16; the tiny VAE's 2x: 8 x 12 patches
RED = "a red circle on a blue square"
HORSE = "an astronaut riding a horse"


def _diffusers(reference: Any, prompt: str, steps: int = 2, **settings: Any) -> np.ndarray:
    with torch.no_grad():
        images = reference(prompt, height=HEIGHT, width=WIDTH, num_inference_steps=steps,
                           generator=torch.Generator().manual_seed(7), output_type="np",
                           **settings).images
    return np.asarray(images[0])


def test_pipeline_is_diffusers(first_device: gpucore.Device,
                               tiny_cogview4: tuple[Path, Any]) -> None:
    """The picture with CFG and a negative prompt, and without guidance, against diffusers';
    the prompt, the negative prompt and the original size visibly matter."""
    folder, reference = tiny_cogview4
    assert cogview4_family(folder) == "cogview4"
    pipe = CogView4Pipeline.from_pretrained(folder, device=first_device)

    def ours(prompt: str, **settings: Any) -> np.ndarray:
        return pipe(prompt, height=HEIGHT, width=WIDTH, num_inference_steps=2, seed=7,
                    **settings)[0]

    guided = ours(RED, negative_prompt="blurry", guidance_scale=4.0)
    expected = _diffusers(reference, RED, negative_prompt="blurry", guidance_scale=4.0)
    # measured on lavapipe: 1.4e-5 max, 2.5e-6 mean
    np.testing.assert_allclose(guided, expected, atol=5e-5)
    plain = ours(HORSE, guidance_scale=1.0)
    np.testing.assert_allclose(plain, _diffusers(reference, HORSE, guidance_scale=1.0),
                               atol=5e-5)
    # each far past the 5e-5 match (measured mean changes: 0.031, 0.0061, 0.0050)
    for other, least in ((ours(HORSE, negative_prompt="blurry", guidance_scale=4.0), 0.01),
                         (ours(RED, negative_prompt="sharp", guidance_scale=4.0), 0.002),
                         (ours(RED, negative_prompt="blurry", guidance_scale=4.0,
                               original_size=(512, 256)), 0.002)):
        assert np.abs(other - guided).mean() > least


@pytest.mark.nodevice
def test_schedule_is_diffusers() -> None:
    """mu as CogView4Pipeline's calculate_shift gives it."""
    from cogview4_tiny import COGVIEW4_SCHEDULER
    from diffusers.pipelines.cogview4.pipeline_cogview4 import calculate_shift

    for tokens in (60, 4096, 1000):
        assert cogview4_mu(tokens, COGVIEW4_SCHEDULER) == pytest.approx(
            calculate_shift(tokens, 256, 0.25, 0.75), rel=1e-12)


@pytest.mark.nodevice
def test_loader_refuses_in_one_line(tiny_cogview4: tuple[Path, Any], tmp_path: Path) -> None:
    """Another pipeline's folder, a non-GLM text encoder: WeightsError naming the file."""
    folder, _ = tiny_cogview4
    assert cogview4_family(tmp_path) is None
    bad = tmp_path / "cogview4"
    bad.mkdir()
    for item in folder.iterdir():
        (bad / item.name).symlink_to(item)
    (bad / "text_encoder").unlink()
    (bad / "text_encoder").mkdir()
    for item in (folder / "text_encoder").iterdir():
        (bad / "text_encoder" / item.name).symlink_to(item)
    config = bad / "text_encoder" / "config.json"
    text = json.loads(config.read_text())
    config.unlink()
    config.write_text(json.dumps({**text, "model_type": "llama"}))
    with pytest.raises(WeightsError, match="model_type glm"):
        load_cogview4_folder(bad)


@pytest.mark.nodevice
def test_tiktoken_tokenizer_refused(tiny_cogview4: tuple[Path, Any], tmp_path: Path) -> None:
    """A tokenizer/ holding GLM-4-9B's tiktoken tokenizer.model and no tokenizer.json (GLM's
    own repository's form): one line naming it and where a tokenizer.json comes from."""
    folder, _ = tiny_cogview4
    bad = tmp_path / "cogview4"
    bad.mkdir()
    for item in folder.iterdir():
        if item.name != "tokenizer":
            (bad / item.name).symlink_to(item)
    (bad / "tokenizer").mkdir()
    (bad / "tokenizer" / "tokenizer.model").write_text("IQ== 0\n")
    with pytest.raises(WeightsError, match=r"tiktoken.*copy tokenizer/ from THUDM/CogView4-6B"
                       ) as raised:
        load_cogview4_folder(bad)
    assert "\n" not in str(raised.value)
