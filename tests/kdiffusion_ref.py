"""k-diffusion's `sampling` and `external` modules as test references, without its training stack.

k-diffusion 0.1.1's package `__init__` imports its whole training stack (wandb, kornia,
clean-fid, torchvision, ...), which torch==2.13's CPU wheel cannot share an environment with
(torchvision pins another torch). The two modules the WebUI and ComfyUI run — `sampling` (the
samplers and sigma schedules) and `external` (the discrete-timestep denoisers) — need only torch,
scipy, torchsde and torchdiffeq, plus `utils.append_dims`. scripts/setup.sh installs k-diffusion
with --no-deps for the reference extra; this module loads those files without the package
`__init__`, with torchvision stubbed for the one `utils` import that names it.

    from kdiffusion_ref import K   # K.sampling.sample_euler, K.external.CompVisDenoiser
"""

from __future__ import annotations

import importlib.util
import sys
import types
from pathlib import Path

import pytest

__all__ = ["K"]


def _load() -> types.SimpleNamespace:
    if "k_diffusion.sampling" in sys.modules:  # loaded already (under another module name)
        return _namespace()
    spec = importlib.util.find_spec("k_diffusion")
    if spec is None or not spec.submodule_search_locations:
        pytest.skip("k-diffusion is not installed (scripts/setup.sh installs it with the "
                    "'reference' extra)", allow_module_level=True)
    root = Path(next(iter(spec.submodule_search_locations)))
    if "k_diffusion.sampling" not in sys.modules:
        package = types.ModuleType("k_diffusion")
        package.__path__ = [str(root)]
        sys.modules["k_diffusion"] = package
        stubs = [name for name in ("torchvision", "torchvision.transforms",
                                   "torchvision.transforms.functional")
                 if name not in sys.modules]
        for name in stubs:
            sys.modules[name] = types.ModuleType(name)
        sys.modules["torchvision"].transforms = sys.modules["torchvision.transforms"]
        sys.modules["torchvision.transforms"].functional = (
            sys.modules["torchvision.transforms.functional"])
        try:
            _exec_modules(package, root)
        finally:  # diffusers probes for torchvision: a stub left behind would confuse it
            for name in stubs:
                del sys.modules[name]
    return _namespace()


def _namespace() -> types.SimpleNamespace:
    return types.SimpleNamespace(sampling=sys.modules["k_diffusion.sampling"],
                                 external=sys.modules["k_diffusion.external"],
                                 utils=sys.modules["k_diffusion.utils"])


def _exec_modules(package: types.ModuleType, root: Path) -> None:
    for name in ("utils", "sampling", "external"):
        spec = importlib.util.spec_from_file_location(f"k_diffusion.{name}", root / f"{name}.py")
        module = importlib.util.module_from_spec(spec)
        sys.modules[f"k_diffusion.{name}"] = module
        spec.loader.exec_module(module)
        setattr(package, name, module)


K = _load()
