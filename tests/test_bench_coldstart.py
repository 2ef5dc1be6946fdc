"""bench.coldstart's host parts: the streamed safetensors writer (read back by safetensors
itself: names, shapes, dtypes, values from the pool, norm scales near one, position ids) and the
reading of a CLI child's timed stderr (the `time:` split, the pictures' lines)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from bench import _cold_files, coldstart

pytestmark = pytest.mark.nodevice


def test_written_file_reads_back(tmp_path):
    safetensors = pytest.importorskip("safetensors")
    shapes = {"a.conv.weight": ("F16", (3, 5, 1, 1)), "a.norm1.weight": ("F32", (7,)),
              "b.bias": ("BF16", (300,)), "pos.position_ids": ("I64", (1, 77)),
              "big": ("F32", (1000,))}  # longer than the pool: repeats it
    pool = _cold_files._Pool(seed=3, size=256)
    size = _cold_files.write_safetensors(tmp_path / "x.safetensors", shapes, pool)
    assert size == (tmp_path / "x.safetensors").stat().st_size
    with safetensors.safe_open(tmp_path / "x.safetensors", framework="np") as file:
        assert set(file.keys()) == set(shapes)
        conv = file.get_tensor("a.conv.weight")
        assert conv.dtype == np.float16 and conv.shape == (3, 5, 1, 1)
        assert 0.005 < float(np.abs(conv.astype(np.float32)).mean()) < 0.05
        norm = file.get_tensor("a.norm1.weight")
        assert norm.dtype == np.float32 and np.all(np.abs(norm - 1) < 0.2)
        assert np.array_equal(file.get_tensor("pos.position_ids"), np.arange(77)[None])
        big = file.get_tensor("big")
        assert big.std() > 0.01 and np.isin(big, pool.f32).all()
    raw = (tmp_path / "x.safetensors").read_bytes()  # bfloat16, which numpy lacks: its bits
    head = int.from_bytes(raw[:8], "little")
    begin, end = json.loads(raw[8:8 + head])["b.bias"]["data_offsets"]
    bits = np.frombuffer(raw[8 + head + begin:8 + head + end], np.uint16)
    assert bits.size == 300 and np.isin(bits, pool.f32.view(np.uint32) >> 16).all()

def test_child_lines_read():
    lines = [(0.6, "seed: 1"), (3.3, "model: sd15 (sd1)"),
             (4.4, "txt2img 1/2: 20 steps in 1.1s (36.14it/s)"),
             (4.65, "memory: peak 2.30 GiB allocated"),
             (5.2, "txt2img 2/2: 20 steps in 0.5s (37.60it/s)"),
             (5.31, "memory: peak 2.30 GiB allocated"),
             (5.31, "time: import 0.53 s (1), compile wait 0.00 s (74), read wait 0.58 s "
                    "(1130), other -3.11 s; total 5.31 s")]
    row = coldstart.summarize(lines, 5.66)
    assert row["first_picture_s"] == 4.65 and row["second_picture_s"] == 0.66
    assert row["sampling_s"] == [1.1, 0.5] and row["model_line_s"] == 3.3
    assert row["phases"] == {"import": {"s": 0.53, "count": 1},
                             "compile wait": {"s": 0.0, "count": 74},
                             "read wait": {"s": 0.58, "count": 1130}}
    assert row["other_s"] == -3.11 and row["total_s"] == 5.31 and row["wall_s"] == 5.66


def test_listed_kernels_counted(tmp_path):
    lists = tmp_path / "avx-gpu"
    lists.mkdir()
    (lists / "kernels-aa.json").write_text(json.dumps(
        {"key": {}, "payload": {"kernels": [{"source": "x"}] * 3}}))
    (lists / "kernels-bb.json").write_text("{not json")
    (lists / "tune-cc.json").write_text("{}")  # not a Warmup list
    assert coldstart.listed_kernels(tmp_path) == {"kernels-aa.json": 3, "kernels-bb.json": -1}
    assert coldstart.listed_kernels(tmp_path / "none") == {}
