"""bench.host_ops' smoke run: every op and model row present with host time counted, the
submits seen by its clock, the device's queue given back."""

from __future__ import annotations

import pytest

pytest.importorskip("diffusers", reason="the tiny models come from diffusers' random weights")

import gpucore

if not gpucore.devices():
    pytest.skip("no GPU adapter present: install mesa-vulkan-drivers (see README)",
                allow_module_level=True)


def test_rows_count_host_time_and_leave_out_submits(monkeypatch: pytest.MonkeyPatch) -> None:
    from bench import host_ops

    monkeypatch.setattr(host_ops, "MODELS", ("qwenimage",))
    monkeypatch.setenv("BENCH_HOST_OPS_CALLS", "3")
    device = gpucore.default_device()
    queue = device.queue
    submitted = []
    monkeypatch.setattr(host_ops._SubmitClock, "submit", lambda self, *args: (
        submitted.append(len(args)), self._queue.submit(*args))[1])
    result = host_ops.run(quick=True)
    assert device.queue is queue  # given back
    assert submitted  # the model's uploads went through the clock
    ops = [row for row in result["rows"] if row["kind"] == "op"]
    assert [row["name"] for row in ops] == list(host_ops._ops(device, ops[0]["dtype"]))
    assert all(row["host_us"] > 0 for row in ops)
    (model,) = [row for row in result["rows"] if row["kind"] == "model"]
    assert model["name"] == "qwenimage" and model["dispatches"] > 0
    assert 0 < model["host_ms"] <= model["host_ms_median"]
