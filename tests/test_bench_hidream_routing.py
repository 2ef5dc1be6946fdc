"""bench.hidream_routing's smoke run (--quick: the tiny config on the CPU): the rows it
reports, and ours in float32 at float32's distance from diffusers in float32 (the full-size
run on a GPU is what separates bf16's routing flips from ours; this checks its calls)."""

from __future__ import annotations


def test_quick_rows_separate_the_reference_from_ours() -> None:
    from bench import hidream_routing

    reference, ours = hidream_routing.run(quick=True)["rows"]
    assert reference["impl"].startswith("reference bf16")
    assert len(reference["route_flips"]) > 0
    assert all(0 <= f <= 1 for f in reference["route_flips"])
    assert 0 < reference["rel_err"]  # bf16 rounding moves the reference at least a little
    assert ours["impl"].startswith("ours") and 0 < ours["rel_err"] < 1e-4, ours
