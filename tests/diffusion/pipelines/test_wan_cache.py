"""First Block Cache for Wan (`txt2vid --cache fbc:T`): a tiny WanPipeline folder's frames equal
diffusers' WanPipeline with `transformer.enable_cache(FirstBlockCacheConfig(T))` at a threshold
where some model calls are skipped and some computed (the skips visibly change the video), each
of CFG's prompt and negative prompt cached apart as diffusers' `cache_context("cond")` /
`("uncond")`; Wan 2.2 A14B's two experts each with their own caches; TeaCache (`teacache:T`)
and its retention mode (`teacache-ret:T`) equal to TeaCache4Wan2.1's code written around
diffusers' pipeline; on Wan VACE, First Block Cache with the hints inside the blocks equal to
diffusers' WanVACEPipeline with that rule laid over its transformer by hand; bad settings
refused in one line."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import numpy as np
import pytest

pytest.importorskip("diffusers", reason="diffusers is a test-only reference (extra: reference)")
import torch
from cli_support import png_frames
from wan_tiny import tiny_wan_a14b_pipeline, tiny_wan_pipeline

import diffusion.cli.main as cli
import gpucore

RED = "a red cube on a wooden table"
SIZE = dict(height=32, width=48, num_frames=5)
# four steps of the tiny model at threshold 1.3: the first block's residual moves by a relative
# 1.07 (prompt) and 1.10 (negative prompt) from step 0 to 1 (both skipped), then 1.57 and 1.55
# (computed), then past 1.3 again (computed): 6 of 8 calls
THRESHOLD, STEPS = 1.3, 4
# TeaCache: six steps, the time embedding's bias raised by 10 so that it moves by a relative
# 0.05-0.09 a step, which the 1.3B's polynomial makes 0.067, 0.123, 0.132, 0.225: at 0.16
# steps 1 and 3 are skipped (in each branch), 0, 2, 4 and 5 computed
TEA_THRESHOLD, TEA_STEPS = 0.16, 6
# its retention mode: eight steps, the projection moving by a relative 0.064, 0.092, 0.092
# at steps 5, 6, 7, which the 1.3B's retention polynomial makes 0.209, 0.190, 0.186: at 0.3
# steps 5 and 7 (the last, which retention does not force) are skipped, 0-4 and 6 computed
RET_THRESHOLD, RET_STEPS = 0.3, 8
# Wan VACE, four steps at 1.0: steps 0 and 1 computed in each branch, 2 and 3 skipped
VACE_THRESHOLD = 1.0


def _txt2vid(capsys: pytest.CaptureFixture[str], *argv: str, steps: int = STEPS,
             frames: int = 5) -> tuple[np.ndarray, str]:
    code = cli.main(["txt2vid", "--prompt", RED, "--width", "48", "--height", "32",
                     "--frames", str(frames), "--steps", str(steps), "--seed", "3", "--dtype",
                     "float32", *argv])
    out, err = capsys.readouterr()
    assert code == 0, err
    return png_frames(out.strip()), err


def _computed(err: str, kind: str = "fbc") -> tuple[int, int]:
    """(computed, calls) of the `cache: KIND T, C/N model calls computed` line."""
    found = re.search(rf"^cache: {kind} [\d.]+, (\d+)/(\d+) model calls computed$", err, re.M)
    assert found, err
    return int(found[1]), int(found[2])


def _cached_reference(pipe: Any, models: tuple[Any, ...], **settings: Any) -> np.ndarray:
    """diffusers' frames with First Block Cache on each of `models`."""
    from diffusers import FirstBlockCacheConfig

    for model in models:
        model.enable_cache(FirstBlockCacheConfig(threshold=THRESHOLD))
    try:
        return pipe(RED, num_inference_steps=STEPS, output_type="np",  # type: ignore[no-any-return]
                    generator=torch.Generator().manual_seed(3), **SIZE, **settings).frames[0]
    finally:
        for model in models:
            model.disable_cache()


def test_fbc_equals_diffusers(first_device: gpucore.Device, tmp_path: Path,
                              capsys: pytest.CaptureFixture[str]) -> None:
    reference = tiny_wan_pipeline(tmp_path)
    settings = dict(negative_prompt="blurry", guidance_scale=4.0)
    ours, err = _txt2vid(capsys, "--model", str(tmp_path / "wan"), "--negative-prompt",
                         "blurry", "--cfg-scale", "4", "--cache", f"fbc:{THRESHOLD}", "-o",
                         str(tmp_path / "cached"))
    assert _computed(err) == (6, 8)  # some calls skipped, some computed
    expected = _cached_reference(reference, (reference.transformer,), **settings)
    assert np.abs(ours - expected).mean() < 0.01
    uncached = reference(RED, num_inference_steps=STEPS, output_type="np",
                         generator=torch.Generator().manual_seed(3), **SIZE,
                         **settings).frames[0]
    assert np.abs(expected - uncached).mean() > 0.02  # the skips matter


def test_a14b_experts_cache_apart(first_device: gpucore.Device, tmp_path: Path,
                                  capsys: pytest.CaptureFixture[str]) -> None:
    """Each expert's prompt and negative prompt keep their own state: 4 branches."""
    reference = tiny_wan_a14b_pipeline(tmp_path, boundary_ratio=0.6)
    ours, err = _txt2vid(capsys, "--model", str(tmp_path / "wan-a14b"), "--cfg-scale", "4",
                         "--cfg-scale-2", "2", "--cache", f"fbc:{THRESHOLD}", "-o",
                         str(tmp_path / "cached"))
    computed, calls = _computed(err)
    assert calls == 2 * STEPS and 4 <= computed < calls
    expected = _cached_reference(reference, (reference.transformer, reference.transformer_2),
                                 guidance_scale=4.0, guidance_scale_2=2.0)
    assert np.abs(ours - expected).mean() < 0.01
    # TeaCache's tables are Wan 2.1's: refused in one line
    code = cli.main(["txt2vid", "--model", str(tmp_path / "wan-a14b"), "--prompt", RED,
                     "--width", "48", "--height", "32", "--frames", "5", "--dtype", "float32",
                     "--cache", "teacache", "-o", str(tmp_path / "tea")])
    err = capsys.readouterr().err
    assert code == 2 and "TeaCache's Wan tables are Wan 2.1's" in err, err
    assert "Traceback" not in err


def test_fbc_on_vace_equals_the_rule_by_hand(first_device: gpucore.Device, tmp_path: Path,
                                            capsys: pytest.CaptureFixture[str],
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    """Wan VACE (a WanVACEPipeline folder, its default control): the frames of diffusers'
    WanVACEPipeline with the rule laid over its transformer by hand, the hints inside the
    blocks (first_block_cache_ref; diffusers' own hook counts them twice, see
    models/test_step_cache_vace.py), the prompt's and negative prompt's calls apart."""
    from diffusers.pipelines.wan import pipeline_wan, pipeline_wan_vace
    from first_block_cache_ref import vace_first_block_cache_by_hand
    from wan_vace_tiny import tiny_wan_vace_pipeline

    # diffusers' VACE module calls ftfy, which is not installed; the same for ASCII prompts
    monkeypatch.setattr(pipeline_wan_vace, "prompt_clean", pipeline_wan.prompt_clean)
    reference = tiny_wan_vace_pipeline(tmp_path)
    settings = dict(negative_prompt="blurry", guidance_scale=4.0)
    ours, err = _txt2vid(capsys, "--model", str(tmp_path / "wan-vace"), "--negative-prompt",
                         "blurry", "--cfg-scale", "4", "--cache", f"fbc:{VACE_THRESHOLD}",
                         "-o", str(tmp_path / "cached"))
    uncached = reference(RED, num_inference_steps=STEPS, output_type="np",
                         generator=torch.Generator().manual_seed(3), **SIZE,
                         **settings).frames[0]
    decisions = vace_first_block_cache_by_hand(reference.transformer, VACE_THRESHOLD, 2)
    expected = reference(RED, num_inference_steps=STEPS, output_type="np",
                         generator=torch.Generator().manual_seed(3), **SIZE,
                         **settings).frames[0]
    assert _computed(err) == (sum(decisions), len(decisions)) == (4, 8)  # steps 0, 1 computed
    # measured: 7.2e-4 mean, 2.0e-3 worst (the PNGs' rounding, 1/510)
    assert np.abs(ours - expected).mean() < 1e-3
    assert np.abs(ours - expected).max() < 1 / 255
    assert np.abs(expected - uncached).mean() > 0.02  # the skips matter (0.23 measured)


@pytest.mark.nodevice
@pytest.mark.parametrize(("cache", "message"), [
    ("magcache", "Wan runs First Block Cache"),
    ("fbc:x", "cache threshold 'x' is not a number"),
    ("blocks", "Wan runs First Block Cache"),
])
def test_bad_cache_gets_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                 cache: str, message: str) -> None:
    code = cli.main(["txt2vid", "--model", str(tmp_path), "--prompt", "x", "--cache", cache])
    err = capsys.readouterr().err
    assert code == 2 and message in err and len(err.strip().splitlines()) == 1, err


class _TeaCacheBlocks(torch.nn.Module):
    """TeaCache4Wan2.1's `teacache_forward` around diffusers' blocks: even calls the prompt's,
    odd the negative prompt's, each with its accumulated rescaled relative L1 change of the
    time embedding `temb` (set before each call); the first and last steps compute. With
    `use_ret_steps` (`retention`): the change of its projection `e0` measured instead, the
    first five steps compute (`ret_steps` = 5 * 2 calls), the last does not have to
    (`cutoff_steps` = steps * 2)."""

    def __init__(self, blocks: torch.nn.ModuleList, steps: int, threshold: float,
                 coefficients: tuple[float, ...], *, retention: bool = False) -> None:
        super().__init__()
        self.inner, self.steps, self.threshold = blocks, steps, threshold
        self.rescale = np.poly1d(coefficients)
        self.retention = retention
        self.e0: torch.Tensor | None = None
        self.temb: torch.Tensor | None = None
        self.count, self.computed = 0, 0
        self.distance, self.previous, self.residual = [0.0, 0.0], [None, None], [None, None]

    def forward(self, x: torch.Tensor, *args: Any) -> torch.Tensor:
        side, step = self.count % 2, self.count // 2
        self.count += 1
        modulated = self.e0 if self.retention else self.temb
        assert modulated is not None
        if (step < 5) if self.retention else step in (0, self.steps - 1):
            compute, self.distance[side] = True, 0.0
        else:
            previous = self.previous[side]
            assert previous is not None
            self.distance[side] += float(self.rescale(
                ((modulated - previous).abs().mean() / previous.abs().mean()).item()))
            compute = not self.distance[side] < self.threshold
            if compute:
                self.distance[side] = 0.0
        self.previous[side] = modulated.clone()
        if not compute:
            return x + self.residual[side]  # type: ignore[operator]
        out = x
        for block in self.inner:
            out = block(out, *args)
        self.residual[side] = out - x
        self.computed += 1
        return out


def test_teacache_equals_its_wan_code(first_device: gpucore.Device, tmp_path: Path,
                                      capsys: pytest.CaptureFixture[str]) -> None:
    """`--cache teacache:T` on Wan 2.1 (a narrow transformer: the 1.3B's polynomial) gives
    TeaCache4Wan2.1's frames, written around diffusers' WanPipeline."""
    from diffusion.models.step_cache import TEACACHE_WAN_COEFFICIENTS

    reference = tiny_wan_pipeline(tmp_path)
    model = reference.transformer
    with torch.no_grad():
        model.condition_embedder.time_embedder.linear_2.bias += 10.0
    model.save_pretrained(tmp_path / "wan" / "transformer")
    cached = _TeaCacheBlocks(model.blocks, TEA_STEPS, TEA_THRESHOLD,
                             TEACACHE_WAN_COEFFICIENTS["t2v-1.3B"])
    model.condition_embedder.register_forward_hook(
        lambda module, args, out: setattr(cached, "temb", out[0]))
    model.blocks = torch.nn.ModuleList([cached])
    settings = dict(negative_prompt="blurry", guidance_scale=4.0)
    expected = reference(RED, num_inference_steps=TEA_STEPS, output_type="np",
                         generator=torch.Generator().manual_seed(3), **SIZE,
                         **settings).frames[0]
    ours, err = _txt2vid(capsys, "--model", str(tmp_path / "wan"), "--negative-prompt",
                         "blurry", "--cfg-scale", "4", "--cache", f"teacache:{TEA_THRESHOLD}",
                         "-o", str(tmp_path / "cached"), steps=TEA_STEPS)
    assert cached.computed == 8  # some calls skipped, some computed
    assert _computed(err, "teacache") == (8, 2 * TEA_STEPS)
    assert np.abs(ours - expected).mean() < 0.01
    cached.threshold, cached.count = 0.0, 0  # every call computed: the skips matter
    uncached = reference(RED, num_inference_steps=TEA_STEPS, output_type="np",
                         generator=torch.Generator().manual_seed(3), **SIZE,
                         **settings).frames[0]
    assert cached.computed == 8 + 2 * TEA_STEPS
    assert np.abs(expected - uncached).mean() > 0.02


def test_teacache_retention_equals_its_wan_code(first_device: gpucore.Device, tmp_path: Path,
                                                capsys: pytest.CaptureFixture[str]) -> None:
    """`--cache teacache-ret:T` gives TeaCache4Wan2.1's frames with `--use_ret_steps`: the
    projection measured with the 1.3B's retention polynomial, the first five steps computed
    and the last skipped where the rule says so (the plain mode would compute it)."""
    from diffusion.models.step_cache import TEACACHE_WAN_RET_COEFFICIENTS

    reference = tiny_wan_pipeline(tmp_path)
    model = reference.transformer
    with torch.no_grad():
        model.condition_embedder.time_embedder.linear_2.bias += 10.0
    model.save_pretrained(tmp_path / "wan" / "transformer")
    cached = _TeaCacheBlocks(model.blocks, RET_STEPS, RET_THRESHOLD,
                             TEACACHE_WAN_RET_COEFFICIENTS["t2v-1.3B"], retention=True)
    model.condition_embedder.register_forward_hook(
        lambda module, args, out: setattr(cached, "e0", out[1]))
    model.blocks = torch.nn.ModuleList([cached])
    settings = dict(negative_prompt="blurry", guidance_scale=4.0)
    one_frame = {**SIZE, "num_frames": 1}  # the decisions follow the timesteps alone
    expected = reference(RED, num_inference_steps=RET_STEPS, output_type="np",
                         generator=torch.Generator().manual_seed(3), **one_frame,
                         **settings).frames[0]
    ours, err = _txt2vid(capsys, "--model", str(tmp_path / "wan"), "--negative-prompt",
                         "blurry", "--cfg-scale", "4", "--cache",
                         f"teacache-ret:{RET_THRESHOLD}", "-o", str(tmp_path / "cached"),
                         steps=RET_STEPS, frames=1)
    assert cached.computed == 12  # steps 0-4 and 6 of each branch
    assert _computed(err, "teacache-ret") == (12, 2 * RET_STEPS)
    assert np.abs(ours - expected).mean() < 0.01
    cached.threshold, cached.count = 0.0, 0  # every call computed: the skips matter
    uncached = reference(RED, num_inference_steps=RET_STEPS, output_type="np",
                         generator=torch.Generator().manual_seed(3), **one_frame,
                         **settings).frames[0]
    assert np.abs(expected - uncached).mean() > 0.02
