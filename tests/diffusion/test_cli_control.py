"""The generation commands' ControlNet options: units in command-line order, per-unit values
(one for all, or one each), the checks before any model loads, and a real run whose infotext
carries the units and reads back through --from-infotext to the same picture."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

import diffusion.cli.main as cli
from diffusion.cli.control import build_control_specs
from diffusion.cli.generate import _open_image
from diffusion.infotext import read_infotext


@pytest.fixture
def pictures(tmp_path: Path) -> dict[str, str]:
    rng = np.random.default_rng(0)
    out = {}
    for name, size in (("edges", (40, 48)), ("depth", (32, 32))):
        path = tmp_path / f"{name}.png"
        Image.fromarray(rng.integers(0, 256, (*size, 3), dtype=np.uint8)).save(path)
        out[name] = str(path)
    # listed as models (loading them is another test's): a ControlNet, a T2I-Adapter
    for name, kind in (("cn-a", "ControlNetModel"), ("cn-b", "T2IAdapter")):
        (tmp_path / name).mkdir()
        (tmp_path / name / "config.json").write_text(f'{{"_class_name": "{kind}"}}')
    out["dir"] = str(tmp_path)
    return out


def _specs(*argv: str) -> tuple[list[Any], Any]:
    args = cli.build_parser().parse_args(["txt2img", "--prompt", "p", *argv])
    return build_control_specs(args, _open_image), args


@pytest.mark.nodevice
def test_units_and_per_unit_values(pictures: dict[str, str]) -> None:
    a, b = (str(Path(pictures["dir"]) / n) for n in ("cn-a", "cn-b"))
    specs, args = _specs("--controlnet", a, "--t2i-adapter", b, "--controlnet", a,
                         "--control-image", pictures["edges"], pictures["depth"],
                         pictures["edges"], "--control-module", "canny", "none", "invert",
                         "--control-weight", "0.5", "--control-mode", "2",
                         "--control-resize", "Just Resize", "Resize and Fill", "0",
                         "--control-pixel-perfect")
    assert args.control_kinds == ["controlnet", "t2i_adapter", "controlnet"]
    assert [s.model for s in specs] == [a, b, a]
    assert [s.module for s in specs] == ["canny", "none", "invert"]
    assert [s.weight for s in specs] == [0.5] * 3
    assert {s.control_mode for s in specs} == {"ControlNet is more important"}
    assert [s.resize_mode for s in specs] == ["Just Resize", "Resize and Fill", "Just Resize"]
    assert [s.image.shape for s in specs] == [(40, 48, 3), (32, 32, 3), (40, 48, 3)]
    assert all(s.pixel_perfect for s in specs)
    # the option repeated after each unit, as the units' own
    interleaved, _ = _specs("--controlnet", a, "--control-image", pictures["edges"],
                            "--control-weight", "0.3", "--t2i-adapter", b, "--control-image",
                            pictures["depth"], "--control-weight", "0.9")
    assert [(s.image.shape, s.weight) for s in interleaved] == [((40, 48, 3), 0.3),
                                                                ((32, 32, 3), 0.9)]
    # a name in --controlnet-dir, with or without its hash
    named, _ = _specs("--controlnet-dir", pictures["dir"], "--t2i-adapter", "CN-B",
                      "--control-image", pictures["depth"])
    assert named[0].model == b
    # img2img: a unit without a picture takes the init image
    args = cli.build_parser().parse_args(["img2img", "--prompt", "p", "--init-image",
                                          pictures["depth"], "--controlnet", a])
    assert build_control_specs(args, _open_image)[0].image.shape == (32, 32, 3)
    # the inpaint modules' mask: --control-mask, else (inpaint, the init image) --mask
    spec, = _specs("--controlnet", a, "--control-image", pictures["depth"], "--control-mask",
                   pictures["depth"], "--control-module", "inpaint")[0]
    assert spec.mask.shape == (32, 32) and spec.mask.dtype == np.uint8
    args = cli.build_parser().parse_args(["inpaint", "--prompt", "p", "--init-image",
                                          pictures["depth"], "--mask", pictures["depth"],
                                          "--controlnet", a, "--control-module", "inpaint_only"])
    spec, = build_control_specs(args, _open_image)
    assert spec.module == "inpaint_only" and spec.mask.shape == (32, 32)


@pytest.mark.nodevice
def test_a_unit_on_the_init_image_takes_the_blurred_mask(pictures: dict[str, str],
                                                         tmp_path: Path) -> None:
    """The extension gives a unit without a picture of its own the WebUI's mask through its
    prepare_mask: inverted for "Inpaint not masked" (--mask-invert), blurred by the Mask blur
    (cv2.GaussianBlur along x, then y, as the WebUI blurs it); a unit's own --control-mask is
    taken as it is."""
    cv2 = pytest.importorskip("cv2", reason="opencv-python-headless (the test reference)")
    a = str(Path(pictures["dir"]) / "cn-a")
    square = np.zeros((32, 32), np.uint8)
    square[8:20, 10:26] = 255
    Image.fromarray(square).save(tmp_path / "square.png")
    inpaint = ["inpaint", "--prompt", "p", "--init-image", pictures["depth"], "--mask",
               str(tmp_path / "square.png"), "--controlnet", a, "--control-module", "inpaint"]
    for blur in (4, 1):
        args = cli.build_parser().parse_args([*inpaint, "--mask-blur", str(blur)])
        spec, = build_control_specs(args, _open_image)
        size = 2 * int(2.5 * blur + 0.5) + 1  # processing.py's kernel sizes
        want = cv2.GaussianBlur(cv2.GaussianBlur(square, (size, 1), blur), (1, size), blur)
        assert np.array_equal(spec.mask, want) and not np.array_equal(spec.mask, square)
    args = cli.build_parser().parse_args([*inpaint, "--mask-blur", "0"])
    assert np.array_equal(build_control_specs(args, _open_image)[0].mask, square)
    args = cli.build_parser().parse_args([*inpaint, "--mask-blur", "0", "--mask-invert"])
    assert np.array_equal(build_control_specs(args, _open_image)[0].mask, 255 - square)
    args = cli.build_parser().parse_args([*inpaint, "--control-mask",
                                          str(tmp_path / "square.png")])
    assert np.array_equal(build_control_specs(args, _open_image)[0].mask, square)


@pytest.mark.nodevice
@pytest.mark.parametrize("argv, message", [
    (["--control-weight", "0.5"], "--control-weight needs a unit"),
    (["--controlnet", "{a}", "--control-image", "{edges}", "{edges}"],
     "--control-image has 2 values for 1 units"),
    (["--controlnet", "{a}"], "has no picture"),
    (["--controlnet", "missing-model", "--control-image", "{edges}"],
     "'missing-model' is not a file or folder"),
    (["--controlnet", "{a}", "--control-image", "{dir}/nothing.png"], "does not exist"),
    (["--controlnet", "{a}", "--control-image", "{edges}", "--control-module", "depth_leres"],
     "unit 0 .*module 'depth_leres'"),
    (["--controlnet", "{a}", "--control-image", "{edges}", "--control-weight", "nan"],
     "unit 0 .*weight must be a finite number"),
    (["--controlnet", "{a}", "--control-image", "{edges}", "--control-end", "2"],
     "guidance_end"),
    (["--controlnet", "{a}", "--control-image", "{edges}", "--control-module", "inpaint_only"],
     "unit 0 .*inpaint_only outside inpainting"),
    (["--controlnet", "{a}", "--control-image", "{edges}", "--control-mask", "{depth}",
      "--control-module", "inpaint"], "unit 0 .*mask: 32x32, but the picture is 48x40"),
    (["--annotator-dir", "{dir}/nowhere"], "--annotator-dir .*nowhere' is not a folder"),
])
def test_bad_units_are_one_error_line(pictures: dict[str, str], argv: list[str], message: str,
                                      capsys: pytest.CaptureFixture[str]) -> None:
    a = str(Path(pictures["dir"]) / "cn-a")
    argv = [part.format(a=a, **pictures) for part in argv]
    assert cli.main(["txt2img", "--prompt", "p", "--out", pictures["dir"], *argv]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("error: ") and re.search(message, err[-1]), err


def test_run_writes_units_and_from_infotext_repeats_it(tmp_path: Path,
                                                       first_device: Any,
                                                       capsys: pytest.CaptureFixture[str]
                                                       ) -> None:
    pytest.importorskip("diffusers", reason="the tiny models are built with diffusers")
    from control_tiny import circle, write_controlnets
    from sd_tiny import write_pipeline

    model = write_pipeline(tmp_path / "sd")
    folder = write_controlnets(tmp_path / "ControlNet", ("tiny_canny",))
    Image.fromarray(circle()).save(tmp_path / "circle.png")
    common = ["--model", str(model), "--controlnet-dir", str(folder), "--control-image",
              str(tmp_path / "circle.png")]
    first = tmp_path / "first.png"
    assert cli.main(["txt2img", *common, "--prompt", "a circle", "--steps", "1", "--seed", "4",
                     "--width", "32", "--height", "32", "--controlnet", "tiny_canny",
                     "--control-module", "canny", "--control-processor-res", "64",
                     "--control-weight", "0.9", "--control-end", "0.5", "--out",
                     str(first)]) == 0, capsys.readouterr().err
    text = read_infotext(first)
    assert ', ControlNet 0: "Module: canny, Model: tiny_canny [' in text
    assert ("Weight: 0.9, Resize Mode: Crop and Resize, Processor Res: 64, Threshold A: "
            "100.0, Threshold B: 200.0, Guidance Start: 0.0, Guidance End: 0.5, ") in text
    again = tmp_path / "again.png"
    assert cli.main(["txt2img", *common, "--from-infotext", str(first), "--out",
                     str(again)]) == 0, capsys.readouterr().err
    assert read_infotext(again) == text
    np.testing.assert_array_equal(np.asarray(Image.open(again)), np.asarray(Image.open(first)))


@pytest.mark.nodevice
def test_annotator_dir_is_where_preprocessors_look(tmp_path: Path,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    """--annotator-dir: the folder for this process and, through the variable, its workers."""
    from diffusion.loaders.control import annotator_file

    monkeypatch.delenv(annotator_file.ENV_VAR, raising=False)
    monkeypatch.setattr(annotator_file, "_chosen", {})
    args = cli.build_parser().parse_args(["serve", "--annotator-dir", str(tmp_path)])
    annotator_file.use_annotator_dir(args.annotator_dir)
    assert annotator_file.annotator_dir() == tmp_path.resolve()
    assert annotator_file.os.environ[annotator_file.ENV_VAR] == str(tmp_path.resolve())


@pytest.mark.nodevice
def test_reference_adain_from_the_command_line(pictures: dict[str, str]) -> None:
    """A picture without a ControlNet, module reference_adain+attn: the reference unit."""
    from diffusion.pipelines.reference import ReferenceUnit

    spec, = _specs("--control-image", pictures["edges"], "--control-module",
                   "reference_adain+attn", "--control-threshold-a", "0.25")[0]
    unit = spec.unit(None, width=48, height=40)
    assert isinstance(unit, ReferenceUnit)
    assert (unit.module, unit.fidelity) == ("reference_adain+attn", 0.25)


@pytest.mark.nodevice
@pytest.mark.parametrize(("mode", "guests", "kind", "to_host"), [
    (None, True, "controlnet", False),            # no memory mode: on the GPU
    ("lowvram", True, "controlnet", True),        # a flow model places it (control_on_host)
    ("lowvram", False, "controlnet", False),      # a UNet model under a mode: as before
    ("lowvram", True, "t2i_adapter", False)])     # only ControlNets are a flow model's guests
def test_controlnets_load_to_host_for_a_flow_model_under_a_memory_mode(
        monkeypatch: pytest.MonkeyPatch, tmp_path: Path, mode: Any, guests: bool, kind: str,
        to_host: bool) -> None:
    """The CLI loads a ControlNet straight to host memory where the model's memory mode will
    place it (FlowMemoryPlan.guests), not onto the GPU and back."""
    import diffusion.loaders.control.catalog as catalog
    from diffusion.cli.control import load_control_units
    from diffusion.pipelines.contract import Capabilities
    from diffusion.pipelines.control_spec import ControlSpec

    asked: list[bool] = []

    def loader(path: Path, **kw: Any) -> Any:
        asked.append(kw.get("to_host", False))
        return type("Model", (), {})()

    monkeypatch.setattr(catalog, "model_kind", lambda path: kind)
    monkeypatch.setitem(catalog.LOADERS, kind, loader)
    monkeypatch.setattr(ControlSpec, "unit", lambda self, model, **kw: model)
    (tmp_path / "cn.safetensors").write_bytes(b"not read: the loader is a stand-in")
    pipe = type("Pipe", (), {"placement": type("P", (), {"device": None, "dtype": None})(),
                             "memory_mode": mode,
                             "capabilities": Capabilities("x", "x", control_on_host=guests)})()
    spec = ControlSpec(model=str(tmp_path / "cn.safetensors"))
    load_control_units([spec], ["any"], pipe, 64, 64)
    assert asked == [to_host]
