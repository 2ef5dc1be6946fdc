"""A tiny random Wan 2.2 Animate transformer (diffusers' WanAnimateTransformer3DModel) built
in-process, its transformer folder, and its state in the original release's names."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from sd_tiny import randomized
from wan_tiny import WAN_TINY, original_names

# WAN_TINY's width (2 heads of 12), 4 blocks with face blocks after blocks 0 and 2; 4 latent
# channels (in_channels 2 * 4 + 4); CLIP states 20 wide; 16 x 16 face crops through two
# motion res blocks (16 -> 8 -> 4), 2 face heads
ANIMATE_TINY: dict[str, Any] = {
    **WAN_TINY, "in_channels": 12, "latent_channels": 4, "out_channels": 4, "num_layers": 4,
    "image_dim": 20, "added_kv_proj_dim": 24, "motion_encoder_size": 16,
    "motion_encoder_channel_sizes": {"16": 4, "8": 6, "4": 8}, "motion_style_dim": 10,
    "motion_dim": 5, "motion_encoder_dim": 12, "face_encoder_hidden_dim": 8,
    "face_encoder_num_heads": 2, "inject_face_latents_blocks": 2,
    "motion_encoder_batch_size": 4}
TEXT_TOKENS = 512  # diffusers' Wan attention splits the image tokens off the last 512


def tiny_animate_transformer(seed: int = 31, **config: Any) -> Any:
    """diffusers' WanAnimateTransformer3DModel of ANIMATE_TINY (`config`'s fields in place of
    its own), random weights scaled so the text, the pose and the face visibly matter: the
    motion encoder's equalised-lr weights drawn N(0, 1), as StyleGAN initialises them (its
    scales divide by the fan-in), and its biases a fifth of randomized's (at 0.1 they carry
    most of the motion vector, and a new face moved the output 4 %, at 0.02 17 %), the face
    blocks' to_out 4 times randomized's (without, 8 %)."""
    import diffusers
    import torch

    model = randomized(diffusers.WanAnimateTransformer3DModel(**{**ANIMATE_TINY, **config}),
                       seed, scale=0.3)
    gen = torch.Generator().manual_seed(seed + 1)
    with torch.no_grad():
        for name, p in model.motion_encoder.named_parameters():
            if name.endswith("weight"):
                p.copy_(torch.randn(p.shape, generator=gen))
            else:
                p.mul_(0.2)
        for adapter in model.face_adapter:  # the face blocks' output as large as a block's
            adapter.to_out.weight.mul_(4.0)
    return model


def tiny_animate_transformer_folder(path: Path, seed: int = 31) -> Any:
    """`tiny_animate_transformer(seed)` saved by diffusers' save_pretrained to `path` (a
    pipeline folder's `transformer/`); returns the model."""
    model = tiny_animate_transformer(seed)
    model.save_pretrained(path)
    return model


_FACE = {"to_q": "linear1_q", "to_out": "linear2", "norm_q": "q_norm", "norm_k": "k_norm"}


def _motion_original(key: str, value: Any, blocks: int) -> dict[str, Any]:
    """A motion encoder tensor under the original LIA names (StyleGAN sequences: blur, conv,
    FusedLeakyReLU; the biases (1, C, 1, 1); the blur kernels stored)."""
    import torch

    convs = "motion_encoder.enc.net_app.convs"
    bias = value.reshape(1, -1, 1, 1)
    kernel = torch.tensor([1.0, 3.0, 3.0, 1.0])
    kernel = torch.outer(kernel, kernel) / 64
    parts = key.split(".")
    if key == "motion_encoder.motion_synthesis_weight":
        return {"motion_encoder.dec.direction.weight": value}
    if parts[1] == "motion_network":
        return {f"motion_encoder.enc.fc.{parts[2]}.{parts[3]}": value}
    if parts[1] == "conv_in":
        return {f"{convs}.0.1.bias": bias} if parts[-1] == "bias" else {
            f"{convs}.0.0.weight": value}
    if parts[1] == "conv_out":
        return {f"{convs}.{blocks + 1}.weight": value}
    index, tail = int(parts[2]) + 1, ".".join(parts[3:])
    return {"conv1.weight": {f"{convs}.{index}.conv1.0.weight": value},
            "conv1.act_fn.bias": {f"{convs}.{index}.conv1.1.bias": bias},
            "conv2.weight": {f"{convs}.{index}.conv2.1.weight": value,
                             f"{convs}.{index}.conv2.0.kernel": kernel.clone()},
            "conv2.act_fn.bias": {f"{convs}.{index}.conv2.2.bias": bias},
            "conv_skip.weight": {f"{convs}.{index}.skip.1.weight": value,
                                 f"{convs}.{index}.skip.0.kernel": kernel.clone()}}[tail]


def animate_original_names(state: dict[str, Any], blocks: int) -> dict[str, Any]:
    """A diffusers WanAnimateTransformer3DModel state dict in the original release's names
    (Wan2.2-Animate-14B's, as diffusers' convert_wan_transformer_to_diffusers reads them);
    `blocks`: its motion encoder's res blocks."""
    import torch

    out = original_names({k: v for k, v in state.items()
                          if not k.startswith(("motion_encoder.", "face_"))})
    for key, value in state.items():
        parts = key.split(".")
        if parts[0] == "motion_encoder":
            out.update(_motion_original(key, value, blocks))
        elif parts[0] == "face_encoder":
            out[key.replace(".weight", ".conv.weight").replace(".bias", ".conv.bias")
                if parts[1].startswith("conv") else key] = value
        elif parts[0] == "face_adapter" and parts[2] != "to_v":
            block = f"face_adapter.fuser_blocks.{parts[1]}"
            if parts[2] == "to_k":
                out[f"{block}.linear1_kv.{parts[3]}"] = torch.cat(
                    [value, state[key.replace(".to_k.", ".to_v.")]])
            else:
                out[f"{block}.{_FACE[parts[2]]}.{parts[3]}"] = value
    return {k: v.contiguous() for k, v in out.items()}
