"""Lazy weight mappings: what a loader returns for each model component."""

from __future__ import annotations

import copy
import functools
import itertools
import math
import os
import threading
from collections.abc import Generator, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, NamedTuple, Protocol, runtime_checkable

import numpy as np

from gpucore import Device, phase

from .device_cast import Bf16Tensor
from .errors import WeightsError
from .reading import read_ahead

__all__ = ["CastingTensorFile", "ComponentWeights", "LocatingTensorFile", "ModelInfo",
           "PipelineWeights", "TensorFile", "TensorRef", "convert", "resolve_dtype"]

# Elements from which a conversion is split over threads (below, handing out the work costs
# more than it saves).
PARALLEL_MIN = 1 << 21
_pool: ThreadPoolExecutor | None = None
_pool_lock = threading.Lock()


def _threads() -> ThreadPoolExecutor:
    global _pool
    with _pool_lock:
        if _pool is None:
            _pool = ThreadPoolExecutor(min(8, os.cpu_count() or 1),
                                       thread_name_prefix="weights-convert")
        return _pool


def convert(array: np.ndarray, dtype: np.dtype) -> np.ndarray:
    """`array.astype(dtype, copy=False)`, the same values, split over threads when large:
    numpy lets go of the GIL in its cast loops, and float32 -> float16 ran at ~0.3 GB/s on one
    core of an H200 host (13 of a cold SD 1.5 process's 20 s)."""
    workers = min(8, os.cpu_count() or 1)
    if (array.dtype == dtype or array.size < PARALLEL_MIN or workers < 2
            or not array.flags.c_contiguous):
        return array.astype(dtype, copy=False)
    out = np.empty(array.shape, dtype)
    source, target = array.reshape(-1), out.reshape(-1)
    bounds = np.linspace(0, array.size, 2 * workers + 1).astype(np.int64)
    parts = [slice(int(a), int(b)) for a, b in itertools.pairwise(bounds)]
    for _ in _threads().map(lambda part: np.copyto(target[part], source[part]), parts):
        pass
    return out


class TensorFile(Protocol):
    """What every weights file reads as (formats.safetensors.SafetensorsFile,
    formats.torch_file.TorchFile, formats.gguf_file.GGUFFile): tensors by key, their numpy
    shapes, float values (a row range of one), and the file's string metadata."""

    @property
    def path(self) -> Path: ...

    @property
    def metadata(self) -> Mapping[str, Any]: ...

    def keys(self) -> list[str]: ...

    def __contains__(self, key: object) -> bool: ...

    def shape(self, key: str) -> tuple[int, ...]: ...

    def read(self, key: str, *, rows: tuple[int, int] | None = None) -> np.ndarray: ...


@runtime_checkable
class CastingTensorFile(TensorFile, Protocol):
    """A TensorFile that reads a float tensor straight into another float dtype
    (formats.safetensors.SafetensorsFile): `read_as(key, dtype, rows=...)` is
    `read(key, rows=...).astype(dtype)` bit for bit, or None where it cannot (then `read`)."""

    def read_as(self, key: str, dtype: np.dtype, *, rows: tuple[int, int] | None = None
                ) -> np.ndarray | None: ...


@runtime_checkable
class LocatingTensorFile(TensorFile, Protocol):
    """A TensorFile that says where a tensor's stored bytes are
    (formats.safetensors.SafetensorsFile): `locate(key, rows=...)` is (stored dtype name,
    shape, byte offset in the file, byte count), or None where those bytes alone are not the
    values (a scaled float8 weight)."""

    def locate(self, key: str, *, rows: tuple[int, int] | None = None
               ) -> tuple[str, tuple[int, ...], int, int] | None: ...


class TensorRef(NamedTuple):
    """Where one component tensor lives: a file, its key there, optionally a row range of that
    tensor (a slice of OpenCLIP's fused q/k/v), and the shape to give it (LDM's 1x1-conv
    attention weights become diffusers' linear weights by dropping the trailing 1s).
    `transposed`: the stored matrix is the transpose of the one wanted (OpenCLIP's
    text_projection is (width, proj), transformers' Linear weight (proj, width))."""

    file: TensorFile
    key: str
    shape: tuple[int, ...]
    rows: tuple[int, int] | None = None
    transposed: bool = False


def resolve_dtype(dtype: Any) -> np.dtype | None:
    """None (keep as stored, bf16 -> float32), or float16/float32 in any numpy spelling."""
    if dtype is None:
        return None
    try:
        resolved = np.dtype(dtype)
    except TypeError:
        resolved = None
    if resolved not in (np.dtype(np.float16), np.dtype(np.float32)):
        raise ValueError(f"dtype must be None, 'float16' or 'float32', got {dtype!r}")
    return resolved


class ComponentWeights(Mapping[str, np.ndarray]):
    """One model component's tensors (UNet, VAE or text encoder) under diffusers' names, read
    from disk only when indexed.

    `weights[name]` reads that tensor from its file into a fresh numpy array each time (nothing
    is cached): iterate, copy each array to the GPU and drop it, and peak host memory stays at
    one tensor rather than the whole model. Floating-point tensors come back as `dtype` when the
    loader was given one, else as stored (bfloat16, which numpy lacks, as float32). `shape(name)`
    and `config` (the diffusers `config.json` dict) need no reads.
    """

    def __init__(self, name: str, config: dict[str, Any], refs: Mapping[str, TensorRef],
                 *, dtype: np.dtype | None = None) -> None:
        self.name = name
        self.config = config
        self.dtype = dtype
        self._refs = dict(refs)
        self._dtypes: dict[str, np.dtype] = {}  # cast_to's, where `dtype` is None

    def __getitem__(self, key: str) -> np.ndarray:
        ref = self._refs.get(key)
        if ref is None:
            raise KeyError(f"{self.name} has no tensor {key!r}")
        dtype = self.dtype_of(key)
        if dtype is not None and not ref.transposed and isinstance(ref.file, CastingTensorFile):
            with phase("read"):  # read and cast at once, in pieces on threads
                cast = ref.file.read_as(ref.key, dtype, rows=ref.rows)
            if cast is not None:
                return cast.reshape(ref.shape)
        with phase("read"):
            array = ref.file.read(ref.key, rows=ref.rows)
        with phase("convert"):
            if ref.transposed:
                array = np.ascontiguousarray(array.T)
            array = array.reshape(ref.shape)
            if dtype is not None and array.dtype.kind == "f":
                array = convert(array, dtype)
        return array

    def dtype_of(self, key: str) -> np.dtype | None:
        """The dtype tensor `key` is read as when it is a float tensor (None: as stored)."""
        return self.dtype if self.dtype is not None else self._dtypes.get(key)

    def cast_to(self, dtypes: Mapping[str, np.dtype]) -> ComponentWeights:
        """These weights, each float tensor named in `dtypes` read as that dtype where no
        `dtype` was given (`load_component` passes its parameters'): read and cast in pieces
        on threads as the read ahead goes, instead of widened (bfloat16 to float32) there and
        cast again on the thread that uploads. The same values."""
        other = copy.copy(self)
        other._dtypes = {key: np.dtype(value) for key, value in dtypes.items()}
        return other

    def __contains__(self, key: object) -> bool:
        # Mapping's own would read the tensor (it tries self[key]): load_state_dict asks three
        # times per key, which read and converted every weight four times
        return key in self._refs

    def __iter__(self) -> Iterator[str]:
        return iter(self._refs)

    def read_ahead(self, keys: Sequence[str], *, device: Device | None = None
                   ) -> Generator[np.ndarray | Bf16Tensor, None, None]:
        """`self[key]` for each of `keys` in order, the next ones read on threads while the
        caller uploads the current one (loaders.reading.read_ahead): what
        `Module.load_state_dict` iterates when the mapping offers it. The same arrays, but
        where the values go to `device`'s buffers, a tensor `on_device(key, device)` takes
        comes as that Bf16Tensor, read when it is written to its buffer and converted there
        (np.asarray of it: the same array)."""
        def value(key: str) -> np.ndarray | Bf16Tensor:
            found = None if device is None else self.on_device(key, device)
            return self[key] if found is None else found

        def nbytes(key: str) -> int:
            ref = self._refs[key]
            dtype = self.dtype_of(key)
            if device is not None and self.on_device(key, device) is not None:
                return 0  # read by its write_to, nothing ahead
            return math.prod(ref.shape) * (4 if dtype is None else dtype.itemsize)

        return read_ahead(value, keys, nbytes)

    def on_device(self, key: str, device: Device) -> Bf16Tensor | None:
        """Tensor `key` as a Bf16Tensor (converted to float16 on the GPU as it is written to a
        buffer of `device`) where it is stored as bfloat16 in a file that says where (a
        safetensors file), read as float16, and the Bf16Tensor `writes` there; None
        otherwise. A subclass whose `__getitem__` gives other values than the stored ones
        (keymaps.dit_keys.SwappedHalvesWeights) says None for those."""
        ref = self._refs[key]
        if (self.dtype_of(key) != np.float16 or ref.transposed
                or not isinstance(ref.file, LocatingTensorFile)):
            return None
        found = ref.file.locate(ref.key, rows=ref.rows)
        if found is None or found[0] != "BF16":
            return None
        _, _, offset, size = found
        value = Bf16Tensor(ref.file.path, offset, size, ref.shape,
                           read=functools.partial(self.__getitem__, key), what=repr(ref.key))
        return value if value.writes(np.dtype(np.float16), device) else None

    def __len__(self) -> int:
        return len(self._refs)

    def __repr__(self) -> str:
        return f"<ComponentWeights {self.name}: {len(self)} tensors>"

    @property
    def refs(self) -> dict[str, TensorRef]:
        """name -> where that tensor is read from (a copy: changing it changes nothing)."""
        return dict(self._refs)

    def with_refs(self, refs: Mapping[str, TensorRef]) -> ComponentWeights:
        """These weights' reading (name, config, dtype, a subclass's settings) over `refs`."""
        other = copy.copy(self)
        other._refs = dict(refs)
        return other

    def shape(self, key: str) -> tuple[int, ...]:
        """Shape of tensor `key`, from the file header (no data is read)."""
        return self._refs[key].shape

    def source(self, key: str) -> tuple[Path, str]:
        """(file, key in that file) tensor `key` is read from, for messages and debugging."""
        ref = self._refs[key]
        return ref.file.path, ref.key


def require_keys(component: str, refs: Mapping[str, TensorRef], expected: list[str],
                 where: str) -> dict[str, TensorRef]:
    """`refs` restricted to `expected`; WeightsError naming `where` and the first missing key."""
    missing = [key for key in expected if key not in refs]
    if missing:
        more = f" (and {len(missing) - 1} more)" if len(missing) > 1 else ""
        raise WeightsError(f"{where}: {component} tensor {missing[0]!r} is missing{more}; the file "
                           "is incomplete or belongs to a different model architecture")
    return {key: refs[key] for key in expected}


@dataclass(frozen=True)
class ModelInfo:
    """What kind of Stable Diffusion model was loaded.

    family: "sd1" (CLIP ViT-L text encoder, 768-d context), "sd2" (OpenCLIP ViT-H, 1024-d;
    SD-Turbo too), "sdxl" (CLIP ViT-L + OpenCLIP bigG, 2048-d context, pooled text embedding and
    6 size/crop time ids; SDXL-Turbo too) or "sdxl-refiner" (OpenCLIP bigG only, 1280-d,
    5 time ids with the aesthetic score).
    inpainting: the UNet takes 9 input channels (latents + mask + masked-image latents).
    prediction_type: "epsilon" or "v_prediction" (what the UNet predicts; the scheduler needs it).
    source: "diffusers" (a pipeline folder) or "single_file" (an original LDM checkpoint).
    turbo: an adversarially distilled 1-4 step model (SD-Turbo, SDXL-Turbo), which only its
    name says: "turbo" in the folder's (or Hugging Face cache repository's) or the file's name,
    or in a file's ModelSpec title/architecture; run it without guidance. A single file's
    `scheduler_config` is then Turbo's (trailing spacing); a folder keeps its own.
    """

    family: Literal["sd1", "sd2", "sdxl", "sdxl-refiner"]
    inpainting: bool
    prediction_type: str
    source: Literal["diffusers", "single_file"]
    turbo: bool = False


@dataclass(frozen=True)
class PipelineWeights:
    """Everything a Stable Diffusion pipeline loads from a model: lazy per-component weights with
    their diffusers configs, the scheduler config, and where the tokenizer files are (None for a
    single-file checkpoint: use the packaged CLIP vocabulary).

    Text-encoder keys are transformers' `CLIPTextModel` names without the `text_model.` prefix
    (`embeddings.token_embedding.weight`, `encoder.layers.0.self_attn.q_proj.weight`, ...),
    whichever transformers version wrote the file.

    SDXL: `text_encoder` is CLIP ViT-L (None for the refiner, which has only the second),
    `text_encoder_2` the OpenCLIP bigG text tower as transformers' CLIPTextModelWithProjection
    (config `architectures` ["CLIPTextModelWithProjection"], plus `text_projection.weight`),
    `tokenizer_2_dir` its tokenizer (pads with "!"; None for a single file). `pipeline_config`
    is model_index.json's pipeline settings (`force_zeros_for_empty_prompt`,
    `requires_aesthetics_score`; a single file gets diffusers' values for its kind).
    SD 1/2 models: text_encoder_2 and tokenizer_2_dir are None.
    """

    unet: ComponentWeights
    vae: ComponentWeights
    text_encoder: ComponentWeights | None
    scheduler_config: dict[str, Any]
    info: ModelInfo
    tokenizer_dir: Path | None = None
    text_encoder_2: ComponentWeights | None = None
    tokenizer_2_dir: Path | None = None
    pipeline_config: dict[str, Any] = field(default_factory=dict)
