"""The X/Y/Z plot's axis types, in the WebUI's order (a client may send an axis by its index
in the txt2img or img2img list, as the WebUI's dropdown gives it, or by its label).

Each axis sets one field of the request (or of its override_settings); the labels the WebUI
has and this server cannot vary are listed too, so that the indices stay the WebUI's, and are
refused by name."""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

__all__ = ["AXES", "Axis", "axes_for", "find_axis"]


@dataclass(frozen=True)
class Axis:
    """One axis type: its label, its values' kind ("int", "float", "str"), the request field it
    sets (`override`: a key of override_settings instead), and where it is offered."""

    label: str
    kind: str = "str"
    field: str | None = None
    override: str | None = None
    txt2img: bool = True
    img2img: bool = True
    cost: float = 0.0  # slow to change (a model switch): the outer loop
    checkpoint: bool = False  # labelled by the file's name without its folder

    @property
    def supported(self) -> bool:
        return self.label == "Nothing" or self.field is not None or self.override is not None

    def update(self, body: Any, value: Any, values: list[Any]) -> dict[str, Any]:
        """The body fields that give a cell this axis's `value` (`values`: the whole axis)."""
        if self.label == "Nothing":
            return {}
        if self.label == "Prompt S/R":
            search = values[0]
            negative = body.negative_prompt or ""
            if search not in body.prompt and search not in negative:
                raise ValueError(f"Prompt S/R did not find {search!r} in the prompt or the "
                                 "negative prompt; the first value is the text replaced")
            return {"prompt": body.prompt.replace(search, value),
                    "negative_prompt": negative.replace(search, value)}
        if self.label == "Prompt order":
            return {"prompt": _reordered(body.prompt, value)}
        if self.label == "Styles":  # the WebUI's apply_styles: the value's names added
            names = [name.strip() for name in value.split(",") if name.strip()]
            return {"styles": [*(body.styles or []), *names]}
        if self.override is not None:
            return {"override_settings": {**(body.override_settings or {}),
                                          self.override: value}}
        return {} if self.field is None else {self.field: value}

    def label_of(self, value: Any) -> str:
        """The grid's label for `value` (the WebUI's format_value functions)."""
        if self.label == "Nothing":
            return ""
        if isinstance(value, float):
            value = round(value, 8)
        if self.checkpoint:
            return os.path.basename(str(value))
        if self.label == "Prompt order":
            return ", ".join(value)
        if self.label in ("Prompt S/R", "Sampler"):
            return str(value)
        return f"{self.label}: {value}"


def _reordered(prompt: str, tokens: tuple[str, ...]) -> str:
    """`prompt` with `tokens` put in this order where the prompt has them (the WebUI's
    apply_order); ValueError for a token the prompt does not have."""
    missing = [token for token in tokens if token not in prompt]
    if missing:
        raise ValueError(f"Prompt order: {missing[0]!r} is not in the prompt")
    parts = []
    for token in sorted(tokens, key=prompt.find):
        at = prompt.find(token)
        parts.append(prompt[:at])
        prompt = prompt[at + len(token):]
    return "".join(part + token for part, token in zip(parts, tokens, strict=True)) + prompt


def _t2i(label: str, kind: str = "str", **kw: Any) -> Axis:
    return Axis(label, kind, img2img=False, **kw)


def _i2i(label: str, kind: str = "str", **kw: Any) -> Axis:
    return Axis(label, kind, txt2img=False, **kw)


AXES = (
    Axis("Nothing"),
    Axis("Seed", "int", "seed"),
    Axis("Var. seed", "int", "subseed"),
    Axis("Var. strength", "float", "subseed_strength"),
    Axis("Steps", "int", "steps"),
    _t2i("Hires steps", "int", field="hr_second_pass_steps"),
    Axis("CFG Scale", "float", "cfg_scale"),
    _i2i("Image CFG Scale", "float"),  # instruct-pix2pix models: none here
    Axis("Prompt S/R", "str", "prompt"),
    Axis("Prompt order", "order", "prompt"),
    _t2i("Sampler", field="sampler_name"),
    _t2i("Hires sampler", field="hr_sampler_name"),
    _i2i("Sampler", field="sampler_name"),
    Axis("Checkpoint name", override="sd_model_checkpoint", cost=1.0, checkpoint=True),
    Axis("Negative Guidance minimum sigma", "float"),
    Axis("Sigma Churn", "float", override="s_churn"),
    Axis("Sigma min", "float", override="s_tmin"),
    Axis("Sigma max", "float", override="s_tmax"),
    Axis("Sigma noise", "float", override="s_noise"),
    Axis("Schedule type", field="scheduler"),
    Axis("Schedule min sigma", "float"),
    Axis("Schedule max sigma", "float"),
    Axis("Schedule rho", "float"),
    Axis("Eta", "float", "eta"),
    Axis("Clip skip", "int", override="CLIP_stop_at_last_layers"),
    Axis("Denoising", "float", "denoising_strength"),
    Axis("Initial noise multiplier", "float", "initial_noise_multiplier"),
    Axis("Extra noise", "float"),
    _t2i("Hires upscaler", field="hr_upscaler"),
    _i2i("Cond. Image Mask Weight", "float"),
    Axis("VAE", override="sd_vae", cost=0.7),
    Axis("Styles", field="styles"),  # names of the server's styles (--styles-file)
    Axis("UniPC Order", "int"),
    Axis("Face restore"),
    Axis("Token merging ratio", "float"),
    Axis("Token merging ratio high-res", "float"),
    Axis("Always discard next-to-last sigma"),
    Axis("SGM noise multiplier"),
    Axis("Refiner checkpoint", field="refiner_checkpoint", cost=1.0, checkpoint=True),
    Axis("Refiner switch at", "float", "refiner_switch_at"),
    Axis("RNG source", override="randn_source"),
)


def axes_for(kind: str) -> list[Axis]:
    """The axis types of the txt2img or img2img tab, in the order of its dropdown."""
    return [axis for axis in AXES if (axis.img2img if kind == "img2img" else axis.txt2img)]


def find_axis(kind: str, chosen: Any, name: str) -> Axis:
    """The axis `chosen` (an index into axes_for(kind), or a label) names; ValueError naming
    the argument `name` and what may be sent otherwise."""
    axes = axes_for(kind)
    if isinstance(chosen, int) and not isinstance(chosen, bool) and 0 <= chosen < len(axes):
        axis = axes[chosen]
    else:
        found = [a for a in axes if isinstance(chosen, str) and a.label.lower() == chosen.lower()]
        if not found:
            raise ValueError(f"{name} {chosen!r} is not an axis type: send an index from 0 to "
                             f"{len(axes) - 1} or a label ({_supported(axes)})")
        axis = found[0]
    if not axis.supported:
        raise ValueError(f"{name} {axis.label!r} is not supported by this server; the axis "
                         f"types it varies: {_supported(axes)}")
    return axis


def _supported(axes: list[Axis]) -> str:
    return ", ".join(a.label for a in axes if a.supported)
