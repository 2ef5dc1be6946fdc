"""LoraFile: one LoRA / LyCORIS `.safetensors` file, parsed into per-layer low-rank updates.

Formats read (the ones the WebUI's built-in Lora extension and diffusers read for SD 1.x/2.x):

- kohya / WebUI: `lora_unet_<flattened module>.lora_down.weight`, `.lora_up.weight`, `.alpha`,
  optional `.lora_mid.weight` (LoCon's CP decomposition); `lora_te_` (or SDXL's `lora_te1_`,
  `lora_te2_`) for the text encoders. LyCORIS LoCon uses the same names on conv layers (a 3x3
  `lora_down`, a 1x1 `lora_up`), LoHa `hada_w1_a`, `hada_w1_b`, `hada_w2_a`, `hada_w2_b`
  (optional `hada_t1`, `hada_t2`), LoKr `lokr_w1` (or `lokr_w1_a`, `lokr_w1_b`) and `lokr_w2`
  (or `lokr_w2_a`, `lokr_w2_b`, optional `lokr_t2`), full differences `diff` (`diff_b` for
  the bias), IA3 `weight` and `on_input`, OFT: kohya's and LyCORIS's `oft_blocks` (BOFT's
  4-D; `alpha` its constraint), LyCORIS's older `oft_diag`, `rescale`, and GLoRA `a1.weight`,
  `a2.weight`, `b1.weight`, `b2.weight` (IA3, OFT and GLoRA are built from the weight itself:
  `diffusion.lora._delta_weight`); LyCORIS's norm-layer differences `w_norm`, `b_norm` (read
  as `diff` and `diff_b` of the LayerNorm or GroupNorm); DoRA's `dora_scale` beside the others.
- diffusers / PEFT: `unet.<module>.lora_A.weight` / `lora_B.weight` (`text_encoder.`,
  `text_encoder_2.`, `transformer.`, and ComfyUI's `diffusion_model.` or PeftModel's
  `base_model.model.` for the UNet or the transformer), the older `<module>.lora.down.weight`
  / `.lora.up.weight`, `lora_linear_layer.down/up`, and attention-processor names
  (`attn1.processor.to_q_lora.down`); DoRA's `lora_magnitude_vector`.
- ComfyUI's Wan LoRAs: `diffusion_model.<module>.lora_down.weight` / `.lora_up.weight` /
  `.alpha`, bias updates `.diff_b` (PEFT's `lora_B.bias`); norm layers' `.diff` / `.diff_b`
  are skipped.

Names are kept as the file spells them (one module per `LoraModule`); which model parameter a
module patches is decided against a loaded model (`diffusion.lora._names`), because kohya's
flattened names (`down_blocks_0_attentions_0_proj_in`) are only unambiguous given the model.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path

import numpy as np

from ..loaders import WeightsError
from ..loaders.errors import PICKLE_SUFFIXES
from ..loaders.formats.torch_file import open_weights_file
from ._adapter_config import apply_adapter_config
from ._errors import LoraError
from ._hashes import short_hash

__all__ = ["COMPONENTS", "WEIGHT_KINDS", "LoraFile", "LoraModule"]


# The pipeline attributes a LoRA can patch, in the order kohya's prefixes name them; then
# diffusers' FLUX / SD3 transformer (kohya calls it the UNet: lora_unet_double_blocks_...).
COMPONENTS = ("unet", "text_encoder", "text_encoder_2", "transformer")
_KOHYA_PREFIXES = {"lora_unet_": "unet", "lora_te_": "text_encoder", "lora_te1_": "text_encoder",
                   "lora_te2_": "text_encoder_2"}
# ComfyUI's and ai-toolkit's prefix for the denoiser's layers (`diffusion_model.layers.0...`),
# under diffusers' or the original checkpoint's module names: the UNet, or the transformer
# every DiT pipeline also offers as `unet` (as kohya's `lora_unet_` names it)
_DIT_PREFIXES = {"diffusion_model": "unet"}
# PeftModel's own prefix (ai-toolkit's Krea 2 LoRAs), read as ComfyUI's: the denoiser's layers
_PEFT_MODEL = "base_model.model."
# The part of a key after the module name -> our short name for that tensor.
_KOHYA_PARTS = {"lora_down.weight": "down", "lora_up.weight": "up", "lora_mid.weight": "mid",
                "alpha": "alpha", "hada_w1_a": "w1a", "hada_w1_b": "w1b", "hada_w2_a": "w2a",
                "hada_w2_b": "w2b", "hada_t1": "t1", "hada_t2": "t2",
                # LyCORIS LoKr: kron(w1, w2), each factor whole or as a low-rank pair
                "lokr_w1": "k1", "lokr_w1_a": "k1a", "lokr_w1_b": "k1b", "lokr_w2": "k2",
                "lokr_w2_a": "k2a", "lokr_w2_b": "k2b", "lokr_t2": "kt2",
                # LyCORIS's full difference (W' = W + diff) and its bias's
                "diff": "diff", "diff_b": "bias",
                # DoRA's magnitudes (LyCORIS, kohya): an update's weight decomposition
                "dora_scale": "dora_scale",
                # LyCORIS IA3: a factor per output row (per input column where `on_input`)
                "weight": "weight", "on_input": "on_input",
                # OFT: kohya's and LyCORIS's skew blocks (BOFT's 4-D), LyCORIS's older
                # rotations as stored, LyCORIS's per-row rescale
                "oft_blocks": "oft_blocks", "oft_diag": "oft_diag", "rescale": "rescale",
                # GLoRA, in the layout the WebUI reads: W + W a2 a1 + b2 b1
                "a1.weight": "a1", "a2.weight": "a2", "b1.weight": "b1", "b2.weight": "b2",
                # LyCORIS's norm-layer updates: differences of its weight and bias
                "w_norm": "diff", "b_norm": "bias"}
_DIFFUSERS_PARTS = {"lora_A.weight": "down", "lora_B.weight": "up", "lora.down.weight": "down",
                    "lora.up.weight": "up", "lora_linear_layer.down.weight": "down",
                    "lora_linear_layer.up.weight": "up", "alpha": "alpha",
                    # ComfyUI's Wan LoRAs (lightx2v's step distillation): kohya's part names
                    "lora_down.weight": "down", "lora_up.weight": "up",
                    # and their bias updates (`blocks.0.self_attn.q.diff_b`: b' = b + w diff_b)
                    "diff_b": "bias", "lora_B.bias": "bias",
                    # PEFT's DoRA magnitudes (use_dora), one per output row or channel
                    "lora_magnitude_vector": "magnitude",
                    "lora_magnitude_vector.weight": "magnitude"}
# diffusers' old attention-processor LoRA names -> the projection they patch
_PROCESSOR_NAMES = {"processor.to_q_lora": "to_q", "processor.to_k_lora": "to_k",
                    "processor.to_v_lora": "to_v", "processor.to_out_lora": "to_out.0"}
# The kinds whose update is built from the weight it patches (`_delta_weight`), as docs name them
WEIGHT_KINDS = {"ia3": "IA3", "oft": "OFT", "glora": "GLoRA"}
_REQUIRED = {"lora": ("down", "up"), "loha": ("w1a", "w1b", "w2a", "w2b"), "lokr": (),
             "full": ("diff",), "bias": ("bias",), "ia3": ("weight", "on_input"), "oft": (),
             "glora": ("a1", "a2", "b1", "b2")}


@dataclass(eq=False)
class LoraModule:
    """The update of one layer: `kind` "lora" (incl. LoCon), "loha", "lokr", "full", "ia3",
    "oft" (incl. BOFT) or "glora", its `tensors` by short name (down, up, mid / w1a, w1b, w2a,
    w2b, t1, t2 / k1 or k1a, k1b, k2 or k2a, k2b, kt2 / diff / IA3's weight, on_input /
    oft_blocks or oft_diag, rescale / a1, a2, b1, b2; DoRA's magnitudes `dora_scale` beside the
    first four) as stored (float16/32; bfloat16 widened to float32; IA3's on_input an integer),
    and `alpha` (None: the scale is 1; OFT's: its constraint). `name` is the module as the file
    names it (component prefix removed); `key` is the file's own spelling, for messages.
    Compares by identity."""

    component: str
    name: str
    key: str
    kind: str = ""  # "lora", "loha", "lokr", "full", "ia3", "oft", "glora"; "bias": a bias alone
    tensors: dict[str, np.ndarray] = field(default_factory=dict)
    alpha: float | None = None
    rank_stabilized: bool = False  # PEFT's use_rslora: alpha / sqrt(rank)

    @property
    def rank(self) -> int | None:
        """The rank the update was trained at (down's rows; LoHa: w1b's rows; LoKr: its
        low-rank factor's, w2's where both are, none where both are whole; full, IA3, OFT,
        GLoRA: none, so no alpha scales them, as in the WebUI)."""
        if self.kind in ("lora", "loha"):
            return int(self.tensors["down" if self.kind == "lora" else "w1b"].shape[0])
        low = [self.tensors[k] for k in ("k2b", "k1b") if k in self.tensors]
        return int(low[0].shape[0]) if low else None

    @property
    def scale(self) -> float:
        """alpha / rank, as kohya and the WebUI scale an update (1 without alpha or without a
        rank; alpha / sqrt(rank) for PEFT's rank-stabilized LoRA)."""
        rank = self.rank
        if self.alpha is None or rank is None:
            return 1.0
        return self.alpha / (math.sqrt(rank) if self.rank_stabilized else rank)

    @property
    def delta_shape(self) -> tuple[int, ...]:
        """The shape of the update this module builds (before fitting it to the layer)."""
        t = self.tensors
        if self.kind == "full":
            return tuple(t["diff"].shape)
        if self.kind == "lokr":
            first, second = _factor_shape(t, "1"), _factor_shape(t, "2")
            return (first[0] * second[0], first[1] * second[1], *second[2:])
        if self.kind == "lora":
            if "mid" in t:
                return (t["up"].shape[0], t["down"].shape[1], *t["mid"].shape[2:])
            return (t["up"].shape[0], *t["down"].shape[1:])
        if "t1" in t:
            return (t["w1a"].shape[1], t["w1b"].shape[1], *t["t1"].shape[2:])
        return (t["w1a"].shape[0], *t["w1b"].shape[1:])


@dataclass
class LoraFile:
    """A parsed LoRA file: `name` (the file's stem, what `<lora:NAME>` calls it), `path`,
    `metadata` (the safetensors header's `__metadata__`), and `modules`, one per patched layer,
    keyed by (component, name as in the file). Build with `LoraFile.load(path)`."""

    name: str
    path: Path
    metadata: dict[str, str]
    modules: dict[tuple[str, str], LoraModule]

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> LoraFile:
        """Read and check every tensor of the LoRA file at `path`: `.safetensors`, or a pickle
        (.pt/.pth/.ckpt/.bin) read without running it (`loaders.TorchFile`).

        Raises LoraError naming the file (and the key) for a pickle naming a global outside the
        tensor allowlist, a damaged file, a key of no known format, a module
        lacking its up or down tensor, ranks that disagree, or non-finite values.
        """
        path = Path(path)
        if path.suffix.lower() not in (".safetensors", *PICKLE_SUFFIXES):
            raise LoraError(f"{path}: a LoRA must be a .safetensors (or PyTorch .pt) file "
                            f"(got {path.suffix!r})")
        try:
            file = open_weights_file(path)
        except WeightsError as exc:
            raise LoraError(str(exc)) from None
        modules: dict[tuple[str, str], LoraModule] = {}
        for key in file.keys():
            if _norm_diff(key):
                continue
            component, name, part = _split_key(path, key)
            module = modules.setdefault((component, name), LoraModule(component, name, key))
            _store(path, module, key, part, file.read(key))
        if not modules:
            raise LoraError(f"{path}: holds no tensors; it is not a LoRA")
        for module in modules.values():
            _check_module(path, module)
        apply_adapter_config(path, file.metadata, modules.values())
        return cls(path.stem, path, file.metadata, modules)

    def components(self) -> set[str]:
        """The pipeline components this LoRA patches ("unet", "text_encoder", ...)."""
        return {component for component, _ in self.modules}

    @cached_property
    def short_hash(self) -> str:
        """The WebUI's 12-digit hash of this file (`short_hash`), computed once."""
        return short_hash(self.path, self.metadata)


def _split_key(path: Path, key: str) -> tuple[str, str, str]:
    """(component, module name as in the file, short part name) of tensor `key`."""
    for prefix, component in _KOHYA_PREFIXES.items():
        if key.startswith(prefix):
            name, _, part = key[len(prefix):].partition(".")
            return component, name, _part(path, key, part, _KOHYA_PARTS)
    named = f"diffusion_model.{key[len(_PEFT_MODEL):]}" if key.startswith(_PEFT_MODEL) else key
    head, _, rest = named.partition(".")
    head = _DIT_PREFIXES.get(head, head)
    if head in COMPONENTS:
        rest = _without_processor(rest)
        for suffix, short in _DIFFUSERS_PARTS.items():
            if rest.endswith("." + suffix):
                return head, rest[: -len(suffix) - 1], short
        raise LoraError(f"{path}: tensor {key!r} is not a LoRA up/down/alpha tensor of a known "
                        f"kind ({', '.join(_DIFFUSERS_PARTS)}); this format is not supported")
    raise LoraError(
        f"{path}: tensor {key!r} has an unknown prefix; LoRA files name layers with "
        f"{', '.join(_KOHYA_PREFIXES)} (kohya/WebUI) or {', '.join(p + '.' for p in COMPONENTS)} "
        "(diffusers/PEFT). Is this a LoRA for Stable Diffusion (and not a model or an "
        "embedding)?")


def _norm_diff(key: str) -> bool:
    """A norm layer's `.diff` / `.diff_b` in a ComfyUI Wan LoRA: zeros in the published files,
    skipped as diffusers' Wan conversion skips them."""
    return key.endswith((".diff", ".diff_b")) and "norm" in key.rpartition(".")[0]


def _part(path: Path, key: str, part: str, known: dict[str, str]) -> str:
    if part not in known:
        raise LoraError(f"{path}: tensor {key!r}: {part!r} is not a part of a LoRA, LoCon, "
                        f"LoHa, LoKr, full-difference, IA3, OFT, GLoRA or norm-layer module "
                        f"this loader supports ({', '.join(known)})")
    return known[part]


def _without_processor(name: str) -> str:
    """diffusers' old attention-processor spelling (`attn1.processor.to_q_lora.down.weight`)
    -> the projection's own (`attn1.to_q.lora.down.weight`)."""
    for old, new in _PROCESSOR_NAMES.items():
        if f".{old}." in name:
            return name.replace(f".{old}.", f".{new}.lora.")
    return name


def _store(path: Path, module: LoraModule, key: str, part: str, value: np.ndarray) -> None:
    if value.dtype.kind != "f" and not (part == "on_input" and value.dtype.kind in "biu"):
        raise LoraError(f"{path}: tensor {key!r} is {value.dtype}, a LoRA holds floats")
    if not np.all(np.isfinite(value)):
        raise LoraError(f"{path}: tensor {key!r} holds NaN or infinite values; the file is "
                        "damaged (or was trained into divergence): re-download or re-train it")
    if part == "alpha":
        if value.size != 1:
            raise LoraError(f"{path}: alpha {key!r} has shape {value.shape}, expected a scalar")
        module.alpha = float(value.reshape(()))
        return
    if part in module.tensors:
        raise LoraError(f"{path}: two tensors give {part!r} of module {module.name!r} (the "
                        f"second is {key!r}); the file mixes two formats")
    module.tensors[part] = value


def _factor_shape(t: dict[str, np.ndarray], which: str) -> tuple[int, ...]:
    """The shape of LoKr factor `which` ("1" or "2"): whole, or a low-rank pair's product
    (out, in) (the CP form's: out, in, kh, kw)."""
    if f"k{which}" in t:
        return tuple(t[f"k{which}"].shape)
    a, b = t[f"k{which}a"], t[f"k{which}b"]
    if f"kt{which}" in t:
        return (a.shape[1], b.shape[1], *t[f"kt{which}"].shape[2:])
    return (a.shape[0], math.prod(b.shape[1:]))


def _check_weight_kind(path: Path, module: LoraModule) -> None:
    """IA3: one factor per row or column (LyCORIS's (n,), on a conv (1, n, 1, 1)), `on_input`
    a single 0 or 1. OFT: `oft_blocks` (blocks, n, n) or BOFT's (stages, blocks, n, n), or
    `oft_diag` (blocks, n, n), not both. GLoRA: `_check_glora`. None with DoRA magnitudes."""
    t = module.tensors
    name = f"{WEIGHT_KINDS[module.kind]} module {module.name!r}"
    if "dora_scale" in t:
        raise LoraError(f"{path}: {name} has DoRA magnitudes (dora_scale), which only a LoRA, "
                        "LoHa, LoKr or full difference carries")
    if module.kind == "glora":
        _check_glora(path, module)
        return
    if module.kind == "ia3":
        if t["weight"].size != max(t["weight"].shape, default=1) or t["on_input"].size != 1:
            raise LoraError(f"{path}: {name} has weight {t['weight'].shape} and on_input "
                            f"{t['on_input'].shape}; expected a vector and a scalar")
        return
    if "oft_blocks" in t and "oft_diag" in t:
        raise LoraError(f"{path}: {name} has both oft_blocks and oft_diag; the file mixes two "
                        "formats")
    blocks = t["oft_blocks"] if "oft_blocks" in t else t["oft_diag"]
    if blocks.ndim not in ((3, 4) if "oft_blocks" in t else (3,)) or (
            blocks.shape[-1] != blocks.shape[-2]):
        raise LoraError(f"{path}: {name} has blocks of shape {blocks.shape}; expected "
                        "(blocks, n, n) square blocks (BOFT: (stages, blocks, n, n))")


def _check_glora(path: Path, module: LoraModule) -> None:
    """GLoRA's four matrices in the WebUI's layout: a1 (r, in), a2 (in, r), b1 (r', in),
    b2 (out, r')."""
    t = module.tensors
    a1, a2, b1, b2 = (t[part] for part in ("a1", "a2", "b1", "b2"))
    if not (a1.ndim == a2.ndim == b1.ndim == b2.ndim == 2 and a2.shape == a1.shape[::-1]
            and b2.shape[1] == b1.shape[0] and b1.shape[1] == a1.shape[1]):
        raise LoraError(f"{path}: GLoRA module {module.name!r} has a1 {a1.shape}, a2 "
                        f"{a2.shape}, b1 {b1.shape}, b2 {b2.shape}; the WebUI's layout is a1 "
                        "(r, in), a2 (in, r), b1 (r, in), b2 (out, r) (LyCORIS's newer GLoRA "
                        "layout and GLoRA on convs are not read)")


def _kind(t: dict[str, np.ndarray]) -> str:
    if "weight" in t or "on_input" in t:
        return "ia3"
    if {"oft_blocks", "oft_diag", "rescale"} & set(t):
        return "oft"
    if {"a1", "a2", "b1", "b2"} & set(t):
        return "glora"
    if "w1a" in t:
        return "loha"
    if any(part.startswith("k") for part in t):
        return "lokr"
    if "diff" in t:
        return "full"
    return "bias" if set(t) - {"dora_scale"} <= {"bias"} else "lora"


def _check_module(path: Path, module: LoraModule) -> None:
    """Set `module.kind` and check that its tensors fit together."""
    t = module.tensors
    if "magnitude" in t:  # PEFT's: (out,) or, on a conv, (1, out, 1, 1); always the rows
        t["dora_scale"] = t.pop("magnitude").reshape(-1, 1)
    kind = _kind(t)
    missing = [part for part in _REQUIRED[kind] if part not in t]
    if kind == "lokr":
        missing = [f"lokr_w{n} (or lokr_w{n}_a and lokr_w{n}_b)" for n in "12"
                   if f"k{n}" not in t and not {f"k{n}a", f"k{n}b"} <= set(t)]
    if kind == "oft" and "oft_blocks" not in t and "oft_diag" not in t:
        missing = ["oft_blocks (or oft_diag)"]
    if kind == "bias" and "dora_scale" in t:  # magnitudes without an update
        missing = ["lora_down and lora_up"]
    if missing:
        raise LoraError(f"{path}: {module.component} module {module.name!r} lacks its "
                        f"{' and '.join(missing)} tensor(s); the file is incomplete")
    module.kind = kind
    if kind in WEIGHT_KINDS:
        _check_weight_kind(path, module)
    if kind in ("bias", "full", *WEIGHT_KINDS):
        return
    if kind == "lora":
        pairs = [("up", 1, "down", 0)] + ([("mid", 0, "down", 0)] if "mid" in t else [])
    elif kind == "lokr":
        # a low-rank factor: a (out, r) @ b (r, in); its CP form: a (r, out), b (r, in)
        pairs = [(f"k{n}a", 0 if f"kt{n}" in t else 1, f"k{n}b", 0) for n in "12"
                 if f"k{n}" not in t]
    else:
        pairs = [("w1a", 1, "w1b", 0), ("w2a", 1, "w2b", 0)]
    for a, axis_a, b, axis_b in pairs:
        if t[a].ndim <= axis_a or t[a].shape[axis_a] != t[b].shape[axis_b]:
            raise LoraError(f"{path}: module {module.name!r}: {a} {t[a].shape} and {b} "
                            f"{t[b].shape} disagree on the rank; the file is damaged")
    if module.alpha is not None and not math.isfinite(module.alpha):
        raise LoraError(f"{path}: module {module.name!r} has alpha {module.alpha}")
