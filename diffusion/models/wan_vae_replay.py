"""The Wan VAE's decoder run one latent frame at a time, its steady chunks replayed.

From the third latent frame on, every chunk of a clip has the same shapes: one latent frame
in, four frames out, each causal convolution reading the two frames it kept from the chunk
before. The first two chunks differ (zero frames in front, no frame doubling yet) and run
eagerly. The third is recorded (gpucore's `Device.capture`) and every later chunk replays
it: the same dispatches on the same buffers, so the same frames bit for bit, without the
ops' Python, new bind groups or buffers (a decode of 81 frames at 480x832 is ~11k
dispatches). Inside the recording each causal convolution's new kept frames are copied back
into the tensor it read them from, so a replay leaves them where the next one reads them and
they exist once, as in the eager decode (kept frames as the capture's inputs and outputs,
copied out, took Wan 2.1's decode at 480x832 from 5.1 to 10.0 GiB). The capture lives for
one clip:
afterwards its activations go back to the device's pool.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from gpucore import Capture
from gpustd import Tensor, nn, take_slice

from .wan_vae_blocks import CausalConv3d

__all__ = ["decode_frames"]

_EAGER = 2  # chunks whose shapes are their own: the first (no history) and the second


def _kept(module: Any) -> Iterator[CausalConv3d]:
    """The causal convolutions under `module` that keep frames from chunk to chunk (kt > 1)."""
    if isinstance(module, CausalConv3d):
        if module.weight.shape[2] > 1:
            yield module
        return
    children = module if isinstance(module, nn.ModuleList) else vars(module).values()
    for child in children:
        if isinstance(child, nn.Module):
            yield from _kept(child)


def _copy(x: Tensor) -> Tensor:
    out = Tensor.empty(x.shape, x.dtype, device=x.device)
    out.buffer.copy_from(x.buffer)
    return out


def decode_frames(decoder: Any, frames: Tensor, *, replay: bool = True) -> list[Tensor]:
    """`decoder` (a fresh clip: its kept frames reset) over latent frames (F, C, h, w), one
    at a time -> F chunks of frames (1, then 4 each). `replay=False`: every chunk eager."""
    convs = list(_kept(decoder))
    graph: Capture | None = None
    out = []
    try:
        for i in range(frames.shape[0]):
            frame = take_slice(frames, i, i + 1, axis=0)
            if not replay or i < _EAGER:
                out.append(decoder(frame, first_chunk=i == 0))
                continue
            if graph is None:
                source, kept = frame, [conv._history for conv in convs]
                with frames.device.capture() as graph:
                    chunk = decoder(source)
                    for conv, into in zip(convs, kept):
                        into.buffer.copy_from(conv._history.buffer)  # type: ignore[union-attr]
                        conv._history = into
            else:
                source.buffer.copy_from(frame.buffer)
                graph.replay()
            out.append(_copy(chunk))  # the next replay overwrites it
    finally:
        if graph is not None:
            graph.release()
    return out
