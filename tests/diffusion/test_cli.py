"""`python -m diffusion`: parsing, validation errors, progress output and end-to-end runs with a
fake pipeline (random images), so no model and no GPU are needed."""

from __future__ import annotations

import importlib.util
import io
import json
import os
import subprocess
import sys
from dataclasses import fields
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest
from conftest import checkout_env
from PIL import Image
from support import ROOT

import diffusion
import diffusion.cli.main as cli
import diffusion.pipelines.load
import gpucore
import gpustd
from diffusion.infotext import format_infotext, parse_infotext, read_infotext, save_png
from diffusion.loaders.errors import WeightsError
from diffusion.pipelines.contract import Capabilities, GenerationResult, Placement, SamplingDefaults
from diffusion.pipelines.request import GenerationRequest


class FakePipeline:
    """Stands in for StableDiffusion: records its calls, returns random images; keeps the
    Pipeline contract (diffusion.pipelines.contract), all the CLI may use."""

    native_size = 64
    family = "sd1"
    capabilities = Capabilities(family="sd1", latent_space="sd1")
    defaults = SamplingDefaults()
    placement = Placement(device=None, dtype=np.float32)
    memory_mode: Any = None

    def __init__(self, name: str) -> None:
        self.name = name
        self.calls: list[dict[str, Any]] = []
        self.lora_dir: Any = None
        self.embeddings: Any = None
        self.vae_path: Any = None

    def use_vae(self, path: Any) -> None:
        self.vae_path = path

    def generate(self, request: GenerationRequest, *, observer: Any) -> GenerationResult:
        kw = {f.name: getattr(request, f.name) for f in fields(request)}
        kw.update(width=request.width or self.native_size,
                  height=request.height or self.native_size)
        self.calls.append(kw)
        for i in range(2):
            observer.step(i + 1, 2, np.zeros((1, 4, 1, 1)))
        rng = np.random.default_rng(kw["seed"])
        images = [rng.integers(0, 256, (kw["height"], kw["width"], 3), dtype=np.uint8)
                  for _ in range(kw["batch_size"])]
        settings = {k: kw[k] for k in ("prompt", "negative_prompt", "steps", "sampler",
                                       "cfg_scale", "seed", "width", "height", "batch_size",
                                       "clip_skip")}
        settings.update(model=self.name, mode=request.mode)
        if request.init_image is not None:
            settings["strength"] = kw["strength"]
        return GenerationResult(images=images, seeds=[kw["seed"]] * len(images),
                                settings=settings)

    txt2img = generate

    def set_memory_mode(self, mode: Any) -> None:
        self.memory_mode = mode


@pytest.fixture
def fake(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> dict[str, Any]:
    """Patch diffusion.load_pipeline; chdir to tmp_path, which holds a 'model' folder."""
    state: dict[str, Any] = {"loads": []}

    def load_pipeline(path: str | None, **kw: Any) -> FakePipeline:
        state["loads"].append((path, kw))
        if "error" in state:
            raise state["error"]
        state["pipe"] = FakePipeline(Path(path or "bundled").stem)
        state.setdefault("pipes", []).append(state["pipe"])
        return state["pipe"]

    monkeypatch.setattr(diffusion, "load_pipeline", load_pipeline, raising=False)
    monkeypatch.chdir(tmp_path)
    (tmp_path / "model").mkdir()
    Image.new("RGB", (40, 24), (200, 30, 30)).save(tmp_path / "init.png")
    Image.new("L", (40, 24), 255).save(tmp_path / "mask.png")
    (tmp_path / "junk.png").write_text("not an image")
    (tmp_path / "notes").write_text("a file, not a folder")
    return state


def run_cli(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = cli.main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


TXT = ("txt2img", "--model", "model", "--prompt", "a cat")


# -- validation: one line, exit 2, the model never loads ---------------------------------
@pytest.mark.parametrize("argv, message", [
    ((*TXT, "--width", "500"), "width must be a positive multiple of 8 (the VAE works on 8x8 "
                                "pixel blocks), got 500; try 496 or 504"),
    ((*TXT, "--height", "0"), "height must be a positive multiple of 8"),
    ((*TXT, "--width", "100000"), "--width 100000 is above the largest side drawn here, 8192"),
    ((*TXT, "--width", "2048", "--height", "1024", "--hr-scale", "8"),
     "hires fix width 16384 is above the largest side"),
    ((*TXT, "--hr-resize", "512x9000"), "hires fix height 9000 is above"),
    ((*TXT, "--seed-resize-from", "16384x64"), "--seed-resize-from width 16384 is above"),
    ((*TXT, "--sampler", "Euler b"), "unknown sampler 'Euler b' (did you mean 'Euler a'?)"),
    ((*TXT, "--steps", "0"), "steps must be a whole number from 1 to 1000, got 0"),
    ((*TXT, "--steps", "ten"), "'ten' is not a whole number"),
    ((*TXT, "--seed", "-2"), "seed must be -1 (random) or a whole number >= 0"),
    ((*TXT, "--clip-skip", "0"), "clip_skip (layers skipped: the WebUI's Clip skip minus 1)"),
    ((*TXT, "--cfg-scale", "x"), "--cfg-scale: 'x' is not a number"),
    ((*TXT, "--cfg-scale", "nan"), "cfg_scale must be a finite number in [0, 100]"),
    (("img2img", "--model", "model", "--prompt", "a"), "--init-image"),
    (("inpaint", "--model", "model", "--prompt", "a", "--init-image", "init.png"), "--mask"),
    (("img2img", "--model", "model", "--prompt", "a", "--init-image", "init.png",
      "--strength", "1.5"), "strength must be a finite number in (0, 1]"),
    (("img2img", "--model", "model", "--prompt", "a", "--init-image", "init.png",
      "--strength", "0.04"), "leaves no step to run"),
    (("txt2img", "--model", "missing-model", "--prompt", "a"), "'missing-model' does not exist"),
    (("img2img", "--model", "model", "--prompt", "a", "--init-image", "none.png"),
     "--init-image 'none.png' does not exist"),
    (("img2img", "--model", "model", "--prompt", "a", "--init-image", "junk.png"),
     "--init-image 'junk.png' is not a readable image"),
    (("inpaint", "--model", "model", "--prompt", "a", "--init-image", "init.png", "--mask",
      "junk.png"), "--mask 'junk.png' is not a readable image"),
    (("img2img", "--model", "model", "--prompt", "a", "--init-image", "init.png",
      "--reference", "none.png"), "--reference 'none.png' does not exist"),
    (("img2img", "--model", "model", "--prompt", "a", "--init-image", "init.png",
      "--resize-mode", "stretch"), "'stretch' is not a resize mode; give one of 0 (just "
                                   "resize), 1 (crop and resize), 2 (resize and fill), 3"),
    ((*TXT, "--out", "nowhere/x.png"), "output folder 'nowhere' does not exist"),
    ((*TXT, "--out", "init.png/sub"), "'init.png' is a file"),
    ((*TXT, "--out", "notes"), "'notes' is a file"),
    ((*TXT, "--out", "notes/x.png"), "'notes' is a file"),
    (("paint",), "invalid choice: 'paint'"),
    ((), "choose a command"),
])
def test_bad_input_is_one_error_line(fake: dict[str, Any], capsys: pytest.CaptureFixture[str],
                                     argv: tuple[str, ...], message: str) -> None:
    code, out, err = run_cli(capsys, *argv)
    assert code == 2
    last = err.strip().splitlines()[-1]
    assert last.startswith("error: ") and message in last, err
    assert "Traceback" not in err and out == ""
    assert fake["loads"] == []


@pytest.mark.parametrize("error, code, message", [
    (WeightsError("model.safetensors: tensor 'x' missing"), 2, "tensor 'x' missing"),
    (OSError("model_index.json unreadable"), 2, "unreadable"),
    (gpucore.NoAdapterError("wgpu enumerated none"), 1, "GPU: "),
])
def test_loader_errors_are_one_line(fake: dict[str, Any], capsys: pytest.CaptureFixture[str],
                                    error: Exception, code: int, message: str) -> None:
    fake["error"] = error
    got, out, err = run_cli(capsys, *TXT, "--seed", "1")
    assert got == code and err.splitlines()[-1].startswith("error: ")
    assert message in err and "Traceback" not in err and out == ""


def test_unwritable_out_is_refused_before_the_model_loads(
        fake: dict[str, Any], capsys: pytest.CaptureFixture[str],
        monkeypatch: pytest.MonkeyPatch) -> None:
    # os.access, not chmod: the tests may run as root, who may write anywhere
    Path("locked").mkdir()
    real = os.access
    monkeypatch.setattr(os, "access", lambda path, mode, **kw: Path(path).name != "locked"
                        and real(path, mode, **kw))
    for out in ("locked/x.png", "locked/new/sub"):
        code, stdout, err = run_cli(capsys, *TXT, "--out", out)
        assert code == 2 and stdout == "" and fake["loads"] == []
        assert err.splitlines()[-1] == (f"error: --out {out!r}: cannot write in 'locked' (no "
                                        "permission); give a folder you can write to")


def test_interrupt_exits_130(fake: dict[str, Any], capsys: pytest.CaptureFixture[str]) -> None:
    fake["error"] = KeyboardInterrupt()
    code, _, err = run_cli(capsys, *TXT)
    assert code == 130 and "interrupted" in err
    assert not Path("outputs").exists()


# -- end to end with the fake pipeline ---------------------------------------------------
def test_txt2img_writes_pngs_with_parameters(fake: dict[str, Any],
                                             capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run_cli(capsys, *TXT, "--negative-prompt", "blurry, dark", "--steps", "7",
                             "--cfg-scale", "7.5", "--sampler", "dpm++ 2m KARRAS", "--seed",
                             "1234", "--width", "48", "--height", "32", "--batch-size", "2",
                             "--clip-skip", "2")
    assert code == 0, err
    paths = [Path(line) for line in out.splitlines()]
    assert paths == [Path("outputs/00000-1234.png"), Path("outputs/00001-1234.png")]
    assert "seed: 1234" in err and "txt2img: 2 steps in" in err
    (path, kw), = fake["loads"]
    # --dtype auto: float16 on matrix units (Dawn on a GPU), float32 elsewhere (lavapipe)
    auto = np.float16 if gpustd.has_matrix_units(kw["device"]) else np.float32
    assert path == "model" and kw == {"dtype": auto, "device": gpucore.default_device(),
                                       "prediction_type": None}
    call = fake["pipe"].calls[0]
    assert call["sampler"] == "DPM++ 2M Karras" and call["clip_skip"] == 1
    assert call["init_image"] is None
    settings = {"prompt": "a cat", "negative_prompt": "blurry, dark", "steps": 7,
                "sampler": "DPM++ 2M Karras", "cfg_scale": 7.5, "seed": 1234, "width": 48,
                "height": 32, "batch_size": 2, "clip_skip": 1, "model": "model"}
    for pos, png in enumerate(paths):
        text = read_infotext(png)
        assert text == format_infotext(settings, batch_pos=pos)
        assert text.endswith("Model: model, Batch size: 2, Batch pos: "
                             f"{pos}, Clip skip: 2")
        with Image.open(png) as im:
            assert im.size == (48, 32)
    # a second run numbers on after the first
    code, out, _ = run_cli(capsys, *TXT, "--seed", "5", "--width", "8", "--height", "8")
    assert code == 0 and out.strip() == str(Path("outputs/00002-5.png"))


def test_random_seed_is_printed_and_used(fake: dict[str, Any],
                                         capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run_cli(capsys, *TXT, "--width", "8", "--height", "8", "--out", "one.png")
    assert code == 0 and out.strip() == "one.png"
    seed = int(err.split("seed: ")[1].split()[0])
    assert fake["pipe"].calls[0]["seed"] == seed
    assert parse_infotext(read_infotext("one.png") or "")["seed"] == seed


@pytest.mark.parametrize("command, strength", [("img2img", 0.75), ("inpaint", 1.0)])
def test_img2img_and_inpaint(fake: dict[str, Any], capsys: pytest.CaptureFixture[str],
                             command: str, strength: float) -> None:
    extra = ("--mask", "mask.png") if command == "inpaint" else ()
    code, out, err = run_cli(capsys, command, "--model", "model", "--prompt", "a dog",
                             "--init-image", "init.png", *extra, "--width", "16", "--height",
                             "8", "--seed", "3", "--out", "res")
    assert code == 0, err
    call = fake["pipe"].calls[0]
    assert call["strength"] == strength and call["init_image"].mode == "RGB"
    assert call["init_image"].size == (40, 24)
    if command == "inpaint":
        assert call["mask"].mode == "L"
    assert read_infotext(out.strip()).endswith(f"Denoising strength: {strength:g}")


@pytest.mark.parametrize("command, given, mode", [
    ("img2img", (), 0), ("img2img", ("--resize-mode", "Crop and resize"), 1),
    ("inpaint", ("--resize-mode", "2"), 2),
    ("img2img", ("--resize-mode", "just resize (latent upscale)"), 3)])
def test_resize_mode_by_name_or_number(fake: dict[str, Any],
                                       capsys: pytest.CaptureFixture[str], command: str,
                                       given: tuple[str, ...], mode: int) -> None:
    """--resize-mode takes the WebUI page's names (any case) or its API's numbers."""
    extra = ("--mask", "mask.png") if command == "inpaint" else ()
    code, _, err = run_cli(capsys, command, "--model", "model", "--prompt", "a", "--init-image",
                           "init.png", *extra, *given, "--seed", "1", "--out", "res")
    assert code == 0, err
    assert fake["pipe"].calls[0]["resize_mode"] == mode


def test_fp16_backend_adapter(fake: dict[str, Any], capsys: pytest.CaptureFixture[str],
                              monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("GPUCORE_BACKEND", "GPUCORE_ADAPTER"):
        # set, then delete: monkeypatch records the original state (even "unset") only when it
        # changes something, and the CLI sets both, which must not outlive this test
        monkeypatch.setenv(name, "")
        monkeypatch.delenv(name)

    class FakeDevice:
        name, has_f16 = "fake adapter", False
        info = SimpleNamespace(runtime="wgpu", backend="gl")  # gpucore.Warmup: nothing ahead

    device = FakeDevice()
    monkeypatch.setattr(gpucore, "default_device", lambda: device)
    code, _, err = run_cli(capsys, *TXT, "--fp16", "--backend", "gl", "--adapter", "1",
                           "--prediction-type", "v_prediction", "--seed", "0")
    assert code == 0 and "fake adapter has no shader-f16" in err
    assert fake["loads"][-1][1] == {"dtype": np.float32, "device": device,
                                    "prediction_type": "v_prediction"}
    assert os.environ["GPUCORE_BACKEND"] == "gl" and os.environ["GPUCORE_ADAPTER"] == "1"
    device.has_f16 = True
    assert run_cli(capsys, *TXT, "--fp16", "--seed", "0")[0] == 0
    assert fake["loads"][-1][1]["dtype"] == np.float16
    for units, dtype in ((True, np.float16), (False, np.float32)):  # --dtype auto
        monkeypatch.setattr(diffusion.pipelines.load, "has_matrix_units",
                            lambda d, units=units: units)
        assert run_cli(capsys, *TXT, "--seed", "0")[0] == 0
        assert fake["loads"][-1][1] == {"dtype": dtype, "device": device, "prediction_type": None}
    assert run_cli(capsys, *TXT, "--dtype", "float32", "--seed", "0")[0] == 0
    assert fake["loads"][-1][1]["device"] is None and fake["loads"][-1][1]["dtype"] == np.float32


# -- sampling defaults from the model folder's defaults.json -------------------------------
def write_defaults(folder: str | Path, text: str) -> Path:
    path = Path(folder) / "defaults.json"
    path.write_text(text, encoding="utf-8")
    return path


def used(fake: dict[str, Any]) -> tuple[int, str, float]:
    call = fake["pipe"].calls[-1]
    return call["steps"], call["sampler"], call["cfg_scale"]


def test_defaults_json_sets_left_out_options(fake: dict[str, Any],
                                             capsys: pytest.CaptureFixture[str]) -> None:
    path = write_defaults("model", '{"steps": 3, "sampler": "dpm++ 2m karras", "cfg_scale": 4.5}')
    code, out, err = run_cli(capsys, *TXT, "--seed", "2", "--out", "a.png")
    assert code == 0 and out.strip() == "a.png", err
    assert used(fake) == (3, "DPM++ 2M Karras", 4.5)
    assert "Steps: 3, Sampler: DPM++ 2M Karras, CFG scale: 4.5, Seed: 2" in read_infotext("a.png")
    assert f"from {path}: --steps 3, --cfg-scale 4.5, --sampler 'DPM++ 2M Karras'" in err
    # img2img/inpaint share the options; their strength check sees the model's steps
    write_defaults("model", '{"steps": 2}')
    code, _, err = run_cli(capsys, "img2img", "--model", "model", "--prompt", "a",
                           "--init-image", "init.png", "--strength", "0.4")
    assert code == 2 and "strength 0.4 with 2 steps leaves no step to run" in err
    code, _, err = run_cli(capsys, "inpaint", "--model", "model", "--prompt", "a",
                           "--init-image", "init.png", "--mask", "mask.png", "--out", "b.png")
    assert code == 0, err
    assert used(fake) == (2, "Euler a", 7.0)  # the keys it leaves out: the global defaults
    assert read_infotext("b.png").startswith("a\nSteps: 2, Sampler: Euler a, CFG scale: 7, ")


def test_explicit_flags_win_over_defaults_json(fake: dict[str, Any],
                                               capsys: pytest.CaptureFixture[str]) -> None:
    write_defaults("model", '{"steps": 3, "sampler": "DDIM", "cfg_scale": 4.5}')
    code, _, err = run_cli(capsys, *TXT, "--steps", "20", "--sampler", "euler",
                           "--cfg-scale", "7", "--out", "a.png")
    assert code == 0, err
    assert used(fake) == (20, "Euler", 7.0) and "defaults.json" not in err
    assert "Steps: 20, Sampler: Euler, CFG scale: 7, " in read_infotext("a.png")
    code, _, err = run_cli(capsys, *TXT, "--cfg-scale", "1")
    assert code == 0 and used(fake) == (3, "DDIM", 1.0)
    assert f"from {Path('model', 'defaults.json')}: --steps 3, --sampler 'DDIM'\n" in err


def test_without_defaults_json_the_global_defaults(fake: dict[str, Any],
                                                   capsys: pytest.CaptureFixture[str],
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    code, _, err = run_cli(capsys, *TXT)
    assert code == 0 and used(fake) == (20, "Euler a", 7.0) and "defaults.json" not in err
    # a single-file checkpoint carries none, even beside a folder's defaults.json
    write_defaults(".", '{"steps": 3}')
    Path("sd.safetensors").write_bytes(b"not read: the fake loads nothing")
    code, _, err = run_cli(capsys, "txt2img", "--model", "sd.safetensors", "--prompt", "a")
    assert code == 0 and used(fake) == (20, "Euler a", 7.0), err
    # no --model: the bundled model's folder
    bundled = Path("bundled")
    bundled.mkdir()
    write_defaults(bundled, '{"sampler": "LCM", "steps": 4}')
    monkeypatch.setattr(diffusion.pipelines.load, "DEFAULT_MODEL", bundled)
    code, _, err = run_cli(capsys, "txt2img", "--prompt", "a")
    assert code == 0 and used(fake) == (4, "LCM", 7.0), err
    assert fake["loads"][-1][0] is None


@pytest.mark.parametrize("text, message", [
    ('{"steps": 10, "smapler": "DDIM"}',
     "defaults.json: unknown key 'smapler'; allowed: steps, sampler, cfg_scale"),
    ('{"step": 1, "cfg": 2}', "unknown keys 'cfg', 'step'; allowed: steps, sampler, cfg_scale"),
    ('{"steps": "10"}', "defaults.json: steps must be a whole number >= 1, got '10'"),
    ('{"steps": 2.5}', "steps must be a whole number >= 1, got 2.5"),
    ('{"steps": 0}', "steps must be a whole number >= 1, got 0"),
    ('{"steps": true}', "steps must be a whole number >= 1, got True"),
    ('{"cfg_scale": "high"}', "defaults.json: cfg_scale must be a finite number, got 'high'"),
    ('{"cfg_scale": NaN}', "cfg_scale must be a finite number, got nan"),
    ('{"sampler": 3}', "sampler must be a sampler name (a string), got 3"),
    ('{"sampler": "Euler b"}',
     "defaults.json: unknown sampler 'Euler b' (did you mean 'Euler a'?); valid names "),
    ('{"steps": 10,}', "defaults.json is not valid JSON"),
    ('[10, "DDIM"]', "must hold a JSON object with the optional keys steps, sampler, cfg_scale"),
])
def test_bad_defaults_json_is_one_error_line(fake: dict[str, Any],
                                             capsys: pytest.CaptureFixture[str],
                                             text: str, message: str) -> None:
    write_defaults("model", text)
    code, out, err = run_cli(capsys, *TXT)
    assert code == 2 and out == "" and fake["loads"] == []
    last = err.strip().splitlines()[-1]
    assert last.startswith(f"error: {Path('model', 'defaults.json')}") and message in last, err
    # explicit flags do not hide a broken file: it is the model's, and the server refuses it too
    assert run_cli(capsys, *TXT, "--steps", "1", "--sampler", "DDIM", "--cfg-scale", "1")[0] == 2


# -- progress bar -------------------------------------------------------------------------
class Clock:
    def __init__(self, times: list[float]) -> None:
        self.times = iter(times)

    def __call__(self) -> float:
        return next(self.times)


def test_progress_quiet_without_tty_except_final_line() -> None:
    stream = io.StringIO()
    # start at 0, step 1 ends at 4 (compiling), then 0.5 s a step: 2 it/s, step 1 left out
    bar = cli.ProgressBar("txt2img", stream=stream, clock=Clock([0, 4, 4.5, 5, 5.5, 6]))
    for done in range(1, 5):
        bar(done, 5)
        assert stream.getvalue() == ""
    bar(5, 5)
    assert stream.getvalue() == "txt2img: 5 steps in 6.0s (2.00it/s)\n"


def test_progress_bar_on_a_terminal() -> None:
    class Terminal(io.StringIO):
        def isatty(self) -> bool:
            return True

    stream = Terminal()
    bar = cli.ProgressBar("img2img", stream=stream, width=10,
                          clock=Clock([0, 2, 4, 3700, 3702]))
    bar(1, 4)
    bar(2, 4)
    assert stream.getvalue().split("\r")[-1] == (
        "img2img  50%|#####     | 2/4 [00:04<00:04, 2.00s/it]")
    bar(3, 4)  # slow steps: seconds per step, hours in the clock
    assert stream.getvalue().split("\r")[-1] == (
        "img2img  75%|#######   | 3/4 [1:01:40<30:49, 1849.00s/it]")
    bar(4, 4)
    assert stream.getvalue().endswith("| 4/4 [1:01:42<00:00, 1233.33s/it]\n")

    stream = Terminal()
    bar = cli.ProgressBar("x", stream=stream, width=4, clock=Clock([0, 1, 1001, 1002]))
    for done in (1, 2, 3):
        bar(done, 3)
    assert stream.getvalue().split("\r") == [  # a shorter line blanks the longer one's tail
        "", "x  33%|#   | 1/3 [00:01<00:02, 1.00it/s]",
        "x  66%|##  | 2/3 [16:41<16:40, 1000.00s/it]",
        "x 100%|####| 3/3 [16:42<00:00, 500.50s/it] \n"]


def test_progress_times_each_pass_on_its_own() -> None:
    """A pass begun with latents of its own (a refiner's: on_begin) and one counting from 1
    again (a hires fix's second) each write their own time and rate, not the run's."""
    stream = io.StringIO()
    # made at 0, steps at 1, 2, 3; the refiner begins at 10, its steps at 12, 13; a third
    # pass's steps at 15, 16 (its time from the last step before it, 13)
    bar = cli.ProgressBar("x", stream=stream, clock=Clock([0, 1, 2, 3, 10, 12, 13, 15, 16]))
    bar.on_begin(lambda latents: [], "")  # the first pass's: its clock runs from 0
    for done in (1, 2, 3):
        bar(done, 3)
    bar.on_begin(lambda latents: [], "")
    bar(1, 2)
    bar(2, 2)
    bar(1, 2)
    bar(2, 2)
    assert stream.getvalue().splitlines() == [
        "x: 3 steps in 3.0s (1.00it/s)", "x: 2 steps in 3.0s (1.00it/s)",
        "x: 2 steps in 3.0s (1.00it/s)"]


def test_txt2img_example(fake: dict[str, Any], capsys: pytest.CaptureFixture[str],
                         monkeypatch: pytest.MonkeyPatch) -> None:
    spec = importlib.util.spec_from_file_location("txt2img_example",
                                                  ROOT / "examples" / "txt2img.py")
    assert spec is not None and spec.loader is not None
    example = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(example)
    monkeypatch.delenv("AVX_MODEL", raising=False)
    monkeypatch.setenv("AVX_EXAMPLE_SMALL", "1")
    assert example.main([]) == 0
    assert "no model given; skipping" in capsys.readouterr().out
    assert example.main(["--model", "model", "--out", "ex", "--seed", "9"]) == 0
    out = capsys.readouterr().out
    assert "wrote ex/00000-9.png" in out.replace(os.sep, "/") and "ok:" in out
    assert fake["pipe"].calls[0]["width"] == 64 and fake["pipe"].calls[0]["steps"] == 4

    def save_other_pixels(images: list[np.ndarray], settings: dict[str, Any],
                          out: Path) -> list[Path]:
        save_png(np.zeros_like(images[0]), out, infotext=format_infotext(settings))
        return [out]

    monkeypatch.setattr(example, "save_images", save_other_pixels)
    assert example.main(["--model", "model", "--out", "wrong.png"]) == 1  # it checks itself
    assert "FAILED" in capsys.readouterr().out


# -- the module entry point -----------------------------------------------------------------
def test_python_m_diffusion(tmp_path: Path) -> None:
    def run(*argv: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "diffusion", *argv], cwd=tmp_path,
                              env=checkout_env(), capture_output=True,
                              text=True, timeout=60, check=False)

    shown = run("txt2img", "--help")
    assert shown.returncode == 0 and "examples:" in shown.stdout and "Euler a" in shown.stdout
    assert " ".join(shown.stdout.split()).count("(default: the model's defaults.json, else") == 3
    bad = run("txt2img", "--model", ".", "--prompt", "x", "--width", "513")
    assert bad.returncode == 2 and bad.stdout == ""
    assert bad.stderr.strip().splitlines()[-1] == (
        "error: width must be a positive multiple of 8 (the VAE works on 8x8 pixel blocks), "
        "got 513; try 512 or 520")


# -- WebUI options: batch count, hires fix, infotext in and out ----------------------------
def test_n_iter_counts_seeds_on_over_batches(fake: dict[str, Any],
                                             capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run_cli(capsys, *TXT, "--seed", "10", "--n-iter", "3", "--batch-size", "2")
    assert code == 0, err
    assert [c["seed"] for c in fake["pipe"].calls] == [10, 12, 14]
    assert len(out.splitlines()) == 6 and "txt2img 3/3" in err


def test_n_iter_keeps_the_first_batchs_latent_noise(fake: dict[str, Any],
                                                    capsys: pytest.CaptureFixture[str]) -> None:
    """The WebUI fills the masked latents once a job (Img2Img.init): every batch's "latent
    noise" is drawn for the first batch's seeds."""
    code, _, err = run_cli(capsys, "inpaint", "--model", "model", "--prompt", "a",
                           "--init-image", "init.png", "--mask", "mask.png", "--seed", "10",
                           "--n-iter", "3", "--batch-size", "2", "--inpainting-fill",
                           "latent noise")
    assert code == 0, err
    assert [(c["seed"], c["latent_noise_seed"]) for c in fake["pipe"].calls] == [
        (10, 10), (12, 10), (14, 10)]


def test_n_iter_with_a_variation_seed_keeps_the_seed(fake: dict[str, Any],
                                                     capsys: pytest.CaptureFixture[str]) -> None:
    """The WebUI: with a variation strength every image has the seed, the subseeds count on."""
    code, _, err = run_cli(capsys, *TXT, "--seed", "10", "--subseed", "50",
                           "--subseed-strength", "0.3", "--n-iter", "2", "--batch-size", "2")
    assert code == 0, err
    assert [(c["seed"], c["subseed"]) for c in fake["pipe"].calls] == [(10, 50), (10, 52)]


@pytest.mark.parametrize("batch_size, names", [
    ("1", ["one-0.png", "one-1.png"]),
    ("2", ["one-0.png", "one-1.png", "one-2.png", "one-3.png"]),
])
def test_n_iter_into_one_png_name_keeps_every_batch(fake: dict[str, Any],
                                                    capsys: pytest.CaptureFixture[str],
                                                    batch_size: str, names: list[str]) -> None:
    code, out, err = run_cli(capsys, *TXT, "--seed", "10", "--n-iter", "2", "--width", "8",
                             "--height", "8", "--batch-size", batch_size, "--out", "one.png")
    assert code == 0, err
    assert out.split() == names and sorted(p.name for p in Path().glob("one*")) == names
    step = int(batch_size)
    assert [parse_infotext(read_infotext(names[k]) or "")["seed"] for k in (0, step)] == [10,
                                                                                          10 + step]


FLUX_DEV = Capabilities(family="flux-dev", latent_space="flux", guidance="distilled")


def test_hires_flags_become_a_hires_fix(fake: dict[str, Any], capsys: pytest.CaptureFixture[str],
                                        monkeypatch: pytest.MonkeyPatch) -> None:
    from diffusion.upscalers.interpolation import HiresFix

    monkeypatch.setattr(FakePipeline, "capabilities", FLUX_DEV)  # takes --hr-distilled-cfg
    code, _, err = run_cli(capsys, *TXT, "--hr-scale", "1.5", "--hr-upscaler", "lanczos",
                           "--hr-steps", "4", "--hr-denoise", "0.45", "--hr-distilled-cfg", "6")
    assert code == 0, err
    assert fake["pipe"].calls[-1]["hires"] == HiresFix(scale=1.5, upscaler="Lanczos", steps=4,
                                                       denoise=0.45)
    assert fake["pipe"].calls[-1]["hr_distilled_cfg"] == 6.0  # Forge's, for FLUX dev
    code, _, err = run_cli(capsys, *TXT)
    assert code == 0 and fake["pipe"].calls[-1]["hires"] is None
    code, _, err = run_cli(capsys, *TXT, "--hr-resize", "96x80", "--hr-upscaler", "ESRGAN")
    assert code == 2 and "--hr-upscaler 'ESRGAN' is not one of: Latent," in err
    assert err.strip().endswith("model upscalers are found with --upscaler-dir")
    code, _, err = run_cli(capsys, *TXT, "--hr-resize", "96by80")
    assert code == 2 and "'96by80' is not WIDTHxHEIGHT" in err


def test_a_distilled_guidance_scale_is_refused_given_not_pasted(
        fake: dict[str, Any], capsys: pytest.CaptureFixture[str],
        monkeypatch: pytest.MonkeyPatch) -> None:
    """--distilled-cfg-scale given for a family without distilled guidance: one line (here
    after the load: an empty folder tells no family before it), no picture. One that
    --from-infotext fills (a FLUX.1 dev picture's) passes, and the family ignores it, as the
    server ignores the one Forge's clients always send; a FLUX dev model takes it."""
    code, out, err = run_cli(capsys, *TXT, "--distilled-cfg-scale", "5", "--out", "x.png")
    assert (code, out) == (2, "") and err.strip().splitlines()[-1] == (
        "error: --distilled-cfg-scale: sd1 models take no distilled guidance (FLUX.1 and "
        "FLUX.2 dev's, embedded in the model); their guidance is the CFG scale: leave it out")
    assert fake["pipe"].calls == [] and not Path("x.png").exists()
    assert run_cli(capsys, *TXT, "--out", "x.png")[0] == 0
    assert fake["pipe"].calls[-1]["distilled_cfg_scale"] == 3.5  # the request's default
    save_png(np.zeros((8, 8, 3), np.uint8), "flux.png", infotext=(
        "a fox\nSteps: 4, Sampler: Euler, CFG scale: 1, Seed: 7, Size: 64x64, "
        "Distilled CFG Scale: 2.5, Hires Distilled CFG Scale: 4.5"))
    code, _, err = run_cli(capsys, "txt2img", "--model", "model", "--from-infotext", "flux.png",
                           "--out", "again.png")
    assert code == 0, err
    call = fake["pipe"].calls[-1]
    assert (call["distilled_cfg_scale"], call["hr_distilled_cfg"]) == (2.5, 4.5)
    monkeypatch.setattr(FakePipeline, "capabilities", FLUX_DEV)
    assert run_cli(capsys, *TXT, "--distilled-cfg-scale", "5", "--out", "x.png")[0] == 0
    assert fake["pipe"].calls[-1]["distilled_cfg_scale"] == 5.0


def test_hires_pass_of_its_own_and_noise_multiplier_from_infotext(
        fake: dict[str, Any], capsys: pytest.CaptureFixture[str]) -> None:
    """--from-infotext takes the hires pass's own prompt and sampler ("Hires prompt", "Hires
    sampler", ...) and img2img's "Noise multiplier"; the options given win."""
    text = ("a fox\nSteps: 9, Sampler: Euler, CFG scale: 4.5, Seed: 7, Size: 48x40, "
            "Denoising strength: 0.4, Hires sampler: DPM++ 2M, Hires schedule type: Karras, "
            'Hires prompt: "a fox, (sharp:1.1)", Hires upscale: 2, Hires upscaler: Latent')
    save_png(np.zeros((8, 8, 3), np.uint8), "hires.png", infotext=text)
    code, _, err = run_cli(capsys, "txt2img", "--model", "model", "--from-infotext",
                           "hires.png", "--hr-negative-prompt", "dull", "--out", "again.png")
    assert code == 0, err
    hires = fake["pipe"].calls[-1]["hires"]
    assert (hires.prompt, hires.negative_prompt, hires.sampler, hires.scheduler) == (
        "a fox, (sharp:1.1)", "dull", "DPM++ 2M", "Karras")
    save_png(np.zeros((8, 8, 3), np.uint8), "init.png",
             infotext="a fox\nSteps: 9, Sampler: Euler, Seed: 7, Size: 8x8, Denoising "
                      "strength: 0.4, Noise multiplier: 0.8")
    code, _, err = run_cli(capsys, "img2img", "--model", "model", "--init-image", "init.png",
                           "--from-infotext", "init.png", "--out", "again.png")
    assert code == 0, err
    assert fake["pipe"].calls[-1]["initial_noise_multiplier"] == 0.8


def test_png_info_and_from_infotext(fake: dict[str, Any],
                                    capsys: pytest.CaptureFixture[str]) -> None:
    text = ("a (red:1.2) fox\nNegative prompt: blurry\nSteps: 9, Sampler: DPM++ 2M Karras, "
            "CFG scale: 4.5, Seed: 77, Size: 48x40, Clip skip: 2, Denoising strength: 0.4, "
            "Hires Distilled CFG Scale: 2.5, Hires upscale: 2, Hires upscaler: Latent (bicubic)")
    save_png(np.zeros((8, 8, 3), np.uint8), "source.png", infotext=text)
    code, out, _ = run_cli(capsys, "png-info", "source.png")
    assert code == 0 and out.strip() == text
    code, out, _ = run_cli(capsys, "png-info", "--json", "source.png")
    assert json.loads(out)["hires_upscaler"] == "Latent (bicubic)"
    code, _, err = run_cli(capsys, "txt2img", "--model", "model", "--from-infotext",
                           "source.png", "--steps", "3", "--out", "again.png")
    assert code == 0, err
    call = fake["pipe"].calls[-1]
    assert (call["prompt"], call["negative_prompt"], call["steps"], call["seed"]) == (
        "a (red:1.2) fox", "blurry", 3, 77)  # --steps given here wins
    assert (call["sampler"], call["scheduler"], call["cfg_scale"], call["width"],
            call["clip_skip"]) == ("DPM++ 2M", "Karras", 4.5, 48, 1)
    assert call["hires"].upscaler == "Latent (bicubic)" and call["hires"].denoise == 0.4
    assert call["hr_distilled_cfg"] == 2.5
    code, _, err = run_cli(capsys, "png-info", "init.png")
    assert code == 2 and "carries no parameters" in err
    Path("junk.png").write_bytes(b"not a picture")
    code, _, err = run_cli(capsys, "png-info", "junk.png")
    assert code == 2 and err.strip().endswith("error: junk.png: not a readable image (PNG, "
                                              "JPEG, WebP...)"), err
    code, _, err = run_cli(capsys, "txt2img", "--model", "model")
    assert code == 2 and "--prompt is required" in err


def test_memory_flags_and_verbose(fake: dict[str, Any],
                                  capsys: pytest.CaptureFixture[str]) -> None:
    from diffusion.pipelines.sd.memory import MemoryMode

    Path("refiner").mkdir()
    code, _, err = run_cli(capsys, *TXT, "--seed", "1", "--width", "8", "--height", "8",
                           "--lowvram", "--max-vram", "2500M", "--verbose", "--refiner",
                           "refiner")
    assert code == 0, err
    assert fake["pipe"].memory_mode == MemoryMode(lowvram=True, max_vram=2500 << 20)
    # the model and its refiner load straight to host memory (LoadOptions.offload)
    assert [kw.get("offload") for _, kw in fake["loads"]] == [True, True]
    line = next(x for x in err.splitlines() if x.startswith("memory: peak "))
    assert "pool reserve" in line and "--lowvram --max-vram 2500M" in line
    timing = next(x for x in err.splitlines() if x.startswith("time: "))  # gpucore.Phases
    assert "load " in timing and "png " in timing and "total" in timing
    code, _, err = run_cli(capsys, *TXT, "--max-vram", "4 gigs")
    assert code == 2 and "'4 gigs' is not a size" in err


def test_the_model_is_its_own_refiner(fake: dict[str, Any], capsys: pytest.CaptureFixture[str],
                                      monkeypatch: pytest.MonkeyPatch) -> None:
    """--refiner naming --model's folder (spelled otherwise too) is the model loaded, once,
    its memory mode set once; with --vae, which the model alone takes, the refiner is a
    copy loaded as before."""
    modes: list[Any] = []
    monkeypatch.setattr(FakePipeline, "set_memory_mode", lambda pipe, mode: modes.append(pipe))
    small = (*TXT, "--width", "8", "--height", "8")
    code, _, err = run_cli(capsys, *small, "--refiner", "./model/", "--lowvram")
    assert code == 0, err
    pipe = fake["pipe"]
    assert [path for path, _ in fake["loads"]] == ["model"] and modes == [pipe]
    assert pipe.calls[-1]["refiner"] is pipe
    Path("vae.safetensors").write_bytes(b"")
    code, _, err = run_cli(capsys, *small, "--refiner", "model", "--vae", "vae.safetensors")
    assert code == 0, err
    assert [path for path, _ in fake["loads"]] == ["model", "model", "model"]
    model, refiner = fake["pipes"][1:]
    assert model.calls[-1]["refiner"] is refiner and model.vae_path == "vae.safetensors"
    assert refiner.vae_path is None


def test_styles_apply_as_the_webuis(fake: dict[str, Any],
                                    capsys: pytest.CaptureFixture[str]) -> None:
    # ./styles.csv by default; its {prompt} takes the prompt, another style is added after ", "
    Path("styles.csv").write_text('name,prompt,negative_prompt\nFramed,"art of {prompt}, framed",'
                                  'blurry\nInk,ink,\n', encoding="utf-8-sig")
    code, out, err = run_cli(capsys, *TXT, "--negative-prompt", "ugly", "--style", "Framed",
                             "--style", "Ink")
    assert code == 0, err
    call = fake["pipe"].calls[0]
    assert (call["prompt"], call["negative_prompt"]) == ("art of a cat, framed, ink",
                                                         "ugly, blurry")
    assert read_infotext(out.split()[0]).startswith(
        "art of a cat, framed, ink\nNegative prompt: ugly, blurry\n")
    code, _, err = run_cli(capsys, *TXT, "--style", "Oil")
    assert code == 2 and "--style: no style named 'Oil'; the styles are: 'Framed', 'Ink'" in err
    code, _, err = run_cli(capsys, *TXT, "--style", "Ink", "--styles-file", "none.csv")
    assert code == 2 and "styles file 'none.csv' does not exist" in err
    Path("styles.csv").unlink()
    code, _, err = run_cli(capsys, *TXT, "--style", "Ink")
    assert code == 2 and "--style needs --styles-file PATH" in err
    assert len(fake["loads"]) == 1
