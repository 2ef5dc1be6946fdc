"""LTX-2 text to video with First Block Cache against diffusers' LTX2Pipeline with its own
FirstBlockCache hook on the tiny random pipeline (three transformer blocks), at diffusers'
default guidance with STG: each pass (CFG's batch, STG's, modality guidance's) its own cache
state, as diffusers' cache contexts make them; the same calls computed and skipped, the same
frames and waveform. diffusers registers no LTX-2 block with its hooks; the test registers
LTX2VideoTransformerBlock as a two-stream block whose second stream is the audio (the hook
reads that stream by the name `encoder_hidden_states`, pointed at `audio_hidden_states`)."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import numpy as np
import pytest

pytest.importorskip("diffusers", reason="diffusers is a test-only reference (extra: reference)")
import torch
from cli_support import cli_ok
from diffusers.hooks import FirstBlockCacheConfig, apply_first_block_cache
from diffusers.hooks._helpers import TransformerBlockMetadata, TransformerBlockRegistry
from diffusers.models.transformers.transformer_ltx2 import LTX2VideoTransformerBlock
from first_block_cache_ref import diffusers_decisions
from ltx2_pipeline_tiny import tiny_ltx2_pipeline

import gpucore
from diffusion.models import step_cache
from diffusion.models.step_cache import CacheSpec, StepCache
from diffusion.pipelines.video.ltx2 import LTX2Pipeline
from diffusion.pipelines.video.ltx2_guidance import LTX2Guidance

CAT = "a cat walks on the beach"
STEPS = 4
SIZE = {"height": 32, "width": 64, "num_frames": 9, "num_inference_steps": STEPS,
        "max_sequence_length": 32}
STG = (1,)
THRESHOLD = 0.9  # a random tiny model's residuals move far more than a trained one's
# float32, measured: frames 3e-6 max, waveform 4.2e-7 max (the uncached run's: 3.9e-6, 1.9e-6)
FRAMES_MAX, AUDIO_MAX = 2e-5, 1e-5


class _AudioSecond(TransformerBlockMetadata):
    """An LTX-2 block's streams for the hook: the video, then the audio."""

    def _get_parameter_from_args_kwargs(self, identifier: str, args: Any = (),
                                        kwargs: Any = None) -> Any:
        name = "audio_hidden_states" if identifier == "encoder_hidden_states" else identifier
        return super()._get_parameter_from_args_kwargs(name, args, kwargs)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Any]:
    return tiny_ltx2_pipeline(tmp_path_factory.mktemp("ltx2cache"), num_layers=3)


def test_first_block_cache_equals_diffusers(first_device: gpucore.Device,
                                            tiny: tuple[Path, Any],
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    threshold = THRESHOLD
    folder, reference = tiny
    pipe = LTX2Pipeline.from_pretrained(folder)
    settings = {"guidance": LTX2Guidance(stg_blocks=STG), "seed": 7, **SIZE}
    plain = pipe(CAT, **settings)
    # ours through the cache, each call's decision recorded (True: the blocks computed)
    decisions: list[bool] = []
    run = step_cache.FirstBlockCache.run

    def recorded(self: Any, *args: Any, **kwargs: Any) -> Any:
        before = self.computed
        out = run(self, *args, **kwargs)
        decisions.append(self.computed > before)
        return out

    monkeypatch.setattr(step_cache.FirstBlockCache, "run", recorded)
    cache = StepCache(CacheSpec("fbc", threshold), STEPS)
    ours = pipe(CAT, cache=cache, **settings)
    # diffusers' pipeline with its hook
    expected_decisions = diffusers_decisions(monkeypatch)
    TransformerBlockRegistry._register()
    monkeypatch.setitem(TransformerBlockRegistry._registry, LTX2VideoTransformerBlock,
                        _AudioSecond(return_hidden_states_index=0,
                                     return_encoder_hidden_states_index=1,
                                     _cls=LTX2VideoTransformerBlock))
    apply_first_block_cache(reference.transformer, FirstBlockCacheConfig(threshold=threshold))
    with torch.no_grad():
        video, audio = reference(CAT, generator=torch.Generator().manual_seed(7),
                                 output_type="np", return_dict=False,
                                 spatio_temporal_guidance_blocks=list(STG), **SIZE)
    assert decisions == expected_decisions and len(decisions) == 3 * STEPS
    assert 0 < sum(decisions) < len(decisions)  # some calls skipped, some computed
    assert cache.summary() == f"fbc {threshold:g}, {sum(decisions)}/{3 * STEPS} model " \
                              "calls computed"
    frames_error = np.abs(ours.frames[0] - np.asarray(video[0])).max()
    audio_error = np.abs(ours.audio[0] - audio[0].numpy()).max()
    assert frames_error < FRAMES_MAX and audio_error < AUDIO_MAX, (frames_error, audio_error)
    # the skips visibly change the video and the audio
    assert np.abs(ours.frames - plain.frames).mean() > 1e-3
    assert np.abs(ours.audio - plain.audio).mean() > 1e-3
    with pytest.raises(ValueError, match="LTX-2 runs First Block Cache"):
        pipe(CAT, cache=StepCache(CacheSpec("teacache", 0.2), STEPS), **settings)


def test_txt2vid_cache(first_device: gpucore.Device, tiny: tuple[Path, Any], tmp_path: Path,
                       capsys: pytest.CaptureFixture[str]) -> None:
    """`txt2vid --cache fbc:T` runs the cache and says how many model calls it computed."""
    _, err = cli_ok(capsys, "txt2vid", "--model", str(tiny[0]), "--width", "64", "--height",
                    "32", "--frames", "9", "--steps", str(STEPS), "--seed", "7", "--dtype",
                    "float32", "--stg-blocks", "1", "--prompt", CAT, "--cache",
                    f"fbc:{THRESHOLD:g}", "-o", str(tmp_path / "cat.webp"))
    assert re.search(rf"cache: fbc {THRESHOLD:g}, \d+/{3 * STEPS} model calls computed", err)
