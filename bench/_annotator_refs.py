"""The model preprocessors' rows of bench dit_controlnet: each module's map by ours
(`diffusion.preprocessors.preprocess`, upload + network + read-back) beside controlnet_aux's
network on the same random weights, on torch's GPU.

The weights are drawn by torch in controlnet_aux's own classes at the annotators' real sizes
and saved with torch.save in the extension's file layout (what tests/diffusion/preprocessors
do with narrow networks), so ours reads them as it reads the downloaded files. openpose's
body network is built instead, with a picture of three people to go with it
(bench/_pose_people.py): random weights find some ninety, which no real picture has.

controlnet_aux is a test-only package, often missing where the bench runs (a GPU machine):
it is imported as the tests import it (its submodules under an empty package, its
`__init__` and the stack it pulls skipped), from the installed package or, when
BENCH_CONTROLNET_AUX names a folder, from the `controlnet_aux` source folder inside it (copy
it there from an environment that has it, e.g. `python -m bench.dit_controlnet --vendor
DIR`). Its detectors also import einops, huggingface_hub and PIL (openpose: scipy); a
module whose reference cannot be imported keeps its row, with the reason in `error`.
"""

from __future__ import annotations

import functools
import importlib
import importlib.util
import json
import os
import shutil
import sys
import types
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

import gpucore

from . import _depth_refs, _dwpose_refs, _harness
from ._pose_people import people_body, people_picture

ENV_VAR = "BENCH_CONTROLNET_AUX"
MODULES = ("lineart_realistic", "lineart_anime", "softedge_hed", "softedge_pidinet", "mlsd",
           "normal_bae", "openpose", "openpose_full", *_depth_refs.MODULES, "dw_openpose_full")
# the subpackages the reference networks need (vendor copies these)
_PARTS = ("lineart", "lineart_anime", "hed", "pidi", "mlsd", "normalbae", "open_pose",
          "util.py")


def aux(name: str, *, bare: tuple[str, ...] = ()) -> Any:
    """controlnet_aux.`name` without the package's `__init__` (`bare`: subpackages whose
    `__init__` is skipped too), from BENCH_CONTROLNET_AUX's folder or the installed package;
    ImportError when neither has it."""
    if "controlnet_aux" not in sys.modules:
        folder = os.environ.get(ENV_VAR)
        if folder:
            path = Path(folder) / "controlnet_aux"
            if not path.is_dir():
                raise ImportError(f"{ENV_VAR}={folder} has no controlnet_aux folder")
            locations = [str(path)]
        else:
            spec = importlib.util.find_spec("controlnet_aux")
            if spec is None or not spec.submodule_search_locations:
                raise ImportError(f"controlnet_aux is not installed (or set {ENV_VAR})")
            locations = list(spec.submodule_search_locations)
        package = types.ModuleType("controlnet_aux")
        package.__path__ = locations
        sys.modules["controlnet_aux"] = package
    root = sys.modules["controlnet_aux"].__path__[0]
    for sub in bare:
        if f"controlnet_aux.{sub}" not in sys.modules:
            package = types.ModuleType(f"controlnet_aux.{sub}")
            package.__path__ = [f"{root}/{sub.replace('.', '/')}"]
            sys.modules[f"controlnet_aux.{sub}"] = package
    return importlib.import_module(f"controlnet_aux.{name}")


def vendor(destination: str) -> Path:
    """Copy the installed controlnet_aux's needed parts into `destination`/controlnet_aux
    (point BENCH_CONTROLNET_AUX at `destination` where it is not installed)."""
    loaded = sys.modules.get("controlnet_aux")  # (a bare package has no spec to find)
    spec = None if loaded else importlib.util.find_spec("controlnet_aux")
    if loaded is None and (spec is None or not spec.submodule_search_locations):
        raise SystemExit("controlnet_aux is not installed here: install the 'reference' extra")
    source = Path(loaded.__path__[0] if loaded else
                  next(iter(spec.submodule_search_locations)))  # type: ignore[arg-type, union-attr]
    target = Path(destination) / "controlnet_aux"
    target.mkdir(parents=True, exist_ok=True)
    ignore = shutil.ignore_patterns("__pycache__", "*.pth", "*.pt", "*.safetensors")
    for part in _PARTS:
        if (source / part).is_dir():
            shutil.copytree(source / part, target / part, ignore=ignore, dirs_exist_ok=True)
        else:
            shutil.copy2(source / part, target / part)
    return target


def _randomized(model: Any, seed: int, scale: float = 0.2) -> Any:
    """tests/sd_tiny.randomized's draw (weights ~ N(0, (scale / sqrt(fan_in))^2), norms near
    1), and batch norms that are not identities."""
    import torch

    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "norm" in name and name.endswith("weight"):
                p.copy_(1 + 0.1 * torch.randn(p.shape, generator=gen))
            elif p.ndim >= 2:
                fan_in = int(np.prod(p.shape[1:]))
                p.copy_(torch.randn(p.shape, generator=gen) * (scale * 5 / fan_in**0.5))
            else:
                p.copy_(0.1 * torch.randn(p.shape, generator=gen))
        for module in model.modules():
            if isinstance(module, torch.nn.BatchNorm2d) and module.running_var is not None:
                module.running_var.uniform_(0.5, 1.5, generator=gen)
    return model.eval()


def _network(module: str, folder: Path) -> tuple[Any, str]:
    """controlnet_aux's network of `module`, random, saved under `folder` as the extension's
    annotator file; (network, what its input is: "rgb1" 0..1, "rgb255", "bgr1", "mlsd",
    "normal", "body")."""
    import torch

    def save(state: dict[str, Any], *path: str) -> None:
        (folder / path[0]).mkdir(exist_ok=True)
        torch.save(state, folder.joinpath(*path))

    if module == "lineart_realistic":
        net = _randomized(aux("lineart").Generator(3, 1, 3), 1, scale=0.25)
        save(net.state_dict(), "lineart", "sk_model.pth")
        return net, "rgb1"
    if module == "lineart_anime":
        norm = functools.partial(torch.nn.InstanceNorm2d, affine=False,
                                 track_running_stats=False)
        net = _randomized(aux("lineart_anime").UnetGenerator(3, 1, 8, 64, norm_layer=norm), 6,
                          scale=0.25)
        save({f"module.{k}": v for k, v in net.state_dict().items()}, "lineart_anime",
             "netG.pth")
        return net, "anime"
    if module == "softedge_hed":
        net = _randomized(aux("hed").ControlNetHED_Apache2(), 5, scale=0.15)
        save(net.state_dict(), "hed", "ControlNetHED.pth")
        return net, "rgb255"
    if module == "softedge_pidinet":
        net = _randomized(aux("pidi").pidinet(), 3, scale=0.22)
        save({"epoch": 19, "state_dict": {f"module.{k}": v for k, v in
                                          net.state_dict().items()}},
             "pidinet", "table5_pidinet.pth")
        return net, "bgr1"
    if module == "mlsd":
        net = _randomized(aux("mlsd").MobileV2_MLSD_Large(), 1, scale=0.2)
        save(net.state_dict(), "mlsd", "mlsd_large_512_fp32.pth")
        return net, "mlsd"
    if module == "normal_bae":
        nnet = aux("normalbae.nets.NNET", bare=("normalbae",))
        args = types.SimpleNamespace(mode="client", architecture="BN", pretrained="scannet",
                                     sampling_ratio=0.4, importance_ratio=0.7)
        net = _randomized(nnet.NNET(args), 1, scale=0.2)
        save({"model": {f"module.{k}": v for k, v in net.state_dict().items()}},
             "normal_bae", "scannet.pt")
        return net, "normal"
    if module in _depth_refs.MODULES:
        return _depth_refs.network(module, folder)
    if module == "openpose_full":
        return _openpose_full(folder, save), "full"
    if module == "openpose":
        aux("open_pose.util", bare=("open_pose",))  # first: it imports body
        net = people_body(aux("open_pose.model").bodypose_model())
        flat = {k.split(".", 1)[1]: v for k, v in net.state_dict().items()}
        save(flat, "openpose", "body_pose_model.pth")
        return aux("open_pose.body").Body(str(folder / "openpose" / "body_pose_model.pth")), \
            "body"
    raise ValueError(f"no preprocessor {module!r}; use any of {', '.join(MODULES)}")


def _stand_ins() -> None:
    """What open_pose's hand and face import and this bench's machine may lack: face.py's
    torchvision transforms (module constants it never uses here) and skimage's `label`
    (scipy's 8-connected labelling in its place: the same regions)."""
    try:
        import torchvision.transforms  # noqa: F401
    except ImportError:
        transforms = types.ModuleType("torchvision.transforms")
        transforms.ToTensor = transforms.ToPILImage = object  # type: ignore[attr-defined]
        sys.modules["torchvision"] = types.ModuleType("torchvision")
        sys.modules["torchvision.transforms"] = transforms
    try:
        import skimage.measure  # noqa: F401
    except ImportError:
        from scipy import ndimage

        def label(image: Any, return_num: bool = False, connectivity: int = 2) -> Any:
            labels, count = ndimage.label(image, structure=np.ones((3, 3), int))
            return (labels, count) if return_num else labels

        measure = types.ModuleType("skimage.measure")
        measure.label = label  # type: ignore[attr-defined]
        sys.modules["skimage"] = types.ModuleType("skimage")
        sys.modules["skimage.measure"] = measure


def _openpose_full(folder: Path, save: Callable[..., None]) -> Any:
    """OpenposeDetector with the built body network (three people in people_picture) and
    random hand and face networks (their weights scaled, as tests/diffusion/preprocessors/
    test_openpose's, so that hands and faces are found), saved as the extension's three
    files."""
    import torch

    _stand_ins()
    if "controlnet_aux.open_pose" in sys.modules and not hasattr(
            sys.modules["controlnet_aux.open_pose"], "OpenposeDetector"):
        del sys.modules["controlnet_aux.open_pose"]  # the bare package the body row loaded
    open_pose = aux("open_pose")
    model = aux("open_pose.model")
    torch.manual_seed(3)
    body = people_body(model.bodypose_model())
    hand = model.handpose_model().eval()
    face = aux("open_pose.face").FaceNet().eval()
    with torch.no_grad():
        for net in (hand, face):
            for name, value in net.named_parameters():
                if name.endswith("weight"):
                    value.mul_(8**0.5)
    flat = {k.split(".", 1)[1]: v for k, v in body.state_dict().items()}
    save(flat, "openpose", "body_pose_model.pth")
    save({k.split(".", 1)[1]: v for k, v in hand.state_dict().items()}, "openpose",
         "hand_pose_model.pth")
    save(face.state_dict(), "openpose", "facenet.pth")
    path = folder / "openpose"
    return open_pose.OpenposeDetector(open_pose.Body(str(path / "body_pose_model.pth")),
                                      open_pose.Hand(str(path / "hand_pose_model.pth")),
                                      open_pose.Face(str(path / "facenet.pth")))


def _reference_call(net: Any, kind: str, image: np.ndarray, dev: str) -> Any:
    """A no-argument call running the reference network on `image` as its detector feeds
    it, the output read back to the host."""
    import torch

    if kind in _depth_refs.KINDS:
        return _depth_refs.reference_call(net, kind, image, dev)
    if kind == "full":  # the detector's whole call at the picture's size, drawing included
        net.to(dev)
        return lambda: _full_call(net, image)
    if kind == "body":
        net.model.to(dev)
        return lambda: net(image[:, :, ::-1].copy())  # Body reads BGR, as the detector
    net.to(dev)
    pixels = image[:, :, ::-1] if kind == "bgr1" else image
    x = torch.from_numpy(np.ascontiguousarray(pixels.transpose(2, 0, 1))[None]).float()
    if kind == "mlsd":  # pred_lines: 512x512 (INTER_AREA), a ones plane, 0..1 by 127.5
        import cv2

        small = cv2.resize(image, (512, 512), interpolation=cv2.INTER_AREA)
        planes = np.concatenate([small, np.ones((512, 512, 1), small.dtype)], axis=2)
        x = torch.from_numpy(planes.transpose(2, 0, 1)[None].astype(np.float32) / 127.5 - 1)
    elif kind == "normal":  # ImageNet mean/std on 0..1
        mean = torch.tensor([0.485, 0.456, 0.406]).reshape(1, 3, 1, 1)
        std = torch.tensor([0.229, 0.224, 0.225]).reshape(1, 3, 1, 1)
        x = (x / 255 - mean) / std
    elif kind == "anime":
        x = x / 127.5 - 1
    elif kind != "rgb255":
        x = x / 255
    x = x.to(dev)

    def call() -> Any:
        with torch.no_grad():
            out = net(x)
            first = out[0] if isinstance(out, (list, tuple)) else out
            while isinstance(first, (list, tuple)):
                first = first[0]
            return first.cpu()
    return call


def _full_call(net: Any, image: np.ndarray) -> Any:
    import torch

    with torch.no_grad():
        poses = net.detect_poses(image, include_hand=True, include_face=True)
    return sys.modules["controlnet_aux.open_pose"].draw_poses(poses, *image.shape[:2])


def _picture(size: int) -> np.ndarray:
    """A uint8 picture with edges at many scales (bench controlnet's)."""
    from .controlnet import _picture as picture

    return picture(size)


def rows(sizes: tuple[int, ...], modules: tuple[str, ...], device: gpucore.Device,
         cuda: Any, repeat: int, folder: Path) -> list[dict[str, Any]]:
    """One row per (module, size): ours (eager, and replayed: diffusion.preprocessors.
    annotators) and the reference's wall ms; a module whose reference fails keeps ours with
    the error."""
    from diffusion.loaders.control import annotator_file
    from diffusion.preprocessors import annotators, preprocess

    os.environ[annotator_file.ENV_VAR] = str(folder)
    dev = "cuda" if cuda else "cpu"
    out = []
    for module in modules:
        if module == "dw_openpose_full":  # ours alone
            out.extend(_dwpose_refs.rows(sizes, device, repeat, folder, people_picture))
            continue
        try:
            net, kind = _network(module, folder)
        except Exception as exc:  # no reference: no weights for ours either
            out.append({"work": module, "error": f"{type(exc).__name__}: {str(exc)[:200]}"})
            continue
        for size in sizes:
            image = people_picture(size) if module.startswith("openpose") else _picture(size)
            row: dict[str, Any] = {"work": f"{module} {size}x{size}", "dtype": "float32",
                                   "mode": "round trip"}
            try:
                ours = functools.partial(preprocess, module, image, device=device)
                annotators.REPLAY = False
                eager = ours()  # loads the file once
                row["ours_eager_wall_ms"] = _harness.numpy_ms(ours, warmup=0, repeat=repeat)
                annotators.REPLAY = True  # recorded in the warm-up, replayed when timed
                row["ours_wall_ms"] = _harness.numpy_ms(ours, warmup=1, repeat=repeat)
                row["replay_equal"] = bool(np.array_equal(ours(), eager))
                call = _reference_call(net, kind, image, dev)
                call()
                row["torch_wall_ms"] = (_harness.torch_wall_ms(call, cuda, repeat) if cuda
                                        else _harness.numpy_ms(call, repeat=repeat))
                row["baseline"] = f"{_depth_refs.baseline(module)} on torch {dev}"
                row["vs_torch"] = row["torch_wall_ms"] / row["ours_wall_ms"]
            except Exception as exc:
                row["error"] = f"{type(exc).__name__}: {str(exc)[:200]}"
            out.append(row)
            print(json.dumps(row, default=float), flush=True)  # kept if the run is cut short
        net = None
        if cuda:
            cuda.cuda.empty_cache()
        device.empty_pool()
    return out
