"""Neural-network operators and layers for Stable Diffusion's UNet, VAE and CLIP (NCHW).

float32 everywhere, float16 storage with float32 accumulation where the device has
shader-f16. Each function names its torch.nn.functional equivalent.
"""

from .._conv_padding import padding_mode, padding_mode_in_effect
from .activation import geglu, gelu, quick_gelu, silu
from .attention import attention
from .conv import conv2d
from .conv1d import conv1d, conv_transpose1d
from .conv_transpose import conv_transpose2d
from .deferred import deferred
from .depthwise import depthwise_glu
from .embedding import embedding, timestep_embedding
from .layers import GEGLU, Conv2d, Embedding, GroupNorm, Identity, LayerNorm, Linear
from .linear import linear, linear_gated_add, linears
from .module import Module, ModuleList, Namespace, StateDictError, parameter, unloaded
from .norm import (
    group_norm,
    group_norm_prologue,
    layer_norm,
    layer_norm_modulate,
    rms_norm_modulate,
)
from .prologue import ConvPrologue
from .rms_norm_rope import rms_norm_rope
from .spatial import concat, max_pool2d, pad, upsample_nearest2x

__all__ = [
    "GEGLU",
    "Conv2d",
    "ConvPrologue",
    "Embedding",
    "GroupNorm",
    "Identity",
    "LayerNorm",
    "Linear",
    "Module",
    "ModuleList",
    "Namespace",
    "StateDictError",
    "attention",
    "concat",
    "conv1d",
    "conv2d",
    "conv_transpose1d",
    "conv_transpose2d",
    "deferred",
    "depthwise_glu",
    "embedding",
    "geglu",
    "gelu",
    "group_norm",
    "group_norm_prologue",
    "layer_norm",
    "layer_norm_modulate",
    "linear",
    "linear_gated_add",
    "linears",
    "max_pool2d",
    "pad",
    "padding_mode",
    "padding_mode_in_effect",
    "parameter",
    "quick_gelu",
    "rms_norm_modulate",
    "rms_norm_rope",
    "silu",
    "timestep_embedding",
    "unloaded",
    "upsample_nearest2x",
]
