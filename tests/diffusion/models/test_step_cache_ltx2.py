"""First Block Cache on the LTX-2 audio-video transformer over a whole short Euler run on a
tiny random model, against diffusers' own hook (`apply_first_block_cache`) on diffusers'
LTX2VideoTransformer3DModel: the same calls computed and skipped, the same video and audio
flows to float32 error. diffusers registers no LTX-2 block with its hooks; the test registers
LTX2VideoTransformerBlock as a two-stream block whose second stream is the audio (the hook
reads a block's second stream by the name `encoder_hidden_states`, here the text, so the
metadata points that name at `audio_hidden_states`): the video residual decides, both streams'
tail residuals are added on a skipped call."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

pytest.importorskip("diffusers", reason="diffusers is a test-only reference (extra: reference)")
import torch
from diffusers.hooks import FirstBlockCacheConfig, apply_first_block_cache
from diffusers.hooks._helpers import TransformerBlockMetadata, TransformerBlockRegistry
from diffusers.hooks.hooks import CacheContext, _set_cache_context
from diffusers.models.transformers.transformer_ltx2 import LTX2VideoTransformerBlock
from first_block_cache_ref import Call, cache_run, diffusers_decisions, largest_change
from ltx2_transformer_tiny import tiny_ltx2_transformer
from sd_tiny import ported
from support import assert_close

import gpucore
import gpustd
from diffusion.models.ltx2 import LTX2VideoTransformer3DModel
from diffusion.models.step_cache import FirstBlockCache

TOL = 1e-4  # float32 over ten steps: measured 1.1e-5 at most, of flows up to 11
BATCH, FRAMES, HEIGHT, WIDTH, AUDIO, TEXT = 2, 2, 3, 5, 7, 6
TOKENS = FRAMES * HEIGHT * WIDTH
SPLIT = TOKENS * 8  # a row's video values, then its audio's


class _AudioSecond(TransformerBlockMetadata):
    """An LTX-2 block's streams for the hook: `hidden_states` the video, the second (the
    hook's `encoder_hidden_states`) the audio."""

    def _get_parameter_from_args_kwargs(self, identifier: str, args: Any = (),
                                        kwargs: Any = None) -> Any:
        name = "audio_hidden_states" if identifier == "encoder_hidden_states" else identifier
        return super()._get_parameter_from_args_kwargs(name, args, kwargs)


def test_first_block_cache_ltx2_equals_diffusers(first_device: gpucore.Device,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    """CFG's two rows in one call (two texts masked to different lengths), three blocks (a
    head, a middle, a tail): one decision a call over the batch's video tokens, as diffusers'
    "cond_uncond" context makes it."""
    threshold = 1.0  # a random tiny model's residuals move far more than a trained one's
    reference = tiny_ltx2_transformer(num_layers=3)
    ours = ported(LTX2VideoTransformer3DModel, reference, first_device)
    rng = np.random.default_rng(12)
    text = rng.standard_normal((BATCH, TEXT, 20)).astype(np.float32)
    audio_text = rng.standard_normal((BATCH, TEXT, 20)).astype(np.float32)
    mask = np.ones((BATCH, TEXT), np.float32)
    mask[0, 4:] = 0
    start = rng.standard_normal((BATCH, SPLIT + AUDIO * 6)).astype(np.float32)
    shape = {"num_frames": FRAMES, "height": HEIGHT, "width": WIDTH, "fps": 25.0,
             "audio_num_frames": AUDIO}

    def streams(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        return x[:, :SPLIT].reshape(BATCH, TOKENS, 8), x[:, SPLIT:].reshape(BATCH, AUDIO, 6)

    def packed(video: np.ndarray, audio: np.ndarray) -> np.ndarray:
        return np.concatenate([video.reshape(BATCH, -1), audio.reshape(BATCH, -1)], axis=1)

    def theirs(x: np.ndarray, sigma: float) -> np.ndarray:
        video, audio = streams(x)
        with torch.no_grad():
            out = reference(torch.from_numpy(video), torch.from_numpy(audio),
                            torch.from_numpy(text), torch.from_numpy(audio_text),
                            torch.full((BATCH,), 1000.0 * sigma),
                            encoder_attention_mask=torch.from_numpy(mask),
                            audio_encoder_attention_mask=torch.from_numpy(mask), **shape,
                            return_dict=False)
        return packed(out[0].numpy(), out[1].numpy())

    states = [gpustd.asarray(t, device=first_device) for t in (text, audio_text)]

    def mine(cache: FirstBlockCache | None) -> Call:
        def call(x: np.ndarray, sigma: float) -> np.ndarray:
            video, audio = (gpustd.asarray(s, device=first_device) for s in streams(x))
            out = ours(video, audio, *states, np.full(BATCH, 1000.0 * sigma, np.float32),
                       encoder_attention_mask=mask, audio_encoder_attention_mask=mask,
                       **shape, cache=cache)
            return packed(out[0].numpy(), out[1].numpy())
        return call

    expected_decisions = diffusers_decisions(monkeypatch)
    TransformerBlockRegistry._register()
    monkeypatch.setitem(TransformerBlockRegistry._registry, LTX2VideoTransformerBlock,
                        _AudioSecond(return_hidden_states_index=0,
                                     return_encoder_hidden_states_index=1,
                                     _cls=LTX2VideoTransformerBlock))
    apply_first_block_cache(reference, FirstBlockCacheConfig(threshold=threshold))
    _set_cache_context(reference, CacheContext("cond_uncond"))
    run = cache_run(mine, theirs, start, threshold)
    assert run.decisions == expected_decisions
    assert 0 < sum(run.decisions) < len(run.decisions)  # some calls skipped, some computed
    for ours_flow, their_flow in zip(run.got, run.expected, strict=True):
        assert_close(ours_flow, their_flow, tol=TOL)
    # the skips visibly change both streams' flows (the audio's tail residual is cached too)
    for part in (slice(0, SPLIT), slice(SPLIT, None)):
        assert largest_change([f[:, part] for f in run.got],
                              [f[:, part] for f in run.uncached]) > 0.02
