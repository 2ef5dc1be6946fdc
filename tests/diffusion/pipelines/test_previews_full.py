"""The "Full" live preview on tiny random models (SD 1.x and SD3, a flow family): the server's
step observer draws, on each preview step, the model's own VAE decode of the sampler's
prediction of the clean latents (x0, not the noisy latents), as the WebUI does; that decode
of the final latents is the pipeline's picture bitwise, and the last step's preview (Euler
lands on its x0) is it to within a unit; the job's picture is the one it makes without
previews. DDIM, a timestep sampler, reports each step's x0 too."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import numpy as np
import pytest

pytest.importorskip("diffusers", reason="diffusers is a test-only reference (extra: reference)")

import gpucore
from diffusion.pipelines.load import load_pipeline
from diffusion.pipelines.observer import Observer
from diffusion.server.jobs.slots import Slot, SlotObserver
from diffusion.server.previews import Previews


class _Watch(SlotObserver):
    """The server's observer, keeping each step's latents, x0 and preview."""

    def __init__(self, slot: Slot, previews: Previews) -> None:
        super().__init__(threading.Lock(), slot, previews)
        self.seen: list[tuple[np.ndarray, np.ndarray | None, np.ndarray | None]] = []

    def on_step(self, done: int, total: int, latents: np.ndarray) -> None:
        super().on_step(done, total, latents)
        self.seen.append((np.array(latents, copy=True), self.x0, self.slot.picture))


def _sd1(root: Path) -> Path:
    from sd_tiny import write_pipeline

    return write_pipeline(root / "tiny")


def _sd3(root: Path) -> Path:
    from flow_tiny import tiny_sd3_pipeline

    tiny_sd3_pipeline(root)
    return root / "sd3"


# (the writer, the dtype its family hands the final latents to its decode in)
@pytest.mark.parametrize("write,final", [(_sd1, np.float64), (_sd3, np.float32)],
                         ids=["sd1", "sd3"])
def test_full_preview_decodes_the_predicted_x0(first_device: gpucore.Device, tmp_path: Path,
                                                write: Any, final: Any) -> None:
    model = load_pipeline(write(tmp_path), device=first_device)
    if hasattr(model, "max_sequence_length"):
        model.max_sequence_length = 32  # T5's attention over 256 tokens would be slow here
    previews = Previews()
    previews.configure({"show_progress_type": "Full", "show_progress_every_n_steps": 1})
    slot = Slot(0, first_device)
    slot.pipe = model
    watch = _Watch(slot, previews)
    settings = {"prompt": "a red circle", "negative_prompt": "a blue square", "width": 24,
                "height": 40, "steps": 3, "seed": 5, "sampler": "Euler", "cfg_scale": 4.0}
    picture = model.generate(**settings, observer=watch).images[0]
    # decoding between the steps leaves the job's picture as it is without previews
    np.testing.assert_array_equal(model.generate(**settings).images[0], picture)
    assert len(watch.seen) == 3 and watch.decode is not None
    for latents, x0, preview in watch.seen:
        assert x0 is not None and x0.shape == latents[:1].shape
        assert preview is not None and preview.shape == picture.shape
        np.testing.assert_array_equal(preview, np.asarray(watch.decode(x0)[0]))
    # x0 is the model's prediction, not the noisy latents: far apart on the first step
    first, x0, _ = watch.seen[0]
    assert np.abs(first[:1] - x0).max() > 0.01 * np.abs(x0).max()
    # the final latents through the preview are the picture; Euler's last step lands on x0
    last, x0, preview = watch.seen[-1]
    np.testing.assert_array_equal(previews.picture(last.astype(final), latent_space="",
                                                   device=first_device, decode=watch.decode),
                                  picture)
    np.testing.assert_allclose(last[:1], x0, atol=1e-5 * float(np.abs(x0).max()))
    assert np.abs(preview.astype(int) - picture.astype(int)).max() <= 1
    # the picture shows the latents: the first step's preview is another picture
    assert np.abs(watch.seen[0][2].astype(int) - picture.astype(int)).max() > 8



class _Record(Observer):
    """Each step's latents with the x0 reported before it."""

    def __init__(self) -> None:
        self.x0: np.ndarray | None = None
        self.seen: list[tuple[np.ndarray, np.ndarray | None]] = []

    def on_denoised(self, x0: np.ndarray) -> None:
        self.x0 = np.array(x0, copy=True)

    def on_step(self, done: int, total: int, latents: np.ndarray) -> None:
        self.seen.append((np.array(latents, copy=True), self.x0))
        self.x0 = None


def test_ddim_reports_each_steps_x0(first_device: gpucore.Device, tmp_path: Path) -> None:
    # (the x0 of DDIM, PLMS and UniPC against numpy, and the latents left bitwise as they are,
    # are tests/diffusion/sampling/schedulers/test_x0_previews.py's; this is the pipeline's
    # wiring of them to the observer)
    model = load_pipeline(_sd1(tmp_path), device=first_device)
    record = _Record()
    model.generate(prompt="a red circle", width=24, height=40, steps=3, seed=5,
                   sampler="DDIM", cfg_scale=4.0, observer=record)
    assert len(record.seen) == 3
    for latents, x0 in record.seen:
        assert x0 is not None and x0.shape == latents.shape
    first, x0 = record.seen[0]  # the model's prediction, not the step's latents
    assert x0 is not None and np.abs(first - x0).max() > 0.1 * np.abs(x0).max()
