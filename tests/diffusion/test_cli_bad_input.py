"""`python -m diffusion` on bad input, as a user types it: one `error: ...` line, exit status 2,
no traceback, no model loaded and no file written. Every case fails before a model (or a
checkpoint) is read, so none needs a GPU."""

from __future__ import annotations

import errno
import json
import socket
import tempfile
from pathlib import Path

import numpy as np
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
    # a GPU API that is none: a usage error, not the GPU's after the settings are read
    (("txt2img", "--prompt", "a", "--backend", "bogus"),
     "--backend: 'bogus' is not a GPU API; give one of vulkan, metal, dx12, gl"),
    ((*WAN, "--backend", "metl"), "'metl' is not a GPU API; give one of vulkan, metal, dx12"),
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


def test_the_backends_named_are_gpucores() -> None:
    """--backend's names are those gpucore gives its adapters (a new one is not refused)."""
    from diffusion.cli.device import BACKENDS
    from gpucore._adapters import _BACKENDS

    assert sorted(BACKENDS) == sorted(set(_BACKENDS.values()))


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


def _folder(path: str, index: dict[str, object], **configs: dict[str, object]) -> None:
    """A model folder as the registry reads it before a load: model_index.json and the
    components' config.json (no weights: a load would fail on them)."""
    Path(path).mkdir()
    Path(path, "model_index.json").write_text(json.dumps(index))
    for name, config in configs.items():
        Path(path, name).mkdir()
        Path(path, name, "config.json").write_text(json.dumps(config))


def _wan(path: str, *, second_expert: bool, transformer: dict[str, object] | None = None
         ) -> None:
    """A Wan 2.1 (or 2.2 A14B) folder as resolve_wan reads it: model_index.json, a
    one-tensor file for each weighted component (and the `transformer` config.json)."""
    from safetensors.numpy import save_file

    parts = ["transformer", "vae", "text_encoder", *(["transformer_2"] * second_expert)]
    index: dict[str, object] = {"_class_name": "WanPipeline",
                                **{p: ["diffusers", "X"] for p in parts}}
    if second_expert:
        index["boundary_ratio"] = 0.875
    _folder(path, index)
    for part in parts:
        Path(path, part).mkdir()
        stem = "model" if part == "text_encoder" else "diffusion_pytorch_model"
        save_file({"x": np.zeros(1, np.float32)}, f"{path}/{part}/{stem}.safetensors")
    if transformer is not None:
        Path(path, "transformer", "config.json").write_text(json.dumps(transformer))


FLUX = {"_class_name": "FluxPipeline"}
FLUX_DEV = {"guidance_embeds": True, "in_channels": 64, "out_channels": None}
SD = ("--prompt", "a", "--steps", "2", "--width", "64", "--height", "64")  # the bundled model


@pytest.mark.parametrize("argv, message", [
    # the hires fix on img2img is an edit model's: refused for SD before its weights load
    (("img2img", *SD, "--init-image", "good.png", "--hr-scale", "2"),
     "hires fix is a txt2img option; for img2img, raise the size instead"),
    (("txt2img", *SD, "--redux", "wan", "--redux-image", "good.png"),
     "a FLUX Redux reference (--redux): not supported for sd1 models yet"),
    (("txt2img", *SD, "--cache", "fbc"), "step cache fbc: not supported for sd1 models; leave "
                                         "--cache out"),
    (("txt2img", *SD, "--control-image", "good.png"),
     "a control map without a ControlNet model: sd1 models take none"),
    (("txt2img", "--model", "flux", *SD[:2], "--tiling"),
     "tiling (seamless pictures; SD 1.x/2.x and SDXL have it): not supported for "
     "flow-matching models yet"),
    (("txt2img", "--model", "flux", *SD[:2], "--refiner", "flux"),
     "a refiner: not supported for flow-matching models yet"),
    (("txt2img", "--model", "kontext", *SD[:2], "--controlnet", "cn", "--control-image",
      "good.png"), "ControlNet units: not supported for FLUX.1 Kontext models yet"),
    (("txt2img", "--model", "sd3", *SD[:2], "--cache", "magcache"),
     "step cache magcache: not supported for flow-matching models; it runs fbc"),
    # a distilled guidance scale typed for a family that has none (the server ignores it)
    (("txt2img", *SD, "--distilled-cfg-scale", "3.5"),
     "--distilled-cfg-scale: sd1 models take no distilled guidance (FLUX.1 and FLUX.2 dev's, "
     "embedded in the model); their guidance is the CFG scale: leave it out"),
    (("txt2img", "--model", "schnell", *SD[:2], "--hr-scale", "2", "--hr-distilled-cfg", "4"),
     "--hr-distilled-cfg: flow-matching models take no distilled guidance (FLUX.1 and FLUX.2 "
     "dev's, embedded in the model); they run unguided: leave it out"),
    # single files and GGUFs: from their headers (tensor names and shapes)
    (("txt2img", "--model", "flux1-dev.safetensors", *SD[:2], "--tiling"),
     "tiling (seamless pictures; SD 1.x/2.x and SDXL have it): not supported for "
     "flow-matching models yet"),
    (("txt2img", "--model", "sd3.5_large-Q8_0.gguf", *SD[:2], "--cache", "magcache"),
     "step cache magcache: not supported for flow-matching models; it runs fbc"),
    (("txt2img", "--model", "flux1-canny-dev.safetensors", *SD[:2]),
     "FLUX.1 Canny / Depth dev needs its control map"),
    # a --controlnet folder of another model: its config.json says so
    (("txt2img", *SD, "--controlnet", "notcn", "--control-image", "good.png"),
     "notcn: not a ControlNet or T2I-Adapter folder"),
    (("txt2img", *SD, "--controlnet", "t2i", "--control-image", "good.png"),
     "--controlnet t2i: this is a t2i-adapter model; pass it with --t2i-adapter"),
    # Wan: from the folder's model_index.json
    (("txt2vid", "--model", "wan21", *WAN[3:], "--cfg-scale-2", "4"),
     "a second guidance scale is for Wan 2.2 A14B's low-noise expert; this Wan model has one "
     "transformer"),
    (("txt2vid", "--model", "wan22", *WAN[3:], "--cache", "teacache"),
     "TeaCache's Wan tables are Wan 2.1's; for Wan 2.2 use First Block Cache"),
    # Wan's image-to-video models: the transformer's config, a file's from its header
    (("txt2vid", "--model", "wan-i2v", *WAN[3:]), "this Wan model is image-to-video: give "
                                                  "the first frame (`img2vid --image PIC`)"),
    (("txt2vid", "--model", "wan-i2v.safetensors", "--base", "wan21", *WAN[3:]),
     "this Wan model is image-to-video"),
    (("img2vid", "--model", "wan21", "--image", "good.png", *WAN[3:]),
     "this Wan model makes videos from text only"),
])
def test_what_the_family_does_not_take_is_refused_before_its_weights_load(
        here: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch,
        argv: tuple[str, ...], message: str) -> None:
    """The loaded pipeline's own refusal (Capabilities.refuse, WanPipeline's), told from the
    model's configs and headers: no weights read, no pipeline built."""
    from flow_headers import flux_shapes, sd3_shapes, wan_shapes, write_header

    from diffusion.loaders.formats.gguf_file import GGUFFile
    from diffusion.loaders.formats.safetensors import SafetensorsFile
    from diffusion.pipelines.video import WanPipeline

    def no_load(*args: object, **kw: object) -> None:
        pytest.fail("weights were read before the bad input was refused")

    monkeypatch.setattr(WanPipeline, "from_pretrained", no_load)
    _folder("flux", FLUX, transformer=FLUX_DEV)
    _folder("sd3", {"_class_name": "StableDiffusion3Pipeline"}, transformer={})
    _folder("schnell", FLUX, transformer={**FLUX_DEV, "guidance_embeds": False})
    _folder("kontext", {"_class_name": "FluxKontextPipeline"}, transformer=FLUX_DEV)
    for name, kind in (("cn", "ControlNetModel"), ("t2i", "T2IAdapter"),
                       ("notcn", "UNet2DConditionModel")):
        Path(name).mkdir()
        Path(name, "config.json").write_text(json.dumps({"_class_name": kind}))
    _wan("wan21", second_expert=False)
    _wan("wan22", second_expert=True)
    _wan("wan-i2v", second_expert=False, transformer={"in_channels": 36, "out_channels": 16})
    write_header(Path("wan-i2v.safetensors"), wan_shapes(in_channels=36))
    write_header(Path("flux1-dev.safetensors"), flux_shapes())
    write_header(Path("flux1-canny-dev.safetensors"), flux_shapes(in_channels=32))
    write_header(Path("sd3.5_large-Q8_0.gguf"), sd3_shapes(), architecture="sd3")
    for reader, method in ((SafetensorsFile, "_read"), (GGUFFile, "read"), (GGUFFile, "raw")):
        monkeypatch.setattr(reader, method, no_load)  # a header is all there is to read
    assert message in one_error_line(capsys, *argv)
    assert not Path("outputs").exists()
