"""The memory modes of FLUX.1 (dev, schnell, Kontext, Fill), SD 3/3.5 and Chroma: flow_memory's
plan (the WebUI's --medvram, --lowvram, --max-vram SIZE) over their networks.

- FLUX.1: the transformer's double and single blocks stream (the first also when TeaCache
  measures its modulated input); CLIP-L and T5 move as one unit.
- SD 3/3.5: the transformer's joint blocks stream; CLIP-L, OpenCLIP-G and T5 (where the model
  has one) move as one unit.
- Chroma: the transformer's double and single blocks stream; its approximator (the
  distilled guidance layer) stays with the embedders; T5 is the text unit.

The VAE is the third unit of each. `to_host` moves a network loaded outside `load_network`
(a GGUF transformer, kept quantized) to host memory, as `load_network` does with `offload`.
"""

from __future__ import annotations

from typing import Any

from gpucore import Device
from gpustd.nn import Module
from gpustd.nn.offload import offload

from .flow_memory import MemoryLayout

__all__ = ["flow_layout", "to_host"]


def flow_layout(pipe: Any) -> MemoryLayout:
    """What a FLUX.1 / SD3 / Chroma pipeline's memory modes move (the module doc): the text
    encoders with the calls that bring them in (`forward_pooled` of the CLIPs, the T5's
    `forward`), the transformer's block lists, the VAE."""
    transformer = pipe.transformer
    blocks = tuple(getattr(transformer, name) for name in
                   ("transformer_blocks", "single_transformer_blocks")
                   if hasattr(transformer, name))
    if hasattr(pipe, "clips"):  # SD 3/3.5: two CLIPs and T5, which may be absent
        clips = [encoder for encoder, _ in pipe.clips]
        t5 = pipe.text_encoder_3
        encoders = (*clips, *([t5] if t5 is not None else []))
        calls = (*((clip, "forward_pooled") for clip in clips),
                 *([(t5, "forward")] if t5 is not None else []))
    elif hasattr(pipe, "text_encoder_2"):  # FLUX.1: CLIP-L's pooled output and T5
        encoders = (pipe.text_encoder, pipe.text_encoder_2)
        calls = ((pipe.text_encoder, "forward_pooled"), (pipe.text_encoder_2, "forward"))
    else:  # Chroma: T5 alone
        encoders = (pipe.text_encoder,)
        calls = ((pipe.text_encoder, "forward"),)
    # TeaCache measures FLUX's first double block's modulated input before running it
    first = [block for block in list(blocks[0])[:1] if hasattr(block, "modulated_input")]
    return MemoryLayout(transformer=transformer, blocks=blocks, text_encoders=encoders,
                        text_calls=calls, vae=pipe.vae,
                        block_calls=tuple((block, "modulated_input") for block in first))


def to_host(model: Module, device: Device, offload_to_host: bool) -> Module:
    """`model`, moved to host memory and the device's pool emptied when `offload_to_host`."""
    if offload_to_host:
        offload(model)
        device.empty_pool()
    return model
