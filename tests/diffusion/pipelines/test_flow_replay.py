"""The flow families' transformer steps replayed from a capture their pipeline keeps
(diffusion.pipelines.flow.flow_replay), on tiny random Sana and Sana Sprint folders: the
replayed pictures are the eager ones bit for bit over several steps (several timesteps, the
guidance) and over generations of different prompts, which replay the first generation's
recording (the prompt's states are inputs, not constants of it); replaced weights record
afresh, weights written in place are replayed; the VAE decode borrows the capture's scratch;
a memory mode runs the steps eagerly."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

pytest.importorskip("diffusers", reason="builds the tiny test models (extra: reference)")

import gpucore
from gpustd import Tensor

SIZE = {"height": 32, "width": 64}
# two prompts of as many tokens (5 with <bos>, the tiny tokenizer's): one caption mask, so
# one input signature
PROMPTS = ("a red circle", "a blue cat")
SANA: dict[str, Any] = dict(num_inference_steps=4, guidance_scale=4.5, seed=7,
                            negative_prompt="a photo of a cat", max_sequence_length=40, **SIZE)


def _pipe(folder: Path, device: gpucore.Device) -> Any:
    from diffusion.pipelines.flow.sana import SanaPipeline

    return SanaPipeline.from_pretrained(folder, device=device)


def _counts(pipe: Any) -> tuple[int, int]:
    captured = pipe.step_replay.captured
    return captured.recordings, captured.replays


def _eager(pipe: Any, *runs: dict[str, Any]) -> list[np.ndarray]:
    """The pictures of `runs` (keywords of pipe) with the steps eager, then replaying again."""
    pipe.step_replay.use_eager(True)
    try:
        return [pipe(**run) for run in runs]
    finally:
        pipe.step_replay.use_eager(False)


def test_sana_replays_its_steps_across_prompts(first_device: gpucore.Device,
                                               tiny_sana: tuple[Path, Any]) -> None:
    """Four DPM-Solver++ steps with CFG: one recording, three replays; a second prompt of as
    many tokens only replays; both pictures are the eager ones, and they differ."""
    pipe = _pipe(tiny_sana[0], first_device)
    runs = [dict(prompt=p, output_type="latent", **SANA) for p in PROMPTS]
    first = pipe(**runs[0])
    assert _counts(pipe) == (1, 3)
    second = pipe(**runs[1])
    assert _counts(pipe) == (1, 7)
    eager = _eager(pipe, *runs)
    np.testing.assert_array_equal(first, eager[0])
    np.testing.assert_array_equal(second, eager[1])
    assert np.abs(first - second).mean() > 0.05, "the prompt barely matters"


def test_sana_sprint_replays_guidance_and_prompts(first_device: gpucore.Device,
                                                  tiny_sana_sprint: tuple[Path, Any]) -> None:
    """Sprint's two SCM steps: the guidance and the prompt are inputs of the one recording;
    each picture is the eager one."""
    pipe = _pipe(tiny_sana_sprint[0], first_device)
    common: dict[str, Any] = dict(num_inference_steps=2, max_sequence_length=40, seed=7,
                                  output_type="latent", **SIZE)
    runs = [dict(prompt=PROMPTS[0], guidance_scale=4.5, **common),
            dict(prompt=PROMPTS[0], guidance_scale=2.0, **common),
            dict(prompt=PROMPTS[1], guidance_scale=4.5, **common)]
    got = [pipe(**run) for run in runs]
    assert _counts(pipe) == (1, 5)
    for replayed, eager in zip(got, _eager(pipe, *runs)):
        np.testing.assert_array_equal(replayed, eager)
    assert np.abs(got[0] - got[1]).mean() > 0.01 and np.abs(got[0] - got[2]).mean() > 0.01


def test_changed_weights_are_replayed_or_recorded(first_device: gpucore.Device,
                                                  tiny_sana: tuple[Path, Any]) -> None:
    """Weights written into their buffers (a LoRA merged in place) are what the replay reads;
    a parameter replaced by another Tensor (a LoRA in another dtype, load_state_dict) records
    afresh. Each picture is the eager one, and each change visibly matters."""
    pipe = _pipe(tiny_sana[0], first_device)
    run = dict(prompt=PROMPTS[0], output_type="latent", **SANA)
    plain = pipe(**run)
    out = pipe.transformer.proj_out
    weight = out.weight.numpy()
    out.weight.buffer.write((weight * 1.5).astype(weight.dtype))
    written = pipe(**run)
    assert _counts(pipe) == (1, 7)
    np.testing.assert_array_equal(written, _eager(pipe, run)[0])
    out.weight = Tensor.from_numpy(weight * 0.5, device=first_device, read_only=True)
    replaced = pipe(**run)
    assert _counts(pipe)[0] == 2
    np.testing.assert_array_equal(replaced, _eager(pipe, run)[0])
    assert np.abs(written - plain).mean() > 0.01 and np.abs(replaced - plain).mean() > 0.01


def test_decode_borrows_the_step_scratch(first_device: gpucore.Device,
                                         tiny_sana: tuple[Path, Any]) -> None:
    """While the DC-AE decodes, the step capture's scratch is lent to the pool; the picture is
    the eager one."""
    pipe = _pipe(tiny_sana[0], first_device)
    real, seen = pipe.vae.decode, []

    def decode(*args: Any, **kwargs: Any) -> Any:
        graphs = [e.graph for e in pipe.step_replay.captured._entries.values()]
        seen.append(bool(graphs) and all(g.lent for g in graphs))
        return real(*args, **kwargs)

    pipe.vae.decode = decode
    run = dict(prompt=PROMPTS[0], **SANA)
    picture = pipe(**run)
    assert seen == [True]
    np.testing.assert_array_equal(picture, _eager(pipe, run)[0])


def test_memory_mode_runs_the_steps_eagerly(first_device: gpucore.Device,
                                            tiny_sana: tuple[Path, Any]) -> None:
    """Under --medvram the steps run eagerly (the capture dropped, no replay), the same
    picture; back in the plain mode they replay again."""
    from diffusion.pipelines.load import load_pipeline
    from diffusion.pipelines.request import GenerationRequest
    from diffusion.pipelines.sd.memory import MemoryMode

    model = load_pipeline(tiny_sana[0], device=first_device)
    request = GenerationRequest(prompt=PROMPTS[0], width=64, height=32, steps=3,
                                sampler="Euler", seed=7, cfg_scale=4.5)
    plain = model.generate(request).images[0]
    replays = _counts(model.pipe)[1]
    assert replays == 2
    model.set_memory_mode(MemoryMode(medvram=True))
    try:
        assert not model.pipe.step_replay.captured._entries
        np.testing.assert_array_equal(model.generate(request).images[0], plain)
        assert _counts(model.pipe)[1] == replays
    finally:
        model.set_memory_mode(MemoryMode())
    np.testing.assert_array_equal(model.generate(request).images[0], plain)
    assert _counts(model.pipe)[1] == replays + 2


def test_flux_replays_its_steps(first_device: gpucore.Device,
                                tiny_flux_dev: tuple[Path, Any]) -> None:
    """FLUX.1 dev, three Euler steps: another prompt (T5's fixed-length block) and another
    distilled guidance on the first picture's recording; each picture the eager one."""
    from diffusion.pipelines.flow.flux import FluxPipeline

    pipe = FluxPipeline.from_pretrained(tiny_flux_dev[0] / "flux", device=first_device)
    common: dict[str, Any] = dict(height=16, width=24, num_inference_steps=3, seed=7,
                                  max_sequence_length=16, output_type="latent")
    runs = [dict(prompt="a red circle on a blue background", guidance_scale=3.5, **common),
            dict(prompt="a cat", guidance_scale=1.5, **common)]
    got = [pipe(**run) for run in runs]
    assert _counts(pipe) == (1, 5)
    for replayed, eager in zip(got, _eager(pipe, *runs)):
        np.testing.assert_array_equal(replayed, eager)
    assert np.abs(got[0] - got[1]).mean() > 0.01


def test_flux_tensor_timestep_rounds_as_host_numbers(first_device: gpucore.Device,
                                                     tiny_flux_dev: tuple[Path, Any]) -> None:
    """In float16 a replayed step's float32 Tensor timestep and guidance are scaled as host
    numbers are (rounded to float16, then x1000): the same output, bit for bit."""
    from diffusion.pipelines.flow.flux import FluxPipeline, image_ids

    if not first_device.has_f16:
        pytest.skip("the device has no float16")
    pipe = FluxPipeline.from_pretrained(tiny_flux_dev[0] / "flux", device=first_device,
                                        dtype=np.float16)
    model, rng = pipe.transformer, np.random.default_rng(0)
    config = model.config
    x, states, pooled = (Tensor.from_numpy(rng.standard_normal(shape).astype(np.float16),
                                           device=first_device)
                         for shape in ((1, 6, config["in_channels"]),
                                       (1, 4, config["joint_attention_dim"]),
                                       (1, config["pooled_projection_dim"])))
    rotary = model.rotary(np.zeros((4, 3), np.float32), image_ids(2, 3))
    t, g = np.array([0.7137], np.float32), np.array([3.5], np.float32)
    host = model(x, states, pooled, t, None, None, g, rotary=rotary).numpy()
    given = model(x, states, pooled, Tensor.from_numpy(t, device=first_device), None, None,
                  Tensor.from_numpy(g, device=first_device), rotary=rotary).numpy()
    np.testing.assert_array_equal(given, host)


def test_chroma_replays_both_passes(first_device: gpucore.Device,
                                    tiny_chroma: tuple[Path, Any]) -> None:
    """Chroma at CFG 4: the prompt's and the negative prompt's passes (their own caption
    lengths and attention masks) each recorded once and replayed over two steps and a
    second prompt of as many tokens; each picture the eager one."""
    from diffusion.pipelines.flow.chroma import ChromaPipeline

    pipe = ChromaPipeline.from_pretrained(tiny_chroma[0] / "chroma", device=first_device)
    common: dict[str, Any] = dict(height=16, width=24, num_inference_steps=2, seed=7,
                                  guidance_scale=4.0, negative_prompt="a photo of a cat",
                                  max_sequence_length=16, output_type="latent")
    # 12 T5 tokens each (the tiny tokenizer's)
    runs = [dict(prompt=p, **common) for p in ("a red circle", "a cat on a mat")]
    got = [pipe(**run) for run in runs]
    assert _counts(pipe) == (2, 6)
    for replayed, eager in zip(got, _eager(pipe, *runs)):
        np.testing.assert_array_equal(replayed, eager)
    assert np.abs(got[0] - got[1]).mean() > 0.01


def test_sd3_replays_its_steps(first_device: gpucore.Device,
                               tiny_sd3: tuple[Path, Any]) -> None:
    """SD3, two Euler steps at CFG 4.5 (one batch of the negative's and the prompt's rows):
    another prompt on the first picture's recording (CLIP's and T5's fixed-length blocks);
    each picture the eager one."""
    from diffusion.pipelines.flow.sd3 import StableDiffusion3Pipeline

    pipe = StableDiffusion3Pipeline.from_pretrained(tiny_sd3[0] / "sd3", device=first_device)
    common: dict[str, Any] = dict(height=16, width=24, num_inference_steps=2, seed=11,
                                  guidance_scale=4.5, negative_prompt="a dog",
                                  max_sequence_length=12, output_type="latent")
    runs = [dict(prompt=p, **common) for p in ("a red circle on a blue background", "a cat")]
    got = [pipe(**run) for run in runs]
    assert _counts(pipe) == (1, 3)
    for replayed, eager in zip(got, _eager(pipe, *runs)):
        np.testing.assert_array_equal(replayed, eager)
    assert np.abs(got[0] - got[1]).mean() > 0.01


def test_decoded_pictures_keep_one_recording(first_device: gpucore.Device,
                                             tiny_sana: tuple[Path, Any]) -> None:
    """Three decoded pictures in a row: the decode's lazily made device constants (the nn
    "no prologue" table, Device.keep) never take the step capture's lent scratch, so the
    second and third pictures replay the first one's recording; each is the eager one."""
    pipe = _pipe(tiny_sana[0], first_device)
    runs = [dict(prompt=p, **SANA) for p in (*PROMPTS, PROMPTS[0])]
    got = [pipe(**run) for run in runs]
    assert _counts(pipe) == (1, 11)
    for replayed, eager in zip(got, _eager(pipe, *runs)):
        np.testing.assert_array_equal(replayed, eager)
    np.testing.assert_array_equal(got[0], got[2])
    assert np.abs(got[0] - got[1]).mean() > 0.01
