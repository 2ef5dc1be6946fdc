"""A ModelUpscaler shared by the thread server's GPU workers: two threads asking for its network
at once read the file once and get the same network (each read its own before), and a forget()
(unload-checkpoint) while a read is under way waits for it and drops what it read (before, the
read put its network back after the forget, and the GPU memory stayed held); the folder
registered again (every model load, every worker) keeps what was read. A stand-in reader: no
file, no device."""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any

import pytest

from diffusion.upscalers import models

pytestmark = pytest.mark.nodevice


@pytest.fixture
def upscaler(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Any:
    reads: list[object] = []

    def slow_read(path: Path, **options: Any) -> object:
        reads.append(object())
        time.sleep(0.2)  # a real file takes seconds, in which another thread asks too
        return reads[-1]
    monkeypatch.setattr(models, "load_upscaler_model", slow_read)
    return models.ModelUpscaler("4x-test", tmp_path / "4x-test.pth", device=object()), reads


def _started(target: Any, count: int) -> list[threading.Thread]:
    threads = [threading.Thread(target=target) for _ in range(count)]
    for thread in threads:
        thread.start()
    return threads


def test_two_threads_read_the_network_once(upscaler: Any) -> None:
    shared, reads = upscaler
    start, got = threading.Barrier(2), []

    def use() -> None:
        start.wait()
        got.append(shared.model())
    for thread in _started(use, 2):
        thread.join()
    assert len(reads) == 1
    assert got == [reads[0], reads[0]]


def test_a_forget_during_a_read_drops_what_it_read(upscaler: Any) -> None:
    shared, reads = upscaler
    got: list[object] = []
    (reading,) = _started(lambda: got.append(shared.model()), 1)
    time.sleep(0.05)  # the read is under way
    shared.forget()
    reading.join()
    assert got == [reads[0]]  # the thread got its network
    assert shared.model() is reads[1]  # and the next use reads the file again


def test_registering_the_folder_again_keeps_what_was_read(
        monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """The server's loader registers --upscaler-dir at every model load, on every worker: a
    second worker's (or a model switch's) registration keeps the entries of the same files and
    device, and the networks they read; a file added since is added, and a registration for
    another device replaces the entry (its network is read there)."""
    reads: list[Path] = []

    def read(path: Path, **options: Any) -> Path:
        reads.append(path)
        return path
    monkeypatch.setattr(models, "load_upscaler_model", read)
    monkeypatch.setattr(models, "MODEL_UPSCALERS", {})  # the process-wide registry, untouched
    (tmp_path / "RealESRGAN_x4plus.pth").touch()
    device, other = object(), object()  # two GPUs (the stand-in reader opens neither)
    assert models.register_upscaler_dir(tmp_path, device=device) == ["R-ESRGAN 4x+"]
    first = models.MODEL_UPSCALERS["R-ESRGAN 4x+"]
    first.model()
    (tmp_path / "4x-new.pth").touch()
    assert models.register_upscaler_dir(tmp_path, device=device) == ["4x-new", "R-ESRGAN 4x+"]
    assert models.MODEL_UPSCALERS["R-ESRGAN 4x+"] is first
    models.MODEL_UPSCALERS["R-ESRGAN 4x+"].model()
    assert reads == [tmp_path / "RealESRGAN_x4plus.pth"]  # read once
    models.register_upscaler_dir(tmp_path, device=other)
    assert [u.device for u in models.MODEL_UPSCALERS.values()] == [other, other]
