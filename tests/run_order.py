"""The order the collected tests run in (tests/conftest.py applies it), chosen for CI's time.

1. Files with a `slow` test first (in their order): under pytest-xdist a minutes-long test
   that starts near the end keeps one worker busy while the others have nothing left, and
   CI's run is as long as its last worker.
2. A model family's files next to each other, where its first file is: pytest-xdist's default
   scheduler (`load`) hands each worker runs of consecutive tests, so a family's tests then
   run on one worker, which builds the family's tiny models (the session fixtures, seconds
   each with diffusers) and compiles its kernels (about 0.4 s each on CI's llvmpipe) once,
   not on both. A file's family is the first of FAMILIES whose tiny-model writer it imports
   (or whose shared tiny pipeline fixture it takes); SD 1.5's writer is in most files, so
   those stay where they are.

Within those keys the collection's order is kept (a stable sort). (`--dist loadgroup` with
`xdist_group` marks would pin a group to one worker, but pytest-xdist 3.8 does not group under
pytest 9.2: it writes the group into `item._nodeid`, which pytest 9.2's structured node ids no
longer read, so every test is scheduled alone; pytest-xdist issue 1386.)

Not done, measured: the files whose every test is `nodevice` (about 1,100 tests of host logic,
30 s of one core) moved last, as filler for the run's end. `load` hands out chunks of
consecutive tests sized by what is still pending, so near the end (little pending) they are a
few tests each and the benchmarks' smoke runs and the examples that end the collection are
shared out finely; moved ahead of the filler, they went out in one large chunk to one
worker. On the root test files and those host files with `-n 2`, the workers finished 4 s
apart as collected and 153 s apart with the host files last (wall, on a busy 2-core machine).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from functools import cache
from pathlib import Path
from typing import Protocol

# family: (tiny-model writer modules under tests/, session fixtures of tests/conftest.py)
FAMILIES: tuple[tuple[str, tuple[str, ...], tuple[str, ...]], ...] = (
    ("wan", ("wan_tiny",), ()),
    ("flux2", ("flux2_tiny", "flux2_dev_tiny", "flux2_dev_files"), ()),
    ("qwen-image", ("qwenimage_tiny", "qwenedit_tiny"), ()),
    ("z-image", ("zimage_tiny",), ()),
    ("hidream", ("hidream_tiny", "hidream_text_tiny", "hidream_pipe_tiny"), ()),
    ("bria", ("bria_tiny",), ("tiny_bria",)),
    ("bria-fibo", ("bria_fibo_tiny",), ()),
    ("bria-fibo2", ("bria_fibo2_tiny",), ()),
    ("flow", ("flow_tiny", "xflux_reference"), ("tiny_flux_dev", "tiny_chroma", "tiny_sd3")),
    ("sdxl", ("sdxl_tiny",), ()),
    ("kolors", ("kolors_tiny",), ()),
    ("hunyuan-video-1.5", ("hunyuan_video15_pipe_tiny",), ("tiny_hunyuan_video15_i2v",)),
    ("hunyuan-video", ("hunyuan_video_pipe_tiny", "hunyuan_video_text_tiny"),
     ("tiny_hunyuan_video",)),
    ("ovis-image", ("ovis_image_tiny",), ("tiny_ovis",)),
    ("nucleus-moe", ("nucleus_tiny",), ("tiny_nucleus",)),
    ("ernie-image", ("ernie_image_tiny",), ("tiny_ernie",)),
    ("cogview4", ("cogview4_tiny",), ("tiny_cogview4",)),
    ("pixart", ("pixart_tiny",), ("tiny_pixart",)),
    ("sana-video", ("sana_video_tiny",), ()),
    ("ideogram4", ("ideogram4_tiny",), ("tiny_ideogram4",)),
    ("joyimage", ("joyimage_tiny",), ()),
    ("auraflow", ("auraflow_tiny",), ("tiny_auraflow",)),
    ("helios", ("helios_tiny",), ()),
    ("motif-video", ("motif_tiny",), ()),
    ("prx", ("prx_tiny",), ("tiny_prx",)),
)


class Item(Protocol):
    """What of a pytest Item the order reads."""

    @property
    def nodeid(self) -> str: ...

    @property
    def path(self) -> Path: ...

    @property
    def fixturenames(self) -> Sequence[str]: ...


@cache
def _imports(path: Path) -> frozenset[str]:
    """The top-level names of the modules `path` imports (anywhere in the file)."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError:
        return frozenset()
    found = re.findall(r"^\s*(?:from|import)\s+([A-Za-z_]\w*)", text, flags=re.MULTILINE)
    return frozenset(found)


def family(item: Item) -> str | None:
    """The model family `item`'s file belongs to (see FAMILIES), or None."""
    imports = _imports(item.path)
    fixtures = set(getattr(item, "fixturenames", ()))
    for name, writers, shared in FAMILIES:
        if imports.intersection(writers) or fixtures.intersection(shared):
            return name
    return None


def _file(item: Item) -> str:
    return item.nodeid.split("::")[0]


def ordered(items: Iterable[Item], slow_files: set[str]) -> list[Item]:
    """`items` in run order: slow files first, then each family's files together where the
    family's first test is, otherwise as collected."""
    items = list(items)
    rest = [_file(item) not in slow_files for item in items]
    # a family's tests move to its first one's place; every other test keeps its own
    anchor: dict[tuple[bool, str], int] = {}
    place = []
    for position, item in enumerate(items):
        name = family(item)
        place.append(position if name is None else
                     anchor.setdefault((rest[position], name), position))
    order = sorted(range(len(items)), key=lambda i: (rest[i], place[i], i))
    return [items[i] for i in order]
