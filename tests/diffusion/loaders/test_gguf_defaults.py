"""`python -m diffusion quantize` carries the folder's defaults.json (the model's recommended
steps, sampler, CFG scale) into the GGUF as `diffusion.defaults`, which the loader reads as it
reads the folder's: over the family's defaults, under the command line's flags; a damaged key
is refused in one line, as a damaged defaults.json is."""

from __future__ import annotations

import argparse
import json
import shutil
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("gguf", reason="GGUF needs the gguf package (diffusion extra)")
pytest.importorskip("diffusers", reason="the tiny models are built with diffusers")
from sd_tiny import write_pipeline

import diffusion.cli.main as cli
from diffusion.cli.generate import _fill_sampling_defaults
from diffusion.loaders import WeightsError
from diffusion.loaders.formats.gguf_file import GGUFFile
from diffusion.loaders.formats.gguf_write import write_gguf
from diffusion.pipelines.contract import SamplingDefaults
from diffusion.pipelines.load import TURBO_DEFAULTS, model_defaults, read_defaults
from diffusion.pipelines.model_defaults import DEFAULTS_KEY

pytestmark = pytest.mark.nodevice


@pytest.fixture(scope="module")
def folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny SD folder, without a defaults.json (each test writes its own copy's)."""
    return write_pipeline(tmp_path_factory.mktemp("gguf-defaults") / "tiny")


def _copy(folder: Path, root: Path, defaults: str | None) -> Path:
    copy = Path(shutil.copytree(folder, root / "model"))
    if defaults is not None:
        (copy / "defaults.json").write_text(defaults, encoding="utf-8")
    return copy


def test_quantize_carries_defaults_json(folder: Path, tmp_path: Path,
                                        capsys: pytest.CaptureFixture[str]) -> None:
    # not the generic 20 steps of Euler a at CFG 7, so taking them shows
    model = _copy(folder, tmp_path, '{"steps": 10, "sampler": "ddim", "cfg_scale": 5}')
    expected = read_defaults(model)
    assert expected == SamplingDefaults(steps=10, sampler="DDIM", cfg_scale=5.0)
    for flags in ((), ("--unet-only",)):
        out = tmp_path / f"q{len(flags)}.gguf"
        assert cli.main(["quantize", str(model), "--type", "q8_0", *flags, str(out)]) == 0
        assert json.loads(GGUFFile(out).metadata[DEFAULTS_KEY]) == {
            "steps": 10, "sampler": "DDIM", "cfg_scale": 5.0}
        assert read_defaults(out) == expected and model_defaults(out) == (expected, [])
    capsys.readouterr()
    # the command line's flags win, the GGUF's fill the rest, and stderr says where from
    args = argparse.Namespace(model=str(out), steps=3, sampler=None, cfg_scale=None)
    _fill_sampling_defaults(args)
    assert (args.steps, args.sampler, args.cfg_scale) == (3, "DDIM", 5.0)
    assert f"from {out}: --cfg-scale 5, --sampler 'DDIM'" in capsys.readouterr().err


def test_without_defaults_json_no_key_and_the_familys(folder: Path, tmp_path: Path) -> None:
    out = tmp_path / "tiny-turbo.gguf"  # "turbo" in the name: the family has defaults to give
    assert cli.main(["quantize", str(folder), "--unet-only", str(out)]) == 0
    assert DEFAULTS_KEY not in GGUFFile(out).metadata
    assert read_defaults(out) == SamplingDefaults()
    assert model_defaults(out) == (TURBO_DEFAULTS, ["steps", "sampler", "cfg_scale"])
    # the GGUF's key over the family's: its steps, Turbo's sampler and CFG scale
    model = _copy(folder, tmp_path, '{"steps": 4}')
    assert cli.main(["quantize", str(model), "--unet-only", str(out)]) == 0
    recommended, from_family = model_defaults(out)
    assert (recommended.steps, recommended.sampler, recommended.cfg_scale) == (
        4, TURBO_DEFAULTS.sampler, TURBO_DEFAULTS.cfg_scale)
    assert from_family == ["sampler", "cfg_scale"]


@pytest.mark.parametrize("text, message", [
    ('{"steps": 10,}', "metadata is not valid JSON"),
    ('[10, "DDIM"]', "metadata must hold a JSON object with the optional keys steps, "),
    ('{"smapler": "DDIM"}', "metadata: unknown key 'smapler'; allowed: steps, sampler, "),
    ('{"steps": 0}', "metadata: steps must be a whole number >= 1, got 0"),
])
def test_a_damaged_key_is_one_error_line(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                         text: str, message: str) -> None:
    path = tmp_path / "bad.gguf"
    write_gguf(path, [("a.weight", np.ones((4, 256)))], "q8_0", architecture="sd1",
               metadata={DEFAULTS_KEY: text})
    with pytest.raises(WeightsError, match=f"{path}'s {DEFAULTS_KEY} metadata"):
        read_defaults(path)
    code = cli.main(["txt2img", "--model", str(path), "--prompt", "a", "--steps", "1",
                     "--out", str(tmp_path / "x.png")])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and err[-1].startswith(f"error: {path}'s {DEFAULTS_KEY}"), err
    assert message in err[-1] and "Traceback" not in "".join(err)


def test_quantize_refuses_a_damaged_defaults_json(folder: Path, tmp_path: Path,
                                                  capsys: pytest.CaptureFixture[str]) -> None:
    model = _copy(folder, tmp_path, '{"steps": "ten"}')
    out = tmp_path / "out.gguf"
    assert cli.main(["quantize", str(model), str(out)]) == 2
    last = capsys.readouterr().err.strip().splitlines()[-1]
    assert last == (f"error: {model / 'defaults.json'}: steps must be a whole number >= 1, "
                    "got 'ten'")
    assert not out.exists()
