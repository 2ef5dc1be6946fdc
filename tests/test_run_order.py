"""tests/run_order.py: slow files first, a model family's files together, the rest as
collected (fake items over files written here: no device, no collection)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import pytest
from run_order import family, ordered

pytestmark = pytest.mark.nodevice


@dataclass
class FakeItem:
    nodeid: str
    path: Path
    fixturenames: list[str] = field(default_factory=list)


def _files(tmp_path: Path, sources: dict[str, str]) -> dict[str, Path]:
    paths = {}
    for name, text in sources.items():
        paths[name] = tmp_path / name
        paths[name].write_text(text, encoding="utf-8")
    return paths


def test_a_file_is_of_the_family_whose_writer_it_imports(tmp_path: Path) -> None:
    paths = _files(tmp_path, {
        "test_a.py": "import pytest\nfrom wan_tiny import write\n",
        "test_b.py": "def test():\n    from flux2_tiny import tiny  # inside a test\n",
        "test_c.py": "from sd_tiny import write_pipeline\n",  # SD 1.5: in most files
        "test_d.py": "# no flow_tiny here: the word in a comment\nimport numpy\n",
        "test_e.py": "from qwenedit_tiny import x\nfrom flow_tiny import y\n",
    })
    assert family(FakeItem("test_a.py::t", paths["test_a.py"])) == "wan"
    assert family(FakeItem("test_b.py::t", paths["test_b.py"])) == "flux2"
    assert family(FakeItem("test_c.py::t", paths["test_c.py"])) is None
    assert family(FakeItem("test_d.py::t", paths["test_d.py"])) is None
    assert family(FakeItem("test_e.py::t", paths["test_e.py"])) == "qwen-image"  # the first
    # conftest's shared tiny FLUX.1 dev, taken as a fixture, makes a flow test
    assert family(FakeItem("test_d.py::t", paths["test_d.py"], ["tiny_flux_dev"])) == "flow"


def test_slow_files_first_then_families_together_else_as_collected(tmp_path: Path) -> None:
    paths = _files(tmp_path, {
        "test_plain.py": "import numpy\n",
        "test_wan_model.py": "from wan_tiny import w\n",
        "test_other.py": "import os\n",
        "test_wan_pipe.py": "from wan_tiny import w\n",
        "test_slow.py": "from wan_tiny import w\n",
    })

    def item(name: str, test: str) -> FakeItem:
        return FakeItem(f"{name}::{test}", paths[name])

    items = [item("test_plain.py", "a[vulkan0]"), item("test_wan_model.py", "a[vulkan0]"),
             item("test_plain.py", "a[gl1]"), item("test_wan_model.py", "a[gl1]"),
             item("test_other.py", "a"), item("test_wan_pipe.py", "a"),
             item("test_other.py", "b"), item("test_wan_pipe.py", "b"),
             item("test_slow.py", "a")]
    got = [i.nodeid for i in ordered(items, {"test_slow.py"})]
    assert got == ["test_slow.py::a",  # slow files first, family or not
                   "test_plain.py::a[vulkan0]",
                   # the family's tests where its first is, in their order
                   "test_wan_model.py::a[vulkan0]", "test_wan_model.py::a[gl1]",
                   "test_wan_pipe.py::a", "test_wan_pipe.py::b",
                   "test_plain.py::a[gl1]", "test_other.py::a", "test_other.py::b"]
    assert sorted(got) == sorted(i.nodeid for i in items)  # nothing lost or doubled
