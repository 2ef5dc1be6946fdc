"""The depth preprocessors' rows of bench dit_controlnet (bench/_annotator_refs.py runs them):
depth_midas and normal_midas (MiDaS v3 DPT-Hybrid) and depth_anything_v2 (Depth Anything V2
Small), each beside transformers' network on torch's device, as tests/diffusion/preprocessors
compare them: DPTForDepthEstimation with DPT-Hybrid's real config (a BiT ResNet-50 stem of 3,
4 and 9 blocks, ViT-B/16, neck 256/512/768/768, fusion 256), its weights saved under MiDaS's
names as midas/dpt_hybrid-midas-501f0c75.pt (the key map is test_midas's), and
DepthAnythingForDepthEstimation with Depth-Anything-V2-Small-hf's config, saved as its folder
(DEPTH_ANYTHING_V2_MODEL). The reference runs on a picture already scaled as the detector
scales it: MiDaS at the picture's size (a multiple of 64), -1..1, the token grid h/16 x w/16
as MiDaS's forward; Depth Anything at 518 x 518 (both sizes' lower-bound resize), its depth
read back.

"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["KINDS", "MODULES", "baseline", "network", "reference_call"]

MODULES = ("depth_midas", "normal_midas", "depth_anything_v2")
KINDS = ("midas", "depth_anything")
MIDAS_FILE = "dpt_hybrid-midas-501f0c75.pt"
QUICK_SIZES = {"bit": [128, 128, 256], "embedding": 32, "hidden": 128, "intermediate": 256,
               "neck": [128, 128, 96, 96], "fusion": 32, "image": 80}  # test_midas's

# transformers' names (left) for MiDaS's (right), by pattern (tests/.../test_midas.py's map)
_KEYS: list[tuple[str, Any]] = [
    (r"dpt\.embeddings\.cls_token", "pretrained.model.cls_token"),
    (r"dpt\.embeddings\.position_embeddings", "pretrained.model.pos_embed"),
    (r"dpt\.embeddings\.projection\.(.*)", r"pretrained.model.patch_embed.proj.\1"),
    (r"dpt\.embeddings\.backbone\.bit\.embedder\.convolution\.(.*)",
     r"pretrained.model.patch_embed.backbone.stem.conv.\1"),
    (r"dpt\.embeddings\.backbone\.bit\.embedder\.norm\.(.*)",
     r"pretrained.model.patch_embed.backbone.stem.norm.\1"),
    (r"dpt\.embeddings\.backbone\.bit\.encoder\.stages\.(\d+)\.layers\.(\d+)\.(.*)",
     r"pretrained.model.patch_embed.backbone.stages.\1.blocks.\2.\3"),
    (r"dpt\.encoder\.layer\.(\d+)\.layernorm_before\.(.*)", r"pretrained.model.blocks.\1.norm1.\2"),
    (r"dpt\.encoder\.layer\.(\d+)\.layernorm_after\.(.*)", r"pretrained.model.blocks.\1.norm2.\2"),
    (r"dpt\.encoder\.layer\.(\d+)\.attention\.output\.dense\.(.*)",
     r"pretrained.model.blocks.\1.attn.proj.\2"),
    (r"dpt\.encoder\.layer\.(\d+)\.intermediate\.dense\.(.*)",
     r"pretrained.model.blocks.\1.mlp.fc1.\2"),
    (r"dpt\.encoder\.layer\.(\d+)\.output\.dense\.(.*)", r"pretrained.model.blocks.\1.mlp.fc2.\2"),
    (r"dpt\.layernorm\.(.*)", r"pretrained.model.norm.\1"),
    (r"neck\.reassemble_stage\.readout_projects\.(\d)\.0\.(.*)",
     lambda m: f"pretrained.act_postprocess{int(m[1]) + 1}.0.project.0.{m[2]}"),
    (r"neck\.reassemble_stage\.layers\.(\d)\.projection\.(.*)",
     lambda m: f"pretrained.act_postprocess{int(m[1]) + 1}.3.{m[2]}"),
    (r"neck\.reassemble_stage\.layers\.(\d)\.resize\.(.*)",
     lambda m: f"pretrained.act_postprocess{int(m[1]) + 1}.4.{m[2]}"),
    (r"neck\.convs\.(\d)\.(.*)", lambda m: f"scratch.layer{int(m[1]) + 1}_rn.{m[2]}"),
    (r"neck\.fusion_stage\.layers\.(\d)\.projection\.(.*)",
     lambda m: f"scratch.refinenet{4 - int(m[1])}.out_conv.{m[2]}"),
    (r"neck\.fusion_stage\.layers\.(\d)\.residual_layer(\d)\.convolution(\d)\.(.*)",
     lambda m: f"scratch.refinenet{4 - int(m[1])}.resConfUnit{m[2]}.conv{m[3]}.{m[4]}"),
    (r"head\.head\.(\d)\.(.*)", r"scratch.output_conv.\1.\2"),
]


def _midas_state(model: Any) -> dict[str, Any]:
    """transformers' DPT weights under MiDaS's names (q, k and v joined into timm's qkv)."""
    import torch

    state, qkv = {}, {}
    for key, value in model.state_dict().items():
        if m := re.fullmatch(r"dpt\.encoder\.layer\.(\d+)\.attention\.attention\.(\w+)\.(\w+)",
                             key):
            qkv.setdefault(f"pretrained.model.blocks.{m[1]}.attn.qkv.{m[3]}", {})[m[2]] = value
            continue
        renamed = [re.sub(f"^{pattern}$", to, key) for pattern, to in _KEYS
                   if re.fullmatch(pattern, key)]
        if len(renamed) != 1:
            raise KeyError(f"no MiDaS name for {key}")
        state[renamed[0]] = value
    for key, parts in qkv.items():
        state[key] = torch.cat([parts["query"], parts["key"], parts["value"]])
    return state


def _dpt_hybrid(quick: bool) -> Any:
    """DPTForDepthEstimation with MiDaS v3 DPT-Hybrid's config (Intel/dpt-hybrid-midas's),
    random; narrow widths with `quick`."""
    import torch
    import transformers

    from ._annotator_refs import _randomized

    sizes = QUICK_SIZES if quick else {
        "bit": [256, 512, 1024], "embedding": 64, "hidden": 768, "intermediate": 3072,
        "neck": [256, 512, 768, 768], "fusion": 256, "image": 384}
    bit = transformers.BitConfig(
        embedding_size=sizes["embedding"], hidden_sizes=sizes["bit"], depths=[3, 4, 9],
        global_padding="same", layer_type="bottleneck",
        out_features=["stage1", "stage2", "stage3"], embedding_dynamic_padding=True,
        num_groups=32)
    grid = sizes["image"] // 16
    config = transformers.DPTConfig(
        is_hybrid=True, backbone_config=bit, hidden_size=sizes["hidden"],
        num_hidden_layers=12, num_attention_heads=sizes["hidden"] // 64,
        intermediate_size=sizes["intermediate"], image_size=sizes["image"], patch_size=16,
        layer_norm_eps=1e-6, backbone_out_indices=[0, 1, 8, 11], readout_type="project",
        reassemble_factors=[1, 1, 1, 0.5], neck_hidden_sizes=sizes["neck"],
        fusion_hidden_size=sizes["fusion"],
        backbone_featmap_shape=[1, sizes["bit"][-1], grid, grid])
    model = _randomized(transformers.DPTForDepthEstimation(config), 5, scale=0.3)
    with torch.no_grad():  # as test_midas: the last conv reads ReLU'd features, positive
        model.head.head[4].weight.abs_()  # weights keep the depth off the final ReLU's zero
    return model


def _depth_anything(quick: bool) -> Any:
    """DepthAnythingForDepthEstimation with Depth-Anything-V2-Small-hf's config, random."""
    import transformers

    from ._annotator_refs import _randomized

    hidden, heads = (64, 1) if quick else (384, 6)
    backbone = transformers.Dinov2Config(
        hidden_size=hidden, num_hidden_layers=12, num_attention_heads=heads, mlp_ratio=4,
        image_size=518, patch_size=14, out_indices=[3, 6, 9, 12], layerscale_value=1.0,
        reshape_hidden_states=False)
    neck = [16, 32, 48, 64] if quick else [48, 96, 192, 384]
    config = transformers.DepthAnythingConfig(
        backbone_config=backbone, reassemble_hidden_size=hidden, neck_hidden_sizes=neck,
        fusion_hidden_size=64, head_hidden_size=32, depth_estimation_type="relative")
    return _randomized(transformers.DepthAnythingForDepthEstimation(config), 3, scale=0.2)


def baseline(module: str) -> str:
    """What a row's torch_wall_ms ran."""
    return "transformers" if module in MODULES else "controlnet_aux"


def network(module: str, folder: Path, quick: bool = False) -> tuple[Any, str]:
    """The reference network of `module`, random, saved under `folder` where ours reads it;
    (network, its kind for `reference_call`)."""
    import torch

    if module in ("depth_midas", "normal_midas"):
        model = _dpt_hybrid(quick)
        (folder / "midas").mkdir(exist_ok=True)
        if not (folder / "midas" / MIDAS_FILE).exists():
            torch.save(_midas_state(model), folder / "midas" / MIDAS_FILE)
        return model, "midas"
    if module == "depth_anything_v2":
        from diffusion.preprocessors import depth

        model = _depth_anything(quick)
        model.save_pretrained(folder / "depth_anything_v2")
        depth.set_model_path(folder / "depth_anything_v2")
        return model, "depth_anything"
    raise ValueError(f"no depth preprocessor {module!r}")


def _dpt_depth(model: Any, x: Any) -> Any:
    """DPTForDepthEstimation's forward with MiDaS's token grid h/16 x w/16."""
    embedded = model.dpt.embeddings(x, interpolate_pos_encoding=True)
    h, hooked = embedded.last_hidden_states, []
    for index, layer in enumerate(model.dpt.encoder.layer):
        h = layer(h)
        if index in model.config.backbone_out_indices[2:]:
            hooked.append(h)
    features = [*embedded.intermediate_activations, *hooked]
    return model.head(model.neck(features, x.shape[2] // 16, x.shape[3] // 16))


def reference_call(net: Any, kind: str, image: np.ndarray, dev: str) -> Any:
    """A no-argument call: the reference network on `image` as the detector feeds it, the
    depth read back."""
    import torch

    net.to(dev)
    if kind == "midas":
        rows, cols = (64 * -(-side // 64) for side in image.shape[:2])
        padded = np.pad(image, [(0, rows - image.shape[0]), (0, cols - image.shape[1]),
                                (0, 0)], mode="edge")
        x = torch.from_numpy(np.ascontiguousarray(padded.transpose(2, 0, 1))[None]).float()
        x = (x / 127.5 - 1).to(dev)
        return lambda: _no_grad(lambda: _dpt_depth(net, x).cpu())
    from diffusion.preprocessors.depth import network_size

    rows, cols = network_size(*image.shape[:2])
    x = torch.from_numpy(np.ascontiguousarray(image[:, :, ::-1].transpose(2, 0, 1))[None])
    x = torch.nn.functional.interpolate(x.float() / 255, (rows, cols), mode="bicubic")
    mean = torch.tensor([0.485, 0.456, 0.406]).reshape(1, 3, 1, 1)
    x = ((x - mean) / torch.tensor([0.229, 0.224, 0.225]).reshape(1, 3, 1, 1)).to(dev)
    return lambda: _no_grad(lambda: net(x).predicted_depth.cpu())


def _no_grad(call: Any) -> Any:
    import torch

    with torch.no_grad():
        return call()
