"""The bundled shapes model (diffusion/data/shapes-128, issue 9): our pipeline against diffusers,
whether its pictures show what their captions say, and the CLI's no-`--model` default.

The model is AVX_DEFAULT_MODEL_TEST when set (e.g. a freshly exported folder), else the one the
package ships. A missing model fails these tests: an installation without it is broken.

Cost on a 2-core machine with lavapipe (about 1.4 s per guided UNet step of 128 px and 3.3 s
per VAE decode): parity 12-13 s per adapter, CLI 11 s, semantics about 2.5 min (marked slow;
run it alone with `pytest tests/diffusion/pipelines/test_default_model.py -k semantics`).
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import gpucore
from diffusion import load_pipeline
from diffusion.pipelines.load import DEFAULT_MODEL, read_defaults
from tools import shapes
from tools.evaluate_default_model import mismatches, select_prompts

MODEL_ENV = "AVX_DEFAULT_MODEL_TEST"
SIZE = 128
PROMPT = "a small green square at the left on a white background"  # a seen combination


def _model_dir() -> Path:
    """The model under test; fails (not skips) saying how to provide it."""
    folder = Path(os.environ.get(MODEL_ENV) or DEFAULT_MODEL)
    if not (folder / "model_index.json").is_file():
        pytest.fail(f"no model at {folder} (no model_index.json): export the trained model "
                    "there with `python tools/train_default_model.py --ckpt CKPT --export "
                    f"{DEFAULT_MODEL}`, or set {MODEL_ENV} to a model folder", pytrace=False)
    return folder


def test_model_recommends_its_sampling_settings() -> None:
    # ~0 s. The CLI, the web page and the semantics test below start from defaults.json.
    defaults = read_defaults(_model_dir())
    assert None not in (defaults.steps, defaults.sampler, defaults.cfg_scale), (
        f"{_model_dir()}/defaults.json must set steps, sampler and cfg_scale, got {defaults}")


@pytest.fixture(scope="module")
def diffusers_reference() -> tuple[np.ndarray, np.ndarray]:
    """diffusers' 4 DDIM steps with guidance (its images and final latents) from torch-CPU
    noise, through the model's own scheduler config: computed once for every adapter's parity
    (the same inputs each time; ~4 s of CI's CPU an adapter)."""
    diffusers = pytest.importorskip("diffusers", reason="test-only reference (extra: reference)")
    import torch
    from test_sd_pipeline import _reference

    reference = _reference("txt2img", _model_dir()).to(torch.float32)  # the files' float16
    # the model's own scheduler config: v-prediction, zero-terminal-SNR betas, trailing spacing
    reference.scheduler = diffusers.DDIMScheduler.from_config(reference.scheduler.config)
    theirs: list[torch.Tensor] = []

    def keep_latents(pipe: object, step: int, t: object, tensors: dict) -> dict:
        theirs.append(tensors["latents"])
        return tensors

    expected = reference(PROMPT, num_inference_steps=4, guidance_scale=5.0, height=SIZE,
                         width=SIZE, output_type="np",
                         generator=torch.Generator("cpu").manual_seed(42),
                         callback_on_step_end=keep_latents).images
    return expected, theirs[-1].double().numpy()


@pytest.mark.filterwarnings("ignore:You have passed 2 text prompts:FutureWarning")
def test_parity_with_diffusers(device: gpucore.Device,
                               diffusers_reference: tuple[np.ndarray, np.ndarray]) -> None:
    """~10-20 s per adapter: 4 DDIM steps with guidance, ours and diffusers' (the
    `diffusers_reference` fixture's) from the same torch-CPU noise.

    Tolerance: the files hold float16 weights, which both sides widen exactly to float32 and
    compute with in float32, so what differs is float32 summation order (GPU tiles vs torch
    CPU). The final latents must agree to 1e-3 of their largest magnitude: on the stand-in
    they differ by 4e-6, while computing our side in float16 instead moves them by 4e-3, so
    the bound leaves ~200x room for a trained model's larger activations and still catches
    float16 arithmetic. The decoded images then get test_sd_pipeline's check (mean |diff|
    < 0.5 of 255 levels, max <= 4: one level where a value sits on a rounding boundary;
    measured 0.0002 and 1).
    """
    from test_sd_pipeline import _assert_images_match

    ours = load_pipeline(_model_dir(), device=device)
    latents: list[np.ndarray] = []
    result = ours.txt2img(PROMPT, steps=4, sampler="DDIM", cfg_scale=5.0, seed=42, rng="torch",
                          on_step=lambda done, total, x: latents.append(x))
    expected, want = diffusers_reference
    error = np.abs(latents[-1] - want).max() / np.abs(want).max()
    assert error < 1e-3, f"final latents differ by {error:.2e} of their largest magnitude"
    _assert_images_match(result.images, expected)


@pytest.fixture
def first_device(device: gpucore.Device) -> gpucore.Device:
    """`device` for its first adapter only: semantics are the model's, not the adapter's
    (parity shows the adapters agree), and one pass takes minutes."""
    from conftest import ADAPTERS

    if device.info.index != ADAPTERS[0].index:
        pytest.skip("the model's semantics are checked on the first adapter; parity runs on "
                    "every adapter")
    return device


SEMANTICS_PROMPTS = 4  # seen-combination prompts, 2 per template, 2 pictures (seeds) each
SEMANTICS_MISSES = 0  # disagreements allowed among the 8 pictures


@pytest.mark.slow
def test_semantics_seen_combinations_agree(first_device: gpucore.Device) -> None:
    """~1.5 min: 8 pictures (4 seen-combination prompts, both templates, 2 seeds a prompt in
    one batch: batches of 2 run ~10% faster per picture than single ones on lavapipe) with the
    model's defaults; every one must agree with its caption (shapes.measure / shapes.agrees).

    Why 8 and no miss: the model agreed on all 48 pictures seen so far (the README's 32 and
    this test's earlier 16), so its rate is >= 94% at 95% confidence (rule of three). A model
    half of whose pictures are wrong passes with probability 1/256 (0.4%), one that is right
    70% of the time with 5.8% (the bound before, 12 pictures with one miss allowed, gave
    0.3% and 8.5% for 1.5x the CI time). The test is deterministic (fixed seeds), so it
    cannot flake: it changes verdict only when the model or the pipeline changes; these 8 are
    the first 8 of the former 12 (select_prompts draws in order), which all agreed."""
    folder = _model_dir()
    pipe = load_pipeline(folder, device=first_device)
    defaults = pipe.defaults
    settings = dict(steps=defaults.steps, sampler=defaults.sampler, cfg_scale=defaults.cfg_scale)
    assert None not in settings.values(), f"{folder}/defaults.json must set {list(settings)}"
    failures, total = [], 0
    for seed, prompt in enumerate(select_prompts(9, SEMANTICS_PROMPTS), start=100):
        for index, image in enumerate(pipe.txt2img(prompt, seed=seed, batch_size=2,
                                                   **settings).images):
            total += 1
            measured = shapes.measure(image)
            if not shapes.agrees(prompt, measured):
                read = ", ".join(f"{key} {measured[key]}" for key in mismatches(prompt, measured))
                failures.append(f"{prompt!r} seed {seed} #{index}: read {read}")
    assert total == 2 * SEMANTICS_PROMPTS
    assert len(failures) <= SEMANTICS_MISSES, (
        f"{total - len(failures)}/{total} agree ({settings}); disagreeing:\n"
        + "\n".join(failures))


def test_cli_without_model_writes_a_128px_png(tmp_path: Path) -> None:
    """~12 s: `python -m diffusion txt2img --prompt ...` finds the bundled model by itself.
    2 steps (the rest from defaults.json): the picture's content is the semantics test's."""
    from PIL import Image

    from diffusion.infotext import parse_infotext, read_infotext

    folder = _model_dir()
    if not gpucore.devices():
        pytest.skip("no GPU adapter present")
    command = ["txt2img", "--prompt", PROMPT, "--steps", "2", "--seed", "7",
               "--out", str(tmp_path / "outputs")]
    if folder.resolve() == DEFAULT_MODEL.resolve():
        launch = [sys.executable, "-m", "diffusion"]
    else:  # another folder stands in for the bundled one: the same CLI, DEFAULT_MODEL moved
        launch = [sys.executable, "-c", "import pathlib, runpy, sys, diffusion.pipelines.load; "
                  "diffusion.pipelines.load.DEFAULT_MODEL = pathlib.Path(sys.argv.pop(1)); "
                  "runpy.run_module('diffusion', run_name='__main__')", str(folder)]
    result = subprocess.run([*launch, *command], capture_output=True, text=True, timeout=300,
                            check=False)
    assert result.returncode == 0, result.stderr
    written = [Path(line) for line in result.stdout.split()]
    assert len(written) == 1 and written[0].parent == tmp_path / "outputs"
    with Image.open(written[0]) as png:
        assert png.size == (SIZE, SIZE) and png.mode == "RGB"
    settings = parse_infotext(read_infotext(written[0]))
    assert settings["model"] == folder.name and settings["prompt"] == PROMPT
