"""`python -m diffusion` on bad input, as a user types it: one `error: ...` line, exit status 2,
no traceback, no model loaded and no file written. Every case fails before a model (or a
checkpoint) is read, so none needs a GPU."""

from __future__ import annotations

import errno
import socket
import tempfile
from pathlib import Path

import pytest
from PIL import Image

import diffusion
import diffusion.cli.main as cli

pytestmark = pytest.mark.nodevice


@pytest.fixture
def here(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """tmp_path as the current folder, with a picture, a file and folders in it; a model load
    fails the test."""
    def load_pipeline(*args: object, **kw: object) -> None:
        pytest.fail("the model loaded before the bad input was refused")

    monkeypatch.setattr(diffusion, "load_pipeline", load_pipeline, raising=False)
    monkeypatch.chdir(tmp_path)
    Image.new("RGB", (16, 16), (200, 30, 30)).save("good.png")
    Path("trunc.png").write_bytes(Path("good.png").read_bytes()[:60])  # cut in its pixels
    Path("junk.png").write_text("not an image")
    Path("notes").write_text("a file, not a folder")
    Path("folder.png").mkdir()
    Path("folder.safetensors").mkdir()
    Path("wan").mkdir()  # a folder: the video commands' path checks pass it
    return tmp_path


def one_error_line(capsys: pytest.CaptureFixture[str], *argv: str) -> str:
    """Run the CLI; assert exit status 2, one `error:` line on stderr, nothing on stdout;
    return that line."""
    code = cli.main(list(argv))
    out, err = capsys.readouterr()
    assert code == 2 and out == "" and "Traceback" not in err, (code, out, err)
    last = err.strip().splitlines()[-1]
    assert last.startswith("error: "), err
    return last


WAN = ("txt2vid", "--model", "wan", "--prompt", "a", "--frames", "1", "--width", "16",
       "--height", "16", "--steps", "1")


@pytest.mark.parametrize("argv, message", [
    # txt2img: a value taken for "unset", a folder named like the file, both hires sizes
    (("txt2img", "--prompt", "a", "--hr-scale", "0"), "hires scale must be from 1 to 8, got 0"),
    (("txt2img", "--prompt", "a", "--out", "folder.png"),
     "--out 'folder.png' is a folder; a .png --out names the file to write"),
    (("txt2img", "--prompt", "a", "--hr-scale", "2", "--hr-resize", "128x128"),
     "give --hr-scale or --hr-resize, not both"),
    (("txt2img", "--prompt", "a", "--seed", str(2**70)), "(below 2**64), got 1180591620717"),
    (("txt2img", "--prompt", "a", "--out", "x.jpg"),  # else a folder x.jpg of PNGs
     "--out 'x.jpg': pictures are written as PNG"),
    (("txt2img", "--prompt", "a", "--upscaler-dir", "notes"), "upscaler folder notes is a file"),
    (("txt2img", "--prompt", "a", "--embeddings-dir", "notes"),
     "--embeddings-dir 'notes' is not a folder"),
    (("txt2img", "--from-infotext", "junk.png"), "--from-infotext 'junk.png' is not a "
                                                 "readable image"),
    # txt2vid: what the model would take until memory or patience ran out
    # (argparse takes an option's last value: WAN's are overridden)
    ((*WAN, "--width", "100000"), "--width must be at most 4096"),
    ((*WAN, "--steps", "99999999"), "--steps must be from 1 to 1000"),
    ((*WAN, "--frames", "100001"), "--frames must be at most 1001"),
    ((*WAN, "--cfg-scale", "nan"), "--cfg-scale must be a number from 0 to 30, got nan"),
    ((*WAN, "--cfg-scale-2", "-1"), "--cfg-scale-2 must be a number from 0 to 30"),
    ((*WAN, "--seed", "-5"), "--seed must be -1 (random) or a whole number >= 0"),
    ((*WAN, "--seed", "x"), "'x' is not a whole number"),
    ((*WAN, "-o", "notes/x.webp"), "the folder 'notes' is a file"),
    ((*WAN, "-o", "notes"), "--out 'notes' is a file; give a new folder for the frames"),
    ((*WAN, "--cache", "blocks"), "Wan runs First Block Cache"),
    # upscale, convert, quantize: the output and the picture before the work
    (("upscale", "folder.png"), "folder.png: not a readable image (Is a directory)"),
    (("upscale", "trunc.png"), "trunc.png: not a readable image"),
    (("upscale", "good.png", "--tile", "-5"), "--tile must be 0 (one pass) or a tile size"),
    (("convert", "none.ckpt", "nowhere/out.safetensors"),
     "output 'nowhere/out.safetensors': the folder 'nowhere' does not exist"),
    (("convert", "none.ckpt", "folder.safetensors"),
     "output 'folder.safetensors' is a folder; give a file name"),
    (("quantize", "none", "notes/out.gguf"), "the folder 'notes' is a file"),
    (("quantize", "wan", "out.gguf"), "quantize writes SD 1.x/2.x and SDXL models"),
    # serve: refused before the model loads and the port opens
    (("serve", "--port", "99999"), "must be a TCP port from 1 to 65535, got 99999"),
    (("serve", "--models-dir", "nowhere"), "--models-dir 'nowhere' is not a folder"),
    (("serve", "--outputs", "notes"), "--outputs 'notes' is a file"),
])
def test_bad_input_is_one_line_before_any_work(here: Path, capsys: pytest.CaptureFixture[str],
                                               argv: tuple[str, ...], message: str) -> None:
    if argv[0] == "quantize" and argv[1] == "wan":
        Path("wan/model_index.json").write_text('{"_class_name": "WanPipeline"}')
    before = sorted(p.name for p in here.rglob("*"))
    assert message in one_error_line(capsys, *argv)
    assert sorted(p.name for p in here.rglob("*")) == before  # no file, no outputs/ folder


def test_a_folder_that_refuses_files_is_found_before_the_work(
        here: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    # root passes os.access where a read-only mount, /sys or /proc still refuse: a real file
    def refuse(**kw: object) -> None:
        raise OSError(errno.EROFS, "Read-only file system")

    monkeypatch.setattr(tempfile, "TemporaryFile", refuse)
    reason = "cannot write in '.' (Read-only file system); give a folder you can write to"
    for argv in (("txt2img", "--prompt", "a", "--out", "x.png"),
                 ("txt2img", "--prompt", "a"),  # outputs/, made in the current folder
                 ("upscale", "good.png", "--out", "x.png"),
                 (*WAN, "-o", "x.webp"), (*WAN, "-o", "frames"),
                 ("convert", "none.ckpt", "x.safetensors"), ("quantize", "none", "x.gguf")):
        assert reason in one_error_line(capsys, *argv), argv


def test_serve_says_why_it_cannot_listen(capsys: pytest.CaptureFixture[str]) -> None:
    # 192.0.2.1 (TEST-NET-1) is no address of this machine: not "another server" but --host
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    line = one_error_line(capsys, "serve", "--host", "192.0.2.1", "--port", str(port))
    assert "cannot listen on 192.0.2.1" in line and "check --host" in line
