"""bench/gemm_ceiling.py's cuts take out what they name and nothing else (pure text, no GPU)."""

from __future__ import annotations

import re

import pytest

from bench.gemm_ceiling import ABLATIONS, ablated_source
from gpustd.gemm import matrix_units


def _source(ablation: str, tile: str = "128x128k16") -> str:
    return ablated_source(ablation, matrix_units.TILES[tile], False, True, 4, 4,
                          (4096, 4096, 4096))


def _loop(text: str) -> str:
    return text[text.index("  for (var t = 0u;"):text.index("subgroupMatrixStore(&sh_c")]


@pytest.mark.parametrize("tile", ["128x128k16", "64x128"])
def test_each_cut_removes_its_part(tile: str) -> None:
    text = {ablation: _source(ablation, tile) for ablation in ABLATIONS}
    assert "load_a(" in text["shipped"].split("fn fetch")[1].split("fn stage")[0]
    cached = text["cached"].split("fn fetch")[1].split("fn stage")[0]
    assert "load_a(" in cached and "k0" not in cached  # the same loads, at K step 0
    no_epilogue = text["no_epilogue"]
    assert "store_c(row" in text["shipped"].split("fn put_fragment")[1]
    assert "store_c(row" not in no_epilogue.split("fn put_fragment")[1]
    assert _loop(no_epilogue) == _loop(text["shipped"])
    for ablation in ABLATIONS[3:]:
        assert re.search(r"fn fetch\(\) \{\n\}", text[ablation]), ablation
        assert text[ablation].count("subgroupMatrixMultiplyAccumulate") == \
            text["shipped"].count("subgroupMatrixMultiplyAccumulate")
    assert "sh_a[" in text["no_global"] and "sh_a[" not in text["no_staging"].split("fn put")[0]
    assert "workgroupBarrier" in text["no_staging"]
    assert "workgroupBarrier" not in text["no_barrier"]
    assert "subgroupMatrixLoad" in _loop(text["no_barrier"])
    assert "subgroupMatrixLoad" not in _loop(text["mma_only"])
    shape = matrix_units.TILES[tile]
    assert text["mma_only"].count("let h_") == shape.fm + shape.fn  # each fragment once
