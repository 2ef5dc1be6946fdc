"""Tiny random DC-AEs (diffusers' AutoencoderDC) built in-process.

DC_AE_TINY has every block kind of the released f32c32 Sana VAE (dc-ae-f32c32-sana-1.x):
ResBlocks at the top level, EfficientViT blocks (multi-scale linear attention with a 5x5
aggregation, GLUMBConv) below, strided-conv downsamplers and interpolating upsamplers with
their channel-averaging / channel-duplicating shortcuts, the encoder's output and the decoder's
input shortcuts, RMS norms; 3 levels (4x compression) instead of 6, 8 latent channels.
DC_AE_TINY_SHUFFLE is the other layout diffusers knows (the "in"/"mix" DC-AEs): pixel
(un)shuffle resamplers and a first level of no layers, whose conv_in/conv_out are then
resamplers without shortcuts, and their ReLU residual blocks (with RMS norms: we build no
batch norms).
"""

from __future__ import annotations

from typing import Any

from sd_tiny import randomized

_BLOCKS = ("ResBlock", "EfficientViTBlock", "EfficientViTBlock")
DC_AE_TINY: dict[str, Any] = dict(
    in_channels=3, latent_channels=8, attention_head_dim=8,
    encoder_block_types=_BLOCKS, decoder_block_types=_BLOCKS,
    encoder_block_out_channels=(8, 16, 32), decoder_block_out_channels=(8, 16, 32),
    encoder_layers_per_block=(1, 1, 2), decoder_layers_per_block=(1, 2, 2),
    encoder_qkv_multiscales=((), (5,), (5,)), decoder_qkv_multiscales=((), (5,), (5,)),
    downsample_block_type="Conv", upsample_block_type="interpolate",
    decoder_norm_types="rms_norm", decoder_act_fns="silu", scaling_factor=0.41407)
DC_AE_TINY_SHUFFLE: dict[str, Any] = dict(
    DC_AE_TINY, encoder_layers_per_block=(0, 1, 1), decoder_layers_per_block=(0, 1, 1),
    encoder_block_types=("ResBlock", "ResBlock", "EfficientViTBlock"),
    decoder_block_types=("ResBlock", "ResBlock", "EfficientViTBlock"),
    decoder_act_fns=("relu", "relu", "silu"),
    encoder_qkv_multiscales=((), (), (3,)), decoder_qkv_multiscales=((), (), (3,)),
    downsample_block_type="pixel_unshuffle", upsample_block_type="pixel_shuffle")


def tiny_dc_ae(seed: int = 7, **overrides: Any) -> Any:
    """diffusers' AutoencoderDC of DC_AE_TINY (with `overrides`), random."""
    import diffusers

    return randomized(diffusers.AutoencoderDC(**{**DC_AE_TINY, **overrides}), seed)
