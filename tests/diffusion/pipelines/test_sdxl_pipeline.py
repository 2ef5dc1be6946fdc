"""SDXL, its refiner, SDXL-Turbo and SD-Turbo end to end against diffusers (tiny models).

diffusers' pipelines run with `generator=torch.Generator().manual_seed(seed)` and ours with
`rng="torch"` and `sampler="diffusers"` (the model folder's own scheduler), so both draw the
same numbers; base + refiner runs diffusers' documented hand-off (`denoising_end` /
`denoising_start`, one generator through both). Images are compared as uint8: a mean absolute
difference under 0.5 levels and no pixel off by more than 4 allows float32 summation order
and nothing systematic. The WebUI's SDXL conditioning is checked against transformers' own
encoders with the WebUI's chunking and emphasis written out by hand.
"""

from __future__ import annotations

import gc
from pathlib import Path
from typing import Any

import numpy as np
import pytest

diffusers = pytest.importorskip("diffusers", reason="test-only reference (extra: reference)")
import torch  # noqa: E402
from PIL import Image  # noqa: E402
from sdxl_tiny import tiny_paths  # noqa: E402
from test_sd_pipeline import _assert_images_match  # noqa: E402

import gpucore  # noqa: E402
from diffusion import load_pipeline  # noqa: E402
from diffusion.cli.main import main  # noqa: E402
from diffusion.infotext import format_infotext, parse_infotext, read_infotext  # noqa: E402
from diffusion.pipelines.sd.memory import MemoryMode, networks  # noqa: E402
from diffusion.pipelines.sd.stable_diffusion_xl import time_ids, webui_schedule  # noqa: E402
from gpustd.nn.offload import parameter_bytes  # noqa: E402

SIZE = 32  # 16x16 latents (the tiny VAE halves each side)
PROMPT, NEGATIVE = "a lighthouse at dusk, oil painting", "blurry"


@pytest.fixture(scope="module")
def paths(tmp_path_factory: pytest.TempPathFactory) -> Any:
    return tiny_paths(tmp_path_factory)


_LOADED: dict[tuple[int, Path], Any] = {}


def _ours(path: Path, device: gpucore.Device) -> Any:
    key = (id(device), Path(path))
    if key not in _LOADED:
        _LOADED[key] = load_pipeline(path, device=device)
    return _LOADED[key]


def _quiet(pipe: Any) -> Any:
    pipe.set_progress_bar_config(disable=True)
    return pipe


def _picture(seed: int) -> Image.Image:
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 256, (SIZE, SIZE, 3)).astype(np.uint8))


def test_txt2img_matches_diffusers(device: gpucore.Device, paths: Any) -> None:
    """The empty negative prompt is zeros (force_zeros_for_empty_prompt: diffusers'
    negative_prompt=None), micro-conditioning (h, w, 0, 0, h, w) at a non-square size."""
    ours = _ours(paths.base, device)
    assert type(ours).__name__ == "StableDiffusionXL" and ours.family == "sdxl"
    result = ours.txt2img(PROMPT, steps=2, cfg_scale=6.0, seed=5, width=SIZE + 8, height=SIZE,
                          sampler="diffusers", rng="torch")
    expected = _quiet(paths.pipes["base"])(
        PROMPT, num_inference_steps=2, guidance_scale=6.0, width=SIZE + 8, height=SIZE,
        generator=torch.Generator().manual_seed(5), output_type="np").images
    _assert_images_match(result.images, expected)


def test_base_and_refiner_match_diffusers(first_device: gpucore.Device, paths: Any) -> None:
    """txt2img, the refiner taking over at 0.5 (its OpenCLIP conditioning, aesthetic scores
    6 / 2.5, its own scheduler and VAE), with a negative prompt encoded by both models."""
    base, refiner = _ours(paths.base, first_device), _ours(paths.refiner, first_device)
    result = base.txt2img(PROMPT, negative_prompt=NEGATIVE, steps=3, cfg_scale=6.0, seed=3,
                          width=SIZE, height=SIZE, sampler="diffusers", rng="torch",
                          refiner=refiner, refiner_switch_at=0.5)
    generator = torch.Generator().manual_seed(3)
    latents = _quiet(paths.pipes["base"])(
        PROMPT, negative_prompt=NEGATIVE, num_inference_steps=3, guidance_scale=6.0,
        width=SIZE, height=SIZE, generator=generator, output_type="latent",
        denoising_end=0.5).images
    expected = _quiet(paths.pipes["refiner"])(
        PROMPT, negative_prompt=NEGATIVE, image=latents, num_inference_steps=3,
        guidance_scale=6.0, generator=generator, denoising_start=0.5, output_type="np").images
    _assert_images_match(result.images, expected)
    assert result.settings["refiner"] == "refiner" and result.settings["refiner_switch_at"] == 0.5
    # loaded for --lowvram (LoadOptions.offload), both models go straight to host memory: the
    # loads take less GPU memory than the smallest network, the picture is the same bit for bit
    gc.collect()
    first_device.empty_pool()
    before = first_device.memory_stats().allocated
    first_device.reset_peak_memory()
    low = [load_pipeline(path, device=first_device, offload=True)
           for path in (paths.base, paths.refiner)]
    peak = first_device.memory_stats().peak_allocated - before
    assert peak < min(parameter_bytes(n) for model in low for n in networks(model)), peak
    try:
        for model in low:
            model.set_memory_mode(MemoryMode(lowvram=True))
        again = low[0].txt2img(PROMPT, negative_prompt=NEGATIVE, steps=3, cfg_scale=6.0, seed=3,
                               width=SIZE, height=SIZE, sampler="diffusers", rng="torch",
                               refiner=low[1], refiner_switch_at=0.5)
        np.testing.assert_array_equal(again.images[0], result.images[0])
    finally:
        for model in low:
            model.set_memory_mode(MemoryMode())


def test_hires_fix_refiner_pass(first_device: gpucore.Device, paths: Any) -> None:
    """The WebUI's hires_fix_refiner_pass: the refiner takes over (at the same completed
    ratio, by its sigma) in the pass(es) it names, each pass starting on the base. The first
    pass's latents are those of the same txt2img with the refiner, or without it, bit for bit
    (the hand-off itself is test_base_and_refiner_match_diffusers'); the infotext says which
    where not the default."""
    from diffusion.upscalers.interpolation import HiresFix

    base, refiner = _ours(paths.base, first_device), _ours(paths.refiner, first_device)
    settings = dict(steps=3, cfg_scale=6.0, seed=3, width=SIZE, height=SIZE, sampler="Euler")
    hires = HiresFix(scale=1.5, upscaler="Latent (nearest)", steps=3, denoise=0.6)
    switched: list[str | None] = []  # the pass of each hand-off
    guided = refiner._guided

    def recorded(r: Any, *args: Any, **kwargs: Any) -> Any:
        switched.append(r.hires_stage)
        return guided(r, *args, **kwargs)

    firsts: list[np.ndarray] = []  # the first pass's last latents of each run

    def on_step(done: int, total: int, latents: np.ndarray) -> None:
        if done == total and latents.shape[-1] == SIZE // 2:
            firsts.append(latents.copy())

    refined = dict(refiner=refiner, refiner_switch_at=0.5)
    base.txt2img(PROMPT, on_step=on_step, **settings)
    base.txt2img(PROMPT, on_step=on_step, **settings, **refined)
    plain, with_refiner = firsts
    unrefined = base.txt2img(PROMPT, hires=hires, **settings).images[0].astype(int)
    pictures = {}
    refiner._guided = recorded
    try:
        for which, stages in (("second pass", ["second"]), ("first pass", ["first"]),
                              ("both passes", ["first", "second"])):
            switched.clear()
            result = base.txt2img(PROMPT, hires=hires, hires_refiner_pass=which,
                                  on_step=on_step, **settings, **refined)
            assert switched == stages, which
            np.testing.assert_array_equal(firsts[-1], plain if which == "second pass"
                                          else with_refiner, err_msg=which)
            infotext = parse_infotext(format_infotext(result.settings))
            assert infotext.get("hires_refiner_pass") == (
                None if which == "second pass" else which)
            pictures[which] = result.images[0].astype(int)
    finally:
        refiner._guided = guided
    for which, picture in pictures.items():  # the refiner's passes change the picture
        assert np.abs(picture - unrefined).max() > 8, which
    assert np.abs(pictures["both passes"] - pictures["first pass"]).max() > 8


def test_the_model_takes_over_from_itself(first_device: gpucore.Device, paths: Any,
                                          monkeypatch: pytest.MonkeyPatch) -> None:
    """The base as its own refiner (what the server's refiner_checkpoint and the CLI's
    --refiner give when they name the loaded model): the one pipeline takes over from itself,
    and the picture is bit for bit the one a second copy of it taking over makes, with the
    WebUI's hand-off (Euler) and diffusers' (denoising_end / denoising_start), under
    --lowvram too (one memory plan serving the steps and the take-over)."""
    model, copy = _ours(paths.base, first_device), load_pipeline(paths.base, device=first_device)
    guided: list[Any] = []  # whose guided UNet each pass and hand-off built
    for pipe in (model, copy):
        own = pipe._guided
        monkeypatch.setattr(pipe, "_guided", lambda *a, _own=own, _pipe=pipe, **k: (
            guided.append(_pipe), _own(*a, **k))[1])

    def picture(refiner: Any, sampler: str) -> np.ndarray:
        guided.clear()
        result = model.txt2img(PROMPT, negative_prompt=NEGATIVE, steps=3, cfg_scale=5.0,
                               seed=3, width=SIZE, height=SIZE, rng="torch", sampler=sampler,
                               refiner=refiner, refiner_switch_at=0.5)
        assert result.settings["refiner"] == model.name
        return np.asarray(result.images[0])

    for sampler in ("Euler", "diffusers"):
        itself = picture(model, sampler)
        assert guided == [model, model], sampler  # the hand-off ran, on the one pipeline
        copied = picture(copy, sampler)
        assert guided == [model, copy], sampler
        np.testing.assert_array_equal(itself, copied, err_msg=sampler)
    model.set_memory_mode(MemoryMode(lowvram=True))
    try:
        np.testing.assert_array_equal(picture(model, "Euler"), picture(copy, "Euler"))
    finally:
        model.set_memory_mode(MemoryMode())


def test_img2img_with_refiner_matches_diffusers(first_device: gpucore.Device,
                                                paths: Any) -> None:
    base, refiner = _ours(paths.base, first_device), _ours(paths.refiner, first_device)
    image = _picture(1)
    result = base.img2img(image, PROMPT, steps=3, strength=0.8, cfg_scale=5.0, seed=4,
                          width=SIZE, height=SIZE, sampler="diffusers", rng="torch",
                          refiner=refiner, refiner_switch_at=0.7)
    generator = torch.Generator().manual_seed(4)
    img2img = _quiet(diffusers.StableDiffusionXLImg2ImgPipeline(**paths.pipes["base"].components))
    latents = img2img(PROMPT, image=image, strength=0.8, num_inference_steps=3,
                      guidance_scale=5.0, generator=generator, output_type="latent",
                      denoising_end=0.7).images
    expected = _quiet(paths.pipes["refiner"])(
        PROMPT, image=latents, num_inference_steps=3, guidance_scale=5.0, generator=generator,
        denoising_start=0.7, output_type="np").images
    _assert_images_match(result.images, expected)


@pytest.mark.parametrize("kind", ["sdxl_turbo", "sd_turbo"])
def test_turbo_one_step_matches_diffusers(first_device: gpucore.Device, paths: Any,
                                          kind: str) -> None:
    """One step without guidance (guidance_scale 0, as their model cards run them) on their
    own trailing-spacing schedulers; the names say Turbo, so the defaults are Turbo's, and
    those (one Euler a step from sigma_max on SGM Uniform, CFG 1) give the same picture."""
    ours = _ours(getattr(paths, kind), first_device)
    assert ours.is_turbo and ours.defaults.steps == 1 and ours.defaults.cfg_scale == 1.0
    assert ours.scheduler_config["timestep_spacing"] == "trailing"
    result = ours.txt2img(PROMPT, steps=1, cfg_scale=0.0, seed=9, sampler="diffusers",
                          rng="torch", width=SIZE, height=SIZE)
    expected = _quiet(paths.pipes[kind.replace("_", "-")])(
        PROMPT, num_inference_steps=1, guidance_scale=0.0, width=SIZE, height=SIZE,
        generator=torch.Generator().manual_seed(9), output_type="np").images
    _assert_images_match(result.images, expected)
    webui = ours.txt2img(PROMPT, steps=ours.defaults.steps, cfg_scale=ours.defaults.cfg_scale,
                         sampler=ours.defaults.sampler, seed=9, rng="torch", width=SIZE,
                         height=SIZE)
    assert (webui.settings["sampler"], webui.settings["scheduler"]) == ("Euler a",
                                                                        "SGM Uniform")
    _assert_images_match(webui.images, expected)


def _webui_reference(pipe: Any, pieces: list[list[tuple[str, float]]]) -> tuple[Any, Any]:
    """The WebUI's SDXL conditioning written out: per chunk BOS + tokens + EOS padding (the
    OpenCLIP tokenizer pads after the first EOS with "!"), hidden_states[-2] of each encoder,
    emphasis with the mean restored, chunks joined; pooled from the first chunk."""
    hidden = []
    pooled = None
    for tokenizer, encoder in ((pipe.tokenizer, pipe.text_encoder),
                               (pipe.tokenizer_2, pipe.text_encoder_2)):
        chunks = []
        for chunk in pieces:
            ids, weights = [tokenizer.bos_token_id], [1.0]
            for text, weight in chunk:
                tokens = tokenizer(text, add_special_tokens=False).input_ids
                ids += tokens
                weights += [weight] * len(tokens)
            ids += [tokenizer.eos_token_id] * (77 - len(ids))
            weights += [1.0] * (77 - len(weights))
            if tokenizer.pad_token_id != tokenizer.eos_token_id:
                first = ids.index(tokenizer.eos_token_id)
                ids[first + 1:] = [tokenizer.pad_token_id] * (76 - first)
            with torch.no_grad():
                out = encoder(torch.tensor([ids]), output_hidden_states=True)
            z = out.hidden_states[-2][0].double()
            mean = z.mean()
            z = z * torch.tensor(weights, dtype=torch.float64)[:, None]
            chunks.append(z * (mean / z.mean()))
            if pooled is None and hasattr(out, "text_embeds"):
                pooled = out.text_embeds[0].double()
        hidden.append(torch.cat(chunks))
    return torch.cat(hidden, dim=-1).numpy(), pooled.numpy()


def test_webui_conditioning_matches_an_independent_computation(first_device: gpucore.Device,
                                                               paths: Any) -> None:
    ours = _ours(paths.base, first_device)
    ids = time_ids(48, 32, refiner=False)
    assert ids.tolist() == [32, 48, 0, 0, 32, 48]
    context = webui_schedule(ours.text_encoders, ["a (red:1.5) fox BREAK snow"], ids,
                             steps=4).at(0)
    hidden, pooled = _webui_reference(paths.pipes["base"], [
        [("a ", 1.0), ("red", 1.5), (" fox", 1.0)], [(" snow", 1.0)]])
    got = context.hidden.numpy()[0]
    assert got.shape == hidden.shape == (154, 64)
    assert np.abs(got - hidden).max() <= 2e-4 * np.abs(hidden).max()
    got_pooled = context.text_embeds.numpy()[0]
    assert np.abs(got_pooled - pooled).max() <= 2e-4 * np.abs(pooled).max()
    assert context.time_ids.tolist() == [ids.tolist()]
    empty = webui_schedule(ours.text_encoders, [""], ids, steps=4, negative=True).at(0)
    assert not np.any(empty.hidden.numpy()) and not np.any(empty.text_embeds.numpy())
    assert empty.hidden.shape == (1, 77, 64)
    refiner = _ours(paths.refiner, first_device)
    negative = time_ids(48, 32, refiner=True, negative=True)
    assert negative.tolist() == [32, 48, 0, 0, 2.5]
    context = webui_schedule(refiner.text_encoders, ["a fox"], negative, steps=4).at(0)
    assert context.hidden.shape == (1, 77, 32) and context.text_embeds.shape == (1, 32)


def _ti_reference(tokenizer: Any, encoder: Any, before: str, vectors: np.ndarray,
                  after: str) -> tuple[np.ndarray, Any]:
    """One encoder's WebUI conditioning of `before` NAME `after` (one chunk), the name's
    place taken by `vectors`, written out by hand: BOS + tokens + one placeholder a vector +
    tokens + EOS padding ("!" after the first EOS for OpenCLIP), the token embeddings' rows
    replaced by a forward hook (the WebUI's EmbeddingsWithFixes), hidden_states[-2]; and the
    projected pooled output where the encoder has one."""
    head = tokenizer(before, add_special_tokens=False).input_ids
    tail = tokenizer(after, add_special_tokens=False).input_ids
    ids = [tokenizer.bos_token_id, *head, *[head[0]] * len(vectors), *tail]
    ids += [tokenizer.eos_token_id] * (77 - len(ids))
    if tokenizer.pad_token_id != tokenizer.eos_token_id:
        first = ids.index(tokenizer.eos_token_id)
        ids[first + 1:] = [tokenizer.pad_token_id] * (76 - first)
    at = 1 + len(head)

    def substitute(module: Any, args: Any, output: Any) -> Any:
        output = output.clone()
        output[0, at:at + len(vectors)] = torch.from_numpy(vectors)
        return output

    handle = encoder.get_input_embeddings().register_forward_hook(substitute)
    try:
        with torch.no_grad():
            out = encoder(torch.tensor([ids]), output_hidden_states=True)
    finally:
        handle.remove()
    pooled = out.text_embeds[0].numpy() if hasattr(out, "text_embeds") else None
    return out.hidden_states[-2][0].numpy(), pooled


def test_textual_inversion_matches_an_independent_computation(
        first_device: gpucore.Device, paths: Any, tmp_path: Path) -> None:
    """An SDXL embedding (clip_l and clip_g vectors, as the WebUI and Civitai save them) in a
    prompt: each encoder reads its own vectors where the name was, against transformers'
    encoders with the rows put in by hand; the refiner reads the clip_g vectors; the picture
    follows it and the infotext hashes it; a one-encoder embedding is refused naming the
    file (it used to be read as plain words, silently)."""
    from safetensors.numpy import save_file

    from diffusion.loaders import WeightsError
    from diffusion.text.embeddings import EmbeddingDatabase

    reference = paths.pipes["base"]
    widths = {"clip_l": reference.text_encoder.config.hidden_size,
              "clip_g": reference.text_encoder_2.config.hidden_size}
    rng = np.random.default_rng(7)
    # three vectors each, about 5x the tiny encoders' token embeddings (std 0.18), so that
    # the name visibly matters
    vectors = {key: rng.normal(0, 1.0, (3, width)).astype(np.float32)
               for key, width in widths.items()}
    folder = tmp_path / "embeddings"
    folder.mkdir()
    save_file(vectors, str(folder / "wuggle.safetensors"))
    save_file({"emb_params": vectors["clip_l"]}, str(folder / "oldstyle.safetensors"))
    base, refiner = _ours(paths.base, first_device), _ours(paths.refiner, first_device)
    try:
        for model in (base, refiner):
            model.embeddings = EmbeddingDatabase(folder)
        ids = time_ids(48, 32, refiner=False)
        lookups = base._embedding_lookup()
        context = webui_schedule(base.text_encoders, ["a wuggle fox"], ids, steps=1,
                                 embeddings=lookups).at(0)
        assert list(lookups.used) == ["wuggle"]
        expected_l, _ = _ti_reference(reference.tokenizer, reference.text_encoder, "a",
                                      vectors["clip_l"], " fox")
        expected_g, pooled = _ti_reference(reference.tokenizer_2, reference.text_encoder_2,
                                           "a", vectors["clip_g"], " fox")
        hidden = np.concatenate([expected_l, expected_g], axis=-1)
        got = context.hidden.numpy()[0]
        assert got.shape == hidden.shape
        assert np.abs(got - hidden).max() <= 2e-4 * np.abs(hidden).max()
        got_pooled = context.text_embeds.numpy()[0]
        assert np.abs(got_pooled - pooled).max() <= 2e-4 * np.abs(pooled).max()
        plain = webui_schedule(base.text_encoders, ["a wuggle fox"], ids, steps=1).at(0)
        assert np.abs(plain.hidden.numpy()[0] - hidden).max() > 0.1 * np.abs(hidden).max()
        # the refiner: OpenCLIP-G's vectors
        negative = time_ids(48, 32, refiner=True, negative=True)
        context = webui_schedule(refiner.text_encoders, ["a wuggle fox"], negative, steps=1,
                                 embeddings=refiner._embedding_lookup()).at(0)
        other = paths.pipes["refiner"]
        expected_g, _ = _ti_reference(other.tokenizer_2, other.text_encoder_2, "a",
                                      vectors["clip_g"], " fox")
        got = context.hidden.numpy()[0]
        assert np.abs(got - expected_g).max() <= 2e-4 * np.abs(expected_g).max()
        # a generation: the embedding steers the picture, the infotext hashes it
        settings = dict(steps=2, cfg_scale=5.0, seed=3, width=SIZE, height=SIZE)
        with_it = base.generate("a wuggle fox", **settings)
        assert "wuggle" in with_it.settings["ti_hashes"]
        without = base.generate("a fox", **settings)
        assert np.abs(with_it.images[0].astype(int) - without.images[0]).mean() > 2
        with pytest.raises(WeightsError, match=r"oldstyle\.safetensors.*one text encoder.*"
                                               r"Use an SDXL embedding"):
            base.generate("a oldstyle fox", **settings)
    finally:
        for model in (base, refiner):
            model.embeddings = None


def test_text_encoders_replay_their_captures(first_device: gpucore.Device, paths: Any) -> None:
    """Each text encoder's transformer is recorded on the first prompt and replayed after
    (the same conditioning bit for bit as the eager encoders give); under a memory mode the
    encoders run eagerly and their captures are emptied (they would hold the weights)."""
    ours = _ours(paths.base, first_device)
    ids = time_ids(SIZE, SIZE, refiner=False)
    eager = webui_schedule(ours.text_encoders, [PROMPT], ids, steps=2).at(0)
    ours.set_memory_mode(MemoryMode())
    runs = ours._runs()
    assert runs is not None and len(runs) == 2
    replays = [kept.captured.replays for kept in ours._text_captures]
    for _ in range(2):  # recorded (if not yet), then replayed
        got = webui_schedule(ours.text_encoders, [PROMPT], ids, steps=2, runs=runs).at(0)
        assert np.array_equal(got.hidden.numpy(), eager.hidden.numpy())
        assert np.array_equal(got.text_embeds.numpy(), eager.text_embeds.numpy())
    assert all(kept.captured.replays > before
               for kept, before in zip(ours._text_captures, replays))
    try:
        ours.set_memory_mode(MemoryMode(medvram=True))
        assert ours._runs() is None
        assert [kept.captured.lend() for kept in ours._text_captures] == [0, 0]  # emptied
    finally:
        ours.set_memory_mode(MemoryMode())


def test_webui_samplers_hand_over_to_the_refiner(first_device: gpucore.Device,
                                                 paths: Any) -> None:
    """Euler a with the WebUI's prompt syntax over 3 steps, whose model evaluations are at
    timesteps 999, 499.5 and 0 (completed ratios 0, 0.5, 0.999): switching at 0.3 and at 0.9
    hands over at different evaluations, which gives different pictures."""
    from diffusion.pipelines.sd.refiner import HandOff

    base, refiner = _ours(paths.base, first_device), _ours(paths.refiner, first_device)
    switched: list[int | None] = []
    original = HandOff.__call__

    def spy(self: HandOff, *args: Any) -> Any:
        out = original(self, *args)
        switched.append(self.switched_at)
        return out

    common = dict(steps=3, cfg_scale=5.0, seed=2, width=SIZE, height=SIZE, sampler="Euler a")
    HandOff.__call__ = spy  # type: ignore[method-assign]
    try:
        early, late = (base.txt2img("a (red:1.2) fox BREAK snow", refiner=refiner,
                                    refiner_switch_at=at, **common) for at in (0.3, 0.9))
    finally:
        HandOff.__call__ = original  # type: ignore[method-assign]
    assert switched == [None, 1, 1, None, None, 2]
    assert np.abs(early.images[0].astype(int) - late.images[0]).mean() > 1
    assert early.images[0].std() > 5 and early.settings["refiner"] == "refiner"


def test_and_parts_guide_sdxl(first_device: gpucore.Device, paths: Any) -> None:
    """Composable diffusion on SDXL: each part's row has its own hidden states and pooled
    embedding (those of the part as a prompt alone). One Euler step is affine in the guided
    x0, so the run with parts is the negative prompt's run (CFG 0) plus each part's own run
    (CFG 1) less it, times weight * cfg (the WebUI's combine_denoised). The refiner takes
    the parts over."""
    from diffusion.pipelines.sd.refiner import HandOff

    base, refiner = _ours(paths.base, first_device), _ours(paths.refiner, first_device)
    prompt, parts = "a red fox AND (snow:1.2):-0.5", [("a red fox", 1.0), ("(snow:1.2)", -0.5)]
    ids = time_ids(SIZE, SIZE, refiner=False)
    both = webui_schedule(base.text_encoders, [prompt], ids, steps=1).at(0)
    assert both.hidden.shape[0] == 2 and both.text_embeds.shape[0] == 2
    for row, (text, _) in enumerate(parts):
        alone = webui_schedule(base.text_encoders, [text], ids, steps=1).at(0)
        assert np.array_equal(both.hidden.numpy()[row], alone.hidden.numpy()[0])
        assert np.array_equal(both.text_embeds.numpy()[row], alone.text_embeds.numpy()[0])

    def run(text: str, cfg_scale: float, **settings: Any) -> np.ndarray:
        final: list[np.ndarray] = []
        settings = {"steps": 1, **settings}
        base.txt2img(text, negative_prompt=NEGATIVE, cfg_scale=cfg_scale, seed=4, width=SIZE,
                     height=SIZE, sampler="Euler", rng="torch",
                     on_step=lambda done, total, latents: final.append(latents), **settings)
        return final[-1]

    uncond = run(parts[0][0], 0.0)
    expected = uncond + sum(w * 5.0 * (run(text, 1.0) - uncond) for text, w in parts)
    got = run(prompt, 5.0)
    assert np.linalg.norm(got - expected) <= 1e-4 * np.linalg.norm(expected)
    weights: list[Any] = []
    original = HandOff.__call__

    def spy(self: HandOff, *args: Any) -> Any:
        out = original(self, *args)
        weights.append((self.switched_at, self.weights))
        return out

    HandOff.__call__ = spy  # type: ignore[method-assign]
    try:
        run(prompt, 5.0, steps=2, refiner=refiner, refiner_switch_at=0.5)
    finally:
        HandOff.__call__ = original  # type: ignore[method-assign]
    assert weights == [(None, ((1.0, -0.5),)), (1, ((1.0, -0.5),))]


def test_errors(first_device: gpucore.Device, paths: Any) -> None:
    base, refiner = _ours(paths.base, first_device), _ours(paths.refiner, first_device)
    sd_turbo = _ours(paths.sd_turbo, first_device)
    cases = [(dict(refiner=sd_turbo), "cannot continue the latents"),
             (dict(refiner=refiner, refiner_switch_at=1.0), "between 0 and 1"),
             (dict(refiner=refiner, refiner_switch_at=0), "between 0 and 1"),
             (dict(refiner=refiner, refiner_switch_at="0.5"), "between 0 and 1"),
             (dict(refiner="refiner"), "must be a loaded model"),
             (dict(refiner=refiner, mask=_picture(2), init_image=_picture(3)), "inpainting")]
    for kwargs, message in cases:
        with pytest.raises(ValueError, match=message):
            base.generate(PROMPT, steps=2, width=SIZE, height=SIZE, **kwargs)
    from diffusion.upscalers.interpolation import HiresFix

    with pytest.raises(ValueError, match="refiner with the hires fix runs with the WebUI's"):
        base.generate(PROMPT, steps=2, width=SIZE, height=SIZE, refiner=refiner,
                      hires=HiresFix(scale=2.0), sampler="diffusers")


def test_float16_keeps_the_vae_in_float32(f16_device: gpucore.Device, paths: Any) -> None:
    pipe = load_pipeline(paths.base_fp16, dtype=np.float16, device=f16_device)
    assert pipe.unet.conv_in.weight.dtype == np.float16
    assert pipe.vae.force_upcast and pipe.vae.decoder.conv_in.weight.dtype == np.float32


def test_decodes_and_encodes_go_through_the_half_passes(
        first_device: gpucore.Device, paths: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    """Where a float32 VAE's float16 twins apply (diffusion/models/vae_half.py: a float16
    pipeline on matrix units; forced here), the pipeline's decode and encode go through them:
    the first of each is the float32 pass and calibrates its twin (whose passes
    tests/diffusion/models/test_vae_half.py checks)."""
    from diffusion.models.vae_half import HalfPasses
    from diffusion.pipelines.reference import POSTERIOR_MEAN

    ours = _ours(paths.base, first_device)  # shared: its twins and calibrations this test's
    monkeypatch.setattr(ours, "_half_passes", HalfPasses())
    rng = np.random.default_rng(4)
    latents = rng.standard_normal((1, 4, 8, 8)).astype(np.float32)
    pixels = rng.uniform(-1, 1, (1, 3, 64, 64)).astype(np.float32)
    plain, plain_latent = ours._decode(latents), ours._encode(pixels, POSTERIOR_MEAN)
    assert not ours._half_passes.scales
    monkeypatch.setattr(HalfPasses, "applies", staticmethod(lambda *args: True))
    assert np.array_equal(ours._decode(latents)[0], plain[0])
    assert np.array_equal(ours._encode(pixels, POSTERIOR_MEAN), plain_latent)
    for part in ("decoder", "encoder"):  # calibrated; the twins come next
        assert ours.vae in ours._half_passes._largest[part]


def test_memory_modes_run_the_half_passes_as_the_plain_mode(
        f16_device: gpucore.Device, paths: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    """Where a float32 VAE's float16 twins apply (forced here), the memory modes decode and
    encode by them too, each twin a unit of the mode's: img2img gives the plain mode's picture
    bit for bit (twins built again from the kept calibrations). --lowvram and --max-vram
    (--medvram moves the VAE as --lowvram does; one denoising step, unguided: the VAE is the
    subject)."""
    from diffusion.models.vae_half import HalfPasses

    monkeypatch.setattr(HalfPasses, "applies", staticmethod(lambda *args: True))
    ours = _ours(paths.base, f16_device)  # shared: its twins and calibrations this test's
    monkeypatch.setattr(ours, "_half_passes", HalfPasses())
    init = _picture(2)

    def image() -> np.ndarray:
        return ours.img2img(init, PROMPT, steps=2, strength=0.6, cfg_scale=1.0, seed=7,
                            width=SIZE, height=SIZE).images[0]

    first = image()  # calibrates the encoder and the decoder (float32)
    plain = image()  # by the twins
    assert set(ours._half_passes.scales) == {(id(ours.vae), "decoder"),
                                             (id(ours.vae), "encoder")}
    assert not np.array_equal(first, plain)  # the twins' float16 rounding shows
    gc.collect()
    f16_device.empty_pool()
    budget = f16_device.memory_stats().allocated + (256 << 20)  # holds every network
    try:
        for mode in (MemoryMode(lowvram=True), MemoryMode(max_vram=budget)):
            ours.set_memory_mode(mode)
            np.testing.assert_array_equal(image(), plain, err_msg=mode.label)
            twins = [twin for part in ("decoder", "encoder")
                     for twin in ours._half_passes._twins[part].values()]
            assert len(twins) == 2 and all(twin in ours.memory.residency for twin in twins)
    finally:
        ours.set_memory_mode(MemoryMode())
    np.testing.assert_array_equal(image(), plain)


def test_cli_single_file_with_refiner_writes_the_webui_infotext(paths: Any, tmp_path: Path,
                                                                capsys: Any) -> None:
    out = tmp_path / "fox.png"
    assert main(["txt2img", "--model", str(paths.base_file), "--refiner",
                 str(paths.refiner_file), "--refiner-switch-at", "0.6", "--prompt", "a fox",
                 "--steps", "2", "--width", str(SIZE), "--height", str(SIZE), "--seed", "1",
                 "--out", str(out)]) == 0
    text = read_infotext(out)
    assert "Refiner: refiner, Refiner switch at: 0.6" in text
    settings = parse_infotext(text)
    assert settings["model"] == "base" and settings["refiner_switch_at"] == 0.6
    assert main(["txt2img", "--model", str(paths.base_file), "--refiner",
                 str(paths.refiner_file), "--refiner-switch-at", "1.5", "--prompt", "x"]) == 2
    assert "between 0 and 1" in capsys.readouterr().err


def test_cli_turbo_defaults_are_said(paths: Any, tmp_path: Path, capsys: Any) -> None:
    out = tmp_path / "turbo.png"
    assert main(["txt2img", "--model", str(paths.sdxl_turbo), "--prompt", "a fox",
                 "--out", str(out)]) == 0
    err = capsys.readouterr().err
    assert "turbo model (sdxl-turbo): --steps 1, --cfg-scale 1, --sampler 'Euler a SGM " \
           "Uniform'" in err
    assert f"--width {SIZE * 2} --height {SIZE * 2}" in err  # the tiny model's own size
    settings = parse_infotext(read_infotext(out))
    assert (settings["steps"], settings["cfg_scale"], settings["sampler"],
            settings["scheduler"]) == (1, 1.0, "Euler a", "SGM Uniform")


def test_server_serves_sdxl_and_the_refiner(first_device: gpucore.Device, paths: Any,
                                            tmp_path: Path) -> None:
    pytest.importorskip("fastapi", reason="server extra (pip install .[server])")
    from fastapi.testclient import TestClient

    from diffusion.server import create_app

    app = create_app(model=paths.base, models_dir=paths.root, outputs=tmp_path,
                     loader=lambda path, **where: _ours(path, first_device))
    body = dict(prompt="a fox", steps=2, width=SIZE, height=SIZE, seed=3, sampler_name="Euler",
                refiner_checkpoint="refiner", refiner_switch_at=0.6)
    with TestClient(app) as client:
        response = client.post("/sdapi/v1/txt2img", json=body)
        assert response.status_code == 200, response.text
        text = response.json()["info"]
        assert "Refiner: refiner, Refiner switch at: 0.6" in text and "Model: base" in text
        for change, message in ((dict(refiner_checkpoint="nope"), "not one of this server"),
                                (dict(refiner_switch_at=1.2), "between 0 and 1"),
                                (dict(refiner_checkpoint="sd-turbo"), "cannot continue")):
            response = client.post("/sdapi/v1/txt2img", json={**body, **change})
            assert response.status_code == 422 and message in response.text, response.text
        assert client.get("/avx/queue").json()["native_size"] == SIZE * 2
