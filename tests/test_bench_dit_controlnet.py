"""bench.dit_controlnet's smoke run (--quick: a tiny FLUX transformer and Union ControlNet,
lineart_realistic on a 32x32 picture): ours beside diffusers on the same random weights, the
preprocessor beside controlnet_aux's network; and controlnet_aux shipped as a copied folder
(BENCH_CONTROLNET_AUX) for machines without it."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

pytest.importorskip("diffusers", reason="diffusers is the benchmark's baseline")

import gpucore


def _installed(name: str) -> bool:
    """find_spec, which raises where another test put a stand-in for the package into
    sys.modules (tests/controlnet_aux_ref.py loads controlnet_aux's detectors that way)."""
    try:
        return importlib.util.find_spec(name) is not None
    except ValueError:
        return name in sys.modules


needs_aux = pytest.mark.skipif(not _installed("controlnet_aux"),
                               reason="controlnet_aux is a test-only reference "
                                      "(extra: reference)")


@needs_aux
def test_quick_rows_match_the_references() -> None:
    if not gpucore.devices():
        pytest.skip("no GPU adapter present: install mesa-vulkan-drivers (see README)")
    from bench import dit_controlnet

    rows = dit_controlnet.run(quick=True)["rows"]
    assert [row["impl"] for row in rows] == ["diffusers", "ours", "ours vs controlnet_aux"]
    assert 0 < rows[1]["rel_err"] < 5e-3  # float16 against torch float32 on the CPU
    assert rows[1]["dispatches"] > 0
    assert rows[2]["work"] == "lineart_realistic 32x32"
    assert "error" not in rows[2], rows[2]["error"]
    assert rows[2]["ours_wall_ms"] > 0 and rows[2]["torch_wall_ms"] > 0


def test_an_unknown_preprocessor_is_named(monkeypatch: pytest.MonkeyPatch) -> None:
    from bench import dit_controlnet

    monkeypatch.setenv("BENCH_PREPROCESSORS", "mlsd,canny")
    with pytest.raises(ValueError, match=r"\['canny'\]; use any of lineart_realistic"):
        dit_controlnet.run(quick=True)


@needs_aux
def test_the_reference_loads_from_a_copied_folder(tmp_path: Path,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    from bench import _annotator_refs

    copied = _annotator_refs.vendor(str(tmp_path))
    assert not list(copied.rglob("*.pth"))
    for name in [n for n in sys.modules if n.split(".")[0] == "controlnet_aux"]:
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.setenv(_annotator_refs.ENV_VAR, str(tmp_path))
    lineart = _annotator_refs.aux("lineart")
    assert Path(lineart.__file__).is_relative_to(copied)
    monkeypatch.setenv(_annotator_refs.ENV_VAR, str(tmp_path / "elsewhere"))
    monkeypatch.delitem(sys.modules, "controlnet_aux")
    with pytest.raises(ImportError, match="has no controlnet_aux folder"):
        _annotator_refs.aux("lineart")
